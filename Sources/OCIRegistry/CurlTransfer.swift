import CCurl
import CLinux
import OCI
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One libcurl easy handle. Handles are reused through `CurlHandlePool`, so each keeps its connection cache
/// (keep-alive connections, HTTP/2 sessions, TLS session ids) across requests.
///
/// `@unchecked Sendable`: a handle is used by exactly one thread at a time. The pool hands it out under its
/// mutex and takes it back only after `curl_easy_perform` has returned on the thread that used it.
final class EasyHandle: @unchecked Sendable {
    let raw: OpaquePointer

    init() {
        _ = CurlTransport.globalInit
        guard let h = curl_easy_init() else { fatalError("curl_easy_init failed: out of memory") }
        raw = OpaquePointer(h)
    }

    deinit { curl_easy_cleanup(UnsafeMutableRawPointer(raw)) }

    var pointer: UnsafeMutableRawPointer { UnsafeMutableRawPointer(raw) }
}

/// A bounded stack of idle easy handles.
final class CurlHandlePool: Sendable {
    private let idle = Mutex<[EasyHandle]>([])
    let maxIdle: Int

    init(maxIdle: Int = 8) { self.maxIdle = maxIdle }

    func checkout() -> EasyHandle { idle.withLock { $0.popLast() } ?? EasyHandle() }

    func checkin(_ handle: EasyHandle) {
        curl_easy_reset(handle.pointer)  // keeps live connections and caches, clears options
        idle.withLock { if $0.count < maxIdle { $0.append(handle) } }
    }
}

/// Set by the awaiting task when it is cancelled; polled by the transfer's progress callback.
final class CancelFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func cancel() { flag.store(true, ordering: .relaxed) }
    var isCancelled: Bool { flag.load(ordering: .relaxed) }
}

/// The state one transfer's C callbacks share. Lives on the transfer thread for the duration of
/// `curl_easy_perform`; the callbacks receive it as an unretained pointer.
private final class TransferContext {
    var headers = HTTPHeaders()
    var status = 0
    var body: [UInt8] = []
    let memoryLimit: Int
    let sink: (any BodySink)?
    let cancel: CancelFlag
    var upload: RequestBody
    var uploadFD: Int32 = -1
    var uploadSent: Int64 = 0
    var overflow = false
    var sinkStarted = false

    init(memoryLimit: Int, sink: (any BodySink)?, cancel: CancelFlag, upload: RequestBody) {
        self.memoryLimit = memoryLimit
        self.sink = sink
        self.cancel = cancel
        self.upload = upload
    }

    /// Bodies of 2xx answers go to the sink when there is one; everything else (error bodies) to memory.
    var streamsToSink: Bool { sink != nil && (200..<300).contains(status) }
}

/// Runs `HTTPRequest`s with libcurl on dedicated threads, so blocking `curl_easy_perform` never occupies the
/// cooperative pool, and bridges each to async with a continuation.
final class CurlTransport: Sendable {
    static let globalInit: Void = { curl_global_init(ccurl_global_default()) }()
    static let maxRedirects = 10
    /// libcurl's receive buffer; larger than the 16 KiB default to cut callback overhead on fast links.
    static let receiveBufferBytes = 512 << 10
    static let systemCABundle = "/etc/ssl/certs/ca-certificates.crt"
    /// The nice value background transfers' threads get at least (each transfer has a thread of its own, so the
    /// value never outlives it).
    static let backgroundNice: Int32 = 10

    let pool = CurlHandlePool()

    init() { _ = CurlTransport.globalInit }

    /// Version string of the linked libcurl, e.g. "libcurl/7.88.1 OpenSSL/3.0.19 ... nghttp2/1.52.0".
    static var versionDescription: String { String(cString: curl_version()) }

    static var supportsHTTP2: Bool {
        guard let info = curl_version_info(ccurl_version_now()) else { return false }
        return Int(info.pointee.features) & Int(ccurl_feature_http2()) != 0
    }

