import Foundation
import OCI

/// The benchmark image as an OCI layout (tag `v1`, one uncompressed tar layer): busybox, the start-up set
/// `/app/start/fNN` (1 MiB each) and `/data/fNNN` (2 MiB each) up to the image size. All file data is
/// pseudo-random, so neither gzip nor the nydus chunk compressor can shrink it.
struct LargeImage {
    let layout: String

    init(directory: String, imageMiB: Int, startupFiles: Int) throws {
        let rootfs = directory + "/rootfs"
        layout = directory + "/layout"
        let fm = FileManager.default
        for sub in ["bin", "etc", "tmp", "app/start", "data"] {
            try fm.createDirectory(atPath: rootfs + "/" + sub, withIntermediateDirectories: true)
        }
        try fm.copyItem(atPath: "/bin/busybox", toPath: rootfs + "/bin/busybox")
        for applet in ["sh", "cat", "echo"] {
            try fm.createSymbolicLink(atPath: rootfs + "/bin/" + applet, withDestinationPath: "busybox")
        }
        var generator = SplitMix(seed: 0x5eed)
        for i in 0..<startupFiles {
            try generator.bytes(1 << 20).write(to: URL(fileURLWithPath: rootfs + "/app/start/f\(i)"))
        }
        for i in 0..<max(0, (imageMiB - startupFiles) / 2) {
            try generator.bytes(2 << 20).write(to: URL(fileURLWithPath: rootfs + "/data/f\(i)"))
        }
        let tarPath = directory + "/layer.tar"
        // Entries in name order, as image builders write layers (BuildKit and docker walk directories
        // lexically); GNU tar's default is readdir order, which no real image has.
        try Tools.run("/bin/tar", ["--sort=name", "--numeric-owner", "--owner=0", "--group=0", "-C", rootfs, "-cf", tarPath, "."])
        let layerDigest = try Self.sha256(file: tarPath)
        let layerSize = (try fm.attributesOfItem(atPath: tarPath)[.size] as? NSNumber)?.intValue ?? 0
        let config = Data(
            """
            {"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]},\
            "rootfs":{"type":"layers","diff_ids":["\(layerDigest)"]}}
            """.utf8)
        let configDigest = Digest.sha256(of: Array(config))
        let manifest = Data(
            """
            {"schemaVersion":2,"mediaType":"\(MediaType.ociManifest)",\
            "config":{"mediaType":"\(MediaType.ociConfig)","digest":"\(configDigest)","size":\(config.count)},\
            "layers":[{"mediaType":"\(MediaType.ociLayer)","digest":"\(layerDigest)","size":\(layerSize)}]}
            """.utf8)
        let manifestDigest = Digest.sha256(of: Array(manifest))
        try fm.createDirectory(atPath: layout + "/blobs/sha256", withIntermediateDirectories: true)
        try fm.moveItem(atPath: tarPath, toPath: layout + "/blobs/sha256/" + layerDigest.encoded)
        try config.write(to: URL(fileURLWithPath: layout + "/blobs/sha256/" + configDigest.encoded))
        try manifest.write(to: URL(fileURLWithPath: layout + "/blobs/sha256/" + manifestDigest.encoded))
        try Data(#"{"imageLayoutVersion":"1.0.0"}"#.utf8).write(to: URL(fileURLWithPath: layout + "/oci-layout"))
        try Data(
            """
            {"schemaVersion":2,"manifests":[{"mediaType":"\(MediaType.ociManifest)","digest":"\(manifestDigest)",\
            "size":\(manifest.count),"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}
            """.utf8
        ).write(to: URL(fileURLWithPath: layout + "/index.json"))
        try? fm.removeItem(atPath: rootfs)
    }

    /// sha256 of a file, through sha256sum (streams; the layer is hundreds of MiB).
    static func sha256(file: String) throws -> Digest {
        let output = try Tools.run("/usr/bin/sha256sum", [file])
        return try Digest(parsing: "sha256:" + String(output.prefix(64)))
    }
}

/// A fast deterministic generator for incompressible test data.
struct SplitMix {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func bytes(_ count: Int) -> Data {
        var data = Data(count: count)
        data.withUnsafeMutableBytes { raw in
            let words = raw.bindMemory(to: UInt64.self)
            for i in 0..<words.count { words[i] = next() }
        }
        return data
    }
}
