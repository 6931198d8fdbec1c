/// `withUnsafeBytes` for typed-throwing bodies: the standard library's version rethrows untyped errors.
@inline(__always)
func withBytes<R>(_ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) throws(BuildError) -> R) throws(BuildError) -> R {
    let result: Result<R, BuildError> = bytes.withUnsafeBytes { raw in
        Result { () throws(BuildError) in try body(raw) }
    }
    return try result.get()
}
