// The gateway as a Sparkplug B 3.0 edge node, end to end: a real mosquitto, the real
// libmodbus simulator, the real gateway process, and three independent decoders in
// Python (pysparkplug from PyPI; Google's protobuf runtime on protoc's compile of
// sparkplug_b.proto; mqtt-spb-wrapper from PyPI with Eclipse Tahu's Python core inside).
// Test names start with the TCK's edge-node test they belong to (SessionEstablishment,
// SessionTermination, SendData, ReceiveCommand, PrimaryHost; SendComplexData is
// SparkplugWireEncodingTests) and their comments list the TCK assertion ids.
import Foundation
import Modbus
import SparkplugB
import SwiftProtobuf
import Testing
import TestSupport

/// The repository root (for proto/ and the Python probe).
private let sparkplugRepositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().path

/// What the Sparkplug tests need besides the build: the venvs with pysparkplug and with
/// mqtt-spb-wrapper (`make deps`), protoc and Debian's python3-protobuf and python3-paho-mqtt.
private func sparkplugPeers() throws -> (venvPython: String, wrapperPython: String, protoc: String)? {
    let venvPython = sparkplugRepositoryRoot + "/.build/venv/bin/python"
    let wrapperPython = sparkplugRepositoryRoot + "/.build/venv-spb/bin/python"
    var missing: [String] = []
    for python in [venvPython, wrapperPython] where !FileManager.default.isExecutableFile(atPath: python) {
        missing.append("\(python) (make deps creates it)")
    }
    let protoc = try? requireTool("protoc", package: "protobuf-compiler")
    if protoc == nil { missing.append("protoc (apt: protobuf-compiler)") }
    for module in ["google/protobuf", "paho/mqtt"] where !FileManager.default.fileExists(atPath: "/usr/lib/python3/dist-packages/\(module)") {
        missing.append("python3 module \(module) (apt: python3-protobuf, python3-paho-mqtt)")
    }
    if missing.isEmpty, let protoc { return (venvPython, wrapperPython, protoc) }
    let message = "Sparkplug peers missing: \(missing.joined(separator: ", "))"
    if ProcessInfo.processInfo.environment["CI"] == "true" { throw MissingTool(description: message) }
    print("skipping: \(message)")
    return nil
}

/// One decoded message as a probe wrote it.
struct ProbeMessage {
    var json: [String: Any]
    var topic: String { json["topic"] as? String ?? "" }
    var seq: Int? { json["seq"] as? Int }
    var timestamp: Int? { json["timestamp"] as? Int }
    var error: String? { json["error"] as? String }
    var metrics: [[String: Any]] { json["metrics"] as? [[String: Any]] ?? [] }
    func metric(_ name: String) -> [String: Any]? { metrics.first { $0["name"] as? String == name } }
}

/// Broker, simulated device, gateway (format sparkplug), Swift recorder and two Python probes.
final class SparkplugEndToEnd: @unchecked Sendable {
    let directory: TemporaryDirectory
    let broker: MosquittoBroker
    let modbusPort = freeLoopbackPort()
    var simulator: ModbusSimulator?
    var gateway: ChildProcess?
    var probes: [ChildProcess] = []
    let recorder: RecordingSubscriber
    let topics = SparkplugTopics(group: "plant-a", node: "gw-sp")

