// Sparkplug DCMD writes end to end: a real mosquitto, the libmodbus simulator, the
// gateway process (mqtt.format: sparkplug, commands.sparkplug_unsigned: true) and a
// DCMD built independently of the gateway's code by pysparkplug (PyPI, in the venv
// `make deps` creates), as a host application would. The server's own registers say
// what was written; the read-back DDATA is decoded with the generated protobuf types.
import Foundation
import Modbus
import SparkplugB
import SwiftProtobuf
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

private let dcmdRepositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().path

/// Broker, simulated device, gateway as a Sparkplug edge node with DCMD writes, and a recorder.
final class SparkplugCommandRig: @unchecked Sendable {
    let directory: TemporaryDirectory
    let broker: MosquittoBroker
    let modbusPort = freeLoopbackPort()
    let simulator: ModbusSimulator
    var gateway: ChildProcess?
    let recorder: RecordingSubscriber
    let topics = SparkplugTopics(group: "plant-a", node: "gw-dc")
    let python: String

    /// - Parameters:
    ///   - broker: a broker already configured (started here); nil: an open one.
    ///   - login: `mqtt:` keys for the gateway's credentials (e.g. username and password_file).
    init(commands: String = "commands: { enabled: true, sparkplug_unsigned: true, rate: 100/s }",
         directory: TemporaryDirectory? = nil, broker: MosquittoBroker? = nil, login: String = "") async throws {
        python = dcmdRepositoryRoot + "/.build/venv/bin/python"
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw MissingTool(description: "\(python) with pysparkplug is needed to build DCMD: run `make deps`")
        }
        self.directory = try directory ?? TemporaryDirectory("sparkplug-dcmd")
        self.broker = try broker ?? MosquittoBroker()
        try await self.broker.start()
        let broker = self.broker, directory = self.directory
        recorder = RecordingSubscriber(port: broker.port, filter: "spBv1.0/#")
        try await recorder.waitConnected()
        simulator = try ModbusSimulator(port: modbusPort)
        simulator.setHoldingRegisters(0, [715])
        simulator.setHoldingRegisters(40, [0x41F0, 0x0000])  // setpoint 30.0
        try simulator.start()
        try """
        gateway: { id: gw-dc, stats_interval: 1s }
        mqtt: { host: 127.0.0.1, port: \(broker.port), keepalive: 5s, reconnect_min: 100ms, reconnect_max: 1s, format: sparkplug\(login) }
        sparkplug: { group_id: plant-a }
        buffer: { path: \(directory.file("outbox.sqlite")) }
        log_level: info
        \(commands)
        devices:
          - name: boiler-1
            tcp: { host: 127.0.0.1, port: \(modbusPort) }
            poll_interval: 100ms
            timeout: 300ms
            tags:
              - { name: setpoint, table: holding, address: 40, type: float32, writable: true, min: 20, max: 90 }
              - { name: temperature, table: holding, address: 0, type: int16, scale: 0.1 }
              - { name: pump, table: coils, address: 3, writable: true }
          - name: dead-1
            tcp: { host: 127.0.0.1, port: \(freeLoopbackPort()) }
            timeout: 100ms
            tags:
              - { name: valve, table: holding, address: 1, type: uint16, writable: true }
        """.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    deinit {
        gateway = nil
        simulator.stop()
        directory.remove()
    }

    var configPath: String { directory.file("gateway.yaml") }
    var log: String { gateway?.output ?? "" }

    /// Starts the gateway and waits for both DBIRTHs (boiler-1 polled, dead-1 dead).
    func startGateway() async throws {
        gateway = try ChildProcess(try builtProduct("edge-gateway"), ["run", "--config", configPath],
                                   log: directory.file("gateway.log"))
        try await waitUntil("births, boiler-1 polled and dead-1 offline") { [self] in
            !recorded(topics.dbirth(device: "boiler-1")).isEmpty && !recorded(topics.ddeath(device: "dead-1")).isEmpty
                && log.contains("device online")
        }
    }

    func recorded(_ topic: String) -> [SparkplugPayload] {
        recorder.messages.filter { $0.topic == topic }.compactMap { try? SparkplugPayload(serializedBytes: $0.payload) }
    }

    /// The alias of `metric` in `device`'s DBIRTH.
    func alias(_ metric: String, device: String = "boiler-1") throws -> UInt64 {
        let birth = try #require(recorded(topics.dbirth(device: device)).last, "no DBIRTH of \(device)")
        return try #require(birth.metrics.first { $0.name == metric }?.alias, "no \(metric) in the DBIRTH")
    }

