import Synchronization

/// Credentials learned at run time, per registry: those Kubernetes hands to containerd in a CRI pull
/// (captured by the CRI image-service proxy). A registry's latest credentials replace its earlier ones; they
/// are sent only to the registry's own endpoint, after the service config's and before `config.json`'s.
public final class PullCredentialStore: Sendable {
    private let byRegistry = Mutex<[String: RegistryCredentials]>([:])

    public init() {}

    public func set(_ credentials: RegistryCredentials, for registry: String) {
        byRegistry.withLock { $0[registry] = credentials }
    }

    public func credentials(for registry: String) -> RegistryCredentials? {
        byRegistry.withLock { $0[registry] }
    }
}