    init(pollInterval: String = "100ms", primaryHost: String? = nil) async throws {
        directory = try TemporaryDirectory("sparkplug")
        broker = try MosquittoBroker()
        try await broker.start()
        recorder = RecordingSubscriber(port: broker.port, filter: "spBv1.0/#")
        try await recorder.waitConnected()
        try startDevice()
        try """
        gateway:
          id: gw-sp
          stats_interval: 1s
        mqtt:
          host: 127.0.0.1
          port: \(broker.port)
          keepalive: 5s
          reconnect_min: 100ms
          reconnect_max: 1s
          format: sparkplug
        sparkplug:
          group_id: plant-a
        \(primaryHost.map { "  primary_host_id: \($0)" } ?? "")
        buffer:
          path: \(directory.file("outbox.sqlite"))
        log_level: debug
        devices:
          - name: boiler-1
            tcp: { host: 127.0.0.1, port: \(modbusPort) }
            poll_interval: \(pollInterval)
            timeout: 200ms
            tags:
              - { name: i16, table: holding, address: 0, type: int16, unit: "°C" }
              - { name: u16, table: holding, address: 1, type: uint16 }
              - { name: i32, table: holding, address: 2, type: int32 }
              - { name: u32, table: holding, address: 4, type: uint32 }
              - { name: i64, table: holding, address: 6, type: int64 }
              - { name: u64, table: holding, address: 10, type: uint64 }
              - { name: f32, table: holding, address: 14, type: float32, unit: "m³/h" }
              - { name: f64, table: holding, address: 16, type: float64 }
              - { name: b, table: coils, address: 0, type: bool }
              - { name: s, table: holding, address: 20, type: string, length: 4 }
              - { name: scaled, table: holding, address: 24, type: int16, scale: 0.1 }
              - { name: bad, table: holding, address: 30, type: uint16 }
        """.write(toFile: directory.file("gateway.yaml"), atomically: true, encoding: .utf8)
    }

    deinit {
        gateway = nil
        probes = []
        simulator?.stop()
        directory.remove()
    }

    /// Each tag's datatype and value as the decoders' JSON prints it (a bool as 1).
    static let expected: [String: (datatype: SparkplugDataType, value: String)] = [
        "i16": (.int16, "-5"), "u16": (.uint16, "65000"), "i32": (.int32, "-100000"), "u32": (.uint32, "4000000000"),
        "i64": (.int64, "-1234567890123"), "u64": (.uint64, "9000000000000000123"),
        "f32": (.float, "12.5"), "f64": (.double, "-2.75"), "b": (.boolean, "1"), "s": (.string, "ABCDEFGH"),
        "scaled": (.double, "71.5"),
    ]

    func startDevice() throws {
        let simulator = try ModbusSimulator(port: modbusPort)
        func words(_ value: UInt64, count: Int) -> [UInt16] {
            (0..<count).map { UInt16(truncatingIfNeeded: value >> (16 * UInt64(count - 1 - $0))) }
        }
        simulator.setHoldingRegisters(0, [UInt16(bitPattern: -5), 65000])
        simulator.setHoldingRegisters(2, words(UInt64(UInt32(bitPattern: -100_000)), count: 2))
        simulator.setHoldingRegisters(4, words(4_000_000_000, count: 2))
        simulator.setHoldingRegisters(6, words(UInt64(bitPattern: -1_234_567_890_123), count: 4))
        simulator.setHoldingRegisters(10, words(9_000_000_000_000_000_123, count: 4))
        simulator.setHoldingRegisters(14, words(UInt64(Float(12.5).bitPattern), count: 2))
        simulator.setHoldingRegisters(16, words((-2.75).bitPattern, count: 4))
        simulator.setHoldingRegisters(20, [0x4142, 0x4344, 0x4546, 0x4748])
        simulator.setHoldingRegisters(24, [715])
        simulator.setCoils(0, [true])
        simulator.reject(functionCode: 3, addresses: 30..<31)  // tag `bad`: exception 2 on every poll
        try simulator.start()
        self.simulator = simulator
    }

    func startProbes(venvPython: String, wrapperPython: String, protoc: String) async throws {
        let pb2 = directory.file("pb2")
        try FileManager.default.createDirectory(atPath: pb2, withIntermediateDirectories: true)
        let compile = try ChildProcess(protoc, ["--proto_path=\(sparkplugRepositoryRoot)/proto", "--python_out=\(pb2)",
                                                "\(sparkplugRepositoryRoot)/proto/sparkplug_b.proto"],
                                       log: directory.file("protoc.log"))
        #expect(try await compile.waitForExit() == 0, "\(compile.output)")
        let script = sparkplugRepositoryRoot + "/Tests/SparkplugPeers/sparkplug_probe.py"
        probes = [
            try ChildProcess(venvPython, [script, "--port", "\(broker.port)", "--decoder", "pysparkplug",
                                          "--out", directory.file("pysparkplug.jsonl")], log: directory.file("probe-psp.log")),
            try ChildProcess("/usr/bin/python3", [script, "--port", "\(broker.port)", "--decoder", "protobuf",
                                                  "--pb2-dir", pb2, "--out", directory.file("protobuf.jsonl")],
                             log: directory.file("probe-pb.log")),
            try ChildProcess(wrapperPython, [script, "--port", "\(broker.port)", "--decoder", "spbwrapper",
                                             "--out", directory.file("spbwrapper.jsonl")], log: directory.file("probe-spb.log")),
        ]
        try await waitUntil("the three probes subscribed") {
            Decoder.allCases.allSatisfy { messages($0, ready: true).count == 1 }
        }
    }

