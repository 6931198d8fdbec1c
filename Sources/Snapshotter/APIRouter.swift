import BlobStore
import LinuxKernel
import Logging
import MountManager
import SnapshotterAPI

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One HTTP request as the router sees it.
struct APIRequest: Sendable {
    var method: String
    var uri: String
    var body: [UInt8]
    var peerUID: UInt32
}

/// One HTTP answer.
struct APIResponse: Sendable {
    var status: Int
    var body: [UInt8]
    var contentType = "application/json"
    var extraHeaders: [(String, String)] = []
}

/// Maps routes under /v1/ to the snapshot service (docs/api.md lists them). Runs on the blocking pool.
final class APIRouter: Sendable {
    let service: SnapshotService
    let images: ImageService?
    let conversions: ConversionService?
    let reconciler: Reconciler
    let logger: Logger
    let status: @Sendable () throws -> StatusResponse

    init(
        service: SnapshotService, images: ImageService? = nil, conversions: ConversionService? = nil, reconciler: Reconciler,
        logger: Logger, status: @escaping @Sendable () throws -> StatusResponse
    ) {
        self.service = service
        self.images = images
        self.conversions = conversions
        self.reconciler = reconciler
        self.logger = logger
        self.status = status
    }

    /// Routes that wait on the network run as tasks, not on the blocking pool.
    func isAsync(_ request: APIRequest) -> Bool {
        let path = request.uri.split(separator: "?").first ?? ""
        return request.method == "POST" && (path == "/v1/images/pull" || path == "/v1/convert" || path == "/v1/images/index")
    }

    /// `POST /v1/images/pull`.
    func handleAsync(_ request: APIRequest) async -> APIResponse {
        await respond(request) {
            try Self.checkPrivilege(request, try Self.split(request.uri).0)
            if request.uri.hasPrefix("/v1/convert") {
                return try self.json(
                    try await self.requireConversions().convert(try self.decode(ConvertRequest.self, request)), status: 201)
            }
            guard let images = self.images else { throw APIError(.unimplemented, "images are not enabled in this daemon") }
            if request.uri.hasPrefix("/v1/images/index") {
                return try self.json(try await images.index(try self.decode(IndexRequest.self, request)), status: 201)
            }
            let body = try self.decode(PullRequest.self, request)
            let result = try await images.pull(body.reference)
            return try self.json(result, status: result.pulled ? 201 : 200)
        }
    }

    func handle(_ request: APIRequest) -> APIResponse {
        let started = monotonicNanoseconds()
        let response = Self.mapErrors(request, logger: logger) { try route(request) }
        log(request, response, started: started)
        return response
    }

    private func respond(_ request: APIRequest, _ body: @Sendable () async throws -> APIResponse) async -> APIResponse {
        let started = monotonicNanoseconds()
        let response: APIResponse
        do {
            response = try await body()
        } catch {
            response = Self.mapErrors(request, logger: logger) { throw error }
        }
        log(request, response, started: started)
        return response
    }

    private func log(_ request: APIRequest, _ response: APIResponse, started: UInt64) {
        logger.debug(
            "request",
            metadata: [
                "http.method": "\(request.method)", "http.uri": "\(request.uri)", "http.status": "\(response.status)",
                "http.duration_us": "\((monotonicNanoseconds() - started) / 1000)", "peer.uid": "\(request.peerUID)",
            ])
    }

    private static func mapErrors(_ request: APIRequest, logger: Logger, _ body: () throws -> APIResponse) -> APIResponse {
        let response: APIResponse
        do {
            response = try body()
        } catch let error as MethodNotAllowed {
            var answer = Self.errorResponse(
                .invalidArgument("method \(error.method) is not allowed on \(error.uri); use \(error.allowed.joined(separator: ", "))"))
            answer.status = 405
            answer.extraHeaders = [("Allow", error.allowed.joined(separator: ", "))]
            response = answer
        } catch let error as DecodingError {
            response = Self.errorResponse(.invalidArgument("malformed JSON body: \(Self.describe(error))"))
        } catch {
            if let classified = classifiedAPIError(error) { return errorResponse(classified) }
            logger.error(
                "request failed", metadata: ["http.method": "\(request.method)", "http.uri": "\(request.uri)", "error": "\(error)"])
            response = Self.errorResponse(APIError(.internal, "\(error)"))
        }
        return response
    }

