/// The nydus bootstrap layer: a gzip tar holding `image/` and `image/image.boot`, as nydus's converters
/// push it. Written by hand (ustar, fixed zero mtime and ids) so the same bootstrap gives the same bytes.
enum BootstrapLayer {
    static let directory = "image"
    static let fileName = "image/image.boot"

    /// The uncompressed tar.
    static func tar(bootstrap: [UInt8]) -> [UInt8] {
        var out = header(name: directory + "/", typeflag: UInt8(ascii: "5"), mode: 0o755, size: 0)
        out += header(name: fileName, typeflag: UInt8(ascii: "0"), mode: 0o644, size: bootstrap.count)
        out += bootstrap
        out += [UInt8](repeating: 0, count: (512 - bootstrap.count % 512) % 512)
        return out + [UInt8](repeating: 0, count: 1024)
    }

    private static func header(name: String, typeflag: UInt8, mode: Int, size: Int) -> [UInt8] {
        var block = [UInt8](repeating: 0, count: 512)
        func put(_ text: String, _ offset: Int) {
            for (index, byte) in text.utf8.enumerated() { block[offset + index] = byte }
        }
        func octal(_ value: Int, _ offset: Int, _ width: Int) {
            let text = String(value, radix: 8)
            put(String(repeating: "0", count: max(0, width - 1 - text.count)) + text, offset)
        }
        put(name, 0)
        octal(mode, 100, 8)
        octal(0, 108, 8)
        octal(0, 116, 8)
        octal(size, 124, 12)
        octal(0, 136, 12)
        block[156] = typeflag
        put("ustar", 257)
        put("00", 263)
        for index in 148..<156 { block[index] = UInt8(ascii: " ") }
        octal(block.reduce(0) { $0 + Int($1) }, 148, 7)
        return block
    }
}