    /// Builds a DCMD with pysparkplug and publishes it (QoS 1) with mosquitto_pub.
    func sendDCMD(_ metrics: [[String: Any]], device: String = "boiler-1", login: [String] = []) async throws {
        let spec = String(decoding: try JSONSerialization.data(withJSONObject: metrics), as: UTF8.self)
        let builder = try ChildProcess(python, [dcmdRepositoryRoot + "/Tests/SparkplugPeers/sparkplug_dcmd.py", spec],
                                       log: directory.file("dcmd-\(UUID().uuidString.prefix(6)).log"))
        let status = try await builder.waitForExit(timeout: .seconds(30))
        let hex = builder.output.split(separator: "\n").last.map(String.init) ?? ""
        guard status == 0, let payload = Self.bytes(hex: hex) else {
            throw MissingTool(description: "the pysparkplug DCMD builder failed: \(builder.output)")
        }
        let file = directory.file("dcmd-\(UUID().uuidString.prefix(6)).bin")
        try Data(payload).write(to: URL(fileURLWithPath: file))
        let tool = try requireTool("mosquitto_pub", package: "mosquitto-clients")
        let publisher = try ChildProcess(tool, ["-h", "127.0.0.1", "-p", "\(broker.port)", "-q", "1",
                                                "-t", topics.dcmd(device: device), "-f", file] + login, log: file + ".log")
        #expect(try await publisher.waitForExit() == 0, "\(publisher.output)")
    }

    static func bytes(hex: String) -> [UInt8]? {
        let digits = Array(hex.utf8)
        guard digits.count % 2 == 0, !digits.isEmpty else { return nil }
        return stride(from: 0, to: digits.count, by: 2).compactMap { UInt8(String(decoding: digits[$0..<$0 + 2], as: UTF8.self), radix: 16) }
    }

    /// Audit lines of DCMD (accepted or refused).
    var auditLines: [Substring] {
        log.split(separator: "\n").filter { $0.contains("command executed") || $0.contains("command refused") || $0.contains("command failed") }
    }

    /// The command counters of the newest NDATA, by the names the NBIRTH gave their aliases.
    var commandCounters: [String: UInt64] {
        guard let birth = recorded(topics.nbirth).last, let data = recorded(topics.ndata).last else { return [:] }
        var counts: [String: UInt64] = [:]
        for metric in birth.metrics where metric.name.hasPrefix("Gateway/Commands ") {
            if let value = data.metrics.first(where: { $0.alias == metric.alias })?.longValue { counts[metric.name] = value }
        }
        return counts
    }

    var writeRequests: Int {
        simulator.requestCount(functionCode: 5) + simulator.requestCount(functionCode: 6)
            + simulator.requestCount(functionCode: 15) + simulator.requestCount(functionCode: 16)
    }

    var diagnostics: String { "gateway log (tail):\n\(log.split(separator: "\n").suffix(30).joined(separator: "\n"))" }
}

/// One DCMD refusal: the metrics to send and the reason the audit line must give.
struct DCMDRefusal: CustomTestStringConvertible, Sendable {
    var name: String
    var reason: String
    /// JSON of the metric specs for the builder; `ALIAS(x)` is replaced by the alias of metric x.
    var metrics: String
    var device = "boiler-1"
    var testDescription: String { name }
}

