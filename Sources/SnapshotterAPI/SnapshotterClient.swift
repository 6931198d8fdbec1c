#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Failures of the client itself (as opposed to errors the daemon answered with, which are `APIError`).
public enum ClientError: Error, Equatable, Sendable, CustomStringConvertible {
    case socketPathTooLong(String)
    case cannotConnect(socket: String, errno: Int32)
    case io(call: String, errno: Int32)
    case connectionClosed
    case malformedResponse(String)
    case undecodableBody(status: Int, detail: String)

    public var description: String {
        switch self {
        case .socketPathTooLong(let path):
            return "socket path is too long for a Unix socket (108 bytes max): \(path)"
        case .cannotConnect(let socket, let code):
            return
                "cannot connect to snapshotterd at \(socket): \(String(cString: strerror(code))); is the daemon running (make run, or systemctl start snapshotterd) and is --socket right?"
        case .io(let call, let code):
            return "talking to snapshotterd failed: \(call): \(String(cString: strerror(code)))"
        case .connectionClosed:
            return "snapshotterd closed the connection before answering"
        case .malformedResponse(let detail):
            return "snapshotterd sent a malformed HTTP response: \(detail)"
        case .undecodableBody(let status, let detail):
            return "snapshotterd answered \(status) with a body this client cannot read: \(detail)"
        }
    }
}

/// A raw HTTP response.
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]

    public func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }
}

/// A blocking HTTP/1.1 client for the daemon's Unix socket. Keeps one connection open and reconnects
/// when the daemon closed it. Not thread-safe: use one client per thread.
public final class SnapshotterClient {
    public let socketPath: String
    private var fd: Int32 = -1
    private var buffer: [UInt8] = []

    public init(socketPath: String) {
        self.socketPath = socketPath
    }

    deinit { disconnect() }

    public func disconnect() {
        if fd >= 0 { close(fd) }
        fd = -1
        buffer.removeAll()
    }

    /// Sends one request and returns the raw response. Retries once on a fresh connection when a kept-alive
    /// connection turned out to be closed before any byte of the answer arrived.
    public func send(method: String, path: String, body: [UInt8]? = nil) throws -> HTTPResponse {
        let reused = fd >= 0
        do {
            return try sendOnce(method: method, path: path, body: body)
        } catch ClientError.connectionClosed where reused {
            disconnect()
            return try sendOnce(method: method, path: path, body: body)
        } catch let error as ClientError {
            if reused, case .io(_, let code) = error, code == EPIPE || code == ECONNRESET {
                disconnect()
                return try sendOnce(method: method, path: path, body: body)
            }
            throw error
        }
    }

    /// Sends a request with a JSON body (or none) and decodes the JSON answer; an error answer throws `APIError`.
    public func call<Response: Decodable>(
        _ method: String,
        _ path: String,
        body: (some Encodable)? = Optional<EmptyResponse>.none,
        as type: Response.Type = Response.self
    ) throws -> Response {
        let bytes = try body.map { Array(try JSONEncoder().encode($0)) }
        let response = try send(method: method, path: path, body: bytes)
        guard (200..<300).contains(response.status) else {
            if let envelope = try? JSONDecoder().decode(ErrorEnvelope.self, from: Data(response.body)) {
                throw envelope.error
            }
            let text = String(decoding: response.body.prefix(200), as: UTF8.self)
            throw ClientError.undecodableBody(status: response.status, detail: text)
        }
        do {
            return try JSONDecoder().decode(Response.self, from: Data(response.body))
        } catch {
            throw ClientError.undecodableBody(status: response.status, detail: "\(error)")
        }
    }

    // MARK: - Connection