    enum Decoder: String, CaseIterable { case pysparkplug, protobuf, spbwrapper }

    func messages(_ decoder: Decoder, ready: Bool = false) -> [ProbeMessage] {
        let text = (try? String(contentsOfFile: directory.file("\(decoder.rawValue).jsonl"), encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
        }.filter { ($0["ready"] != nil) == ready }.map(ProbeMessage.init)
    }

    func startGateway() throws {
        gateway = try ChildProcess(try builtProduct("edge-gateway"), ["run", "--config", directory.file("gateway.yaml")],
                                   log: directory.file("gateway-\(UUID().uuidString.prefix(6)).log"))
    }

    /// Every Sparkplug message the recorder got, decoded with the generated types (nil payload for STATE).
    var recorded: [(topic: String, payload: SparkplugPayload?)] {
        recorder.messages.filter { $0.topic.hasPrefix("spBv1.0/plant-a/") }.map {
            ($0.topic, try? SparkplugPayload(serializedBytes: $0.payload))
        }
    }

    func recorded(_ topic: String) -> [SparkplugPayload] {
        recorded.filter { $0.topic == topic }.compactMap(\.payload)
    }

    func bdSeq(_ payload: SparkplugPayload) -> UInt64? {
        payload.metrics.first { $0.name == "bdSeq" }?.longValue
    }

    /// Publishes a binary payload with mosquitto_pub.
    func publish(_ topic: String, _ payload: [UInt8], retain: Bool = false) async throws {
        let file = directory.file("publish-\(UUID().uuidString.prefix(6)).bin")
        try Data(payload).write(to: URL(fileURLWithPath: file))
        let tool = try requireTool("mosquitto_pub", package: "mosquitto-clients")
        let child = try ChildProcess(tool, ["-h", "127.0.0.1", "-p", "\(broker.port)", "-t", topic, "-q", "1", "-f", file]
                                        + (retain ? ["-r"] : []), log: file + ".log")
        #expect(try await child.waitForExit() == 0, "\(child.output)")
    }

    var diagnostics: String {
        "gateway log (tail):\n\(gateway?.output.suffix(4000) ?? "-")\nreceived:\n"
            + recorder.messages.suffix(20).map { "\($0.topic) \($0.payload.count) bytes" }.joined(separator: "\n")
    }
}

@Suite(.serialized) struct SparkplugEdgeNodeTests {
    /// tck-id-topic-structure-namespace-valid-group-id through the real binary: `check-config`
    /// refuses a group id with a reserved character (exit 78, YAML path) and names the node when valid.
    @Test func sessionEstablishmentCheckConfigRefusesInvalidSparkplugIDsAndNamesTheNode() async throws {
        let directory = try TemporaryDirectory("sparkplug-check")
        defer { directory.remove() }
        func check(group: String) async throws -> (Int32, String) {
            let config = directory.file("gateway-\(UUID().uuidString.prefix(6)).yaml")
            try """
            gateway: { id: gw-sp }
            mqtt: { host: 127.0.0.1, port: \(freeLoopbackPort()), format: sparkplug }
            sparkplug: { group_id: "\(group)", primary_host_id: scada-1 }
            buffer: { path: \(directory.file("outbox.sqlite")) }
            devices: [{ name: d, tcp: { host: 127.0.0.1, port: \(freeLoopbackPort()) }, tags: [{ name: t, table: input, address: 0, type: int16 }] }]
            """.write(toFile: config, atomically: true, encoding: .utf8)
            let child = try ChildProcess(try builtProduct("edge-gateway"), ["check-config", config], log: config + ".log")
            return (try await child.waitForExit(timeout: .seconds(30)), child.output)
        }
        let (refused, refusal) = try await check(group: "plant+a")
        #expect(refused == 78 && refusal.contains("sparkplug.group_id") && refusal.contains("not a valid Sparkplug id"), "\(refusal)")
        let (accepted, summary) = try await check(group: "plant-a")
        #expect(accepted == 0 && summary.contains("Sparkplug B edge node gw-sp in group plant-a")
                && summary.contains("primary host scada-1"), "\(summary)")
    }

