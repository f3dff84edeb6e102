import Foundation
import Yams

/// A thin layer over Yams nodes that records diagnostics with positions and key paths, so
/// that the config decoder reads like a schema and never loses where a value came from.
final class YAMLReader {
    let file: String
    private(set) var diagnostics: [ConfigDiagnostic] = []

    init(file: String) { self.file = file }

    func report(_ node: Node?, _ path: String, _ message: String) {
        let mark = node?.mark
        diagnostics.append(ConfigDiagnostic(file: file, line: mark?.line ?? 1, column: mark?.column ?? 1, keyPath: path, message: message))
    }

    func report(at mark: Mark?, _ path: String, _ message: String) {
        diagnostics.append(ConfigDiagnostic(file: file, line: mark?.line ?? 1, column: mark?.column ?? 1, keyPath: path, message: message))
    }

    /// A mapping node with its allowed keys checked: unknown keys are reported, not ignored,
    /// because a misspelt key silently falling back to a default is the worst config bug.
    func mapping(_ node: Node, _ path: String, allowed: [String]) -> MappingReader? {
        guard case .mapping(let mapping) = node else {
            report(node, path, "expected a mapping, found \(describe(node))")
            return nil
        }
        var seen: Set<String> = []
        var values: [String: (key: Node, value: Node)] = [:]
        for (key, value) in mapping {
            guard let name = key.scalar?.string else {
                report(key, path, "keys must be strings")
                continue
            }
            let keyPath = path.isEmpty ? name : "\(path).\(name)"
            if !allowed.contains(name) {
                let hint = closest(name, in: allowed).map { " (did you mean '\($0)'?)" } ?? ""
                report(key, keyPath, "unknown key '\(name)'\(hint); allowed keys: \(allowed.joined(separator: ", "))")
                continue
            }
            if seen.contains(name) {
                report(key, keyPath, "duplicate key '\(name)'")
                continue
            }
            seen.insert(name)
            values[name] = (key, value)
        }
        return MappingReader(reader: self, node: node, path: path, values: values)
    }

    func sequence(_ node: Node, _ path: String) -> [Node]? {
        guard case .sequence(let seq) = node else {
            report(node, path, "expected a list, found \(describe(node))")
            return nil
        }
        return Array(seq)
    }

    func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let s): return s.string.isEmpty ? "an empty value" : "'\(s.string)'"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    private func closest(_ word: String, in candidates: [String]) -> String? {
        let best = candidates.map { ($0, editDistance(word, $0)) }.min { $0.1 < $1.1 }
        guard let best, best.1 <= max(2, word.count / 3) else { return nil }
        return best.0
    }
}

struct MappingReader {
    let reader: YAMLReader
    let node: Node
    let path: String
    let values: [String: (key: Node, value: Node)]

    func keyPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }
    func has(_ key: String) -> Bool { values[key] != nil }
    func node(_ key: String) -> Node? { values[key]?.value }

    func missing(_ key: String, _ what: String) {
        reader.report(node, keyPath(key), "missing required key '\(key)' (\(what))")
    }

    func string(_ key: String, required: Bool = false, what: String = "a string") -> String? {
        guard let value = node(key) else {
            if required { missing(key, what) }
            return nil
        }
        guard case .scalar(let s) = value, !(s.style == .plain && s.string == "~" || s.style == .plain && s.string == "null") else {
            reader.report(value, keyPath(key), "expected \(what), found \(reader.describe(value))")
            return nil
        }
        if required && s.string.isEmpty {
            reader.report(value, keyPath(key), "expected \(what), found an empty value")
            return nil
        }
        return s.string
    }

    func int(_ key: String, range: ClosedRange<Int>, default def: Int) -> Int {
        guard let value = node(key) else { return def }
        guard let text = value.scalar?.string, let n = Int(text) else {
            reader.report(value, keyPath(key), "expected an integer, found \(reader.describe(value))")
            return def
        }
        guard range.contains(n) else {
            reader.report(value, keyPath(key), "expected an integer in \(range.lowerBound)...\(range.upperBound), found \(n)")
            return def
        }
        return n
    }

    func double(_ key: String, range: ClosedRange<Double>, default def: Double) -> Double {
        guard let value = node(key) else { return def }
        guard let text = value.scalar?.string, let n = Double(text) else {
            reader.report(value, keyPath(key), "expected a number, found \(reader.describe(value))")
            return def
        }
        guard range.contains(n) else {
            reader.report(value, keyPath(key), "expected a number in \(range.lowerBound)...\(range.upperBound), found \(text)")
            return def
        }
        return n
    }

    func bool(_ key: String, default def: Bool) -> Bool {
        guard let value = node(key) else { return def }
        switch value.scalar?.string.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            reader.report(value, keyPath(key), "expected true or false, found \(reader.describe(value))")
            return def
        }
    }

    /// Durations as operators write them: "250ms", "5s", "2m", "1h", or a bare number of seconds.
    func duration(_ key: String, default def: Duration) -> Duration {
        guard let value = node(key) else { return def }
        guard let text = value.scalar?.string, let d = parseDuration(text) else {
            reader.report(value, keyPath(key), "expected a duration such as 250ms, 5s, 2m or 1h, found \(reader.describe(value))")
            return def
        }
        return d
    }

    func hostPort(_ key: String, required: Bool = false) -> HostPort? {
        guard let text = string(key, required: required, what: "an address host:port") else { return nil }
        guard let hp = HostPort.parse(text) else {
            reader.report(node(key), keyPath(key), "expected an address host:port (IPv6 in brackets) with a port 0-65535, found '\(text)'")
            return nil
        }
        return hp
    }

    func oneOf<E: RawRepresentable & CaseIterable>(_ key: String, default def: E) -> E where E.RawValue == String {
        guard let text = string(key, what: "one of \(E.allCases.map(\.rawValue).joined(separator: ", "))") else { return def }
        guard let e = E(rawValue: text) else {
            reader.report(node(key), keyPath(key), "expected one of \(E.allCases.map(\.rawValue).joined(separator: ", ")), found '\(text)'")
            return def
        }
        return e
    }

    /// A list whose items are decoded one by one with their own key paths (`key[i]`).
    func list<T>(_ key: String, _ decode: (Node, String) -> T?) -> [T] {
        guard let value = node(key) else { return [] }
        guard let items = reader.sequence(value, keyPath(key)) else { return [] }
        return items.enumerated().compactMap { index, item in decode(item, "\(keyPath(key))[\(index)]") }
    }

    func stringList(_ key: String) -> [String] {
        list(key) { node, path in
            guard let s = node.scalar?.string, !s.isEmpty else {
                reader.report(node, path, "expected a string, found \(reader.describe(node))")
                return nil
            }
            return s
        }
    }
}

func parseDuration(_ text: String) -> Duration? {
    let t = text.trimmingCharacters(in: .whitespaces)
    let units: [(String, Double)] = [("ms", 0.001), ("us", 0.000001), ("s", 1), ("m", 60), ("h", 3600)]
    for (suffix, scale) in units where t.hasSuffix(suffix) {
        guard let n = Double(t.dropLast(suffix.count)), n >= 0 else { return nil }
        return .nanoseconds(Int64((n * scale * 1e9).rounded()))
    }
    guard let n = Double(t), n >= 0 else { return nil }
    return .nanoseconds(Int64((n * 1e9).rounded()))
}

func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var prev = Array(0...b.count)
    for i in 1...a.count {
        var cur = [i] + Array(repeating: 0, count: b.count)
        for j in 1...b.count {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        prev = cur
    }
    return prev[b.count]
}
