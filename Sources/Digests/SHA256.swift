import CCrypto

/// Streaming SHA-256 (FIPS 180-4) through OpenSSL's libcrypto, which uses the CPU's SHA extensions where
/// present: every blob byte the service downloads or builds is hashed, so this is on the hot path.
///
/// A value type over one digest context: use each hasher from one task, and do not copy it in the middle of
/// a stream (copies share the context).
public struct SHA256: Sendable {
    public static let digestByteCount = 32
    public static let blockByteCount = 64

    private let context: Context

    public init() {
        context = Context()
    }

    public static func hash(_ bytes: some Collection<UInt8>) -> [UInt8] {
        var hasher = SHA256()
        hasher.update(bytes)
        return hasher.finalize()
    }

    public mutating func update(_ bytes: some Collection<UInt8>) {
        let done = bytes.withContiguousStorageIfAvailable { update(UnsafeRawBufferPointer($0)) }
        if done == nil { Array(bytes).withUnsafeBytes { update($0) } }
    }

    public mutating func update(_ raw: UnsafeRawBufferPointer) {
        guard raw.count > 0 else { return }
        EVP_DigestUpdate(context.pointer, raw.baseAddress, raw.count)
    }

    /// The digest; the hasher is reset afterwards.
    public mutating func finalize() -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: Self.digestByteCount)
        var length: UInt32 = 0
        EVP_DigestFinal_ex(context.pointer, &digest, &length)
        EVP_DigestInit_ex(context.pointer, EVP_sha256(), nil)
        return digest
    }

    /// The digest of everything hashed so far, leaving the hasher running (the context is copied).
    public func peek() -> [UInt8] {
        var copy = SHA256()
        EVP_MD_CTX_copy_ex(copy.context.pointer, context.pointer)
        return copy.finalize()
    }

    /// Owns the EVP context.
    private final class Context: @unchecked Sendable {
        // @unchecked: the context is only touched through the owning hasher, which one task uses at a time.
        let pointer: OpaquePointer

        init() {
            guard let context = EVP_MD_CTX_new() else { fatalError("libcrypto could not allocate a digest context (out of memory)") }
            EVP_DigestInit_ex(context, EVP_sha256(), nil)
            pointer = context
        }

        deinit { EVP_MD_CTX_free(pointer) }
    }
}
