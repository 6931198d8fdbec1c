import Foundation
import LinuxKernel
import RAFS
import RAFSBuilder
import TestFixtures
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// One entry of a test layer, as written into its tar.
package struct LayerEntrySpec {
    package enum Kind { case file, directory, symlink, hardlink, characterDevice, blockDevice, fifo }
    package var path: String
    package var kind: Kind
    package var mode: UInt32 = 0o644
    package var uid: UInt32 = 0
    package var gid: UInt32 = 0
    package var mtime: Int64 = 1_700_000_000
    package var data: [UInt8] = []
    package var link: String = ""
    package var major: UInt32 = 0
    package var minor: UInt32 = 0
    package var xattrs: [String: [UInt8]] = [:]

    package init(
        path: String, kind: Kind, mode: UInt32 = 0o644, uid: UInt32 = 0, gid: UInt32 = 0, mtime: Int64 = 1_700_000_000,
        data: [UInt8] = [], link: String = "", major: UInt32 = 0, minor: UInt32 = 0, xattrs: [String: [UInt8]] = [:]
    ) {
        self.path = path
        self.kind = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime = mtime
        self.data = data
        self.link = link
        self.major = major
        self.minor = minor
        self.xattrs = xattrs
    }

    package static func file(
        _ path: String, _ data: [UInt8], mode: UInt32 = 0o644, uid: UInt32 = 0, gid: UInt32 = 0, mtime: Int64 = 1_700_000_000
    )
        -> Self
    {
        LayerEntrySpec(path: path, kind: .file, mode: mode, uid: uid, gid: gid, mtime: mtime, data: data)
    }
    package static func dir(_ path: String, mode: UInt32 = 0o755, mtime: Int64 = 1_700_000_000) -> Self {
        LayerEntrySpec(path: path, kind: .directory, mode: mode, mtime: mtime)
    }
    package static func symlink(_ path: String, _ target: String) -> Self {
        LayerEntrySpec(path: path, kind: .symlink, mode: 0o777, link: target)
    }
    package static func hardlink(_ path: String, _ target: String) -> Self { LayerEntrySpec(path: path, kind: .hardlink, link: target) }
    package static func whiteout(_ path: String) -> Self { .file(path, []) }
}

/// Writes ustar archives with PAX records (long names, xattrs, big ids), for test layers.
package enum TestTar {
    package static func archive(_ entries: [LayerEntrySpec]) -> [UInt8] {
        var out: [UInt8] = []
        for entry in entries {
            var pax: [(String, [UInt8])] = []
            let name = entry.kind == .directory ? entry.path + "/" : entry.path
            if name.utf8.count > 99 { pax.append(("path", Array(name.utf8))) }
            if entry.link.utf8.count > 99 { pax.append(("linkpath", Array(entry.link.utf8))) }
            if entry.uid > 0o7777777 { pax.append(("uid", Array(String(entry.uid).utf8))) }
            for (key, value) in entry.xattrs.sorted(by: { $0.key < $1.key }) { pax.append(("SCHILY.xattr." + key, value)) }
            if !pax.isEmpty {
                var body: [UInt8] = []
                for (key, value) in pax {
                    let payload = Array(" \(key)=".utf8) + value + [0x0A]
                    var length = payload.count + 1
                    while String(length).utf8.count + payload.count != length { length = String(length).utf8.count + payload.count }
                    body += Array(String(length).utf8) + payload
                }
                out += header(name: "PaxHeaders/x", typeflag: UInt8(ascii: "x"), size: body.count, entry: entry)
                out += padded(body)
            }
            let typeflag: UInt8
            switch entry.kind {
            case .file: typeflag = UInt8(ascii: "0")
            case .directory: typeflag = UInt8(ascii: "5")
            case .symlink: typeflag = UInt8(ascii: "2")
            case .hardlink: typeflag = UInt8(ascii: "1")
            case .characterDevice: typeflag = UInt8(ascii: "3")
            case .blockDevice: typeflag = UInt8(ascii: "4")
            case .fifo: typeflag = UInt8(ascii: "6")
            }
            let size = entry.kind == .file ? entry.data.count : 0
            out += header(name: String(name.suffix(99)), typeflag: typeflag, size: size, entry: entry)
            if size > 0 { out += padded(entry.data) }
        }
        return out + [UInt8](repeating: 0, count: 1024)
    }

    package static func padded(_ bytes: [UInt8]) -> [UInt8] {
        bytes + [UInt8](repeating: 0, count: (512 - bytes.count % 512) % 512)
    }

    package static func header(name: String, typeflag: UInt8, size: Int, entry: LayerEntrySpec) -> [UInt8] {
        var block = [UInt8](repeating: 0, count: 512)
        func put(_ text: String, _ offset: Int, _ length: Int) {
            for (index, byte) in text.utf8.prefix(length).enumerated() { block[offset + index] = byte }
        }
        func octal(_ value: Int64, _ offset: Int, _ length: Int) {
            let text = String(value, radix: 8)
            put(String(repeating: "0", count: max(0, length - 1 - text.count)) + text, offset, length - 1)
        }
        put(name, 0, 100)
        octal(Int64(entry.mode), 100, 8)
        octal(Int64(min(entry.uid, 0o7777777)), 108, 8)
        octal(Int64(entry.gid), 116, 8)
        octal(Int64(size), 124, 12)
        octal(entry.mtime, 136, 12)
        block[156] = typeflag
        put(String(entry.link.prefix(99)), 157, 100)
        put("ustar", 257, 6)
        put("00", 263, 2)
        octal(Int64(entry.major), 329, 8)
        octal(Int64(entry.minor), 337, 8)
        for index in 148..<156 { block[index] = UInt8(ascii: " ") }
        let sum = block.reduce(0) { $0 + Int64($1) }
        octal(sum, 148, 7)
        return block
    }
}

