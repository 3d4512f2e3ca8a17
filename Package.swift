// swift-tools-version:6.1
import PackageDescription

// Dependency arrows point inward: SpoolCore knows nothing of I/O; stores, executor and
// scheduler build on it; SpoolHTTP and SpoolApp compose them; `spool` is only the CLI.
let package = Package(
    name: "spool",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "spool", targets: ["spool"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/adam-fowler/compress-nio", from: "1.5.0"),
    ],
    targets: [
        .target(name: "SpoolCore"),
        .target(name: "SpoolStore", dependencies: ["SpoolCore"]),
        .target(name: "SpoolSQLite", dependencies: [
            "SpoolCore", "SpoolStore",
            .product(name: "GRDB", package: "GRDB.swift"),
        ]),
        .target(name: "SpoolPostgres", dependencies: [
            "SpoolCore", "SpoolStore",
            .product(name: "PostgresNIO", package: "postgres-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "SpoolExecutor", dependencies: [
            "SpoolCore",
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Subprocess", package: "swift-subprocess"),
            .product(name: "SystemPackage", package: "swift-system"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        .target(name: "SpoolScheduler", dependencies: [
            "SpoolCore", "SpoolStore", "SpoolExecutor",
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "SpoolRender"),
        .target(name: "SpoolHTTP", dependencies: [
            "SpoolCore", "SpoolStore", "SpoolScheduler", "SpoolExecutor", "SpoolWebhooks",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "CompressNIO", package: "compress-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ], resources: [
            // Served from the binary itself: the OpenAPI document and the dashboard.
            .embedInCode("Resources/openapi.json"),
            .embedInCode("Resources/dashboard.html"),
            .embedInCode("Resources/dashboard.css"),
            .embedInCode("Resources/dashboard.js"),
        ]),
        .target(name: "SpoolWebhooks", dependencies: [
            "SpoolCore", "SpoolStore",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .target(name: "SpoolApp", dependencies: [
            "SpoolCore", "SpoolStore", "SpoolSQLite", "SpoolPostgres", "SpoolExecutor", "SpoolScheduler", "SpoolHTTP", "SpoolWebhooks",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "HummingbirdTLS", package: "hummingbird"),
            .product(name: "HummingbirdHTTP2", package: "hummingbird"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
            .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOTLS", package: "swift-nio"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "spool", dependencies: [
            "SpoolCore", "SpoolApp", "SpoolRender", "SpoolBench",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        .target(name: "SpoolBench", dependencies: [
            "SpoolCore", "SpoolStore", "SpoolSQLite", "SpoolPostgres", "SpoolExecutor",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Subprocess", package: "swift-subprocess"),
            .product(name: "SystemPackage", package: "swift-system"),
        ]),
        // Test support only: a manual clock, a scripted executor, fake child processes, a store
        // that fails on demand; no product links it.
        .target(name: "SpoolTesting", dependencies: ["SpoolCore", "SpoolStore", "SpoolExecutor"]),
        // Test support only (a throwaway PostgreSQL for the tests); no product links it.
        .target(name: "SpoolTestSupport", dependencies: [
            "SpoolPostgres",
            .product(name: "PostgresNIO", package: "postgres-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "SpoolRenderTests", dependencies: ["SpoolRender"]),
        .testTarget(name: "SpoolCoreTests", dependencies: ["SpoolCore"]),
        .testTarget(name: "SpoolStoreTests", dependencies: [
            "SpoolCore", "SpoolStore", "SpoolSQLite", "SpoolPostgres", "SpoolTestSupport", .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "SpoolExecutorTests", dependencies: ["SpoolCore", "SpoolExecutor", "SpoolTestSupport", "SpoolTesting"]),
        .testTarget(name: "SpoolSchedulerTests", dependencies: [
            "SpoolCore", "SpoolStore", "SpoolExecutor", "SpoolScheduler", "SpoolTestSupport", "SpoolTesting",
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "SpoolHTTPTests", dependencies: [
            "SpoolCore", "SpoolStore", "SpoolScheduler", "SpoolHTTP", "SpoolApp", "SpoolTestSupport", "SpoolTesting",
            .product(name: "HummingbirdTesting", package: "hummingbird"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOTLS", package: "swift-nio"),
        ]),
        .testTarget(name: "SpoolWebhooksTests", dependencies: [
            "SpoolCore", "SpoolStore", "SpoolSQLite", "SpoolTestSupport", "SpoolTesting", "SpoolWebhooks",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdTesting", package: "hummingbird"),
        ]),
        .testTarget(name: "SpoolEndToEndTests", dependencies: [
            "SpoolCore", "SpoolTestSupport", "SpoolBench",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "CompressNIO", package: "compress-nio"),
        ]),
    ]
)
