/// BLAKE3 in its default hash mode with a 32-byte output: nydus's default chunk digester (`digest_algo` 0).
/// Written from the BLAKE3 specification (chunks of 1024 bytes in 64-byte blocks, a binary tree of
/// chaining values whose left subtrees hold the largest power-of-two number of chunks).
public enum BLAKE3 {
    public static let outputSize = 32
    static let blockSize = 64
    static let chunkSize = 1024

    static let chunkStart: UInt32 = 1 << 0
    static let chunkEnd: UInt32 = 1 << 1
    static let parent: UInt32 = 1 << 2
    static let root: UInt32 = 1 << 3

    /// The IV is SHA-256's initial hash.
    /// BLAKE3 reuses SHA-256's initial hash words as its IV.
    static let iv: [UInt32] = [
        0x6A09_E667, 0xBB67_AE85, 0x3C6E_F372, 0xA54F_F53A,
        0x510E_527F, 0x9B05_688C, 0x1F83_D9AB, 0x5BE0_CD19,
    ]
    static let permutation = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8]

    /// The inputs of a node's last compression, kept so the root can be recompressed with ROOT set.
    struct Output {
        var chainingValue: [UInt32]
        var block: [UInt32]
        var counter: UInt64
        var blockLength: UInt32
        var flags: UInt32

        var chainingValueOut: [UInt32] {
            Array(BLAKE3.compress(chainingValue, block, counter, blockLength, flags).prefix(8))
        }

        var rootBytes: [UInt8] {
            let words = BLAKE3.compress(chainingValue, block, 0, blockLength, flags | BLAKE3.root)
            var bytes: [UInt8] = []
            for word in words.prefix(8) {
                for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: word >> UInt32(shift))) }
            }
            return bytes
        }
    }

    public static func hash(_ input: [UInt8]) -> [UInt8] {
        input.withUnsafeBufferPointer { node($0, chunkCounter: 0).rootBytes }
    }

    private static func node(_ input: UnsafeBufferPointer<UInt8>, chunkCounter: UInt64) -> Output {
        if input.count <= chunkSize { return chunk(input, counter: chunkCounter) }
        // Left subtree: the largest power of two number of whole chunks that leaves at least one byte right.
        var leftChunks = 1
        while (leftChunks * 2) * chunkSize < input.count { leftChunks *= 2 }
        let leftLength = leftChunks * chunkSize
        let left = node(UnsafeBufferPointer(rebasing: input[0..<leftLength]), chunkCounter: chunkCounter)
        let right = node(
            UnsafeBufferPointer(rebasing: input[leftLength...]),
            chunkCounter: chunkCounter + UInt64(leftChunks))
        return Output(
            chainingValue: iv, block: left.chainingValueOut + right.chainingValueOut, counter: 0,
            blockLength: UInt32(blockSize), flags: parent)
    }

    private static func chunk(_ input: UnsafeBufferPointer<UInt8>, counter: UInt64) -> Output {
        let blocks = max(1, (input.count + blockSize - 1) / blockSize)
        var cv = iv
        for index in 0..<(blocks - 1) {
            let flags = index == 0 ? chunkStart : 0
            cv = Array(compress(cv, words(input, block: index), counter, UInt32(blockSize), flags).prefix(8))
        }
        let last = blocks - 1
        return Output(
            chainingValue: cv, block: words(input, block: last), counter: counter,
            blockLength: UInt32(input.count - last * blockSize),
            flags: (last == 0 ? chunkStart : 0) | chunkEnd)
    }

    /// Block `index` of a chunk as 16 little-endian words, zero-padded.
    private static func words(_ input: UnsafeBufferPointer<UInt8>, block index: Int) -> [UInt32] {
        var words = [UInt32](repeating: 0, count: 16)
        let start = index * blockSize
        for position in start..<min(input.count, start + blockSize) {
            let offset = position - start
            words[offset / 4] |= UInt32(input[position]) << UInt32(8 * (offset % 4))
        }
        return words
    }

    static func compress(
        _ cv: [UInt32], _ block: [UInt32], _ counter: UInt64, _ blockLength: UInt32,
        _ flags: UInt32
    ) -> [UInt32] {
        var s =
            cv + [
                iv[0], iv[1], iv[2], iv[3],
                UInt32(truncatingIfNeeded: counter), UInt32(truncatingIfNeeded: counter >> 32), blockLength, flags,
            ]
        var m = block
        for round in 0..<7 {
            g(&s, 0, 4, 8, 12, m[0], m[1])
            g(&s, 1, 5, 9, 13, m[2], m[3])
            g(&s, 2, 6, 10, 14, m[4], m[5])
            g(&s, 3, 7, 11, 15, m[6], m[7])
            g(&s, 0, 5, 10, 15, m[8], m[9])
            g(&s, 1, 6, 11, 12, m[10], m[11])
            g(&s, 2, 7, 8, 13, m[12], m[13])
            g(&s, 3, 4, 9, 14, m[14], m[15])
            if round < 6 { m = permutation.map { m[$0] } }
        }
        for i in 0..<8 {
            s[i] ^= s[i + 8]
            s[i + 8] ^= cv[i]
        }
        return s
    }

    @inline(__always)
    private static func g(_ s: inout [UInt32], _ a: Int, _ b: Int, _ c: Int, _ d: Int, _ mx: UInt32, _ my: UInt32) {
        s[a] = s[a] &+ s[b] &+ mx
        s[d] = rotr(s[d] ^ s[a], 16)
        s[c] = s[c] &+ s[d]
        s[b] = rotr(s[b] ^ s[c], 12)
        s[a] = s[a] &+ s[b] &+ my
        s[d] = rotr(s[d] ^ s[a], 8)
        s[c] = s[c] &+ s[d]
        s[b] = rotr(s[b] ^ s[c], 7)
    }

    @inline(__always)
    private static func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }
}
