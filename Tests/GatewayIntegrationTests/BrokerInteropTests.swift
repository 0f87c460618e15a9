// The interop matrix: the gateway against RabbitMQ's MQTT plugin (Debian's
// rabbitmq-server 3.10, started by the test as its own process, everything on loopback:
// the node's listeners, its Erlang distribution port and its own epmd) and against
// mosquitto under MQTT 5. RabbitMQ is skipped with a printed reason where it is not
// installed; under CI=true a missing RabbitMQ fails.
import Foundation
import Logging
import Modbus
@testable import MQTTUplink
import Synchronization
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A broker the interop scenario runs against.
protocol InteropBroker: AnyObject, Sendable {
    var mqttPort: Int { get }
    func start() async throws
    /// Stops the broker gracefully (what it persisted survives the restart).
    func stop() async throws
}

/// mosquitto for the interop scenario (persistent, so its subscriber queue survives a restart).
final class MosquittoInteropBroker: InteropBroker {
    let broker: MosquittoBroker
    var mqttPort: Int { broker.port }
    init() throws { broker = try MosquittoBroker(persistent: true) }
    func start() async throws { try await broker.start() }
    func stop() async throws { try await broker.stop(graceful: true) }
}

/// A RabbitMQ node with the MQTT plugin, configured in its own directory.
final class RabbitMQBroker: InteropBroker, @unchecked Sendable {
    static let server = "/usr/lib/rabbitmq/bin/rabbitmq-server"
    let mqttPort = freeLoopbackPort()
    private let epmdPort = freeLoopbackPort()
    private let distributionPort = freeLoopbackPort()
    private let directory: TemporaryDirectory
    private let nodeName: String
    // Invariant: touched by the test's task only (start/stop are awaited in sequence).
    private var node: ChildProcess?
    private var epmd: ChildProcess?

    /// The broker, or nil (with the reason printed) where RabbitMQ is not installed;
    /// under CI=true a missing RabbitMQ is an error naming the package.
    static func availableOrSkip(_ test: String) throws -> RabbitMQBroker? {
        guard FileManager.default.isExecutableFile(atPath: server),
              let epmd = try? requireTool("epmd", package: "erlang-base") else {
            let reason = "\(server) or epmd not found: install rabbitmq-server (make deps does)"
            if ProcessInfo.processInfo.environment["CI"] == "true" { throw MissingTool(description: reason) }
            print("skipping \(test): \(reason)")
            return nil
        }
        return try RabbitMQBroker(epmd: epmd)
    }

    private let epmdPath: String

    private init(epmd: String) throws {
        epmdPath = epmd
        directory = try TemporaryDirectory("rabbitmq")
        nodeName = "rabbit-test-\(mqttPort)@localhost"
        try """
        listeners.tcp = none
        mqtt.listeners.tcp.1 = 127.0.0.1:\(mqttPort)
        mqtt.allow_anonymous = true
        log.console = true
        log.file = false
        """.write(toFile: directory.file("rabbitmq.conf"), atomically: true, encoding: .utf8)
        try "[rabbitmq_mqtt].\n".write(toFile: directory.file("enabled_plugins"), atomically: true, encoding: .utf8)
        try "".write(toFile: directory.file("rabbitmq-env.conf"), atomically: true, encoding: .utf8)
    }

    deinit {
        if let node, node.isRunning { terminate(node) }
        if let epmd { epmd.signal(SIGKILL); epmd.waitBlocking() }
        directory.remove()
    }

