import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The registry credentials of one CRI pull (Kubernetes' `AuthConfig`: kubelet fills it from the pod's image
/// pull secrets), with the image they were given for.
public struct CRICredentials: Sendable, Equatable {
    public var image: String
    public var username: String
    public var password: String
    /// base64 of `username:password`, when sent that way.
    public var auth: String
    public var serverAddress: String
    public var identityToken: String
    public var registryToken: String

    public init(
        image: String, username: String = "", password: String = "", auth: String = "", serverAddress: String = "",
        identityToken: String = "", registryToken: String = ""
    ) {
        self.image = image
        self.username = username
        self.password = password
        self.auth = auth
        self.serverAddress = serverAddress
        self.identityToken = identityToken
        self.registryToken = registryToken
    }

    /// Reads `runtime.v1.PullImageRequest` (`ImageSpec image = 1` with `string image = 1`; `AuthConfig auth = 2`
    /// with username 1, password 2, auth 3, server_address 4, identity_token 5, registry_token 6) from its
    /// protobuf encoding; nil when it carries no credentials. Unknown fields are skipped, so newer CRI
    /// versions' requests read too; a malformed message is nil (the upstream answers it).
    public init?(pullImageRequest bytes: [UInt8]) {
        guard let fields = ProtobufFields(bytes), let spec = fields.bytes(1).flatMap(ProtobufFields.init),
            let image = spec.string(1), let auth = fields.bytes(2).flatMap(ProtobufFields.init)
        else { return nil }
        self.init(
            image: image, username: auth.string(1) ?? "", password: auth.string(2) ?? "", auth: auth.string(3) ?? "",
            serverAddress: auth.string(4) ?? "", identityToken: auth.string(5) ?? "", registryToken: auth.string(6) ?? "")
        guard !(username.isEmpty && password.isEmpty && self.auth.isEmpty && identityToken.isEmpty && registryToken.isEmpty) else {
            return nil
        }
    }
}

/// The length-delimited and varint fields of one protobuf message, by field number (the last occurrence wins,
/// as for a singular field).
struct ProtobufFields {
    private var delimited: [Int: [UInt8]] = [:]

    init?(_ bytes: [UInt8]) {
        var at = 0
        func varint() -> UInt64? {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while at < bytes.count, shift < 64 {
                let byte = bytes[at]
                at += 1
                value |= UInt64(byte & 0x7f) << shift
                if byte & 0x80 == 0 { return value }
                shift += 7
            }
            return nil
        }
        while at < bytes.count {
            guard let key = varint(), key >> 3 > 0, key >> 3 <= UInt64(Int32.max) else { return nil }
            switch key & 7 {
            case 0: guard varint() != nil else { return nil }
            case 1: at += 8
            case 5: at += 4
            case 2:
                guard let length = varint(), length <= UInt64(bytes.count - at) else { return nil }
                delimited[Int(key >> 3)] = Array(bytes[at..<(at + Int(length))])
                at += Int(length)
            default: return nil
            }
            guard at <= bytes.count else { return nil }
        }
    }

    func bytes(_ field: Int) -> [UInt8]? { delimited[field] }
    func string(_ field: Int) -> String? { delimited[field].map { String(decoding: $0, as: UTF8.self) } }
}

/// Kubernetes' image service, proxied: kubelet's `--image-service-endpoint` points at this socket, every
/// `runtime.v1.ImageService` call is forwarded unchanged to containerd's CRI socket, and the credentials of
/// each `PullImage` are handed to `onCredentials` first. That is how images pulled with image pull secrets
/// reach a snapshotter that fetches lazily: containerd 1.6 passes them to nobody (stargz's and nydus's
/// snapshotters offer the same proxy).
public struct CRIImageProxy: Service {
    /// The service's methods, all unary (k8s.io/cri-api runtime/v1 api.proto).
    public static let service = "runtime.v1.ImageService"
    public static let methods = ["ListImages", "ImageStatus", "PullImage", "RemoveImage", "ImageFsInfo"]

    let socketPath: String
    let upstreamPath: String
    let logger: Logger
    let onCredentials: @Sendable (CRICredentials) -> Void
    let onListening: @Sendable () -> Void

    public init(
        socketPath: String, upstreamPath: String, logger: Logger, onCredentials: @escaping @Sendable (CRICredentials) -> Void,
        onListening: @escaping @Sendable () -> Void = {}
    ) {
        self.socketPath = socketPath
        self.upstreamPath = upstreamPath
        self.logger = logger
        self.onCredentials = onCredentials
        self.onListening = onListening
    }

    public func run() async throws {
        try ContainerdProxyServer.makeParentDirectory(of: socketPath)
        let upstream = GRPCClient(
            transport: try HTTP2ClientTransport.Posix(target: .unixDomainSocket(path: upstreamPath), transportSecurity: .plaintext))
        let transport = HTTP2ServerTransport.Posix(address: .unixDomainSocket(path: socketPath), transportSecurity: .plaintext)
        let forwarder = Forwarder(upstream: upstream, logger: logger, onCredentials: onCredentials)
        let server = GRPCServer(transport: transport, services: [forwarder])
        let (socketPath, logger, onListening) = (self.socketPath, self.logger, self.onListening)
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await upstream.runConnections() }
                group.addTask {
                    try await server.serve()
                    upstream.beginGracefulShutdown()
                }
                group.addTask {
                    guard (try? await transport.listeningAddress) != nil else { return }
                    // kubelet runs as root; nobody else may pull through it.
                    _ = chmod(socketPath, 0o600)
                    logger.info("CRI image service proxy listening", metadata: ["cri.socket": "\(socketPath)"])
                    onListening()
                }
            }
        } onGracefulShutdown: {
            server.beginGracefulShutdown()
        }
    }

    /// Forwards each method's request bytes as they are and returns the upstream's answer (its error too).
    struct Forwarder: RegistrableRPCService {
        let upstream: GRPCClient<HTTP2ClientTransport.Posix>
        let logger: Logger
        let onCredentials: @Sendable (CRICredentials) -> Void

        /// The caller's own metadata; the transport's headers (content type, encodings, user agent, gRPC's
        /// reserved keys) are the forwarding call's own.
        static func forwardable(_ metadata: Metadata) -> Metadata {
            var kept = Metadata()
            for (key, value) in metadata {
                let lower = key.lowercased()
                guard !lower.hasPrefix(":"), !lower.hasPrefix("grpc-"), !["content-type", "te", "user-agent"].contains(lower) else {
                    continue
                }
                switch value {
                case .string(let text): kept.addString(text, forKey: key)
                case .binary(let bytes): kept.addBinary(bytes, forKey: key)
                }
            }
            return kept
        }

        func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
            for method in CRIImageProxy.methods {
                let descriptor = MethodDescriptor(fullyQualifiedService: CRIImageProxy.service, method: method)
                router.registerHandler(forMethod: descriptor, deserializer: RawBytes(), serializer: RawBytes()) { request, context in
                    let single = try await ServerRequest(stream: request)
                    if method == "PullImage", let credentials = CRICredentials(pullImageRequest: single.message) {
                        onCredentials(credentials)
                    }
                    let upstream = self.upstream
                    // containerd may start after the daemon, or restart: calls wait for its socket rather than fail
                    // at once (kubelet's own deadline still bounds them).
                    var options = CallOptions.defaults
                    options.waitForReady = true
                    let response = try await upstream.unary(
                        request: ClientRequest(message: single.message, metadata: Self.forwardable(single.metadata)),
                        descriptor: descriptor,
                        serializer: RawBytes(), deserializer: RawBytes(), options: options
                    ) { response -> ServerResponse<[UInt8]> in
                        switch response.accepted {
                        case .success(let contents):
                            switch contents.message {
                            case .success(let message):
                                return ServerResponse(message: message)
                            case .failure(let error):
                                return ServerResponse(error: error)
                            }
                        case .failure(let error):
                            return ServerResponse(error: error)
                        }
                    }
                    return StreamingServerResponse(single: response)
                }
            }
        }
    }

    /// Messages as their encoded bytes.
    struct RawBytes: MessageSerializer, MessageDeserializer {
        typealias Message = [UInt8]
        func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes { Bytes(message) }
        func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> [UInt8] {
            serializedMessageBytes.withUnsafeBytes { Array($0) }
        }
    }
}
