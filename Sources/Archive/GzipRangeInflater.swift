import CZlib

/// Inflates part of a gzip stream from a checkpoint (`GzipIndex`) and hands over the output bytes
/// `[start, start + length)` as they come: the compressed bytes are fed from `checkpoint.fetchStart` on, in
/// pieces of any size, while they arrive. Input after the last wanted byte is ignored.
public final class GzipRangeInflater {
    private var stream = z_stream()
    private let checkpoint: GzipCheckpoint
    /// Output bytes still to skip before the range, and still to hand over.
    private var skip: UInt64
    public private(set) var remaining: UInt64
    private var primed: Bool
    private var ended = false
    private let output = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 << 10, alignment: 16)

    /// `start` must lie at or after the checkpoint's uncompressed offset.
    public init(from checkpoint: GzipCheckpoint, start: UInt64, length: UInt64) throws(ArchiveError) {
        precondition(start >= checkpoint.uncompressedOffset)
        self.checkpoint = checkpoint
        skip = start - checkpoint.uncompressedOffset
        remaining = length
        primed = checkpoint.bits == 0
        let code = czlib_inflate_init_raw(&stream)
        guard code == Z_OK else {
            output.deallocate()
            throw .decompression(format: "gzip", detail: "inflateInit2 failed (\(code))")
        }
        if !checkpoint.window.isEmpty {
            let set = checkpoint.window.withUnsafeBufferPointer { inflateSetDictionary(&stream, $0.baseAddress, UInt32($0.count)) }
            guard set == Z_OK else {
                inflateEnd(&stream)
                output.deallocate()
                throw .decompression(format: "gzip", detail: "the checkpoint's window was refused (\(set))")
            }
        }
    }

    deinit {
        inflateEnd(&stream)
        output.deallocate()
    }

    /// Whether every wanted byte has been handed over.
    public var isDone: Bool { remaining == 0 }

    /// Takes the next compressed piece and hands each piece of wanted output to `deliver`.
    public func feed(_ input: UnsafeRawBufferPointer, deliver: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard remaining > 0, var rest = Optional(input), !rest.isEmpty else { return }
        if !primed {
            // The checkpoint's boundary lies inside this byte: its high `bits` bits start the next block.
            let bits = Int32(checkpoint.bits)
            let value = Int32(rest[0]) >> (8 - bits)
            guard inflatePrime(&stream, bits, value) == Z_OK else {
                throw ArchiveError.decompression(format: "gzip", detail: "cannot prime \(bits) bits at the checkpoint")
            }
            primed = true
            rest = UnsafeRawBufferPointer(rebasing: rest[1...])
        }
        guard !rest.isEmpty, let base = rest.baseAddress else { return }
        stream.next_in = UnsafeMutablePointer(mutating: base.assumingMemoryBound(to: Bytef.self))
        stream.avail_in = UInt32(rest.count)
        // Until the input is used up and the last call left room in the output (a full output buffer may hide
        // output zlib still holds, e.g. the rest of a long match).
        while remaining > 0, !ended {
            stream.next_out = output.baseAddress?.assumingMemoryBound(to: Bytef.self)
            stream.avail_out = UInt32(output.count)
            let code = inflate(&stream, Z_NO_FLUSH)
            guard code == Z_OK || code == Z_STREAM_END || code == Z_BUF_ERROR else {
                let message = stream.msg.map { String(cString: $0) } ?? "zlib code \(code)"
                throw ArchiveError.decompression(
                    format: "gzip", detail: "from the checkpoint at \(checkpoint.compressedOffset): \(message)")
            }
            if code == Z_STREAM_END { ended = true }
            var produced = UInt64(output.count - Int(stream.avail_out))
            var at = 0
            if skip > 0 {
                let skipped = min(skip, produced)
                skip -= skipped
                produced -= skipped
                at = Int(skipped)
            }
            let take = Int(min(produced, remaining))
            if take > 0 {
                try deliver(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(output)[at..<(at + take)]))
                remaining -= UInt64(take)
            }
            if code == Z_BUF_ERROR || (stream.avail_in == 0 && stream.avail_out > 0) { break }
        }
        stream.next_in = nil
        stream.avail_in = 0
    }
}
