/// BLAKE3 in its default hash mode with a 32-byte output: nydus's default chunk digester (`digest_algo` 0).
/// Written from the BLAKE3 specification: 1024-byte chunks of 64-byte blocks, and a binary tree of chaining
/// values whose left subtrees hold the largest power-of-two number of chunks.
///
/// Every chunk a lazy read fetches is verified with it, so it is on the read path: chunks (and parent nodes)
/// are compressed four at a time, one per lane of `SIMD4<UInt32>` vectors (the layout of the reference's
/// `hash_many`), with all state in registers. A lone chunk or node uses the same code with one lane filled.
public enum BLAKE3 {
    public static let outputSize = 32
    static let blockSize = 64
    static let chunkSize = 1024

    static let chunkStart: UInt32 = 1 << 0
    static let chunkEnd: UInt32 = 1 << 1
    static let parent: UInt32 = 1 << 2
    static let root: UInt32 = 1 << 3

    /// BLAKE3 reuses SHA-256's initial hash words as its IV.
    static let iv: SIMD8<UInt32> = [
        0x6A09_E667, 0xBB67_AE85, 0x3C6E_F372, 0xA54F_F53A,
        0x510E_527F, 0x9B05_688C, 0x1F83_D9AB, 0x5BE0_CD19,
    ]

    typealias Lanes = SIMD4<UInt32>

    /// Eight chaining-value words, each holding four independent lanes.
    struct ChainingValues {
        var w0, w1, w2, w3, w4, w5, w6, w7: Lanes

        init(broadcasting cv: SIMD8<UInt32>) {
            (w0, w1, w2, w3) = (Lanes(repeating: cv[0]), Lanes(repeating: cv[1]), Lanes(repeating: cv[2]), Lanes(repeating: cv[3]))
            (w4, w5, w6, w7) = (Lanes(repeating: cv[4]), Lanes(repeating: cv[5]), Lanes(repeating: cv[6]), Lanes(repeating: cv[7]))
        }

        func lane(_ j: Int) -> SIMD8<UInt32> { [w0[j], w1[j], w2[j], w3[j], w4[j], w5[j], w6[j], w7[j]] }
    }

    /// A 64-byte message block per lane, as sixteen words.
    struct Block {
        var m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15: Lanes

