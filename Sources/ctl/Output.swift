import SnapshotterAPI

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Human and JSON renderings of API answers.
enum Output {
    static func printJSON(_ value: some Encodable) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        if let data = try? encoder.encode(value) { print(String(decoding: data, as: UTF8.self)) }
    }

    static func mounts(_ mounts: [MountSpec], json: Bool) {
        if json {
            printJSON(MountsResponse(mounts: mounts))
            return
        }
        for mount in mounts {
            print("mount -t \(mount.type) \(mount.source) <target> -o \(mount.options.joined(separator: ","))")
        }
    }

    static func table(_ snapshots: [SnapshotInfo]) {
        let rows =
            [["KEY", "PARENT", "KIND", "CREATED"]]
            + snapshots.map { [$0.name, $0.parent.isEmpty ? "-" : $0.parent, $0.kind.rawValue, $0.createdAt] }
        let widths = (0..<4).map { column in rows.map { $0[column].count }.max() ?? 0 }
        for row in rows {
            var line = ""
            for (column, cell) in row.enumerated() {
                line += column == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[column] - cell.count + 2)
            }
            print(line)
        }
    }

    static func info(_ info: SnapshotInfo) {
        print("name:    \(info.name)")
        print("parent:  \(info.parent.isEmpty ? "-" : info.parent)")
        print("kind:    \(info.kind.rawValue)")
        print("created: \(info.createdAt)")
        print("updated: \(info.updatedAt)")
        if info.labels.isEmpty {
            print("labels:  -")
        } else {
            print("labels:")
            for (key, value) in info.labels.sorted(by: { $0.key < $1.key }) { print("  \(key)=\(value)") }
        }
    }

    static func status(_ status: StatusResponse) {
        print("snapshotterd \(status.version) (pid \(status.pid)), up \(Int(status.uptimeSeconds))s")
        print("root:       \(status.root)")
        print("socket:     \(status.socket)")
        print("front end:  \(status.frontEnd)")
        print("catalog:    schema \(status.catalogSchema)")
        let counts = status.snapshots.sorted(by: { $0.key < $1.key }).map { "\($0.value) \($0.key)" }
        print("snapshots:  \(counts.joined(separator: ", "))")
        print("mounts:     \(status.mounts.count)")
        for mount in status.mounts { print("  \(mount.target) <- \(mount.snapshot)") }
        print("leftovers:  \(status.leftovers.count)\(status.leftovers.isEmpty ? "" : " (snapctl cleanup removes them)")")
        for leftover in status.leftovers { print("  \(leftover.path): \(leftover.reason)") }
        if let cache = status.cache { print("cache:      \(cacheLine(cache))") }
        let images = status.images ?? []
        print("images:     \(images.count)")
        for image in images {
            if let error = image.error {
                print("  \(image.reference): NOT SERVED (readers get EIO): \(error)")
                continue
            }
            print(
                "  \(image.reference): \(bytes(image.localBytes)) of \(bytes(image.size)) local (\(image.percentLocal)%), \(bytes(image.bytesFetched)) fetched"
            )
        }
    }

    static func cacheLine(_ cache: CacheStatus) -> String {
        var line = "\(bytes(cache.presentBytes)) present" + (cache.diskBytes.map { ", \(bytes($0)) on disk" } ?? "") + ", budget "
        line += cache.budgetBytes.map { bytes($0) } ?? "none"
        if cache.budgetBytes != nil && !cache.evictable { line += " (not kept: this front end cannot evict)" }
        if cache.evictedBytes > 0 { line += ", \(bytes(cache.evictedBytes)) evicted" }
        return line
    }

    static func usage(_ usage: UsageResponse) {
        let rows = usage.images.map { image in
            [image.reference, bytes(image.size), bytes(image.presentBytes), bytes(image.diskBytes), image.pinned ? "yes" : "no"]
        }
        table(["REFERENCE", "SIZE", "PRESENT", "ON DISK", "PINNED"], rows)
        print("cache: \(cacheLine(usage.cache))")
    }

    static func images(_ images: [ImageInfo]) {
        let rows = images.map { image in
            [
                image.reference, String(image.digest.split(separator: ":").last?.prefix(12) ?? ""), image.format, bytes(image.size),
                image.size > 0 ? "\(Int(Double(image.localBytes) * 100 / Double(image.size)))%" : "100%",
            ]
        }
        table(["REFERENCE", "DIGEST", "FORMAT", "SIZE", "LOCAL"], rows)
    }

    static func table(_ header: [String], _ rows: [[String]]) {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        for row in all {
            print(row.indices.map { $0 == row.count - 1 ? row[$0] : row[$0].padding(to: widths[$0]) }.joined(separator: "  "))
        }
    }

    static func bytes(_ count: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(count) B" : String(Int(value * 10) / 10) + "." + String(Int(value * 10) % 10) + " " + units[unit]
    }
}

extension String {
    func padding(to width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}
