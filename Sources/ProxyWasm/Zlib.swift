import CZlib

/// zlib for the `compress` / `uncompress` foreign functions (Envoy's format: zlib streams).
enum Zlib {
    static func compress(_ input: [UInt8]) -> [UInt8]? {
        var size = compressBound(uLong(input.count))
        var out = [UInt8](repeating: 0, count: Int(size))
        let rc = out.withUnsafeMutableBufferPointer { o in
            input.withUnsafeBufferPointer { i in compress2(o.baseAddress, &size, i.baseAddress, uLong(input.count), Z_DEFAULT_COMPRESSION) }
        }
        guard rc == Z_OK else { return nil }
        return Array(out[0..<Int(size)])
    }

    /// Inflates with a growing buffer, refusing output over 64 MiB (a zip bomb guard).
    static func uncompress(_ input: [UInt8]) -> [UInt8]? {
        var capacity = max(1024, input.count * 4)
        while capacity <= 64 << 20 {
            var size = uLong(capacity)
            var out = [UInt8](repeating: 0, count: capacity)
            let rc = out.withUnsafeMutableBufferPointer { o in
                input.withUnsafeBufferPointer { i in CZlib.uncompress(o.baseAddress, &size, i.baseAddress, uLong(input.count)) }
            }
            if rc == Z_OK { return Array(out[0..<Int(size)]) }
            if rc != Z_BUF_ERROR { return nil }
            capacity *= 4
        }
        return nil
    }
}