    /// SessionEstablishment + SendData: tck-id-topics-nbirth-topic, -nbirth-seq-num, -nbirth-bdseq-included,
    /// -nbirth-rebirth-metric, -dbirth-topic, -dbirth-metrics, -ddata-topic, -ddata-seq-num (wrapping),
    /// tck-id-payloads-alias-birth-requirement, -alias-data-cmd-requirement, tck-id-topics-nbirth-mqtt,
    /// -dbirth-mqtt (QoS 0, not retained); every datatype and value through three independent decoders.
    @Test func sessionEstablishmentAndSendDataThroughThreeDecoders() async throws {
        guard let peers = try sparkplugPeers() else { return }
        let e2e = try await SparkplugEndToEnd(pollInterval: "20ms")
        try await e2e.startProbes(venvPython: peers.venvPython, wrapperPython: peers.wrapperPython, protoc: peers.protoc)
        try e2e.startGateway()
        // 300 DDATA: seq passes 255 and wraps to 0.
        try await waitUntil("NBIRTH, DBIRTH and 300 DDATA", timeout: .seconds(60)) {
            e2e.recorded(e2e.topics.ddata(device: "boiler-1")).count >= 300
        }
        let all = e2e.recorded
        let nbirth = try #require(all.first, "\(e2e.diagnostics)")
        #expect(nbirth.topic == "spBv1.0/plant-a/NBIRTH/gw-sp")
        let birth = try #require(nbirth.payload)
        #expect(birth.seq == 0 && e2e.bdSeq(birth) == 0)
        let rebirth = try #require(birth.metrics.first { $0.name == "Node Control/Rebirth" })
        #expect(rebirth.booleanValue == false && rebirth.datatype == SparkplugDataType.boolean.rawValue && !rebirth.hasAlias)
        #expect(all[1].topic == "spBv1.0/plant-a/DBIRTH/gw-sp/boiler-1")
        // seq: NBIRTH 0, then +1 on every message of the node, 255 → 0.
        let seqs = all.compactMap { $0.payload?.seq }
        for (previous, next) in zip(seqs, seqs.dropFirst()) {
            #expect(next == (previous + 1) % 256, "seq \(previous) → \(next)")
        }
        #expect(seqs.contains(255) && seqs.filter { $0 == 0 }.count >= 2)
        // Births and data are QoS 0 (as sent, the broker forwards at most that), not retained.
        #expect(e2e.recorder.messages.filter { $0.topic.hasPrefix("spBv1.0/plant-a/") }.allSatisfy { !$0.retained })

        // Every decoder, NBIRTH, DBIRTH and DDATA: every type and value, aliases resolved, units.
        try await waitUntil("the probes decoded DDATA") {
            SparkplugEndToEnd.Decoder.allCases.allSatisfy { decoder in
                e2e.messages(decoder).filter { $0.topic.contains("/DDATA/") }.count >= 10
            }
        }
        for decoder in SparkplugEndToEnd.Decoder.allCases {
            let messages = e2e.messages(decoder)
            #expect(messages.allSatisfy { $0.error == nil }, "\(decoder): \(messages.compactMap(\.error).prefix(3))")
            let decodedBirth = try #require(messages.first { $0.topic.hasSuffix("/NBIRTH/gw-sp") }, "\(decoder)")
            #expect("\(decodedBirth.metric("bdSeq")?["value"] ?? "nil")" == "0", "\(decoder): \(decodedBirth.metrics)")
            #expect("\(decodedBirth.metric("Node Control/Rebirth")?["value"] ?? "nil")" == "0", "\(decoder)")
            let dbirth = try #require(messages.first { $0.topic.hasSuffix("/DBIRTH/gw-sp/boiler-1") }, "\(decoder)")
            let ddata = try #require(messages.last { $0.topic.hasSuffix("/DDATA/gw-sp/boiler-1") }, "\(decoder)")
            for (name, expected) in SparkplugEndToEnd.expected {
                let inBirth = try #require(dbirth.metric(name), "\(decoder) DBIRTH lacks \(name)")
                #expect(inBirth["datatype"] as? Int == Int(expected.datatype.rawValue), "\(decoder) \(name)")
                #expect(inBirth["alias"] as? Int != nil, "\(decoder) \(name) has no alias in DBIRTH")
                let data = try #require(ddata.metric(name), "\(decoder) DDATA alias of \(name) did not resolve")
                #expect("\(data["value"] ?? "nil")" == expected.value, "\(decoder) \(name): \(data["value"] ?? "nil")")
                #expect(data["is_historical"] as? Bool == false)
            }
            // A failed tag stays in the message: is_null, no value (tck-id-payloads-metric-is-null).
            let bad = try #require(ddata.metric("bad"), "\(decoder): the failed tag is missing")
            #expect(bad["is_null"] as? Bool == true && bad["value"] is NSNull, "\(decoder): \(bad)")
            if decoder != .pysparkplug {  // pysparkplug's probe does not print properties
                let quality = (bad["properties"] as? [String: [String: Any]])?["Quality"]
                #expect(quality?["type"] as? Int == 3 && quality?["value"] as? Int == 0, "\(bad)")
                #expect(ddata.metrics.allSatisfy { $0["named_on_wire"] as? Bool == false }, "DDATA carries names")
                let units = dbirth.metric("i16")?["properties"] as? [String: [String: Any]]
                #expect(units?["engUnit"]?["value"] as? String == "°C")
                let flowUnit = dbirth.metric("f32")?["properties"] as? [String: [String: Any]]
                #expect(flowUnit?["engUnit"]?["value"] as? String == "m³/h")
            }
        }
    }

