/// Where a transfer's 2xx body goes instead of memory: a blob file (`BlobSink`) or a consumer of a byte range
/// (`RangeStreamSink`). Called on the transfer thread only, one attempt after the other, so a sink survives
/// retries and tells the next attempt where to resume.
protocol BodySink: AnyObject, Sendable {
    /// Body bytes accepted so far, over all attempts.
    var delivered: Int64 { get }
    /// The `Range` header of the next attempt, or nil for the whole resource.
    var rangeHeader: String? { get }
    /// Why the sink stopped the transfer, when it did.
    var failure: RegistryError? { get }
    /// Called with an attempt's status and `Content-Range` before its first body byte; false aborts it.
    func start(status: Int, contentRange: String?) -> Bool
    /// One piece of the body; false aborts the transfer.
    func consume(_ bytes: UnsafeRawBufferPointer) -> Bool
}

/// Receives the bytes of a ranged GET as they arrive, in order, and hands them to `receiver`. A retried
/// attempt asks only for what is still missing of the range (`bytes=<next>-<last>`) and must be answered 206
/// from exactly there.
///
/// `@unchecked Sendable`: used by one transfer thread at a time (see `BodySink`); the requesting task touches
/// it again only after awaiting the transfer, which orders every access.
final class RangeStreamSink: BodySink, @unchecked Sendable {
    let url: String
    let range: Range<Int64>
    private let receiver: (UnsafeRawBufferPointer) -> Bool
    private(set) var delivered: Int64 = 0
    private(set) var failure: RegistryError?

    /// `receiver` returns false to stop the transfer (its own error is the caller's to keep).
    init(url: String, range: Range<Int64>, receiver: @escaping (UnsafeRawBufferPointer) -> Bool) {
        self.url = url
        self.range = range
        self.receiver = receiver
    }

    var rangeHeader: String? { "bytes=\(range.lowerBound + delivered)-\(range.upperBound - 1)" }

    func start(status: Int, contentRange: String?) -> Bool {
        let first = contentRange.flatMap { value -> Int64? in
            guard value.hasPrefix("bytes ") else { return nil }
            return Int64(value.dropFirst("bytes ".count).prefix { $0.isNumber })
        }
        guard status == 206, first == range.lowerBound + delivered else {
            failure = .unexpectedStatus(url: url, method: "GET", status: status, errors: [])
            return false
        }
        return true
    }

    func consume(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard delivered + Int64(bytes.count) <= Int64(range.count) else {
            failure = .sizeMismatch(url: url, expected: Int64(range.count), found: delivered + Int64(bytes.count))
            return false
        }
        guard receiver(bytes) else {
            failure = .cancelled(url: url)
            return false
        }
        delivered += Int64(bytes.count)
        return true
    }
}