    /// Starts the node (and its epmd the first time) and waits until MQTT answers.
    func start() async throws {
        if epmd == nil {
            epmd = try ChildProcess(epmdPath, ["-port", "\(epmdPort)", "-address", "127.0.0.1"], log: directory.file("epmd.log"))
        }
        let environment = [
            "HOME": directory.path,
            "RABBITMQ_CONF_ENV_FILE": directory.file("rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": nodeName,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_DIST_PORT": "\(distributionPort)",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_EPMD_PORT": "\(epmdPort)",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_CONFIG_FILE": directory.file("rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": directory.file("enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": directory.file("mnesia"),
            "RABBITMQ_LOG_BASE": directory.file("log"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": directory.file("plugins-expand"),
            "RABBITMQ_PID_FILE": directory.file("rabbit.pid"),
        ]
        node = try ChildProcess(Self.server, [], log: directory.file("rabbit-\(UUID().uuidString.prefix(6)).log"),
                                environment: environment)
        let port = mqttPort
        try await waitUntil("RabbitMQ's MQTT listener on 127.0.0.1:\(port) (log: \(log.suffix(2000)))",
                            timeout: .seconds(120)) {
            guard node?.isRunning == true else { throw MissingTool(description: "RabbitMQ exited: \(log.suffix(3000))") }
            return isListening(port: port)
        }
    }

    /// Stops the node gracefully (its script's TERM handler runs `rabbitmqctl stop`).
    func stop() async throws {
        guard let node else { return }
        node.signal(SIGTERM)
        _ = try await node.waitForExit(timeout: .seconds(60))
        self.node = nil
    }

    var log: String { node?.output ?? "" }

    /// Last resort in cleanup: TERM the script, then KILL the node by its pid file.
    private func terminate(_ node: ChildProcess) {
        node.signal(SIGTERM)
        let deadline = Date().addingTimeInterval(30)
        while node.isRunning, Date() < deadline { usleep(100_000) }
        if let text = try? String(contentsOfFile: directory.file("rabbit.pid"), encoding: .utf8),
           let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), kill(pid, 0) == 0 {
            kill(pid, SIGKILL)
        }
        node.signal(SIGKILL)
        node.waitBlocking()
    }
}

@Suite(.serialized) struct RabbitMQInteropTests {
    /// RabbitMQ 3.10 answers a QoS 2 PUBLISH with PUBACK; libmosquitto drops the link.
    /// The uplink names the cause and backs off instead of reconnecting every second.
    @Test func qos2IsNamedAsUnsupportedAndTheBackoffGrows() async throws {
        guard let broker = try RabbitMQBroker.availableOrSkip("qos2IsNamedAsUnsupportedAndTheBackoffGrows") else { return }
        try await broker.start()
        let log = LogLines()
        let uplinkBox = Mutex<MQTTUplink?>(nil)
        let settings = MQTTUplinkSettings(host: "127.0.0.1", port: broker.mqttPort, clientID: "qos2-test",
                                          keepalive: .seconds(10), reconnectMin: .milliseconds(100),
                                          reconnectMax: .milliseconds(800))
        let uplink = MQTTUplink(settings: settings, logger: log.logger(label: "qos2")) { event in
            if case .connected = event {
                _ = uplinkBox.withLock { try? $0?.publish(MQTTMessage(topic: "edge/qos2/data", payload: Array("{}".utf8), qos: 2)) }
            }
        }
        uplinkBox.withLock { $0 = uplink }
        uplink.start()
        try await waitUntil("the backoff to reach reconnect_max twice", timeout: .seconds(60)) {
            log.lost.filter { $0.retryIn == "\(settings.reconnectMax)" }.count >= 2
        }
        await uplink.stop()
        try await broker.stop()
        let lost = log.lost
        #expect(lost.allSatisfy { $0.error.hasPrefix("the broker does not support QoS 2 (answered PUBACK): use qos: 1") },
                "\(lost.map(\.error))")
        #expect(lost.prefix(4).map(\.retryIn) == ["0.1 seconds", "0.2 seconds", "0.4 seconds", "0.8 seconds"],
                "\(lost.map(\.retryIn))")
    }

    /// Birth retained, replay after a 20 s broker stop with no (boot, seq) missing,
    /// the Last Will on SIGKILL, the clean offline status on SIGTERM.
    @Test func birthReplayWillAndCleanOffline() async throws {
        guard let broker = try RabbitMQBroker.availableOrSkip("birthReplayWillAndCleanOffline") else { return }
        try await InteropScenario.run(on: broker, gatewayID: "gw-rabbit", protocolLine: "")
    }
}

/// The same scenario on mosquitto under MQTT 5 (mosquitto under 3.1.1: GatewayProcessTests).
@Suite(.serialized) struct MosquittoMQTT5InteropTests {
    @Test func birthReplayWillAndCleanOfflineUnderMQTT5() async throws {
        try await InteropScenario.run(on: try MosquittoInteropBroker(), gatewayID: "gw-mosq5", protocolLine: "protocol: 5")
    }
}