    /// Performs `request`; a 2xx body goes to `sink` when given. Throws only for transport failures and
    /// cancellation; HTTP statuses are returned.
    func perform(_ request: HTTPRequest, sink: (any BodySink)? = nil) async throws(RegistryError) -> HTTPResponse {
        let cancel = CancelFlag()
        let pool = self.pool
        let result: Result<HTTPResponse, RegistryError> = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                Self.runOnNewThread {
                    continuation.resume(returning: Self.performBlocking(request, sink: sink, cancel: cancel, pool: pool))
                }
            }
        } onCancel: {
            cancel.cancel()
        }
        return try result.get()
    }

    /// Starts a detached pthread running `body`.
    static func runOnNewThread(_ body: @escaping @Sendable () -> Void) {
        final class Box {
            let body: @Sendable () -> Void
            init(_ b: @escaping @Sendable () -> Void) { body = b }
        }
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(
            &thread, nil,
            { arg in
                let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
                box.body()
                return nil
            }, box)
        if rc != 0 { fatalError("pthread_create failed: \(rc)") }
        pthread_detach(thread)
    }

    private static func performBlocking(
        _ request: HTTPRequest, sink: (any BodySink)?, cancel: CancelFlag, pool: CurlHandlePool
    ) -> Result<HTTPResponse, RegistryError> {
        // Best effort: a thread left at its priority still transfers correctly.
        if request.background { _ = clinux_lower_thread_priority(backgroundNice) }
        let handle = pool.checkout()
        defer { pool.checkin(handle) }
        let h = handle.pointer
        let context = TransferContext(memoryLimit: request.memoryLimit, sink: sink, cancel: cancel, upload: request.body)
        defer { if context.uploadFD >= 0 { close(context.uploadFD) } }
        if case .file(let path, _, _) = request.body {
            context.uploadFD = open(path, O_RDONLY | O_CLOEXEC)
            if context.uploadFD < 0 { return .failure(.io(path: path, reason: String(cString: strerror(errno)))) }
        }
        var headerList: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(headerList) }
        var errorBuffer = [CChar](repeating: 0, count: Int(CURL_ERROR_SIZE))

        let code: CURLcode = errorBuffer.withUnsafeMutableBufferPointer { errorBytes in
            ccurl_setopt_string(h, CURLOPT_URL, request.url)
            ccurl_setopt_long(h, CURLOPT_NOSIGNAL, 1)
            ccurl_setopt_pointer(h, CURLOPT_ERRORBUFFER, errorBytes.baseAddress)
            ccurl_setopt_string(h, CURLOPT_PROTOCOLS_STR, "http,https")
            ccurl_setopt_string(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https")
            ccurl_setopt_long(h, CURLOPT_FOLLOWLOCATION, request.followRedirects ? 1 : 0)
            ccurl_setopt_long(h, CURLOPT_MAXREDIRS, maxRedirects)
            ccurl_setopt_long(h, CURLOPT_HTTP_VERSION, ccurl_http_version_2tls())
            ccurl_setopt_long(h, CURLOPT_CONNECTTIMEOUT, request.timeouts.connectSeconds)
            ccurl_setopt_long(h, CURLOPT_LOW_SPEED_TIME, request.timeouts.stallSeconds)
            ccurl_setopt_long(h, CURLOPT_LOW_SPEED_LIMIT, request.timeouts.stallBytesPerSecond)
            ccurl_setopt_long(h, CURLOPT_TIMEOUT, request.totalTimeoutSeconds)
            ccurl_setopt_long(h, CURLOPT_TCP_KEEPALIVE, 1)
            ccurl_setopt_long(h, CURLOPT_BUFFERSIZE, receiveBufferBytes)
            ccurl_setopt_long(h, CURLOPT_SSL_VERIFYPEER, request.tls.verify ? 1 : 0)
            ccurl_setopt_long(h, CURLOPT_SSL_VERIFYHOST, request.tls.verify ? 2 : 0)
            if let bundle = request.tls.caBundle {
                bundle.withUnsafeBytes { _ = ccurl_setopt_blob(h, CURLOPT_CAINFO_BLOB, $0.baseAddress, $0.count) }
            }
            if let cert = request.tls.clientCertificate { ccurl_setopt_string(h, CURLOPT_SSLCERT, cert) }
            if let key = request.tls.clientKey { ccurl_setopt_string(h, CURLOPT_SSLKEY, key) }
            if let proxy = request.proxy { ccurl_setopt_string(h, CURLOPT_PROXY, proxy) }

            switch request.method {
            case "GET": ccurl_setopt_long(h, CURLOPT_HTTPGET, 1)
            case "HEAD": ccurl_setopt_long(h, CURLOPT_NOBODY, 1)
            case "POST":
                ccurl_setopt_long(h, CURLOPT_POST, 1)
                ccurl_setopt_off(h, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(request.body.length))
            default:
                if case .none = request.body {
                } else {
                    ccurl_setopt_long(h, CURLOPT_UPLOAD, 1)
                    ccurl_setopt_off(h, CURLOPT_INFILESIZE_LARGE, curl_off_t(request.body.length))
                }
                ccurl_setopt_string(h, CURLOPT_CUSTOMREQUEST, request.method)
            }
            // Uploads state their length; "Expect:" turns off the 100-continue round trip.
            var headers = request.headers
            headers.append(("Expect", ""))
            if case .none = request.body, request.method != "GET", request.method != "HEAD" {
                headers.append(("Content-Length", "0"))
            }
            for (name, value) in headers {
                headerList = curl_slist_append(headerList, value.isEmpty ? "\(name):" : "\(name): \(value)")
            }
            ccurl_setopt_slist(h, CURLOPT_HTTPHEADER, headerList)

            let ctx = Unmanaged.passUnretained(context).toOpaque()
            ccurl_setopt_pointer(h, CURLOPT_HEADERDATA, ctx)
            ccurl_setopt_header_function(h) { buffer, size, count, userdata in
                let context = Unmanaged<TransferContext>.fromOpaque(userdata!).takeUnretainedValue()
                let n = size * count
                let line = String(decoding: UnsafeRawBufferPointer(start: buffer, count: n), as: UTF8.self).trimmedWhitespace
                if line.hasPrefix("HTTP/") {
                    // A new response (after a redirect or a 100): start over.
                    context.headers = HTTPHeaders()
                    let parts = line.split(separator: " ")
                    context.status = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
                } else if let colon = line.firstIndex(of: ":") {
                    context.headers.add(String(line[..<colon]), String(line[line.index(after: colon)...]).trimmedWhitespace)
                }
                return n
            }
            ccurl_setopt_pointer(h, CURLOPT_WRITEDATA, ctx)
            ccurl_setopt_write_function(h) { buffer, size, count, userdata in
                let context = Unmanaged<TransferContext>.fromOpaque(userdata!).takeUnretainedValue()
                let n = size * count
                let chunk = UnsafeRawBufferPointer(start: buffer, count: n)
                if (300..<400).contains(context.status) { return n }  // redirect bodies are not content
                if context.streamsToSink, let sink = context.sink {
                    if !context.sinkStarted {
                        context.sinkStarted = true
                        guard sink.start(status: context.status, contentRange: context.headers["Content-Range"]) else { return 0 }
                    }
                    return sink.consume(chunk) ? n : 0
                }
                if context.body.count + n > context.memoryLimit {
                    context.overflow = true
                    return 0
                }
                context.body.append(contentsOf: chunk)
                return n
            }
            ccurl_setopt_pointer(h, CURLOPT_READDATA, ctx)
            ccurl_setopt_read_function(h) { buffer, size, count, userdata in
                let context = Unmanaged<TransferContext>.fromOpaque(userdata!).takeUnretainedValue()
                let room = size * count
                switch context.upload {
                case .none: return 0
                case .bytes(let bytes):
                    let n = min(room, bytes.count - Int(context.uploadSent))
                    bytes.withUnsafeBytes { src in
                        UnsafeMutableRawPointer(buffer!).copyMemory(from: src.baseAddress! + Int(context.uploadSent), byteCount: n)
                    }
                    context.uploadSent += Int64(n)
                    return n
                case .file(_, let offset, let length):
                    let want = min(Int64(room), length - context.uploadSent)
                    if want <= 0 { return 0 }
                    let n = pread(context.uploadFD, buffer, Int(want), off_t(offset + context.uploadSent))
                    if n < 0 { return ccurl_readfunc_abort() }
                    context.uploadSent += Int64(n)
                    return n
                }
            }
            ccurl_setopt_long(h, CURLOPT_NOPROGRESS, 0)
            ccurl_setopt_pointer(h, CURLOPT_XFERINFODATA, ctx)
            ccurl_setopt_xferinfo_function(h) { userdata, _, _, _, _ in
                let context = Unmanaged<TransferContext>.fromOpaque(userdata!).takeUnretainedValue()
                return context.cancel.isCancelled ? 1 : 0
            }
            return curl_easy_perform(h)
        }

        if code != CURLE_OK {
            if cancel.isCancelled { return .failure(.cancelled(url: request.url)) }
            if let failure = sink?.failure { return .failure(failure) }
            if context.overflow {
                return .failure(
                    .transport(url: request.url, code: Int(code.rawValue), message: "response larger than \(request.memoryLimit) bytes"))
            }
            let detail = String(decoding: errorBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let message = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
            return .failure(.transport(url: request.url, code: Int(code.rawValue), message: message))
        }
        var status = 0
        _ = ccurl_getinfo_long(h, CURLINFO_RESPONSE_CODE, &status)
        var version = 0
        _ = ccurl_getinfo_long(h, CURLINFO_HTTP_VERSION, &version)
        var urlPointer: UnsafeMutablePointer<CChar>?
        _ = ccurl_getinfo_string(h, CURLINFO_EFFECTIVE_URL, &urlPointer)
        let effective = urlPointer.map { String(cString: $0) } ?? request.url
        return .success(
            HTTPResponse(status: status, headers: context.headers, body: context.body, effectiveURL: effective, httpVersion: version))
    }

    /// Whether a transport error is worth retrying (dropped or refused connection, stall, HTTP/2 stream reset).
    static func isRetryable(curlCode: Int) -> Bool {
        let retryable: [CURLcode] = [
            CURLE_COULDNT_CONNECT, CURLE_PARTIAL_FILE, CURLE_RECV_ERROR, CURLE_SEND_ERROR, CURLE_GOT_NOTHING,
            CURLE_OPERATION_TIMEDOUT, CURLE_HTTP2, CURLE_HTTP2_STREAM, CURLE_COULDNT_RESOLVE_HOST, CURLE_SSL_CONNECT_ERROR,
        ]
        return retryable.contains { Int($0.rawValue) == curlCode }
    }
}
