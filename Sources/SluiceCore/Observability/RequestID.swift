/// Request ids in UUID version 4 form, made without Foundation's UUID formatting (which goes
/// through printf and showed up in profiles): 16 random bytes, hex-encoded by table.
enum RequestID {
    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    static func make() -> String {
        var rng = SystemRandomNumberGenerator()
        var hi = rng.next() as UInt64, lo = rng.next() as UInt64
        hi = (hi & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000  // version 4
        lo = (lo & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000  // RFC 4122 variant
        return String(unsafeUninitializedCapacity: 36) { out in
            var i = 0
            func put(_ v: UInt64, _ nibbles: Int) {
                for n in stride(from: nibbles - 1, through: 0, by: -1) {
                    out[i] = hex[Int((v >> (UInt64(n) * 4)) & 0xF)]
                    i += 1
                }
            }
            put(hi >> 32, 8); out[i] = 0x2D; i += 1
            put((hi >> 16) & 0xFFFF, 4); out[i] = 0x2D; i += 1
            put(hi & 0xFFFF, 4); out[i] = 0x2D; i += 1
            put(lo >> 48, 4); out[i] = 0x2D; i += 1
            put(lo & 0xFFFF_FFFF_FFFF, 12)
            return i
        }
    }
}
