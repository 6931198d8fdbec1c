import Foundation
import TestFixtures
import TestSupport
import TestThreads
import Testing

@testable import Digests
@testable import OCI
@testable import RAFS
@testable import RAFSBuilder

#if canImport(Glibc)
import Glibc
#endif

/// OCI layout conversion (checked by skopeo and by mounting the result) and the inspector.
@Suite("Converter and inspector", .serialized, .ownThread)
struct BuilderConverterTests {
    /// Writes an OCI layout whose index.json points at an image index with an arm64 and an amd64 manifest.
    static func makeSourceLayout(_ path: String, layers specs: [[LayerEntrySpec]], scratch: String) throws -> [String] {
        let layout = try OCILayout.create(at: path)
        let tars = try BuilderFixtures.writeLayers(specs, in: scratch, compressions: specs.indices.map { $0 == 1 ? "zstd" : "gzip" })
        var layers: [Descriptor] = []
        var diffIDs: [String] = []
        for (index, tar) in tars.enumerated() {
            let bytes = try ImageFixtures.bytes(tar)
            let type = tar.hasSuffix(".zst") ? MediaType.ociLayerZstd : MediaType.ociLayerGzip
            layers.append(try layout.writeBlob(bytes, mediaType: type))
            diffIDs.append(Digest.sha256(of: TestTar.archive(specs[index])).description)
        }
        let config: [String: Any] = [
            "architecture": "amd64", "os": "linux", "config": ["Env": ["PATH=/usr/bin"], "Cmd": ["/bin/sh"]],
            "rootfs": ["type": "layers", "diff_ids": diffIDs], "history": [["created_by": "test"]],
        ]
        let configBytes = Array(try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys]))
        let configDescriptor = try layout.writeBlob(configBytes, mediaType: MediaType.ociConfig)
        let manifest = ImageManifest(config: configDescriptor, layers: layers)
        var amd64 = try layout.writeBlob(try OCILayout.encode(manifest), mediaType: MediaType.ociManifest)
        amd64.platform = Platform(architecture: "amd64")
        // A second manifest for another platform, with no layers, that must not be chosen.
        var arm64 = try layout.writeBlob(
            try OCILayout.encode(ImageManifest(config: configDescriptor, layers: [])), mediaType: MediaType.ociManifest)
        arm64.platform = Platform(architecture: "arm64")
        var indexDescriptor = try layout.writeBlob(
            try OCILayout.encode(ImageIndex(manifests: [arm64, amd64])), mediaType: MediaType.ociIndex)
        indexDescriptor.annotations = [OCILayout.refNameAnnotation: "v1"]
        try layout.writeIndex(ImageIndex(manifests: [indexDescriptor]))
        return tars
    }

    @Test("an OCI layout converts to a nydus image that skopeo accepts and the kernel mounts", .enabled(if: getuid() == 0))
    func convert() throws {
        let scratch = try ImageFixtures.scratchDirectory("convert")
        defer { ImageFixtures.cleanup(scratch) }
        let specs = BuilderMountTests.layers(chunkSize: 1 << 20)
        _ = try Self.makeSourceLayout(scratch + "/src", layers: specs, scratch: scratch)
        var build = BuildOptions()
        build.syncOutput = false
        let converter = ImageConverter(
            options: .init(build: build, platform: Platform(architecture: "amd64"), sourceReference: "v1", targetReference: "v1-nydus"))
        let result = try converter.convert(source: scratch + "/src", destination: scratch + "/dst")

        let manifest = result.manifest
        #expect(manifest.layers.count == result.build.blobs.count + 1)
        for (layer, blob) in zip(manifest.layers, result.build.blobs) {
            #expect(layer.mediaType == "application/vnd.oci.image.layer.nydus.blob.v1")
            #expect(layer.annotations == ["containerd.io/snapshot/nydus-blob": "true"])
            #expect(layer.digest.encoded == blob.blobID)
        }
        let boot = try #require(manifest.layers.last)
        #expect(boot.mediaType == MediaType.ociLayerGzip)
        #expect(boot.annotations?["containerd.io/snapshot/nydus-bootstrap"] == "true")
        #expect(boot.annotations?["containerd.io/snapshot/nydus-fs-version"] == "6")
        let layout = try OCILayout(path: scratch + "/dst")
        let index = try layout.readIndex()
        #expect(index.manifests.count == 1)
        #expect(index.manifests[0].platform?.osFeatures == ["nydus.remoteimage.v1"])
        #expect(index.manifests[0].annotations?[OCILayout.refNameAnnotation] == "v1-nydus")
        let config = try #require(try JSONSerialization.jsonObject(with: Data(layout.readBlob(manifest.config.digest))) as? [String: Any])
        let rootfs = try #require(config["rootfs"] as? [String: Any])
        #expect((rootfs["diff_ids"] as? [String])?.count == manifest.layers.count)
        #expect((rootfs["diff_ids"] as? [String])?.first == manifest.layers[0].digest.description)
        #expect((config["config"] as? [String: Any])?["Cmd"] as? [String] == ["/bin/sh"])

        // skopeo reads the layout and copies every blob with its digest checked.
        if let skopeo = ImageFixtures.tool("skopeo") {
            let copied = try ImageFixtures.run(skopeo, ["copy", "oci:\(scratch)/dst:v1-nydus", "dir:\(scratch)/skopeo-dir"])
            #expect(copied.status == 0, "skopeo: \(copied.error)")
        }

        // The bootstrap from the layer, the blobs from the layout: mount and compare.
        let bootstrap = try EcosystemLayoutTests.mountConverted(layout, manifest: manifest, scratch: scratch) { mount in
            try BuilderMountTests.compare(mountPoint: mount, expected: ExpectedTree(layers: specs))
        }
        let image = try ErofsImage(path: bootstrap)
        let report = try ImageInspector.verify(bootstrap: bootstrap, blobsDirectory: layout.sha256Directory)
        #expect(report.blobsMissing.isEmpty && report.blobsChecked.count == image.blobs.count)
    }

    @Test(
        "inspector lists the nydus fixture with content digests the kernel agrees with",
        .enabled(if: ImageFixtures.available && getuid() == 0))
    func inspectFixture() throws {
        let records = try ImageInspector(bootstrap: ImageFixtures.bootstrap, blobsDirectory: ImageFixtures.directory).records()
        #expect(records.first?.path == "/")
        let files = records.filter { $0.type == "regular" }
        #expect(files.count == 2 && files.allSatisfy { $0.sha256 != nil })
        let scratch = try ImageFixtures.scratchDirectory("inspect")
        defer { ImageFixtures.cleanup(scratch) }
        let image = try ErofsImage(path: ImageFixtures.bootstrap)
        try RafsBlob(image: image, index: 0, directory: ImageFixtures.directory).materialize(to: scratch + "/blob")
        try BuilderFixtures.withMount(bootstrap: ImageFixtures.bootstrap, devices: [scratch + "/blob"], at: scratch + "/mnt") { () throws in
            for file in files {
                #expect(SHA256.hash(try ImageFixtures.bytes(scratch + "/mnt" + file.path)).hexString == file.sha256, "\(file.path)")
            }
        }
        #expect(files.allSatisfy { $0.line.hasPrefix("-rw-r--r-- 0:0 ") && $0.line.hasSuffix(" " + $0.path) })
        let decoded = try JSONDecoder().decode([InspectRecord].self, from: Data(try ImageInspector.json(records)))
        #expect(decoded == records)
    }

    @Test("verify passes on intact blobs and names the blob and chunk of a flipped byte", .enabled(if: ImageFixtures.available))
    func verifyCatchesFlippedByte() throws {
        let report = try ImageInspector.verify(bootstrap: ImageFixtures.bootstrap, blobsDirectory: ImageFixtures.directory)
        #expect(report.blobsChecked == [ImageFixtures.blobID] && report.chunksChecked == 2)

        let scratch = try ImageFixtures.scratchDirectory("verify")
        defer { ImageFixtures.cleanup(scratch) }
        var bytes = try ImageFixtures.bytes(ImageFixtures.blob)
        let image = try ErofsImage(path: ImageFixtures.bootstrap)
        let chunk = try RafsBlob(image: image, index: 0, directory: ImageFixtures.directory).chunks[1]
        bytes[Int(chunk.compressedOffset) + Int(chunk.compressedSize) / 2] ^= 0x5A
        try ImageFixtures.write(bytes, to: scratch + "/" + ImageFixtures.blobID)
        #expect {
            _ = try ImageInspector.verify(bootstrap: ImageFixtures.bootstrap, blobsDirectory: scratch)
        } throws: { error in
            guard case .corruptChunk(let blobID, let index, _) = error as? ImageFormatError else { return false }
            return blobID == ImageFixtures.blobID && index == 1
        }
    }
}