    private func route(_ request: APIRequest) throws -> APIResponse {
        let (segments, query) = try Self.split(request.uri)
        let method = request.method
        try Self.checkPrivilege(request, segments)
        switch segments {
        case ["v1", "status"]:
            try allow(method, ["GET"], request)
            return try json(status())
        case ["v1", "snapshots"]:
            try allow(method, ["GET"], request)
            let filters = query.filter { $0.0 == "filter" }.map(\.1)
            return try json(ListResponse(snapshots: service.list(filters: filters)))
        case ["v1", "snapshots", "prepare"] where method == "POST", ["v1", "snapshots", "view"] where method == "POST":
            let body = try decode(PrepareRequest.self, request)
            let kind: SnapshotKind = segments[2] == "prepare" ? .active : .view
            if let image = body.image, !image.isEmpty, let reason = images?.frontEnd.traits.imageMountUnsupportedReason {
                throw SnapshotError.invalidImage(image: image, reason: reason)
            }
            let mounts = try service.create(kind: kind, key: body.key, parent: body.parent, labels: body.labels ?? [:], image: body.image)
            return try json(MountsResponse(mounts: mounts.map(Self.spec)), status: 201)
        case ["v1", "snapshots", "commit"] where method == "POST":
            let body = try decode(CommitRequest.self, request)
            try service.commit(name: body.name, key: body.key, labels: body.labels ?? [:])
            return try json(EmptyResponse(), status: 201)
        case ["v1", "unmount"]:
            try allow(method, ["POST"], request)
            try service.unmount(target: try decode(UnmountRequest.self, request).target)
            return try json(EmptyResponse())
        case ["metrics"]:
            try allow(method, ["GET"], request)
            var text = (images?.engine.metrics.prometheusText() ?? "") + (images?.engine.links.prometheusText() ?? "")
            if let images { text += images.frontEndMetrics() + (try images.cacheMetrics()) }
            return APIResponse(status: 200, body: Array(text.utf8), contentType: "text/plain; version=0.0.4")
        case ["v1", "images"]:
            try allow(method, ["GET"], request)
            return try json(ImagesResponse(images: try requireImages().list()))
        case ["v1", "pulls"]:
            try allow(method, ["GET"], request)
            return try json(PullsResponse(pulls: try requireImages().pullsInFlight()))
        case ["v1", "inspect"]:
            try allow(method, ["POST"], request)
            return try json(try requireConversions().inspect(try decode(InspectRequest.self, request)))
        case ["v1", "convert"]:
            throw MethodNotAllowed(method: method, uri: request.uri, allowed: ["POST"])
        case ["v1", "images", "pull"], ["v1", "images", "index"]:
            throw MethodNotAllowed(method: method, uri: request.uri, allowed: ["POST"])
        case ["v1", "images", "prefetch"]:
            try allow(method, ["POST"], request)
            return try json(try requireImages().prefetch(try decode(PrefetchRequest.self, request)), status: 202)
        case ["v1", "images", "pin"]:
            try allow(method, ["POST"], request)
            let body = try decode(PinRequest.self, request)
            return try json(try requireImages().pin(body.reference, pinned: body.pinned))
        case ["v1", "usage"]:
            try allow(method, ["GET"], request)
            return try json(try requireImages().usage())
        case ["v1", "images", "remove"]:
            try allow(method, ["POST"], request)
            try requireImages().remove(try decode(PullRequest.self, request).reference)
            return try json(EmptyResponse())
        case ["v1", "cleanup"]:
            try allow(method, ["POST"], request)
            // Snapshot directories the catalog does not know, then the image store's garbage.
            return try json(CleanupResponse(removed: try reconciler.cleanup() + (try images?.collectGarbage() ?? [])))
        default:
            break
        }
        guard segments.count >= 3, segments[0] == "v1", segments[1] == "snapshots" else {
            throw APIError.notFound("no route \(method) \(request.uri); see docs/api.md")
        }
        let key = segments[2]
        try SnapshotNames.validate(key: key)
        switch Array(segments.dropFirst(3)) {
        case []:
            try allow(method, ["GET", "PATCH", "DELETE"], request)
            switch method {
            case "GET": return try json(InfoResponse(info: service.stat(key: key)))
            case "PATCH":
                let body = try decode(UpdateRequest.self, request)
                return try json(InfoResponse(info: service.update(key: key, labels: body.labels, fieldpaths: body.fieldpaths ?? [])))
            default:
                try service.remove(key: key)
                return try json(EmptyResponse())
            }
        case ["mounts"]:
            try allow(method, ["GET"], request)
            return try json(MountsResponse(mounts: service.mounts(key: key).map(Self.spec)))
        case ["usage"]:
            try allow(method, ["GET"], request)
            return try json(try images?.usage(ofSnapshot: key, in: service) ?? service.usage(key: key))
        case ["mount"]:
            try allow(method, ["POST"], request)
            let body = try decode(MountRequest.self, request)
            let mounts = try service.mount(key: key, target: body.target)
            return try json(MountedResponse(target: try SnapshotService.normalize(target: body.target), mounts: mounts.map(Self.spec)))
        default:
            throw APIError.notFound("no route \(method) \(request.uri); see docs/api.md")
        }
    }