@Suite(.serialized) struct SparkplugCommandTests {
    /// A host writes a float32 holding register (by name) and a coil (by its DBIRTH
    /// alias); the server holds the values, and the node reports them read back as a
    /// DDATA of exactly those two metrics; the audit line says ok.
    @Test func dcmdWritesAFloatAndACoilAndReportsTheReadBackAsDData() async throws {
        let rig = try await SparkplugCommandRig()
        try await rig.startGateway()
        let setpoint = try rig.alias("setpoint"), pump = try rig.alias("pump")
        #expect(rig.simulator.coils(3, count: 1) == [false])
        try await rig.sendDCMD([["name": "setpoint", "datatype": "FLOAT", "value": 72.5],
                                ["alias": Int(pump), "datatype": "BOOLEAN", "value": true]])
        try await waitUntil("the audit line of the write") { rig.auditLines.count == 1 }
        let audit = rig.auditLines[0]
        #expect(audit.contains("command executed") && audit.contains("outcome=ok") && audit.contains("unsigned DCMD"),
                "\(audit)")
        // The server itself holds them: 72.5 as float32 ABCD is 0x4291 0x0000.
        #expect(rig.simulator.holdingRegisters(40, count: 2) == [0x4291, 0x0000])
        #expect(rig.simulator.coils(3, count: 1) == [true])
        // The read-back DDATA: only the two written metrics, by alias, with the values read back.
        let ddata = rig.topics.ddata(device: "boiler-1")
        try await waitUntil("the read-back DDATA") {
            rig.recorded(ddata).contains { Set($0.metrics.map(\.alias)) == [setpoint, pump] }
        }
        let readBack = try #require(rig.recorded(ddata).first { Set($0.metrics.map(\.alias)) == [setpoint, pump] })
        #expect(readBack.metrics.first { $0.alias == setpoint }?.floatValue == 72.5, "\(readBack)")
        #expect(readBack.metrics.first { $0.alias == pump }?.booleanValue == true, "\(readBack)")
        #expect(readBack.hasSeq, "a DDATA carries the node's seq")
    }

    static let refusals: [DCMDRefusal] = [
        DCMDRefusal(name: "not writable", reason: "not_writable",
                    metrics: #"[{"name": "temperature", "datatype": "DOUBLE", "value": 50.0}]"#),
        DCMDRefusal(name: "the gateway's own metric", reason: "not_writable",
                    metrics: #"[{"name": "Gateway/Seq", "datatype": "INT64", "value": 5}]"#),
        DCMDRefusal(name: "above max", reason: "out_of_range",
                    metrics: #"[{"name": "setpoint", "datatype": "FLOAT", "value": 95.0}]"#),
        DCMDRefusal(name: "boolean for a Float metric", reason: "wrong_type",
                    metrics: #"[{"name": "setpoint", "datatype": "BOOLEAN", "value": true}]"#),
        DCMDRefusal(name: "unknown metric name", reason: "unknown_tag",
                    metrics: #"[{"name": "setpont", "datatype": "FLOAT", "value": 50.0}]"#),
        DCMDRefusal(name: "unknown alias", reason: "unknown_tag",
                    metrics: #"[{"alias": 9999, "datatype": "FLOAT", "value": 50.0}]"#),
        DCMDRefusal(name: "device offline", reason: "device_offline",
                    metrics: #"[{"name": "valve", "datatype": "UINT16", "value": 1}]"#, device: "dead-1"),
    ]

    /// Each refusal: its own reason in the audit line, nothing sent to the device, no read-back DDATA.
    @Test(arguments: refusals)
    func dcmdRefusedWithItsReasonWritesNothing(_ refusal: DCMDRefusal) async throws {
        let rig = try await SparkplugCommandRig()
        try await rig.startGateway()
        let writesBefore = rig.writeRequests
        let metrics = try #require(try JSONSerialization.jsonObject(with: Data(refusal.metrics.utf8)) as? [[String: Any]])
        try await rig.sendDCMD(metrics, device: refusal.device)
        try await waitUntil("the audit line") { rig.auditLines.count == 1 }
        let audit = rig.auditLines[0]
        #expect(audit.contains("command refused") && audit.contains("outcome=\(refusal.reason)")
                && audit.contains("device=\(refusal.device)") && audit.contains("error="), "\(audit)\n\(rig.diagnostics)")
        #expect(rig.writeRequests == writesBefore, "no write request reached the device")
        #expect(rig.simulator.holdingRegisters(40, count: 2) == [0x41F0, 0], "setpoint untouched")
        // Polling goes on after a refusal, and a valid DCMD still runs.
        try await rig.sendDCMD([["name": "setpoint", "datatype": "FLOAT", "value": 42.0]])
        try await waitUntil("the valid DCMD after it") { rig.auditLines.count == 2 }
        #expect(rig.auditLines[1].contains("command executed"), "\(rig.auditLines)")
        #expect(rig.simulator.holdingRegisters(40, count: 2) == [0x4228, 0x0000])
        // Counted as JSON commands are, in the node metrics (NBIRTH names them, NDATA by alias).
        try await waitUntil("an NDATA counting one refused and one executed DCMD") {
            let counts = rig.commandCounters
            return counts["Gateway/Commands Refused"] == 1 && counts["Gateway/Commands Executed"] == 1
                && counts["Gateway/Commands Received"] == 2 && counts["Gateway/Commands Failed"] == 0
        }
    }

    /// Without `commands.sparkplug_unsigned: true` the configuration is refused by
    /// check-config (exit 78) with the reason and the key to set; with it, accepted and
    /// the summary says DCMD writes are unsigned.
    @Test func withoutSparkplugUnsignedCheckConfigRefusesAndNamesTheKey() async throws {
        let refused = try await SparkplugCommandRig(commands: "commands: { enabled: true }")
        let child = try ChildProcess(try builtProduct("edge-gateway"), ["check-config", refused.configPath],
                                     log: refused.directory.file("check.log"))
        let status = try await child.waitForExit(timeout: .seconds(30))
        #expect(status == 78, "\(child.output)")
        #expect(child.output.contains("commands.enabled") && child.output.contains("commands.sparkplug_unsigned: true")
                && child.output.contains("no signature") && child.output.contains("ACL"), "\(child.output)")

        let accepted = try await SparkplugCommandRig()
        let ok = try ChildProcess(try builtProduct("edge-gateway"), ["check-config", accepted.configPath],
                                  log: accepted.directory.file("check.log"))
        #expect(try await ok.waitForExit(timeout: .seconds(30)) == 0, "\(ok.output)")
        #expect(ok.output.contains("Sparkplug DCMD") && ok.output.contains("UNSIGNED"), "\(ok.output)")
    }

    /// The broker ACL of docs/COMMANDS.md, taken from the document: the gateway (user
    /// gw-dc) may publish its births and data and gets its DCMD; the SCADA host's DCMD
    /// is run; a DCMD from another user, or from an anonymous client, never arrives.
    @Test func theDocumentedBrokerACLLetsOnlyTheHostWrite() async throws {
        let document = try String(contentsOfFile: dcmdRepositoryRoot + "/docs/COMMANDS.md", encoding: .utf8)
        let section = try #require(document.range(of: "## Sparkplug DCMD"), "docs/COMMANDS.md has no Sparkplug DCMD section")
        let marker = try #require(document.range(of: "# /etc/mosquitto/acl\n", range: section.upperBound..<document.endIndex))
        let end = try #require(document.range(of: "```", range: marker.upperBound..<document.endIndex))
        let acl = String(document[marker.upperBound..<end.lowerBound])
        #expect(acl.contains("DCMD"), "\(acl)")
        let directory = try TemporaryDirectory("sparkplug-acl")
        let passwd = try requireTool("mosquitto_passwd", package: "mosquitto")
        for user in ["gw-dc", "scada-1", "intruder"] {
            let child = try ChildProcess(passwd, ["-b"] + (user == "gw-dc" ? ["-c"] : []) + [directory.file("passwd"), user, "pw-\(user)"],
                                         log: directory.file("passwd-\(user).log"))
            #expect(try await child.waitForExit(timeout: .seconds(10)) == 0, "\(child.output)")
        }
        // Anonymous clients (the test's recorder) may read Sparkplug topics and use its marker topic only.
        try ("topic read spBv1.0/#\ntopic readwrite test/marker\n\n" + acl)
            .write(toFile: directory.file("acl"), atomically: true, encoding: .utf8)
        try "pw-gw-dc".write(toFile: directory.file("gw.password"), atomically: true, encoding: .utf8)
        chmod(directory.file("gw.password"), 0o600)
        let port = freeLoopbackPort()
        let broker = try MosquittoBroker(port: port, configuration: """
            listener \(port) 127.0.0.1
            allow_anonymous true
            password_file \(directory.file("passwd"))
            acl_file \(directory.file("acl"))
            persistence false
            set_tcp_nodelay true
            """)
        let rig = try await SparkplugCommandRig(directory: directory, broker: broker,
                                                login: ", username: gw-dc, password_file: \(directory.file("gw.password"))")
        try await rig.startGateway()  // its births arrived: the ACL lets the gateway publish
        try await rig.sendDCMD([["name": "setpoint", "datatype": "FLOAT", "value": 50.0]], login: ["-u", "intruder", "-P", "pw-intruder"])
        try await rig.sendDCMD([["name": "setpoint", "datatype": "FLOAT", "value": 60.0]])  // anonymous
        // Each publish was acknowledged before the next began: the broker had dropped or
        // delivered it by then, so when the host's DCMD is logged the others would be too.
        try await rig.sendDCMD([["name": "setpoint", "datatype": "FLOAT", "value": 72.5]], login: ["-u", "scada-1", "-P", "pw-scada-1"])
        try await waitUntil("the host's DCMD run") { !rig.auditLines.isEmpty }
        #expect(rig.auditLines.count == 1 && rig.auditLines[0].contains("set=setpoint=72.5")
                && rig.auditLines[0].contains("command executed"), "\(rig.auditLines)\n\(rig.diagnostics)")
        #expect(rig.simulator.holdingRegisters(40, count: 2) == [0x4291, 0x0000])
    }
}