/// The expected merged view, computed independently of the builder over a flat path map.
package struct ExpectedTree {
    package struct Node {
        package var spec: LayerEntrySpec
        package var layer: Int
    }
    package var nodes: [String: Node] = [:]

    package init(layers: [[LayerEntrySpec]]) {
        for (layer, entries) in layers.enumerated() {
            for entry in entries {
                let name = (entry.path as NSString).lastPathComponent
                let parent = (entry.path as NSString).deletingLastPathComponent
                let prefix = parent.isEmpty ? "" : parent + "/"
                if name == ".wh..wh..opq" {
                    for (path, node) in nodes where path.hasPrefix(prefix) && path != parent && node.layer < layer { nodes[path] = nil }
                    continue
                }
                if name.hasPrefix(".wh.") {
                    let victim = prefix + name.dropFirst(4)
                    for (path, node) in nodes where (path == victim || path.hasPrefix(victim + "/")) && node.layer < layer {
                        nodes[path] = nil
                    }
                    continue
                }
                if let old = nodes[entry.path], !(old.spec.kind == .directory && entry.kind == .directory) {
                    for path in nodes.keys where path.hasPrefix(entry.path + "/") { nodes[path] = nil }
                }
                var spec = entry
                if entry.kind == .hardlink, let target = nodes[entry.link] {
                    spec = target.spec
                    spec.path = entry.path
                    spec.link = entry.link
                }
                nodes[entry.path] = Node(spec: spec, layer: layer)
            }
        }
    }
}

package enum BuilderFixtures {
    /// Writes each layer's tar (plain, gzip or zstd by `compressions`) and returns the paths.
    package static func writeLayers(_ layers: [[LayerEntrySpec]], in directory: String, compressions: [String] = []) throws -> [String] {
        var paths: [String] = []
        for (index, layer) in layers.enumerated() {
            let path = directory + "/layer\(index).tar"
            try ImageFixtures.write(TestTar.archive(layer), to: path)
            let compression = index < compressions.count ? compressions[index] : "none"
            switch compression {
            case "gzip":
                try #require(try ImageFixtures.run("/bin/gzip", ["-n", "-f", path]).status == 0)
                paths.append(path + ".gz")
            case "zstd":
                try #require(try ImageFixtures.run("/usr/bin/zstd", ["-q", "-f", "--rm", path]).status == 0)
                paths.append(path + ".zst")
            default:
                paths.append(path)
            }
        }
        return paths
    }

    /// Materializes every blob of the bootstrap (device-table order) into `directory`; returns their paths.
    package static func materialize(result: BuildResult, into directory: String) throws -> [String] {
        let image = try ErofsImage(path: result.bootstrapPath)
        var paths: [String] = []
        for index in image.blobs.indices {
            let blob = try RafsBlob(image: image, index: index, directory: (result.bootstrapPath as NSString).deletingLastPathComponent)
            let path = directory + "/" + image.blobs[index].blobID + ".raw"
            try blob.materialize(to: path)
            paths.append(path)
        }
        return paths
    }

    /// Mounts the bootstrap file-backed with one `device=` per materialized blob, runs `body`, unmounts.
    package static func withMount<T>(bootstrap: String, devices: [String], at mountPoint: String, _ body: () throws -> T) throws -> T {
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let options = ["ro"] + devices.map { "device=\($0)" }
        try Mounter.mount(KernelMount(type: "erofs", source: bootstrap, options: options), at: mountPoint)
        defer { try? Mounter.unmount(mountPoint, detach: true) }
        return try body()
    }

    /// Extended attributes of every entry under `root` (relative paths), read through the kernel with one
    /// `getfattr -R` run (the test target has no binding for llistxattr).
    package static func xattrs(under root: String) throws -> [String: [String: [UInt8]]] {
        let tool = try #require(ImageFixtures.tool("getfattr"), "getfattr (apt-get install attr)")
        let result = try ImageFixtures.run(tool, ["-R", "-h", "-d", "-m", "-", "-e", "hex", "--absolute-names", root])
        var all: [String: [String: [UInt8]]] = [:]
        var current = ""
        for line in result.output.split(separator: "\n") {
            if line.hasPrefix("# file: ") {
                current = String(line.dropFirst("# file: ".count).dropFirst(root.count + 1))
                all[current] = [:]
            } else if let equals = line.firstIndex(of: "=") {
                let hex = line[line.index(after: equals)...].dropFirst(2)
                var value: [UInt8] = []
                var index = hex.startIndex
                while index < hex.endIndex {
                    let next = hex.index(index, offsetBy: 2)
                    value.append(UInt8(hex[index..<next], radix: 16) ?? 0)
                    index = next
                }
                all[current, default: [:]][String(line[..<equals])] = value
            }
        }
        return all
    }

    /// Every path under `root` (relative, no leading slash), via the kernel.
    package static func listing(_ root: String) -> Set<String> {
        var result: Set<String> = []
        guard let walker = FileManager.default.enumerator(atPath: root) else { return result }
        while let path = walker.nextObject() as? String { result.insert(path) }
        return result
    }
}