        /// Lane j is the block at `pointers[j]` (64 readable bytes, little-endian words).
        @inline(__always)
        init(_ p: (UnsafeRawPointer, UnsafeRawPointer, UnsafeRawPointer, UnsafeRawPointer)) {
            @inline(__always) func word(_ i: Int) -> Lanes {
                let offset = 4 * i
                return Lanes(
                    UInt32(littleEndian: p.0.loadUnaligned(fromByteOffset: offset, as: UInt32.self)),
                    UInt32(littleEndian: p.1.loadUnaligned(fromByteOffset: offset, as: UInt32.self)),
                    UInt32(littleEndian: p.2.loadUnaligned(fromByteOffset: offset, as: UInt32.self)),
                    UInt32(littleEndian: p.3.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
            }
            (m0, m1, m2, m3, m4, m5, m6, m7) = (word(0), word(1), word(2), word(3), word(4), word(5), word(6), word(7))
            (m8, m9, m10, m11, m12, m13, m14, m15) = (word(8), word(9), word(10), word(11), word(12), word(13), word(14), word(15))
        }

        /// Lane j is the parent block `left[j] ‖ right[j]`.
        init(left: [SIMD8<UInt32>], right: [SIMD8<UInt32>]) {
            @inline(__always) func word(_ side: [SIMD8<UInt32>], _ i: Int) -> Lanes {
                Lanes(side[0][i], side[1][i], side[2][i], side[3][i])
            }
            (m0, m1, m2, m3, m4, m5, m6, m7) = (
                word(left, 0), word(left, 1), word(left, 2), word(left, 3), word(left, 4), word(left, 5), word(left, 6), word(left, 7)
            )
            (m8, m9, m10, m11, m12, m13, m14, m15) = (
                word(right, 0), word(right, 1), word(right, 2), word(right, 3), word(right, 4), word(right, 5), word(right, 6),
                word(right, 7)
            )
        }
    }

    public static func hash(_ input: [UInt8]) -> [UInt8] {
        input.withUnsafeBytes { hash($0) }
    }

    public static func hash(_ input: UnsafeRawBufferPointer) -> [UInt8] {
        let chunkCount = max(1, (input.count + chunkSize - 1) / chunkSize)
        // One chunk is the root itself.
        if chunkCount == 1 { return bytes(of: lastChunk(input, index: 0, flags: root)) }
        var level = [SIMD8<UInt32>](repeating: .zero, count: chunkCount)
        let base = input.baseAddress!
        // Every chunk but the last is whole: four at a time, then one by one.
        var index = 0
        while index + 4 <= chunkCount - 1 {
            let cvs = wholeChunks(base + index * chunkSize, first: index)
            for j in 0..<4 { level[index + j] = cvs.lane(j) }
            index += 4
        }
        while index < chunkCount - 1 {
            let start = base + index * chunkSize
            level[index] = wholeChunks(start, first: index, lanes: 1).lane(0)
            index += 1
        }
        level[chunkCount - 1] = lastChunk(input, index: chunkCount - 1, flags: 0)
        // Pairs of adjacent nodes become parents, level by level; an odd last node moves up as it is. This
        // builds exactly the tree of the specification (left subtrees of a power-of-two number of chunks).
        while level.count > 2 {
            var next: [SIMD8<UInt32>] = []
            next.reserveCapacity((level.count + 1) / 2)
            var pair = 0
            while pair + 1 < level.count {
                let lanes = min(4, (level.count - pair) / 2)
                let left = (0..<4).map { level[pair + 2 * min($0, lanes - 1)] }
                let right = (0..<4).map { level[pair + 2 * min($0, lanes - 1) + 1] }
                let cvs = parents(left: left, right: right, flags: parent)
                for j in 0..<lanes { next.append(cvs.lane(j)) }
                pair += 2 * lanes
            }
            if pair < level.count { next.append(level[pair]) }
            level = next
        }
        let top = parents(
            left: [SIMD8<UInt32>](repeating: level[0], count: 4), right: [SIMD8<UInt32>](repeating: level[1], count: 4),
            flags: parent | root)
        return bytes(of: top.lane(0))
    }

    /// Chaining values of `lanes` (1 or 4) whole chunks starting at `start`, numbered from `first`.
    private static func wholeChunks(_ start: UnsafeRawPointer, first: Int, lanes: Int = 4) -> ChainingValues {
        let stride = lanes == 4 ? chunkSize : 0
        var cv = ChainingValues(broadcasting: iv)
        let counters = Lanes(0, 1, 2, 3) &* UInt32(lanes == 4 ? 1 : 0) &+ UInt32(truncatingIfNeeded: first)
        let high = Lanes(repeating: UInt32(truncatingIfNeeded: UInt64(first) >> 32))
        for block in 0..<(chunkSize / blockSize) {
            let offset = block * blockSize
            let m = Block((start + offset, start + stride + offset, start + 2 * stride + offset, start + 3 * stride + offset))
            let flags = (block == 0 ? chunkStart : 0) | (block == chunkSize / blockSize - 1 ? chunkEnd : 0)
            compress(&cv, m, counterLow: counters, counterHigh: high, blockLength: UInt32(blockSize), flags: flags)
        }
        return cv
    }

    /// The chaining value (or, with `root`, the output) of the input's last chunk, which may be short.
    private static func lastChunk(_ input: UnsafeRawBufferPointer, index: Int, flags extra: UInt32) -> SIMD8<UInt32> {
        let length = input.count - index * chunkSize
        let blocks = max(1, (length + blockSize - 1) / blockSize)
        var cv = ChainingValues(broadcasting: iv)
        let counter = Lanes(repeating: UInt32(truncatingIfNeeded: index))
        let high = Lanes(repeating: UInt32(truncatingIfNeeded: UInt64(index) >> 32))
        var padded = (SIMD16<UInt32>.zero, SIMD16<UInt32>.zero)
        for block in 0..<blocks {
            let offset = index * chunkSize + block * blockSize
            let count = min(blockSize, input.count - offset)
            let last = block == blocks - 1
            let flags = (block == 0 ? chunkStart : 0) | (last ? chunkEnd | extra : 0)
            // A short last block is zero-padded; a whole one is read in place.
            let m = withUnsafeMutableBytes(of: &padded) { scratch -> Block in
                if count == blockSize {
                    return Block(
                        (input.baseAddress! + offset, input.baseAddress! + offset, input.baseAddress! + offset, input.baseAddress! + offset)
                    )
                }
                scratch.initializeMemory(as: UInt8.self, repeating: 0)
                if count > 0 { scratch.copyMemory(from: UnsafeRawBufferPointer(rebasing: input[offset..<offset + count])) }
                let p = UnsafeRawPointer(scratch.baseAddress!)
                return Block((p, p, p, p))
            }
            compress(&cv, m, counterLow: counter, counterHigh: high, blockLength: UInt32(count), flags: flags)
        }
        return cv.lane(0)
    }

    /// Parent nodes of four (left, right) pairs of chaining values.
    private static func parents(left: [SIMD8<UInt32>], right: [SIMD8<UInt32>], flags: UInt32) -> ChainingValues {
        var cv = ChainingValues(broadcasting: iv)
        compress(&cv, Block(left: left, right: right), counterLow: .zero, counterHigh: .zero, blockLength: UInt32(blockSize), flags: flags)
        return cv
    }

    private static func bytes(of words: SIMD8<UInt32>) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: outputSize)
        for i in 0..<8 {
            for shift in 0..<4 { out[4 * i + shift] = UInt8(truncatingIfNeeded: words[i] >> UInt32(8 * shift)) }
        }
        return out
    }