    /// SessionTermination: tck-id-message-flow-edge-node-birth-publish-will-message (NDEATH Will,
    /// QoS 1, not retained, bdSeq == NBIRTH's), tck-id-topics-nbirth-bdseq-increment (+1 on the next
    /// CONNECT, across a restart), tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath.
    @Test func sessionTerminationKilledNodeGetsItsWillCleanStopSendsNDeath() async throws {
        let e2e = try await SparkplugEndToEnd()
        try e2e.startGateway()
        try await waitUntil("first NBIRTH and DDATA") { !e2e.recorded(e2e.topics.ddata(device: "boiler-1")).isEmpty }
        let first = try #require(e2e.recorded(e2e.topics.nbirth).first)
        e2e.gateway?.signal(SIGKILL)
        _ = try await e2e.gateway?.waitForExit()
        // The broker notices the dead connection within 1.5 × keepalive (5 s).
        try await waitUntil("the Will NDEATH", timeout: .seconds(20)) { !e2e.recorded(e2e.topics.ndeath).isEmpty }
        let will = try #require(e2e.recorded(e2e.topics.ndeath).first)
        #expect(e2e.bdSeq(will) == e2e.bdSeq(first), "\(e2e.diagnostics)")
        #expect(!will.hasSeq && will.metrics.count == 1)
        #expect(e2e.recorder.messages.first { $0.topic == e2e.topics.ndeath }?.retained == false)

        try e2e.startGateway()
        try await waitUntil("the second NBIRTH") { e2e.recorded(e2e.topics.nbirth).count == 2 }
        let second = e2e.recorded(e2e.topics.nbirth)[1]
        #expect(e2e.bdSeq(second) == e2e.bdSeq(first)! + 1, "\(e2e.diagnostics)")
        e2e.gateway?.signal(SIGTERM)
        #expect(try await e2e.gateway?.waitForExit() == 0)
        try await waitUntil("the clean NDEATH") { e2e.recorded(e2e.topics.ndeath).count == 2 }
        #expect(e2e.bdSeq(e2e.recorded(e2e.topics.ndeath)[1]) == e2e.bdSeq(second))
        #expect(e2e.recorded.last?.topic == e2e.topics.ndeath, "nothing after the clean NDEATH")
    }

