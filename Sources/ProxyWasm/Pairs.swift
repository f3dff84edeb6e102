/// The "pairs" serialization of header maps (ABI §4.1): u32 count, then all (key_len,
/// value_len) u32 pairs, then every key and value each followed by one NUL byte.
public enum Pairs {
    /// Limits from cpp-host: input past them decodes as empty rather than exhausting the host.
    public static let maxCount = 1024
    public static let maxBytes = 1 << 20

    public static func serialize(_ pairs: [(String, String)]) -> [UInt8] {
        if pairs.isEmpty { return [] }
        var size = 4
        for (k, v) in pairs { size += 8 + k.utf8.count + v.utf8.count + 2 }
        var out = [UInt8]()
        out.reserveCapacity(size)
        appendU32(&out, UInt32(pairs.count))
        for (k, v) in pairs {
            appendU32(&out, UInt32(k.utf8.count))
            appendU32(&out, UInt32(v.utf8.count))
        }
        for (k, v) in pairs {
            out.append(contentsOf: k.utf8)
            out.append(0)
            out.append(contentsOf: v.utf8)
            out.append(0)
        }
        return out
    }

    /// Pairs with binary values (property maps whose values are numbers or booleans).
    public static func serialize(bytes pairs: [([UInt8], [UInt8])]) -> [UInt8] {
        if pairs.isEmpty { return [] }
        var out = [UInt8]()
        appendU32(&out, UInt32(pairs.count))
        for (k, v) in pairs {
            appendU32(&out, UInt32(k.count))
            appendU32(&out, UInt32(v.count))
        }
        for (k, v) in pairs {
            out.append(contentsOf: k)
            out.append(0)
            out.append(contentsOf: v)
            out.append(0)
        }
        return out
    }

    /// Decodes pairs; nil when malformed (unlike cpp-host, which silently yields an empty map,
    /// Sluice reports the error so a buggy filter cannot wipe headers by accident).
    /// Empty input, a single NUL, or a zero count are the empty map.
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> [(String, String)]? {
        if bytes.count < 4 { return bytes.count <= 1 ? [] : nil }
        if bytes.count > maxBytes { return nil }
        let count = Int(readU32(bytes, 0))
        if count == 0 { return [] }
        guard count <= maxCount, 4 + count * 8 <= bytes.count else { return nil }
        var offset = 4 + count * 8
        var out: [(String, String)] = []
        out.reserveCapacity(count)
        for i in 0..<count {
            let kLen = Int(readU32(bytes, 4 + i * 8)), vLen = Int(readU32(bytes, 8 + i * 8))
            guard offset + kLen + 1 + vLen + 1 <= bytes.count,
                  bytes[offset + kLen] == 0, bytes[offset + kLen + 1 + vLen] == 0 else { return nil }
            let key = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + kLen)]), as: UTF8.self)
            offset += kLen + 1
            let value = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + vLen)]), as: UTF8.self)
            offset += vLen + 1
            out.append((key, value))
        }
        return offset == bytes.count ? out : nil
    }

    public static func parse(_ bytes: [UInt8]) -> [(String, String)]? {
        bytes.withUnsafeBytes { parse($0) }
    }

    @inline(__always) static func appendU32(_ out: inout [UInt8], _ v: UInt32) {
        out.append(UInt8(truncatingIfNeeded: v))
        out.append(UInt8(truncatingIfNeeded: v >> 8))
        out.append(UInt8(truncatingIfNeeded: v >> 16))
        out.append(UInt8(truncatingIfNeeded: v >> 24))
    }

    @inline(__always) static func readU32(_ b: UnsafeRawBufferPointer, _ at: Int) -> UInt32 {
        UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
    }
}

/// An HTTP header map as filters see it: ordered, lower-case names, pseudo-headers first.
public struct HeaderMap: Sendable, Equatable {
    public var entries: [(name: String, value: String)]

    public init(_ entries: [(String, String)] = []) { self.entries = entries.map { ($0.0, $0.1) } }

    public static func == (a: HeaderMap, b: HeaderMap) -> Bool {
        a.entries.count == b.entries.count && zip(a.entries, b.entries).allSatisfy { $0.name == $1.name && $0.value == $1.value }
    }

    public func first(_ name: String) -> String? {
        let key = name.asciiLowercased
        return entries.first { $0.name == key }?.value
    }

    public func all(_ name: String) -> [String] {
        let key = name.asciiLowercased
        return entries.filter { $0.name == key }.map(\.value)
    }

    public mutating func add(_ name: String, _ value: String) { entries.append((name.asciiLowercased, value)) }

    /// Envoy's setCopy: the first entry takes the value, later duplicates go; absent keys are added.
    public mutating func replace(_ name: String, _ value: String) {
        let key = name.asciiLowercased
        if let i = entries.firstIndex(where: { $0.name == key }) {
            entries[i].value = value
            var j = entries.count - 1
            while j > i {
                if entries[j].name == key { entries.remove(at: j) }
                j -= 1
            }
        } else {
            entries.append((key, value))
        }
    }

    public mutating func remove(_ name: String) {
        let key = name.asciiLowercased
        entries.removeAll { $0.name == key }
    }

    /// Envoy's HeaderMap::byteSize(): the sum of name and value lengths.
    public var byteSize: Int { entries.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count } }

    public var pairs: [(String, String)] { entries.map { ($0.name, $0.value) } }
}

extension String {
    /// The name with ASCII upper case lowered, without a new string when there is none (the
    /// common case: clients, upstreams and filters mostly send lower-case names already).
    /// Header names are tokens, so only ASCII letters change; other bytes stay as they are.
    @inlinable public var asciiLowercased: String {
        let utf8 = self.utf8
        let hasUpper = utf8.withContiguousStorageIfAvailable { $0.contains { $0 &- 65 < 26 } } ?? utf8.contains { $0 &- 65 < 26 }
        if !hasUpper { return self }
        // Written straight into the new string's storage (names up to 15 bytes, most of
        // them, stay inline: no allocation at all).
        return String(unsafeUninitializedCapacity: utf8.count) { out in
            var i = 0
            for byte in utf8 {
                out[i] = byte &- 65 < 26 ? byte | 0x20 : byte
                i += 1
            }
            return i
        }
    }
}