    /// The compression function on four lanes; `cv` becomes the first eight output words (all a 32-byte hash
    /// or a chaining value needs).
    @inline(__always)
    static func compress(
        _ cv: inout ChainingValues, _ block: Block, counterLow: Lanes, counterHigh: Lanes, blockLength: UInt32, flags: UInt32
    ) {
        var (v0, v1, v2, v3, v4, v5, v6, v7) = (cv.w0, cv.w1, cv.w2, cv.w3, cv.w4, cv.w5, cv.w6, cv.w7)
        var (v8, v9, v10, v11) = (Lanes(repeating: iv[0]), Lanes(repeating: iv[1]), Lanes(repeating: iv[2]), Lanes(repeating: iv[3]))
        var (v12, v13, v14, v15) = (counterLow, counterHigh, Lanes(repeating: blockLength), Lanes(repeating: flags))
        var m = block
        for round in 0..<7 {
            g(&v0, &v4, &v8, &v12, m.m0, m.m1)
            g(&v1, &v5, &v9, &v13, m.m2, m.m3)
            g(&v2, &v6, &v10, &v14, m.m4, m.m5)
            g(&v3, &v7, &v11, &v15, m.m6, m.m7)
            g(&v0, &v5, &v10, &v15, m.m8, m.m9)
            g(&v1, &v6, &v11, &v12, m.m10, m.m11)
            g(&v2, &v7, &v8, &v13, m.m12, m.m13)
            g(&v3, &v4, &v9, &v14, m.m14, m.m15)
            if round < 6 {
                // The specification's message permutation (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8).
                m = Block(
                    permuting: (m.m2, m.m6, m.m3, m.m10, m.m7, m.m0, m.m4, m.m13, m.m1, m.m11, m.m12, m.m5, m.m9, m.m14, m.m15, m.m8))
            }
        }
        cv.w0 = v0 ^ v8
        cv.w1 = v1 ^ v9
        cv.w2 = v2 ^ v10
        cv.w3 = v3 ^ v11
        cv.w4 = v4 ^ v12
        cv.w5 = v5 ^ v13
        cv.w6 = v6 ^ v14
        cv.w7 = v7 ^ v15
    }

    @inline(__always)
    private static func g(_ a: inout Lanes, _ b: inout Lanes, _ c: inout Lanes, _ d: inout Lanes, _ x: Lanes, _ y: Lanes) {
        a = a &+ b &+ x
        d = rotr(d ^ a, 16)
        c = c &+ d
        b = rotr(b ^ c, 12)
        a = a &+ b &+ y
        d = rotr(d ^ a, 8)
        c = c &+ d
        b = rotr(b ^ c, 7)
    }

    /// The two shifted halves are added, not or-ed (their bits are disjoint, so it is the same): LLVM turns
    /// `(x >> n) | (x << 32 - n)` into a vector rotate, which x86-64's baseline (SSE2) lacks, and then does
    /// every lane in a general-purpose register; the sum stays as two vector shifts and an or.
    @inline(__always)
    private static func rotr(_ x: Lanes, _ n: UInt32) -> Lanes { (x &>> n) &+ (x &<< (32 - n)) }
}

extension BLAKE3.Block {
    @inline(__always)
    init(
        permuting w: (
            BLAKE3.Lanes, BLAKE3.Lanes, BLAKE3.Lanes, BLAKE3.Lanes, BLAKE3.Lanes, BLAKE3.Lanes, BLAKE3.Lanes, BLAKE3.Lanes,
            BLAKE3.Lanes, BLAKE3.Lanes, BLAKE3.Lanes, BLAKE3.Lanes, BLAKE3.Lanes, BLAKE3.Lanes, BLAKE3.Lanes, BLAKE3.Lanes
        )
    ) {
        (m0, m1, m2, m3, m4, m5, m6, m7) = (w.0, w.1, w.2, w.3, w.4, w.5, w.6, w.7)
        (m8, m9, m10, m11, m12, m13, m14, m15) = (w.8, w.9, w.10, w.11, w.12, w.13, w.14, w.15)
    }
}
