#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// SHA-256 (FIPS 180-4), for RAFS chunk digests (`digest_algo` 1), ToC entries and the ToC digest.
/// Not constant-time and not tuned: it checks data read from disk, it does not guard secrets.
public struct SHA256: Sendable {
    /// Initial hash: the first 32 fractional bits of the square roots of the first 8 primes. Computed
    /// rather than typed in; a Double carries 53 bits, enough for these 32 exactly.
    static let initialHash: [UInt32] = primes(8).map { fractionBits(sqrt(Double($0))) }
    /// Round constants: the same from the cube roots of the first 64 primes.
    static let roundConstants: [UInt32] = primes(64).map { fractionBits(cbrt(Double($0))) }

    private static func fractionBits(_ value: Double) -> UInt32 {
        UInt32((value - value.rounded(.down)) * 4_294_967_296.0)
    }

    private static func primes(_ count: Int) -> [Int] {
        var found: [Int] = []
        var candidate = 2
        while found.count < count {
            if found.allSatisfy({ candidate % $0 != 0 }) { found.append(candidate) }
            candidate += 1
        }
        return found
    }

    private var state = SHA256.initialHash
    private var pending: [UInt8] = []
    private var length: UInt64 = 0

    public init() {}

    public mutating func update(_ bytes: some Collection<UInt8>) {
        pending.append(contentsOf: bytes)
        length &+= UInt64(bytes.count)
        var start = 0
        while pending.count - start >= 64 {
            compress(pending, from: start)
            start += 64
        }
        if start > 0 { pending.removeFirst(start) }
    }

    public mutating func finalize() -> [UInt8] {
        let bitLength = length &* 8
        var tail = pending
        tail.append(0x80)
        while tail.count % 64 != 56 { tail.append(0) }
        for shift in stride(from: 56, through: 0, by: -8) { tail.append(UInt8(truncatingIfNeeded: bitLength >> UInt64(shift))) }
        var start = 0
        while start < tail.count {
            compress(tail, from: start)
            start += 64
        }
        pending = []
        var digest: [UInt8] = []
        for word in state {
            for shift in stride(from: 24, through: 0, by: -8) { digest.append(UInt8(truncatingIfNeeded: word >> UInt32(shift))) }
        }
        return digest
    }

    public static func hash(_ bytes: some Collection<UInt8>) -> [UInt8] {
        var hasher = SHA256()
        hasher.update(bytes)
        return hasher.finalize()
    }

    private mutating func compress(_ block: [UInt8], from start: Int) {
        var w = [UInt32](repeating: 0, count: 64)
        for i in 0..<16 {
            let base = start + i * 4
            w[i] = UInt32(block[base]) << 24 | UInt32(block[base + 1]) << 16 | UInt32(block[base + 2]) << 8 | UInt32(block[base + 3])
        }
        for i in 16..<64 {
            let s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
            let s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
            w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
        }
        var a = state[0]
        var b = state[1]
        var c = state[2]
        var d = state[3]
        var e = state[4]
        var f = state[5]
        var g = state[6]
        var h = state[7]
        let k = Self.roundConstants
        for i in 0..<64 {
            let s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
            let choice = (e & f) ^ (~e & g)
            let t1 = h &+ s1 &+ choice &+ k[i] &+ w[i]
            let s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
            let majority = (a & b) ^ (a & c) ^ (b & c)
            let t2 = s0 &+ majority
            h = g
            g = f
            f = e
            e = d &+ t1
            d = c
            c = b
            b = a
            a = t1 &+ t2
        }
        state[0] &+= a
        state[1] &+= b
        state[2] &+= c
        state[3] &+= d
        state[4] &+= e
        state[5] &+= f
        state[6] &+= g
        state[7] &+= h
    }

    @inline(__always)
    private func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }
}