    /// ReceiveCommand: tck-id-operational-behavior-data-commands-ncmd-rebirth-* → NBIRTH (seq 0,
    /// same bdSeq) and every DBIRTH again; tck-id-message-flow-edge-node-ncmd-subscribe.
    @Test func receiveCommandRebirthRepublishesBirthsWithSeqFromZero() async throws {
        let e2e = try await SparkplugEndToEnd()
        try e2e.startGateway()
        try await waitUntil("births and data") { e2e.recorded(e2e.topics.ddata(device: "boiler-1")).count >= 3 }
        let before = e2e.recorded.count
        var metric = SparkplugMetric()
        metric.name = "Node Control/Rebirth"
        metric.datatype = SparkplugDataType.boolean.rawValue
        metric.booleanValue = true
        var command = SparkplugPayload()
        command.timestamp = SparkplugNode.milliseconds(Date())
        command.metrics = [metric]
        try await e2e.publish(e2e.topics.ncmd, try command.serializedBytes())
        try await waitUntil("a second NBIRTH and a DBIRTH after it") {
            let topics = e2e.recorded.map(\.topic)
            guard let rebirth = topics.lastIndex(of: e2e.topics.nbirth), rebirth > 0 else { return false }
            return topics[rebirth...].contains(e2e.topics.dbirth(device: "boiler-1"))
        }
        let after = Array(e2e.recorded.dropFirst(before))
        let index = try #require(after.firstIndex { $0.topic == e2e.topics.nbirth }, "\(e2e.diagnostics)")
        #expect(after[index].payload?.seq == 0)
        #expect(e2e.bdSeq(after[index].payload!) == e2e.bdSeq(e2e.recorded(e2e.topics.nbirth)[0]))
        #expect(after[index + 1].topic == e2e.topics.dbirth(device: "boiler-1") && after[index + 1].payload?.seq == 1)

        // DCMD: subscribed, refused with the reason in the log (writes are not enabled).
        try await e2e.publish(e2e.topics.dcmd(device: "boiler-1"), try command.serializedBytes())
        try await waitUntil("the DCMD refusal in the log") {
            e2e.gateway?.output.contains("DCMD refused: writing to devices is not enabled") == true
        }
    }

    /// SessionTermination of a device: dead Modbus device → DDEATH (tck-id-topics-ddeath-seq-num);
    /// back → DBIRTH (with seq continuing).
    @Test func sessionTerminationDeadDeviceGetsDDeathAndDBirthWhenBack() async throws {
        let e2e = try await SparkplugEndToEnd()
        try e2e.startGateway()
        try await waitUntil("births and data") { e2e.recorded(e2e.topics.ddata(device: "boiler-1")).count >= 2 }
        e2e.simulator?.stop()
        try await waitUntil("DDEATH", timeout: .seconds(20)) { !e2e.recorded(e2e.topics.ddeath(device: "boiler-1")).isEmpty }
        try e2e.startDevice()
        try await waitUntil("DBIRTH again", timeout: .seconds(20)) {
            e2e.recorded(e2e.topics.dbirth(device: "boiler-1")).count >= 2
        }
        let ddeath = try #require(e2e.recorded(e2e.topics.ddeath(device: "boiler-1")).first)
        #expect(ddeath.hasSeq && ddeath.hasTimestamp)
    }

