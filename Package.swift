// swift-tools-version:6.1
//
// ondemand-snapshotter: a nydus-style on-demand container snapshotter.
// Dependencies point one way (architecture/dependencies.txt, checked by scripts/check-imports.py): ctl -> SnapshotterAPI;
// Snapshotter -> MountManager -> BlobStore -> {Catalog, RAFSBuilder, OCIRegistry} -> {RAFS, Archive, OCI} -> Digests, LinuxKernel.

import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("MemberImportVisibility")
]

let package = Package(
    name: "ondemand-snapshotter",
    products: [
        .executable(name: "snapshotterd", targets: ["snapshotterd"]),
        .executable(name: "snapctl", targets: ["snapctl"]),
        .executable(name: "snapshotterd-fdholder", targets: ["FDHolder"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        // containerd's snapshots.v1 gRPC service (ContainerdProxy); the generated code is committed.
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        // TOML 1.0 (toml++ underneath) for the config file and containerd's hosts.toml.
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
    ],
    targets: [
        // C entry points: system libraries through pkg-config module maps, shims for what Swift cannot call.
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .target(name: "CLinux"),

        // Leaf modules.
        .target(name: "LinuxKernel", dependencies: ["CLinux"], swiftSettings: strict),
        .target(name: "TOML", dependencies: [.product(name: "TOMLKit", package: "TOMLKit")], swiftSettings: strict),
        .target(name: "SnapshotterAPI", swiftSettings: strict),

        // Formats and protocols, each a library with one job (lowest first).
        .target(name: "Digests", dependencies: ["CCrypto"], swiftSettings: strict),
        .target(name: "Archive", dependencies: ["CZlib", "CZstd", "LinuxKernel"], swiftSettings: strict),
        .target(name: "OCI", dependencies: ["Digests", "LinuxKernel"], swiftSettings: strict),
        .target(
            name: "OCIRegistry",
            dependencies: [
                "OCI", "Digests", "CCurl", "CLinux", "LinuxKernel", "TOML", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(name: "RAFS", dependencies: ["Digests", "CZstd", "CLZ4", "LinuxKernel"], swiftSettings: strict),
        .target(
            name: "RAFSBuilder",
            dependencies: [
                "RAFS", "Archive", "OCI", "Digests", "CZlib", "CZstd", "CLZ4", "LinuxKernel",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // All SQL and every migration of the catalog.
        .target(
            name: "Catalog",
            dependencies: ["CSQLite", "Digests", "LinuxKernel", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),

        // The three layers of the service.
        .target(
            name: "BlobStore",
            dependencies: [
                "Catalog", "RAFS", "RAFSBuilder", "OCI", "OCIRegistry", "Archive", "Digests", "CLinux", "LinuxKernel",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "MountManager",
            dependencies: [
                "BlobStore", "LinuxKernel", "CLinux",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // containerd's snapshots.v1 gRPC service over a backend protocol; knows nothing of the daemon.
        .target(
            name: "ContainerdProxy",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            exclude: ["Protos"],
            swiftSettings: strict
        ),
        // The service: snapshot semantics, API router, daemon composition (a library; `snapshotterd` runs it).
        .target(
            name: "Snapshotter",
            dependencies: [
                "ContainerdProxy", "MountManager", "BlobStore", "Catalog", "RAFS", "RAFSBuilder", "OCI", "OCIRegistry",
                "SnapshotterAPI", "LinuxKernel", "TOML", "CSystemd", "CLinux",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "FDHolder", dependencies: ["CLinux"], swiftSettings: strict),
        // The CLI's commands (a library; `snapctl` runs them). Knows only the API types.
        .target(
            name: "ctl",
            dependencies: [
                "SnapshotterAPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        // Thin mains; scripts/check-imports.py keeps them so (architecture/dependencies.txt).
        .executableTarget(
            name: "snapshotterd",
            dependencies: ["Snapshotter", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "snapctl",
            dependencies: ["ctl", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict
        ),

        // Benchmarks: executables run by make targets, never timed tests.
        .executableTarget(
            name: "SnapshotBench",
            dependencies: ["SnapshotterAPI"],
            path: "benchmarks/SnapshotBench",
            swiftSettings: strict
        ),

        .executableTarget(
            name: "RegistryBench",
            dependencies: ["OCIRegistry", "OCI", "Digests", "LinuxKernel", .product(name: "Logging", package: "swift-log")],
            path: "benchmarks/RegistryBench",
            swiftSettings: strict
        ),

        .executableTarget(
            name: "ConvertBench",
            dependencies: ["RAFSBuilder", "RAFS", "LinuxKernel"],
            path: "benchmarks/ConvertBench",
            swiftSettings: strict
        ),

        .executableTarget(
            name: "DiskBench",
            dependencies: ["SnapshotterAPI", "LinuxKernel", "TestSupport"],
            path: "benchmarks/DiskBench",
            swiftSettings: strict
        ),

        .executableTarget(
            name: "LazyBench",
            dependencies: ["RAFSBuilder", "RAFS", "OCI", "SnapshotterAPI", "LinuxKernel", "TestSupport"],
            path: "benchmarks/LazyBench",
            swiftSettings: strict
        ),

        .executableTarget(
            name: "ScaleBench",
            dependencies: ["OCI", "OCIRegistry", "SnapshotterAPI", "LinuxKernel", "TestSupport"],
            path: "benchmarks/ScaleBench",
            swiftSettings: strict
        ),

        .executableTarget(
            name: "ColdStartBench",
            dependencies: [
                "RAFSBuilder", "RAFS", "OCI", "BlobStore", "LinuxKernel", "CRIClient", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            path: "benchmarks/ColdStartBench",
            swiftSettings: strict
        ),

        .testTarget(name: "TOMLTests", dependencies: ["TestThreads", "TOML"], swiftSettings: strict),
        // Each test case on a thread of its own (the `.ownThread` suite trait) and `onOwnThread` for blocking work:
        // Foundation and Testing only, so that every test target can have it.
        .target(name: "TestThreads", path: "Tests/TestThreads", swiftSettings: strict),
        // Where the shared fixtures are, scratch directories, tool runs, kernel messages: Foundation only.
        .target(name: "TestFixtures", dependencies: ["TestThreads"], path: "Tests/TestFixtures", swiftSettings: strict),
        // Helpers shared by the test targets: a docker-registry per test, OCI test images, python helpers.
        .target(
            name: "TestSupport",
            dependencies: [
                "TestFixtures", "TestThreads", "Digests", "OCI", "OCIRegistry", "RAFS", "RAFSBuilder", "MountManager", "LinuxKernel",
                "CLinux",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/TestSupport",
            swiftSettings: strict
        ),
        // A client for the slice of Kubernetes' CRI the containerd tests and the cold-start benchmark use.
        .target(
            name: "CRIClient",
            dependencies: [
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            path: "Tests/CRIClient",
            exclude: ["Protos"],
            swiftSettings: strict
        ),
        // One test target per library: a change to RAFS builds and runs RAFSTests without the daemon.
        .testTarget(
            name: "LinuxKernelTests", dependencies: ["TestThreads", "LinuxKernel", "CLinux", "TestFixtures"], swiftSettings: strict),
        .testTarget(name: "DigestsTests", dependencies: ["TestThreads", "Digests", "TestFixtures"], swiftSettings: strict),
        .testTarget(name: "OCITests", dependencies: ["TestThreads", "OCI", "Digests"], swiftSettings: strict),
        .testTarget(name: "ArchiveTests", dependencies: ["TestThreads", "Archive", "TestFixtures"], swiftSettings: strict),
        .testTarget(
            name: "OCIRegistryTests",
            dependencies: [
                "TestThreads", "OCIRegistry", "OCI", "Digests", "LinuxKernel", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RAFSTests",
            dependencies: ["TestThreads", "RAFS", "Digests", "LinuxKernel", "TestFixtures"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RAFSBuilderTests",
            dependencies: ["TestThreads", "RAFSBuilder", "RAFS", "Archive", "OCI", "Digests", "TestFixtures", "TestSupport"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CatalogTests",
            dependencies: ["TestThreads", "Catalog", "LinuxKernel", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "BlobStoreTests",
            dependencies: [
                "TestThreads", "Archive", "BlobStore", "Catalog", "LinuxKernel", "RAFS", "RAFSBuilder", "TestFixtures",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "MountManagerTests",
            dependencies: [
                "TestThreads", "MountManager", "BlobStore", "RAFS", "LinuxKernel", "CLinux", "TestFixtures", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SnapshotterTests",
            dependencies: [
                "TestThreads", "SnapshotterAPI", "BlobStore", "Catalog", "OCI", "RAFS", "RAFSBuilder", "MountManager", "LinuxKernel",
                "TestSupport",
                "ContainerdProxy", "CRIClient",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: strict
        ),
    ]
)