    private func connectIfNeeded() throws {
        if fd >= 0 { return }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(socketPath.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard pathBytes.count < capacity else { throw ClientError.socketPathTooLong(socketPath) }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            raw[pathBytes.count] = 0
        }
        let sock = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard sock >= 0 else { throw ClientError.io(call: "socket", errno: errno) }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(sock, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if result != 0 {
            let code = errno
            close(sock)
            throw ClientError.cannotConnect(socket: socketPath, errno: code)
        }
        fd = sock
    }

    private func sendOnce(method: String, path: String, body: [UInt8]?) throws -> HTTPResponse {
        try connectIfNeeded()
        var head = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nUser-Agent: snapctl\r\n"
        if let body {
            head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n"
        } else if method != "GET" && method != "HEAD" {
            head += "Content-Length: 0\r\n"
        }
        head += "\r\n"
        var request = Array(head.utf8)
        if let body { request += body }
        try writeAll(request)
        return try readResponse()
    }

    private func writeAll(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                let code = errno
                disconnect()
                throw ClientError.io(call: "send", errno: code)
            }
            offset += n
        }
    }

    /// Reads more bytes into the buffer; false at end of stream.
    private func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                let code = errno
                disconnect()
                throw ClientError.io(call: "recv", errno: code)
            }
            if n == 0 { return false }
            buffer += chunk[0..<n]
            return true
        }
    }

    private func readResponse() throws -> HTTPResponse {
        let separator: [UInt8] = [13, 10, 13, 10]
        var headEnd: Int?
        while headEnd == nil {
            headEnd = firstIndex(of: separator)
            if headEnd == nil {
                let hadBytes = !buffer.isEmpty
                guard try fill() else {
                    disconnect()
                    if hadBytes { throw ClientError.malformedResponse("connection closed inside the headers") }
                    throw ClientError.connectionClosed
                }
                if buffer.count > 1 << 20 { throw ClientError.malformedResponse("headers larger than 1 MiB") }
            }
        }
        let headBytes = Array(buffer[0..<headEnd!])
        buffer.removeFirst(headEnd! + 4)
        let lines = String(decoding: headBytes, as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ", maxSplits: 2)
        guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/1."), let status = Int(statusParts[1]) else {
            throw ClientError.malformedResponse("bad status line \(lines[0])")
        }
        var headers: [(String, String)] = []
        for line in lines.dropFirst() where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { throw ClientError.malformedResponse("bad header \(line)") }
            let name = String(line[..<colon]).trimmedSpaces()
            let value = String(line[line.index(after: colon)...]).trimmedSpaces()
            headers.append((name, value))
        }
        var response = HTTPResponse(status: status, headers: headers, body: [])
        if response.header("Transfer-Encoding")?.lowercased().contains("chunked") == true {
            response.body = try readChunkedBody()
        } else if let lengthText = response.header("Content-Length") {
            guard let length = Int(lengthText), length >= 0 else {
                throw ClientError.malformedResponse("bad Content-Length \(lengthText)")
            }
            while buffer.count < length {
                guard try fill() else { throw ClientError.malformedResponse("body shorter than Content-Length") }
            }
            response.body = Array(buffer[0..<length])
            buffer.removeFirst(length)
        } else {
            while try fill() {}
            response.body = buffer
            buffer.removeAll()
        }
        if response.header("Connection")?.lowercased() == "close" { disconnect() }
        return response
    }

    private func readChunkedBody() throws -> [UInt8] {
        var body: [UInt8] = []
        while true {
            var lineEnd = firstIndex(of: [13, 10])
            while lineEnd == nil {
                guard try fill() else { throw ClientError.malformedResponse("truncated chunk size") }
                lineEnd = firstIndex(of: [13, 10])
            }
            let sizeText = String(decoding: buffer[0..<lineEnd!], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmedSpaces(), radix: 16) else {
                throw ClientError.malformedResponse("bad chunk size")
            }
            buffer.removeFirst(lineEnd! + 2)
            while buffer.count < size + 2 {
                guard try fill() else { throw ClientError.malformedResponse("truncated chunk") }
            }
            if size == 0 {
                buffer.removeFirst(2)
                return body
            }
            body += buffer[0..<size]
            buffer.removeFirst(size + 2)
        }
    }

    private func firstIndex(of pattern: [UInt8]) -> Int? {
        guard buffer.count >= pattern.count else { return nil }
        var i = 0
        while i <= buffer.count - pattern.count {
            if buffer[i] == pattern[0] && Array(buffer[i..<(i + pattern.count)]) == pattern { return i }
            i += 1
        }
        return nil
    }
}

/// Percent-encodes one path segment (keys go in the URL path).
public func encodePathSegment(_ segment: String) -> String {
    var result = ""
    for byte in segment.utf8 {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
            UInt8(ascii: "~"), UInt8(ascii: ":"), UInt8(ascii: "@"):
            result.unicodeScalars.append(Unicode.Scalar(byte))
        default:
            result += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
        }
    }
    return result
}

extension StringProtocol {
    fileprivate func trimmedSpaces() -> String {
        var text = Substring(self)
        while let first = text.first, first == " " || first == "\t" { text = text.dropFirst() }
        while let last = text.last, last == " " || last == "\t" { text = text.dropLast() }
        return String(text)
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
