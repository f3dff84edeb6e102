// A small JSON reader for plugin configuration (Sluice passes structured YAML configuration
// to filters as JSON). Numbers are kept as their text; no Foundation in Embedded Swift.

public indirect enum JSON {
    case object([(String, JSON)])
    case array([JSON])
    case string(String)
    case number(String)
    case bool(Bool)
    case null

    public static func parse(_ bytes: [UInt8]) -> JSON? {
        var p = Parser(bytes: bytes)
        p.skip()
        guard let value = p.value() else { return nil }
        p.skip()
        return p.i == bytes.count ? value : nil
    }

    public subscript(key: String) -> JSON? {
        if case .object(let members) = self { return members.first { $0.0 == key }?.1 }
        return nil
    }

    public var string: String? { if case .string(let s) = self { return s } else { return nil } }
    public var array: [JSON] { if case .array(let a) = self { return a } else { return [] } }
    public var members: [(String, JSON)] { if case .object(let m) = self { return m } else { return [] } }
    public var int: Int? { if case .number(let n) = self { return Int(n) } else { return nil } }
    public var bool: Bool? { if case .bool(let b) = self { return b } else { return nil } }
}

struct Parser {
    let bytes: [UInt8]
    var i = 0

    mutating func skip() {
        while i < bytes.count, bytes[i] == 32 || bytes[i] == 9 || bytes[i] == 10 || bytes[i] == 13 { i += 1 }
    }

    mutating func literal(_ word: StaticString) -> Bool {
        let w = UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
        guard i + w.count <= bytes.count else { return false }
        for j in 0..<w.count where bytes[i + j] != w[j] { return false }
        i += w.count
        return true
    }

    mutating func value() -> JSON? {
        skip()
        guard i < bytes.count else { return nil }
        switch bytes[i] {
        case UInt8(ascii: "{"):
            i += 1
            var members: [(String, JSON)] = []
            skip()
            if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
            while true {
                skip()
                guard let key = string() else { return nil }
                skip()
                guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { return nil }
                i += 1
                guard let v = value() else { return nil }
                members.append((key, v))
                skip()
                guard i < bytes.count else { return nil }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
                return nil
            }
        case UInt8(ascii: "["):
            i += 1
            var items: [JSON] = []
            skip()
            if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
            while true {
                guard let v = value() else { return nil }
                items.append(v)
                skip()
                guard i < bytes.count else { return nil }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                return nil
            }
        case UInt8(ascii: "\""):
            return string().map { .string($0) }
        case UInt8(ascii: "t"): return literal("true") ? .bool(true) : nil
        case UInt8(ascii: "f"): return literal("false") ? .bool(false) : nil
        case UInt8(ascii: "n"): return literal("null") ? .null : nil
        default:
            let start = i
            while i < bytes.count, (bytes[i] >= 48 && bytes[i] <= 57) || bytes[i] == 45 || bytes[i] == 43 || bytes[i] == 46 || bytes[i] == 101 || bytes[i] == 69 { i += 1 }
            return i > start ? .number(String(decoding: bytes[start..<i], as: UTF8.self)) : nil
        }
    }

    mutating func string() -> String? {
        guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { return nil }
        i += 1
        var out: [UInt8] = []
        while i < bytes.count {
            let c = bytes[i]
            i += 1
            if c == UInt8(ascii: "\"") { return String(decoding: out, as: UTF8.self) }
            if c == UInt8(ascii: "\\"), i < bytes.count {
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "n"): out.append(10)
                case UInt8(ascii: "t"): out.append(9)
                case UInt8(ascii: "r"): out.append(13)
                case UInt8(ascii: "u"):
                    // \\uXXXX: keep ASCII, replace the rest (configuration keys are ASCII).
                    guard i + 4 <= bytes.count else { return nil }
                    var v = 0
                    for j in 0..<4 {
                        let h = bytes[i + j]
                        v = v * 16 + Int(h >= 97 ? h - 87 : h >= 65 ? h - 55 : h - 48)
                    }
                    i += 4
                    out.append(v < 128 ? UInt8(v) : UInt8(ascii: "?"))
                default: out.append(e)
                }
                continue
            }
            out.append(c)
        }
        return nil
    }
}
