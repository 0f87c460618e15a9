// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "edge-gateway",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "edge-gateway", targets: ["edge-gateway"]),
        .executable(name: "edge-monitor", targets: ["edge-monitor"]),
    ],
    dependencies: [
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        // edge-monitor only (the gateway binary links no HTTP).
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // C libraries, each behind a three-line module map.
        .systemLibrary(name: "CModbus", pkgConfig: "libmodbus",
                       providers: [.apt(["libmodbus-dev"])]),
        .systemLibrary(name: "CMosquitto", pkgConfig: "libmosquitto",
                       providers: [.apt(["libmosquitto-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "libcrypto",
                       providers: [.apt(["libssl-dev"])]),
        // glibc's <sys/timex.h>: the kernel's NTP state, read-only.
        .systemLibrary(name: "CTimex"),
        .systemLibrary(name: "CMalloc"),

        // The one clock interface: wall time, boottime, kernel boot id, sync status;
        // the kernel's (read-only) or, in tests, a clock file.
        .target(name: "GatewayClock", dependencies: ["CTimex"]),

        // Reads the sealing keys (Sealing) and TLS PEM files (COpenSSL) named in gateway.yaml at load time;
        // parses devices and tags into Modbus's device model.
        .target(name: "GatewayConfig", dependencies: [
            "Sealing", "COpenSSL", "Modbus",
            .product(name: "Yams", package: "Yams"),
        ]),
        // The device/tag model (DeviceModel.swift), polling and writes over libmodbus.
        .target(name: "Modbus", dependencies: [
            "CModbus", "Descriptors", "GatewayClock",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // File descriptors kept clear of libmodbus' select() range (0...1023).
        .target(name: "Descriptors"),
        .target(name: "Outbox", dependencies: [
            "Descriptors",
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "GRDBSQLite", package: "GRDB.swift"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "MQTTUplink", dependencies: [
            "CMosquitto", "COpenSSL", "Descriptors",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Payload envelopes (AES-256-GCM, HMAC-SHA256) and key files (COpenSSL's libcrypto;
        // GatewayConfig checks PEM files with it, MQTTUplink uses its libssl to say which TLS check failed).
        .target(name: "Sealing", dependencies: ["COpenSSL"]),
        // Sparkplug B 3.0: topics, aliases, payloads. sparkplug_b.pb.swift is generated
        // once by scripts/generate-sparkplug-proto.sh and committed (no build plugin).
        .target(name: "SparkplugB", dependencies: [
            "GatewayConfig", "Modbus",
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        ]),
        // edge-monitor's web page: one self-contained HTML document, no dependencies.
        .target(name: "MonitorWeb"),
        .target(name: "Gateway", dependencies: [
            "GatewayConfig", "GatewayClock", "Modbus", "Outbox", "MQTTUplink", "Sealing", "SparkplugB", "Descriptors",
            .product(name: "DequeModule", package: "swift-collections"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        .executableTarget(name: "edge-gateway", dependencies: [
            "Gateway", "GatewayClock", "GatewayConfig", "Modbus", "Outbox", "MQTTUplink", "Sealing", "CMalloc",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),

        // edge-monitor: the central side. `Monitor` is the model, ledger, store and
        // subscriber (no HTTP); `MonitorHTTP` serves it; `edge-monitor` is the CLI.
        .target(name: "Monitor", dependencies: [
            "GatewayConfig", "MQTTUplink", "Sealing", "Gateway",
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Yams", package: "Yams"),
        ]),
        .target(name: "MonitorHTTP", dependencies: [
            "Monitor", "MonitorWeb",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "edge-monitor", dependencies: [
            "Monitor", "MonitorHTTP", "CMalloc",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        ]),

        // `make bench`: figures and ratios against baselines measured in the same run.
        .executableTarget(name: "edge-gateway-bench", dependencies: [
            "Gateway", "GatewayConfig", "Modbus", "Outbox", "MQTTUplink", "LocalPeers", "CModbus", "Sealing", "SparkplugB",
            .product(name: "GRDBSQLite", package: "GRDB.swift"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        ]),
        // Child processes (mosquitto, the gateway), loopback ports, waiting with a deadline
        // and a notify socket: the real local peers of the integration tests and benchmarks.
        .target(name: "LocalPeers"),
        // What only tests use (certificates, an MQTT subscriber); re-exports LocalPeers.
        .target(name: "TestSupport", dependencies: [
            "LocalPeers", "MQTTUplink",
            .product(name: "Logging", package: "swift-log"),
        ], path: "Tests/TestSupport"),
        .testTarget(name: "GatewayConfigTests", dependencies: ["GatewayConfig", "Modbus", "Sealing", "TestSupport"]),
        .testTarget(name: "ModbusTests", dependencies: ["Modbus", "CModbus", "TestSupport"]),
        // The payload bytes of MessageEncoding against the encoder they replaced.
        .testTarget(name: "MessageEncodingTests", dependencies: ["Gateway", "GatewayClock", "Modbus", "TestSupport"]),
        .testTarget(name: "OutboxTests", dependencies: ["Outbox", "Descriptors"]),
        .testTarget(name: "SealingTests", dependencies: ["Sealing", "TestSupport"]),
        .testTarget(name: "SparkplugBTests", dependencies: [
            "SparkplugB", "GatewayConfig", "Modbus", "TestSupport",
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        ]),
        .testTarget(name: "MonitorTests", dependencies: ["Monitor", "MonitorHTTP", "Sealing"]),
        .testTarget(name: "MonitorIntegrationTests", dependencies: [
            "Monitor", "Gateway", "MQTTUplink", "Sealing", "TestSupport",
        ]),
        // The forwarder's logic in process, against fakes of the uplink and the outbox.
        .testTarget(name: "ForwarderTests", dependencies: [
            "Gateway", "GatewayClock", "GatewayConfig", "Modbus", "MQTTUplink", "Outbox", "Sealing", "SparkplugB", "Descriptors",
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // edge-monitor's page in a real browser, and its ops files (alert rules, dashboard, unit).
        .testTarget(name: "MonitorWebTests", dependencies: ["MonitorWeb", "GatewayConfig", "TestSupport"]),
        .testTarget(name: "GatewayIntegrationTests", dependencies: [
            "Gateway", "GatewayClock", "CTimex", "GatewayConfig", "Modbus", "Outbox", "MQTTUplink", "Sealing", "TestSupport", "SparkplugB",
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            .product(name: "GRDB", package: "GRDB.swift"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
