#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Request ids in UUID version 4 form for one worker, made without Foundation's UUID
/// formatting (which goes through printf and showed up in profiles): 16 random bytes,
/// hex-encoded by table. The bytes come from the kernel's CSPRNG 4 KiB at a time, one read
/// per 256 ids; `SystemRandomNumberGenerator` cost two getrandom calls per request.
/// Touched only on its worker's event loop.
final class RequestIDSource {
    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)
    private var pool = [UInt8](repeating: 0, count: 4096)
    private var next = 4096

    func make() -> String {
        if next + 16 > pool.count { refill() }
        var hi: UInt64 = 0, lo: UInt64 = 0
        for k in 0..<8 {
            hi = hi << 8 | UInt64(pool[next + k])
            lo = lo << 8 | UInt64(pool[next + 8 + k])
        }
        next += 16
        return Self.format(hi: hi, lo: lo)
    }

    private func refill() {
        next = 0
        let filled = pool.withUnsafeMutableBytes { buffer -> Bool in
            let fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return false }
            defer { close(fd) }
            var got = 0
            while got < buffer.count {
                let n = read(fd, buffer.baseAddress! + got, buffer.count - got)
                if n <= 0 { return false }
                got += n
            }
            return true
        }
        if filled { return }
        // No /dev/urandom (a minimal sandbox): the system generator, a word at a time.
        var rng = SystemRandomNumberGenerator()
        pool.withUnsafeMutableBytes { buffer in
            for offset in stride(from: 0, to: buffer.count, by: 8) {
                buffer.storeBytes(of: rng.next() as UInt64, toByteOffset: offset, as: UInt64.self)
            }
        }
    }

    static func format(hi: UInt64, lo: UInt64) -> String {
        let hi = (hi & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000  // version 4
        let lo = (lo & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000  // RFC 4122 variant
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