    /// PrimaryHost: tck-id-message-flow-edge-node-birth-publish-phid-wait (no NBIRTH before the host's
    /// online STATE), then the births with current values and the buffered polls as historical DDATA,
    /// in order, none missing (Gateway/Seq consecutive), with their poll times.
    @Test func primaryHostOfflineHoldsDataThenReplaysItAsHistorical() async throws {
        let e2e = try await SparkplugEndToEnd(primaryHost: "scada-1")
        let state = SparkplugTopics.state(host: "scada-1")
        try await e2e.publish(state, Array(#"{"online":false,"timestamp":1000}"#.utf8), retain: true)
        try e2e.startGateway()
        // Polling goes on into the outbox; nothing Sparkplug but nothing published.
        try await waitUntil("the gateway buffering polls", timeout: .seconds(20)) {
            e2e.gateway?.output.contains("waiting for the primary host") == true
        }
        let heldFrom = Date()
        try await waitUntil("two seconds of polls") { Date().timeIntervalSince(heldFrom) > 2 }
        #expect(e2e.recorded.filter { !$0.topic.contains("/STATE/") }.isEmpty, "\(e2e.diagnostics)")
        try await e2e.publish(state, Array(#"{"online":true,"timestamp":2000}"#.utf8), retain: true)
        try await waitUntil("births and historical data") {
            e2e.recorded(e2e.topics.ddata(device: "boiler-1")).contains { $0.metrics.allSatisfy { !$0.isHistorical } }
        }
        let all = e2e.recorded
        #expect(all.first?.topic == e2e.topics.nbirth && all.dropFirst().first?.topic == e2e.topics.dbirth(device: "boiler-1"))
        let data = e2e.recorded(e2e.topics.ddata(device: "boiler-1"))
        let historical = data.prefix { $0.metrics.allSatisfy { $0.isHistorical } }
        #expect(historical.count >= 10, "\(historical.count) historical of \(data.count)")
        // Gateway/Seq (the outbox's seq) is consecutive: nothing held back went missing.
        let dbirth = try #require(e2e.recorded(e2e.topics.dbirth(device: "boiler-1")).first)
        let seqAlias = try #require(dbirth.metrics.first { $0.name == "Gateway/Seq" }?.alias)
        let outboxSeqs = data.compactMap { $0.metrics.first { $0.alias == seqAlias }?.longValue }
        #expect(outboxSeqs == Array(outboxSeqs.first!...outboxSeqs.last!), "\(outboxSeqs.prefix(20))")
        #expect(outboxSeqs.first == 1)
        // Poll times, not send times: the first historical value is older than the births.
        let births = try #require(e2e.recorded(e2e.topics.nbirth).first)
        #expect(historical.first!.metrics[0].timestamp + 1000 < births.timestamp)

        // tck-id-operational-behavior-edge-node-termination-host-offline-timestamp: an offline
        // STATE older than the last online one changes nothing ...
        try await e2e.publish(state, Array(#"{"online":false,"timestamp":1500}"#.utf8), retain: true)
        // ... a current one: NDEATH (this session's bdSeq), disconnect, reconnect, wait for the host
        // (tck-id-operational-behavior-edge-node-termination-host-offline, -reconnect).
        try await e2e.publish(state, Array(#"{"online":false,"timestamp":3000}"#.utf8), retain: true)
        try await waitUntil("NDEATH after the host went offline") { !e2e.recorded(e2e.topics.ndeath).isEmpty }
        #expect(e2e.recorded(e2e.topics.ndeath).count == 1, "the stale offline STATE was acted on")
        #expect(e2e.bdSeq(e2e.recorded(e2e.topics.ndeath)[0]) == e2e.bdSeq(births))
        try await waitUntil("the gateway waiting for the host on its new connection", timeout: .seconds(20)) {
            e2e.gateway?.output.components(separatedBy: "waiting for the primary host").count == 3
        }
        #expect(e2e.recorded(e2e.topics.nbirth).count == 1)
        try await e2e.publish(state, Array(#"{"online":true,"timestamp":4000}"#.utf8), retain: true)
        try await waitUntil("the second NBIRTH") { e2e.recorded(e2e.topics.nbirth).count == 2 }
        #expect(e2e.bdSeq(e2e.recorded(e2e.topics.nbirth)[1]) == e2e.bdSeq(births)! + 1, "\(e2e.diagnostics)")
    }
}