enum InteropScenario {
    /// Birth retained, replay after a 20 s broker stop with no (boot, seq) missing,
    /// the Last Will on SIGKILL, the clean offline status on SIGTERM.
    static func run(on broker: some InteropBroker, gatewayID: String, protocolLine: String) async throws {
        try await broker.start()
        let directory = try TemporaryDirectory("interop-gw")
        defer { directory.remove() }
        let modbusPort = freeLoopbackPort()
        let simulator = try ModbusSimulator(port: modbusPort)
        simulator.setHoldingRegisters(0, [715])
        try simulator.start()
        defer { simulator.stop() }
        let subscriber = RecordingSubscriber(port: broker.mqttPort, filter: "edge/#", persistentSession: true)
        try await subscriber.waitConnected(timeout: .seconds(30))
        let configPath = directory.file("gateway.yaml")
        try """
        gateway: { id: \(gatewayID), stats_interval: 2s }
        mqtt:
          host: 127.0.0.1
          port: \(broker.mqttPort)
          keepalive: 5s
          reconnect_min: 200ms
          reconnect_max: 2s
          \(protocolLine)
        buffer: { path: \(directory.file("outbox.sqlite")) }
        devices:
          - name: boiler-1
            tcp: { host: 127.0.0.1, port: \(modbusPort) }
            poll_interval: 200ms
            timeout: 200ms
            tags:
              - { name: temperature, table: holding, address: 0, type: int16 }
        """.write(toFile: configPath, atomically: true, encoding: .utf8)
        let statusTopic = "edge/\(gatewayID)/status"
        let dataTopic = "edge/\(gatewayID)/boiler-1/data"
        func seqs() -> [Int] { subscriber.messages(on: dataTopic).compactMap { $0.json["seq"] as? Int } }
        func states() -> [String] { subscriber.messages(on: statusTopic).map { $0.json["state"] as? String ?? "?" } }

        var gateway = try ChildProcess(try builtProduct("edge-gateway"), ["run", "--config", configPath],
                                       log: directory.file("gateway-1.log"))
        defer { gateway.signal(SIGKILL) }
        try await waitUntil("data through the broker", timeout: .seconds(30)) { seqs().count >= 5 }

        // The birth is retained: a subscriber that comes later gets it.
        let late = RecordingSubscriber(port: broker.mqttPort, filter: statusTopic)
        try await late.waitConnected(timeout: .seconds(30))
        try await waitUntil("the retained birth", timeout: .seconds(10)) {
            late.messages(on: statusTopic).contains { $0.retained && $0.json["state"] as? String == "online" }
        }

        // A 20 s broker stop: the gateway buffers, then replays.
        try await broker.stop()
        try await pauseFor(.seconds(20))  // the outage itself is the scenario, not a synchronisation
        try await broker.start()
        try await subscriber.waitConnected(timeout: .seconds(30))
        let highestBefore = seqs().max() ?? 0
        try await waitUntil("replay after the restart", timeout: .seconds(60)) {
            (seqs().max() ?? 0) > highestBefore + 100 + 10  // 20 s at 5 polls/s, then some live
        }
        let received = Set(seqs())
        let missing = Set(1...(received.max() ?? 0)).subtracting(received)
        #expect(missing.isEmpty, "seq missing after a 20 s broker stop: \(missing.sorted()) gateway log: \(gateway.output.suffix(3000))")

        // SIGKILL: the broker publishes the Will.
        gateway.signal(SIGKILL)
        _ = try await gateway.waitForExit()
        try await waitUntil("the Last Will", timeout: .seconds(30)) {
            subscriber.messages(on: statusTopic).last?.json["reason"] as? String == "connection lost"
        }
        // A new start, then SIGTERM: the clean offline status.
        gateway = try ChildProcess(try builtProduct("edge-gateway"), ["run", "--config", configPath],
                                   log: directory.file("gateway-2.log"))
        try await waitUntil("the second boot's birth", timeout: .seconds(30)) {
            subscriber.messages(on: statusTopic).contains { $0.json["state"] as? String == "online" && $0.json["boot"] as? Int == 2 }
        }
        gateway.signal(SIGTERM)
        #expect(try await gateway.waitForExit(timeout: .seconds(15)) == 0)
        try await waitUntil("the clean offline status", timeout: .seconds(10)) {
            subscriber.messages(on: statusTopic).last?.json["reason"] as? String == "shutdown"
        }
        #expect(states().contains("online"))
        try await broker.stop()
    }
}


/// Lets `duration` pass: the outage length a scenario needs (not a synchronisation).
private func pauseFor(_ duration: Duration) async throws {
    try await Task.sleep(for: duration)
}