    // MARK: - Helpers

    private func requireConversions() throws -> ConversionService {
        guard let conversions else { throw APIError(.unimplemented, "conversion is not enabled in this daemon") }
        return conversions
    }

    private func requireImages() throws -> ImageService {
        guard let images else { throw APIError(.unimplemented, "images are not enabled in this daemon") }
        return images
    }

    /// Refuses a non-root peer a call that names host paths (see `namesHostPaths`).
    static func checkPrivilege(_ request: APIRequest, _ segments: [String]) throws {
        guard request.peerUID != 0, namesHostPaths(segments) else { return }
        throw APIError(
            .permissionDenied,
            "uid \(request.peerUID) may not \(segments.last ?? "do this"): calls that name host paths (mount targets, layout directories) are root-only, since the daemon acts on them as root; see docs/ARCHITECTURE.md, Hardening"
        )
    }

    /// The privilege model: a non-root uid in `api.allowed_uids` may pull images and manage snapshots, but
    /// not make the root daemon act on paths it names (a mount at a target of its choosing, a layout read or
    /// written at a directory of its choosing), which would make that uid root-equivalent.
    static func namesHostPaths(_ segments: [String]) -> Bool {
        switch segments {
        case ["v1", "unmount"], ["v1", "convert"], ["v1", "inspect"]: return true
        default: return segments.count == 4 && segments[0] == "v1" && segments[1] == "snapshots" && segments[3] == "mount"
        }
    }

    static func spec(_ mount: KernelMount) -> MountSpec {
        MountSpec(type: mount.type, source: mount.source, options: mount.options)
    }

    private func allow(_ method: String, _ allowed: [String], _ request: APIRequest) throws {
        guard allowed.contains(method) else {
            throw MethodNotAllowed(method: method, uri: request.uri, allowed: allowed)
        }
    }

    func decode<T: Decodable>(_ type: T.Type, _ request: APIRequest) throws -> T {
        guard !request.body.isEmpty else { throw APIError.invalidArgument("\(request.method) \(request.uri) needs a JSON body") }
        return try JSONDecoder().decode(T.self, from: Data(request.body))
    }

    func json(_ value: some Encodable, status: Int = 200) throws -> APIResponse {
        APIResponse(status: status, body: Array(try Self.encoder.encode(value)))
    }

    private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    static func errorResponse(_ error: APIError) -> APIResponse {
        let body = (try? encoder.encode(ErrorEnvelope(error: error))).map(Array.init) ?? Array("{}".utf8)
        return APIResponse(status: error.kind.httpStatus, body: body)
    }

    /// Splits a request target into percent-decoded path segments and query pairs.
    static func split(_ uri: String) throws -> ([String], [(String, String)]) {
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let segments = try parts[0].split(separator: "/").map { try percentDecode(String($0)) }
        var query: [(String, String)] = []
        if parts.count > 1 {
            for pair in parts[1].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                query.append((try percentDecode(String(kv[0])), kv.count > 1 ? try percentDecode(String(kv[1])) : ""))
            }
        }
        return (segments, query)
    }

    static func percentDecode(_ text: String) throws -> String {
        guard text.contains("%") || text.contains("+") else { return text }
        var out: [UInt8] = []
        let bytes = Array(text.utf8)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%") {
                guard i + 2 < bytes.count,
                    let value = UInt8(String(decoding: bytes[(i + 1)...(i + 2)], as: UTF8.self), radix: 16)
                else { throw APIError.invalidArgument("bad percent-encoding in \(text.debugDescription)") }
                out.append(value)
                i += 3
            } else {
                out.append(bytes[i] == UInt8(ascii: "+") ? UInt8(ascii: " ") : bytes[i])
                i += 1
            }
        }
        guard let decoded = String(validating: out, as: UTF8.self) else {
            throw APIError.invalidArgument("percent-encoding in \(text.debugDescription) is not UTF-8")
        }
        return decoded
    }

    private static func describe(_ error: DecodingError) -> String {
        switch error {
        case .dataCorrupted(let context): return context.debugDescription
        case .keyNotFound(let key, _): return "missing field \(key.stringValue)"
        case .typeMismatch(let type, let context):
            return "field \(context.codingPath.map(\.stringValue).joined(separator: ".")) must be \(type)"
        case .valueNotFound(_, let context):
            return "field \(context.codingPath.map(\.stringValue).joined(separator: ".")) must not be null"
        @unknown default: return "\(error)"
        }
    }
}

/// 405 with an Allow header.
struct MethodNotAllowed: Error {
    let method: String
    let uri: String
    let allowed: [String]
}
