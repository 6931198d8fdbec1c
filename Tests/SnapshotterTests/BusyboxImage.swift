import Foundation
import LinuxKernel
import OCI
import TestSupport

/// A runnable image for containerd tests: one uncompressed tar layer holding a static busybox
/// (`/bin/sh`, `cat`, `echo`, ... as symlinks), `/etc/hello.txt`, and any extra files, in an OCI
/// layout tagged `tag`.
struct BusyboxImage {
    static let busybox = "/bin/busybox"
    static let hello = "hello from the image layer"

    /// Debian's busybox-static (scripts/setup.sh): a static binary, so the rootfs needs nothing else.
    static var available: Bool { FileManager.default.isExecutableFile(atPath: busybox) }

    let layout: String
    let tag: String
    /// The layer's diff ID, which is also the chain ID of a one-layer image.
    let diffID: String
    /// Bytes of every blob in the layout (layer, config, manifest).
    let totalBytes: Int64

    init(directory: String, tag: String = "v1", extraFiles: [String: [UInt8]] = [:]) throws {
        layout = directory + "/layout"
        self.tag = tag
        let rootfs = directory + "/rootfs"
        let fm = FileManager.default
        try fm.createDirectory(atPath: rootfs + "/bin", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: rootfs + "/etc", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: rootfs + "/tmp", withIntermediateDirectories: true)
        try fm.copyItem(atPath: Self.busybox, toPath: rootfs + "/bin/busybox")
        for applet in ["sh", "cat", "echo", "ls", "sleep", "head", "wc", "md5sum"] {
            try fm.createSymbolicLink(atPath: rootfs + "/bin/" + applet, withDestinationPath: "busybox")
        }
        try Data((Self.hello + "\n").utf8).write(to: URL(fileURLWithPath: rootfs + "/etc/hello.txt"))
        for (path, bytes) in extraFiles {
            let full = rootfs + "/" + path
            try fm.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data(bytes).write(to: URL(fileURLWithPath: full))
        }
        let tarPath = directory + "/layer.tar"
        let tar = try runCommand("/bin/tar", ["--numeric-owner", "--owner=0", "--group=0", "-C", rootfs, "-cf", tarPath, "."])
        guard tar.status == 0 else { throw ContainerdHarness.HarnessFailure("tar failed: \(tar.output)") }
        let layer = Array(try Data(contentsOf: URL(fileURLWithPath: tarPath)))
        let layerDigest = Digest.sha256(of: layer)
        diffID = layerDigest.description
        let config = Array(
            """
            {"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]},\
            "rootfs":{"type":"layers","diff_ids":["\(layerDigest)"]}}
            """.utf8)
        let configDigest = Digest.sha256(of: config)
        let manifest = Array(
            """
            {"schemaVersion":2,"mediaType":"\(MediaType.ociManifest)",\
            "config":{"mediaType":"\(MediaType.ociConfig)","digest":"\(configDigest)","size":\(config.count)},\
            "layers":[{"mediaType":"\(MediaType.ociLayer)","digest":"\(layerDigest)","size":\(layer.count)}]}
            """.utf8)
        let manifestDigest = Digest.sha256(of: manifest)
        try fm.createDirectory(atPath: layout + "/blobs/sha256", withIntermediateDirectories: true)
        for (digest, bytes) in [(layerDigest, layer), (configDigest, config), (manifestDigest, manifest)] {
            try Data(bytes).write(to: URL(fileURLWithPath: layout + "/blobs/sha256/" + digest.encoded))
        }
        totalBytes = Int64(layer.count + config.count + manifest.count)
        try Data(#"{"imageLayoutVersion":"1.0.0"}"#.utf8).write(to: URL(fileURLWithPath: layout + "/oci-layout"))
        try Data(
            """
            {"schemaVersion":2,"manifests":[{"mediaType":"\(MediaType.ociManifest)","digest":"\(manifestDigest)",\
            "size":\(manifest.count),"annotations":{"org.opencontainers.image.ref.name":"\(tag)"}}]}
            """.utf8
        ).write(to: URL(fileURLWithPath: layout + "/index.json"))
    }

    /// Pushes an OCI layout with skopeo to `destination` (`host:port/repo:tag`).
    static func push(layout: String, tag: String, to destination: String) throws {
        try RegistryTestSupport.run(
            RegistryTestSupport.skopeoBinary,
            [
                "--insecure-policy", "copy", "--format", "oci", "--preserve-digests", "--dest-tls-verify=false", "oci:\(layout):\(tag)",
                "docker://\(destination)",
            ])
    }

    /// Sum of the blob sizes under a layout's `blobs/sha256`.
    static func layoutBytes(_ layout: String) throws -> Int64 {
        let directory = layout + "/blobs/sha256"
        return try FileManager.default.contentsOfDirectory(atPath: directory).reduce(Int64(0)) { total, name in
            let attributes = try FileManager.default.attributesOfItem(atPath: directory + "/" + name)
            return total + ((attributes[.size] as? NSNumber)?.int64Value ?? 0)
        }
    }
}
