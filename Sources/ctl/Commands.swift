import ArgumentParser
import SnapshotterAPI

struct Prepare: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create an active (writable) snapshot.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Key of the new snapshot.") var key: String
    @Option(help: "Committed parent snapshot.") var parent: String?
    @Option(help: "A pulled image to sit on (its EROFS mount is the bottom layer) instead of a parent.") var image: String?
    @Option(help: "Label key=value (repeatable).") var label: [String] = []

    func run() throws {
        let labels = try parseLabels(label)
        try perform {
            let mounts = try global.client().prepare(key: key, parent: parent, labels: labels.isEmpty ? nil : labels, image: image)
            Output.mounts(mounts, json: global.json)
        }
    }
}

struct View: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a read-only view of a committed snapshot.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Key of the new view.") var key: String
    @Option(help: "Committed parent snapshot.") var parent: String?
    @Option(help: "A pulled image to view instead of a parent.") var image: String?
    @Option(help: "Label key=value (repeatable).") var label: [String] = []

    func run() throws {
        let labels = try parseLabels(label)
        try perform {
            let mounts = try global.client().view(key: key, parent: parent, labels: labels.isEmpty ? nil : labels, image: image)
            Output.mounts(mounts, json: global.json)
        }
    }
}

struct Mounts: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the mounts of an active snapshot or view.")
    @OptionGroup var global: GlobalOptions
    @Argument var key: String

    func run() throws {
        try perform { Output.mounts(try global.client().mounts(key: key), json: global.json) }
    }
}

struct Mount: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mount a snapshot at a directory (the daemon performs the mounts; the directory is created if missing).")
    @OptionGroup var global: GlobalOptions
    @Argument var key: String
    @Argument(help: "Target directory.") var target: String

    func run() throws {
        try perform {
            let result = try global.client().mount(key: key, target: absolutePath(target))
            if global.json { Output.printJSON(result) } else { print("mounted \(key) at \(result.target)") }
        }
    }
}

struct Unmount: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Unmount a directory mounted with snapctl mount.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Target directory.") var target: String

    func run() throws {
        try perform {
            try global.client().unmount(target: absolutePath(target))
            if global.json { Output.printJSON(EmptyResponse()) } else { print("unmounted \(absolutePath(target))") }
        }
    }
}

struct Commit: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Commit an active snapshot under a new name.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Name of the committed snapshot.") var name: String
    @Argument(help: "Key of the active snapshot.") var key: String
    @Option(help: "Label key=value (repeatable).") var label: [String] = []

    func run() throws {
        let labels = try parseLabels(label)
        try perform {
            try global.client().commit(name: name, key: key, labels: labels.isEmpty ? nil : labels)
            if global.json { Output.printJSON(EmptyResponse()) } else { print("committed \(key) as \(name)") }
        }
    }
}

struct Remove: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove", abstract: "Remove snapshots.", aliases: ["rm"])
    @OptionGroup var global: GlobalOptions
    @Argument var keys: [String]

    func validate() throws {
        if keys.isEmpty { throw ValidationError("name at least one snapshot key") }
    }

    func run() throws {
        try perform {
            for key in keys {
                try global.client().remove(key: key)
                if !global.json { print("removed \(key)") }
            }
            if global.json { Output.printJSON(EmptyResponse()) }
        }
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List snapshots.", aliases: ["ls"])
    @OptionGroup var global: GlobalOptions
    @Option(help: "containerd filter, e.g. 'kind==committed,labels.\"a.b\"==x' (repeatable; OR-ed).") var filter: [String] = []
    @Option(help: "Only children of this snapshot.") var parent: String?
    @Option(help: "Only this kind: active, view or committed.") var kind: SnapshotKind?
    @Option(help: "Only snapshots with label key=value (repeatable; AND-ed).") var label: [String] = []

    func run() throws {
        var filters = filter
        var selectors: [String] = []
        if let parent { selectors.append("parent==\(quote(parent))") }
        if let kind { selectors.append("kind==\(kind.rawValue)") }
        for (key, value) in try parseLabels(label).sorted(by: { $0.key < $1.key }) {
            selectors.append("labels.\(quote(key))==\(quote(value))")
        }
        if !selectors.isEmpty {
            filters = filters.isEmpty ? [selectors.joined(separator: ",")] : filters.map { $0 + "," + selectors.joined(separator: ",") }
        }
        try perform {
            let snapshots = try global.client().list(filters: filters)
            if global.json { Output.printJSON(ListResponse(snapshots: snapshots)) } else { Output.table(snapshots) }
        }
    }

    private func quote(_ text: String) -> String {
        "\"" + text.replacingAll("\\", with: "\\\\").replacingAll("\"", with: "\\\"") + "\""
    }
}

extension SnapshotKind: ExpressibleByArgument {}

struct Stat: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show one snapshot.")
    @OptionGroup var global: GlobalOptions
    @Argument var key: String

    func run() throws {
        try perform {
            let info = try global.client().stat(key: key)
            if global.json { Output.printJSON(InfoResponse(info: info)) } else { Output.info(info) }
        }
    }
}

struct Update: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set or delete labels (an empty value deletes: --label key=).")
    @OptionGroup var global: GlobalOptions
    @Argument var key: String
    @Option(help: "Label key=value (repeatable).") var label: [String] = []
    @Flag(help: "Replace all labels instead of changing only the named ones.") var replace = false

    func run() throws {
        let labels = try parseLabels(label)
        let paths = replace ? ["labels"] : labels.keys.sorted().map { "labels.\($0)" }
        try perform {
            let info = try global.client().update(key: key, labels: labels, fieldpaths: paths.isEmpty ? ["labels"] : paths)
            if global.json { Output.printJSON(InfoResponse(info: info)) } else { Output.info(info) }
        }
    }
}

struct Usage: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The image cache per image and in total, against its budget; with KEY, bytes and inodes of a snapshot's own layer.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "A snapshot key (omit it for the image cache).") var key: String?

    func run() throws {
        try perform {
            guard let key else {
                let usage = try global.client().usage()
                if global.json { Output.printJSON(usage) } else { Output.usage(usage) }
                return
            }
            let usage = try global.client().usage(key: key)
            if global.json {
                Output.printJSON(usage)
            } else {
                print("\(key)\t\(Output.bytes(usage.size))\t\(usage.inodes) inodes")
            }
        }
    }
}

struct Cleanup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove on-disk leftovers the catalog does not know (snapshot directories, image-store garbage).",
        discussion: """
            Removes snapshot directories no snapshot owns, and image-store files no image or blob names: work \
            directories of interrupted pulls, stray metas and bootstraps, and blob backing files and device links \
            under cache/. Refused while a pull runs.
            """,
        aliases: ["gc"])
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try perform {
            let removed = try global.client().cleanup()
            if global.json {
                Output.printJSON(CleanupResponse(removed: removed))
            } else if removed.isEmpty {
                print("nothing to clean up")
            } else {
                for path in removed { print("removed \(path)") }
            }
        }
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the daemon's state.")
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try perform {
            let status = try global.client().status()
            if global.json { Output.printJSON(status) } else { Output.status(status) }
        }
    }
}

extension String {
    func replacingAll(_ target: String, with replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
