// Guarded writes end to end: a real mosquitto, a libmodbus server, the gateway
// process, and commands built by the independent Python client of docs/COMMANDS.md
// (published with mosquitto_pub) or by `edge-gateway command`.
import Foundation
import Modbus
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The Python client of docs/COMMANDS.md, taken from the document itself, and a
/// driver that calls it with a test's overrides.
struct PythonCommandClient {
    let python: String
    let directory: TemporaryDirectory

    static func documentedClient() throws -> String {
        let document = try CommandDocumentationTests.document()
        let start = try #require(document.range(of: "```python\n"), "docs/COMMANDS.md has no python block")
        let end = try #require(document.range(of: "```", range: start.upperBound..<document.endIndex))
        return String(document[start.upperBound..<end.lowerBound])
    }

    static let driver = """
    import base64, json, sys
    from datetime import datetime, timedelta, timezone
    sys.path.insert(0, sys.argv[1])
    from commands_doc import make_command
    a = json.loads(sys.argv[2])
    kw = {k: a[k] for k in ("prefix", "alg", "command_id", "nonce", "topic") if k in a}
    if "issued_offset" in a: kw["issued"] = datetime.now(timezone.utc) + timedelta(seconds=a["issued_offset"])
    if "issued" in a: kw["issued"] = datetime.fromisoformat(a["issued"])
    if "iv_hex" in a: kw["iv"] = bytes.fromhex(a["iv_hex"])
    topic, env = make_command(bytes.fromhex(a["key_hex"]), a["kid"], a["gateway"], a["device"], a["set"], **kw)
    if a.get("tamper"):
        e = json.loads(env)
        field = "sig" if e["alg"] == "HS256" else "ct"
        raw = bytearray(base64.b64decode(e[field])); raw[0] ^= 1
        e[field] = base64.b64encode(bytes(raw)).decode()
        env = json.dumps(e, separators=(",", ":")).encode()
    print(topic)
    print(env.decode())
    """

    init(directory: TemporaryDirectory) async throws {
        self.directory = directory
        try Self.documentedClient().write(toFile: directory.file("commands_doc.py"), atomically: true, encoding: .utf8)
        try Self.driver.write(toFile: directory.file("driver.py"), atomically: true, encoding: .utf8)
        var found: String?
        for candidate in ["/usr/bin/python3"] where FileManager.default.isExecutableFile(atPath: candidate) {
            let probe = try ChildProcess(candidate, ["-c", "import cryptography.hazmat.primitives.ciphers.aead"],
                                         log: directory.file("probe.log"))
            if try await probe.waitForExit(timeout: .seconds(30)) == 0 { found = candidate }
        }
        guard let found else {
            throw MissingTool(description: "/usr/bin/python3 with the cryptography package is needed: run `make deps` (Debian package python3-cryptography)")
        }
        python = found
    }

    /// The topic and envelope the documented client makes for `request`.
    func envelope(_ request: [String: Any]) async throws -> (topic: String, envelope: String) {
        let json = String(decoding: try JSONSerialization.data(withJSONObject: request), as: UTF8.self)
        let child = try ChildProcess(python, [directory.file("driver.py"), directory.path, json],
                                     log: directory.file("client-\(UUID().uuidString.prefix(6)).log"))
        let status = try await child.waitForExit(timeout: .seconds(30))
        let lines = child.output.split(separator: "\n").map(String.init)
        guard status == 0, lines.count >= 2 else { throw MissingTool(description: "the Python client failed: \(child.output)") }
        return (lines[lines.count - 2], lines[lines.count - 1])
    }
}

/// Broker, device, gateway with commands, and a subscriber to everything the gateway says.
final class CommandRig: @unchecked Sendable {
    let directory: TemporaryDirectory
    let broker: MosquittoBroker
    let modbusPort = freeLoopbackPort()
    var simulator: ModbusSimulator?
    var gateway: ChildProcess?
    let subscriber: RecordingSubscriber
    let gatewayID: String
    /// The command key the gateway has (`ops1`), and one it does not have.
    let keyHex = String(repeating: "5a", count: 32)
    let otherKeyHex = String(repeating: "a5", count: 32)
    let client: PythonCommandClient
    let configPath: String

    /// - Parameters:
    ///   - commands: the `commands:` section; `nil` uses enabled, key ops1, rate 100/s.
    ///   - devices: YAML list items appended to `devices:`.
    init(gatewayID: String = "gw-c", broker: MosquittoBroker? = nil, commands: String? = nil, tags: String = "",
         devices: String = "", transport: String? = nil, pollInterval: String = "100ms",
         reconnect: String = "reconnect_min: 100ms, reconnect_max: 1s") async throws {
        self.gatewayID = gatewayID
        directory = try TemporaryDirectory("cmd")
        self.broker = try broker ?? MosquittoBroker()
        if broker == nil { try await self.broker.start() }
        subscriber = RecordingSubscriber(port: self.broker.port, filter: "edge/\(gatewayID)/#")
        try await subscriber.waitConnected()
        client = try await PythonCommandClient(directory: directory)
        let keyFile = directory.file("ops1.key")
        try keyHex.write(toFile: keyFile, atomically: true, encoding: .utf8)
        chmod(keyFile, 0o600)
        configPath = directory.file("gateway.yaml")
        let section = commands ?? """
        commands:
          enabled: true
          keys: [{ id: ops1, file: \(keyFile) }]
          max_age: 10s
          rate: 100/s
        """
        if transport == nil {
            let simulator = try ModbusSimulator(port: modbusPort)
            simulator.setHoldingRegisters(0, [715])
            simulator.setHoldingRegisters(40, [0x41F0, 0x0000])  // setpoint 30.0
            try simulator.start()
            self.simulator = simulator
        }
        try """
        gateway: { id: \(gatewayID), stats_interval: 1s }
        mqtt: { host: 127.0.0.1, port: \(self.broker.port), keepalive: 5s, \(reconnect) }
        buffer: { path: \(directory.file("outbox.sqlite")) }
        log_level: info
        \(section.replacingOccurrences(of: "KEYFILE", with: keyFile))
        devices:
          - name: boiler-1
            \(transport ?? "tcp: { host: 127.0.0.1, port: \(modbusPort) }")
            poll_interval: \(pollInterval)
            timeout: 300ms
            tags:
              - { name: setpoint, table: holding, address: 40, type: float32, writable: true, min: 20, max: 90 }
              - { name: level, table: holding, address: 44, type: int16, scale: 0.1, writable: true }
              - { name: temperature, table: holding, address: 0, type: int16, scale: 0.1 }
              - { name: pump, table: coils, address: 3, writable: true }
        \(tags)
        \(devices)
        """.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    deinit {
        gateway = nil
        simulator?.stop()
        directory.remove()
    }

    func startGateway(waitForSubscription: Bool = true) async throws {
        gateway = try ChildProcess(try builtProduct("edge-gateway"), ["run", "--config", configPath],
                                   log: directory.file("gateway-\(UUID().uuidString.prefix(6)).log"))
        try await waitUntil("the gateway online with boiler-1 polled") { [self] in
            let log = gateway?.output ?? ""
            return log.contains("device online") && log.contains("connected to broker")
                && (!waitForSubscription || log.contains("subscribed to commands"))
        }
    }

    func stopGateway() async throws {
        gateway?.signal(SIGTERM)
        _ = try await gateway?.waitForExit(timeout: .seconds(10))
    }

    var log: String { gateway?.output ?? "" }
    var resultFilter: String { "edge/\(gatewayID)/+/cmd/result" }

    /// Builds a command with the Python client; returns its id, topic and envelope.
    func command(_ set: [String: Any], device: String = "boiler-1", _ options: [String: Any] = [:])
        async throws -> (id: String, topic: String, envelope: String) {
        let id = "t-\(UUID().uuidString.prefix(8).lowercased())"
        var request: [String: Any] = ["key_hex": keyHex, "kid": "ops1", "gateway": gatewayID, "device": device,
                                      "set": set, "command_id": id]
        for (key, value) in options { request[key] = value }
        let (topic, envelope) = try await client.envelope(request)
        return (id, topic, envelope)
    }

    /// Publishes with mosquitto_pub (QoS 1).
    func publish(_ topic: String, _ message: String, retain: Bool = false) async throws {
        let tool = try requireTool("mosquitto_pub", package: "mosquitto-clients")
        let child = try ChildProcess(tool, ["-h", "127.0.0.1", "-p", "\(broker.port)", "-q", "1", "-t", topic, "-m", message]
                                     + (retain ? ["-r"] : []), log: directory.file("pub-\(UUID().uuidString.prefix(6)).log"))
        let status = try await child.waitForExit(timeout: .seconds(10))
        #expect(status == 0, "mosquitto_pub: \(child.output)")
    }

    /// Builds, publishes and waits for the result of a command.
    @discardableResult
    func send(_ set: [String: Any], device: String = "boiler-1", _ options: [String: Any] = [:]) async throws -> [String: Any] {
        let (id, topic, envelope) = try await command(set, device: device, options)
        try await publish(topic, envelope)
        return try await result(id)
    }

    func results(_ id: String) -> [[String: Any]] {
        subscriber.messages.filter { $0.topic.hasSuffix("/cmd/result") }.map(\.json).filter { $0["id"] as? String == id }
    }

    func result(_ id: String, count: Int = 1) async throws -> [String: Any] {
        try await waitUntil("result \(count) of \(id)") { [self] in results(id).count >= count }
        return results(id)[count - 1]
    }

    var setpointRegisters: [UInt16] { simulator!.holdingRegisters(40, count: 2) }

    var diagnostics: String {
        "gateway log:\n\(log.split(separator: "\n").suffix(40).joined(separator: "\n"))"
    }
}

/// One refusal: what to send and the reason the gateway must give.
struct RefusalCase: CustomTestStringConvertible, Sendable {
    var name: String
    var reason: String
    var set: [String: SendableValue]
    var options: [String: SendableValue] = [:]
    var device = "boiler-1"
    var testDescription: String { name }
}

enum SendableValue: Sendable {
    case number(Double), integer(Int), bool(Bool), text(String)
    var any: Any {
        switch self {
        case let .number(value): return value
        case let .integer(value): return value
        case let .bool(value): return value
        case let .text(value): return value
        }
    }
}

@Suite(.serialized) struct CommandTests {
    static let refusals: [RefusalCase] = [
        RefusalCase(name: "unknown key id", reason: "unknown_key", set: ["setpoint": .number(50)],
                    options: ["kid": .text("ops9")]),
        RefusalCase(name: "altered signature", reason: "bad_signature", set: ["setpoint": .number(50)],
                    options: ["tamper": .bool(true)]),
        RefusalCase(name: "altered ciphertext", reason: "bad_signature", set: ["setpoint": .number(50)],
                    options: ["tamper": .bool(true), "alg": .text("A256GCM")]),
        RefusalCase(name: "signed with a key the gateway does not have", reason: "bad_signature",
                    set: ["setpoint": .number(50)], options: ["key_hex": .text(String(repeating: "a5", count: 32))]),
        RefusalCase(name: "signed for another topic", reason: "bad_signature", set: ["setpoint": .number(50)],
                    options: ["signed_topic": .text("edge/gw-c/boiler-2/cmd")]),
        RefusalCase(name: "names another device than its topic", reason: "topic_mismatch", set: ["setpoint": .number(50)],
                    options: ["payload_device": .text("boiler-2")]),
        RefusalCase(name: "older than max_age", reason: "too_old", set: ["setpoint": .number(50)],
                    options: ["issued_offset": .integer(-30)]),
        RefusalCase(name: "from the future", reason: "from_future", set: ["setpoint": .number(50)],
                    options: ["issued_offset": .integer(30)]),
        RefusalCase(name: "no set", reason: "malformed", set: [:]),
        RefusalCase(name: "unknown tag", reason: "unknown_tag", set: ["setpont": .number(50)]),
        RefusalCase(name: "tag not writable", reason: "not_writable", set: ["temperature": .number(50)]),
        RefusalCase(name: "bool for a register", reason: "wrong_type", set: ["setpoint": .bool(true)]),
        RefusalCase(name: "number for a coil", reason: "wrong_type", set: ["pump": .integer(1)]),
        RefusalCase(name: "above max", reason: "out_of_range", set: ["setpoint": .number(95)]),
        RefusalCase(name: "below min", reason: "out_of_range", set: ["setpoint": .number(19.5)]),
        RefusalCase(name: "fraction of the scale", reason: "not_representable", set: ["level": .number(1.25)]),
        RefusalCase(name: "beyond int16", reason: "not_representable", set: ["level": .number(4000)]),
        RefusalCase(name: "device offline", reason: "device_offline", set: ["valve": .number(1)], device: "dead-1"),
    ]

    @Test(arguments: refusals)
    func refusesWithItsOwnReasonAndWritesNothing(_ refusal: RefusalCase) async throws {
        let rig = try await CommandRig(devices: """
          - name: dead-1
            tcp: { host: 127.0.0.1, port: \(freeLoopbackPort()) }
            timeout: 100ms
            tags:
              - { name: valve, table: holding, address: 1, type: uint16, writable: true }
        """)
        try await rig.startGateway()
        let writesBefore = rig.simulator!.requestCount(functionCode: 6) + rig.simulator!.requestCount(functionCode: 16)
            + rig.simulator!.requestCount(functionCode: 5)
        var options = refusal.options.mapValues(\.any)
        var device = refusal.device
        // Sign for one topic, publish on another: the topic is authenticated.
        let signedTopic = options.removeValue(forKey: "signed_topic") as? String
        if let payloadDevice = options.removeValue(forKey: "payload_device") as? String {
            options["topic"] = "edge/\(rig.gatewayID)/\(device)/cmd"
            device = payloadDevice
        }
        if let signedTopic { options["topic"] = signedTopic }
        var (id, topic, envelope) = try await rig.command(refusal.set.mapValues(\.any), device: device, options)
        if signedTopic != nil { topic = "edge/\(rig.gatewayID)/boiler-1/cmd" }
        try await rig.publish(topic, envelope)
        // A sealed envelope that does not open has no readable id: its result says null.
        let unreadable = options["alg"] as? String == "A256GCM" && refusal.reason == "bad_signature"
        if unreadable {
            try await waitUntil("the refusal") { rig.subscriber.messages.contains { $0.topic.hasSuffix("/cmd/result") } }
        }
        let result = unreadable
            ? try #require(rig.subscriber.messages.first { $0.topic.hasSuffix("/cmd/result") }?.json)
            : try await rig.result(id)
        if unreadable { #expect(result["id"] is NSNull, "\(result)") }
        #expect(result["ok"] as? Bool == false)
        #expect(result["reason"] as? String == refusal.reason, "\(result) \(rig.diagnostics)")
        #expect((result["error"] as? String)?.isEmpty == false)
        #expect(result["tags"] == nil, "nothing was sent to the device: \(result)")
        #expect(rig.setpointRegisters == [0x41F0, 0], "setpoint untouched")
        let writesAfter = rig.simulator!.requestCount(functionCode: 6) + rig.simulator!.requestCount(functionCode: 16)
            + rig.simulator!.requestCount(functionCode: 5)
        #expect(writesAfter == writesBefore, "no write request reached the device")
        // The audit line names the command and the reason.
        let audit = rig.log.split(separator: "\n").filter { $0.contains(unreadable ? "id=-" : "id=\(id)") }
        #expect(audit.count == 1 && audit[0].contains("outcome=\(refusal.reason)") && audit[0].contains("command refused"),
                "\(audit)")
    }

    /// Garbage on the command topic is refused as malformed, one result each, and
    /// neither polling nor later commands notice.
    @Test func garbageNeverStopsPollingOrCommands() async throws {
        let rig = try await CommandRig()
        try await rig.startGateway()
        let topic = "edge/\(rig.gatewayID)/boiler-1/cmd"
        let garbage = [
            "not json", "{", "[]", "null", #"{"v":1}"#, #"{"v":1,"alg":"HS256","kid":"ops1","msg":"!!","sig":"AA=="}"#,
            #"{"v":1,"alg":"A256GCM","kid":"ops1","iv":"AAAA","ct":"AAAA"}"#, String(repeating: "[", count: 60_000), String(repeating: #"{"a":"#, count: 10_000),
            String(repeating: "x", count: 70_000),
        ]
        for text in garbage { try await rig.publish(topic, text) }
        try await waitUntil("a refusal for each") {
            rig.subscriber.messages.filter { $0.topic.hasSuffix("/cmd/result") }.count == garbage.count
        }
        let reasons = rig.subscriber.messages.filter { $0.topic.hasSuffix("/cmd/result") }.map { $0.json["reason"] as? String }
        #expect(reasons.allSatisfy { $0 == "malformed" }, "\(reasons)")
        let dataBefore = rig.subscriber.messages(on: "edge/\(rig.gatewayID)/boiler-1/data").count
        let result = try await rig.send(["setpoint": 42])
        #expect(result["ok"] as? Bool == true, "\(result)")
        try await waitUntil("polling goes on") {
            rig.subscriber.messages(on: "edge/\(rig.gatewayID)/boiler-1/data").count > dataBefore + 3
        }
        #expect(rig.gateway?.isRunning == true)
    }

    /// Each register type in each byte order, written and read back; the server's own
    /// registers hold the value's bytes in that order (computed here from the value's bits).
    @Test func writesEveryTypeInEveryByteOrderAndTheServerHoldsIt() async throws {
        let cases: [(type: String, value: Any, bits: UInt64, words: Int)] = [
            ("int16", -1234, UInt64(UInt16(bitPattern: -1234)), 1),
            ("uint16", 54321, 54321, 1),
            ("int32", -123_456_789, UInt64(UInt32(bitPattern: -123_456_789)), 2),
            ("uint32", 3_000_000_000 as Int, 3_000_000_000, 2),
            ("int64", -9_000_000_000_000 as Int, UInt64(bitPattern: -9_000_000_000_000), 4),
            ("uint64", 9_000_000_000_000 as Int, 9_000_000_000_000, 4),
            ("float32", 72.5, UInt64(Float(72.5).bitPattern), 2),
            ("float64", 1234.5678, (1234.5678 as Double).bitPattern, 4),
        ]
        let orders = ["abcd", "cdab", "badc", "dcba"]
        var tags = ""
        var set: [String: Any] = [:]
        var expected: [String: (address: Int, words: [UInt16], value: Any)] = [:]
        var address = 100
        for item in cases {
            for order in orders {
                let name = "\(item.type)_\(order)"
                tags += "      - { name: \(name), table: holding, address: \(address), type: \(item.type), byte_order: \(order), writable: true }\n"
                set[name] = item.value
                expected[name] = (address, Self.registers(bits: item.bits, count: item.words, order: order), item.value)
                address += 4
            }
        }
        let rig = try await CommandRig(tags: tags)
        try await rig.startGateway()
        let result = try await rig.send(set)
        #expect(result["ok"] as? Bool == true, "\(result) \(rig.diagnostics)")
        let results = try #require(result["tags"] as? [String: [String: Any]])
        for (name, want) in expected.sorted(by: { $0.key < $1.key }) {
            let server = rig.simulator!.holdingRegisters(want.address, count: want.words.count)
            #expect(server == want.words, "\(name): server holds \(server), expected \(want.words)")
            #expect((results[name]?["written"] as? [Int])?.map { UInt16($0) } == want.words, "\(name) written")
            let readBack = results[name]?["read_back"]
            if let number = want.value as? Double {
                #expect(readBack as? Double == number, "\(name) read back \(String(describing: readBack))")
            } else {
                #expect(readBack as? Int == want.value as? Int, "\(name) read back \(String(describing: readBack))")
            }
        }
        // One register with FC6, more with FC16.
        #expect(rig.simulator!.requestCount(functionCode: 6) == 8)
        #expect(rig.simulator!.requestCount(functionCode: 16) == 24)
    }

    /// The value's big-endian bytes arranged in `order` (see the byte_order docs), computed byte by byte.
    static func registers(bits: UInt64, count: Int, order: String) -> [UInt16] {
        let bytes = (0..<count * 2).map { UInt8(truncatingIfNeeded: bits >> UInt64(8 * (count * 2 - 1 - $0))) }
        var words = stride(from: 0, to: bytes.count, by: 2).map { UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]) }
        if order == "badc" || order == "dcba" { words = words.map { $0.byteSwapped } }
        if order == "cdab" || order == "dcba" { words.reverse() }
        return words
    }

    @Test func scaledRegisterAndCoilRoundTrip() async throws {
        let rig = try await CommandRig()
        try await rig.startGateway()
        var result = try await rig.send(["level": 12.3, "pump": true])
        #expect(result["ok"] as? Bool == true, "\(result)")
        #expect(rig.simulator!.holdingRegisters(44, count: 1) == [123])
        #expect(rig.simulator!.coils(3, count: 1) == [true])
        var tags = try #require(result["tags"] as? [String: [String: Any]])
        #expect(tags["level"]?["read_back"] as? Double == 12.3)
        #expect(tags["pump"]?["read_back"] as? Bool == true)
        #expect(tags["pump"]?["written"] as? Bool == true)
        #expect(rig.simulator!.requestCount(functionCode: 5) == 1, "a coil is written with FC5")
        result = try await rig.send(["pump": false])
        tags = try #require(result["tags"] as? [String: [String: Any]])
        #expect(rig.simulator!.coils(3, count: 1) == [false])
        #expect(tags["pump"]?["read_back"] as? Bool == false)
    }

    @Test func aModbusExceptionIsReportedWithItsMeaning() async throws {
        let rig = try await CommandRig()
        rig.simulator!.reject(functionCode: 16, addresses: 40..<42, exception: 2)
        try await rig.startGateway()
        let result = try await rig.send(["setpoint": 50, "level": 1])
        #expect(result["ok"] as? Bool == false)
        #expect(result["reason"] as? String == "modbus_exception", "\(result)")
        let tags = try #require(result["tags"] as? [String: [String: Any]])
        // Tags go in name order: level first (written), then setpoint (refused by the device).
        #expect(tags["level"]?["status"] as? String == "written")
        let exception = try #require(tags["setpoint"]?["exception"] as? [String: Any], "\(result)")
        #expect(exception["code"] as? Int == 2)
        #expect((exception["meaning"] as? String)?.contains("illegal data address") == true)
    }

    @Test func aCapturedCommandReplayedIsRefusedAlsoAfterARestart() async throws {
        let rig = try await CommandRig()
        try await rig.startGateway()
        let (id, topic, envelope) = try await rig.command(["setpoint": 50])
        try await rig.publish(topic, envelope)
        #expect(try await rig.result(id)["ok"] as? Bool == true)
        #expect(rig.setpointRegisters == [0x4248, 0], "50.0 written")
        rig.simulator!.setHoldingRegisters(40, [0x41F0, 0])  // the plant moves on: 30.0
        try await rig.publish(topic, envelope)
        let replay = try await rig.result(id, count: 2)
        #expect(replay["reason"] as? String == "replay", "\(replay)")
        #expect(rig.setpointRegisters == [0x41F0, 0], "the replay wrote nothing")
        // A restarted gateway has forgotten the nonces: the command's issue time refuses it.
        try await rig.stopGateway()
        try await rig.startGateway()
        try await rig.publish(topic, envelope)
        let afterRestart = try await rig.result(id, count: 3)
        #expect(afterRestart["reason"] as? String == "issued_before_start", "\(afterRestart)")
        #expect(rig.setpointRegisters == [0x41F0, 0])
    }

    @Test func aRetainedCommandIsNeverRun() async throws {
        let rig = try await CommandRig()
        let (id, topic, envelope) = try await rig.command(["setpoint": 50])
        try await rig.publish(topic, envelope, retain: true)
        try await rig.startGateway()
        let result = try await rig.result(id)
        #expect(result["reason"] as? String == "retained", "\(result)")
        #expect(rig.setpointRegisters == [0x41F0, 0])
    }

    @Test func theRateIsPerGateway() async throws {
        let rig = try await CommandRig(commands: """
        commands:
          enabled: true
          keys: [{ id: ops1, file: KEYFILE }]
          rate: 2/1m
        """)
        try await rig.startGateway()
        let first = try await rig.send(["level": 1])
        let second = try await rig.send(["level": 2])
        let third = try await rig.send(["level": 3])
        #expect(first["ok"] as? Bool == true)
        #expect(second["ok"] as? Bool == true)
        #expect(third["reason"] as? String == "rate_exceeded", "\(third)")
        #expect(rig.simulator!.holdingRegisters(44, count: 1) == [20], "the third was not written")
    }

    /// Published while the gateway was not connected: with a clean session the broker
    /// keeps nothing for it, so the command never arrives, and is never run later.
    @Test func aCommandSentDuringAnOutageIsNeverRunLater() async throws {
        let rig = try await CommandRig(reconnect: "reconnect_min: 3s, reconnect_max: 3s")
        try await rig.startGateway()
        try await rig.broker.stop(graceful: true)
        try await waitUntil("the outage noticed") { rig.log.contains("connection to broker lost") }
        try await rig.broker.start()
        let (id, topic, envelope) = try await rig.command(["setpoint": 50])
        try await rig.publish(topic, envelope)
        #expect(!rig.log.contains("subscribed to commands") || rig.log.components(separatedBy: "subscribed to commands").count == 2,
                "the command went out while the gateway was still disconnected")
        try await waitUntil("resubscribed", timeout: .seconds(20)) {
            rig.log.components(separatedBy: "subscribed to commands").count >= 3
        }
        // A later command is answered: anything the broker had kept would have come first.
        let later = try await rig.send(["level": 5.5])
        #expect(later["ok"] as? Bool == true, "\(later)")
        #expect(rig.results(id).isEmpty, "the command sent during the outage was answered: \(rig.results(id))")
        #expect(!rig.log.contains("id=\(id)"), "the gateway never saw it")
        #expect(rig.setpointRegisters == [0x41F0, 0], "never written")
    }

    @Test func theCommandLineToolSendsAndReportsAndStatsCount() async throws {
        let rig = try await CommandRig()
        try await rig.startGateway()
        let tool = try builtProduct("edge-gateway")
        func run(_ arguments: [String], key: String? = nil) async throws -> (Int32, String) {
            let child = try ChildProcess(tool, ["command", "--key", "ops1=\(key ?? rig.directory.file("ops1.key"))",
                                                "--gateway", rig.gatewayID, "--device", "boiler-1",
                                                "--broker", "127.0.0.1:\(rig.broker.port)"] + arguments,
                                         log: rig.directory.file("cli-\(UUID().uuidString.prefix(6)).log"))
            return (try await child.waitForExit(timeout: .seconds(20)), child.output)
        }
        let (ok, output) = try await run(["--set", "setpoint=72.5"])
        #expect(ok == 0, "\(output)")
        #expect(output.contains(#""ok":true"#) && output.contains(#""written":[17041,0]"#), "\(output)")
        #expect(rig.setpointRegisters == [17041, 0])
        let (sealed, sealedOutput) = try await run(["--set", "setpoint=30", "--alg", "a256gcm"])
        #expect(sealed == 0, "\(sealedOutput)")
        #expect(rig.setpointRegisters == [0x41F0, 0])
        let (refused, refusal) = try await run(["--set", "setpoint=95"])
        #expect(refused == 65, "\(refusal)")
        #expect(refusal.contains(#""reason":"out_of_range""#), "\(refusal)")
        // Sealed with a key the gateway does not have: the refusal cannot name the id, the tool still shows it.
        let wrongKey = rig.directory.file("wrong.key")
        try rig.otherKeyHex.write(toFile: wrongKey, atomically: true, encoding: .utf8)
        chmod(wrongKey, 0o600)
        let (unopened, unopenedOutput) = try await run(["--set", "setpoint=50", "--alg", "a256gcm", "--timeout", "3"],
                                                       key: wrongKey)
        #expect(unopened == 65, "\(unopenedOutput)")
        #expect(unopenedOutput.contains(#""reason":"bad_signature""#), "\(unopenedOutput)")
        try await waitUntil("stats counting the commands") {
            rig.subscriber.messages(on: "edge/\(rig.gatewayID)/stats").contains {
                $0.json["commands_executed"] as? Int == 2 && $0.json["commands_refused"] as? Int == 2
                    && $0.json["commands_received"] as? Int == 4
            }
        }
    }

    /// Over a serial line (socat's pty pair) with polls every 10 ms: every write lands
    /// between two polls, and no answer on the line is garbled or lost.
    @Test func rtuWritesBetweenPollsAt10msWithoutGarbledFrames() async throws {
        let socat = try requireTool("socat", package: "socat")
        let line = try TemporaryDirectory("cmd-rtu")
        defer { line.remove() }
        let deviceEnd = line.file("device"), gatewayEnd = line.file("gateway")
        let pair = try ChildProcess(socat, ["-d", "-d", "pty,raw,echo=0,link=\(deviceEnd)", "pty,raw,echo=0,link=\(gatewayEnd)"],
                                    log: line.file("socat.log"))
        defer { pair.signal(SIGTERM) }
        try await waitUntil("socat's pty links") {
            FileManager.default.fileExists(atPath: deviceEnd) && FileManager.default.fileExists(atPath: gatewayEnd)
        }
        let simulator = try ModbusSimulator(rtuPath: deviceEnd, unit: 1)
        simulator.setHoldingRegisters(0, [715])
        simulator.setHoldingRegisters(40, [0x41F0, 0])
        try simulator.start()
        let rig = try await CommandRig(transport: "rtu: { port: \(gatewayEnd), baud: 115200 }", pollInterval: "10ms")
        rig.simulator = simulator
        try await rig.startGateway()
        let readsBefore = simulator.requestCount(functionCode: 3)
        for step in 1...10 {
            let setpoint = 20.0 + Double(step) * 5.5
            let level = Double(step) / 10
            let result = try await rig.send(["setpoint": setpoint, "level": level, "pump": step % 2 == 0])
            #expect(result["ok"] as? Bool == true, "step \(step): \(result) \(rig.diagnostics)")
            let tags = try #require(result["tags"] as? [String: [String: Any]])
            #expect(tags["setpoint"]?["read_back"] as? Double == setpoint)
            #expect(tags["level"]?["read_back"] as? Double == level)
            #expect(simulator.holdingRegisters(40, count: 2) == CommandTests.registers(
                bits: UInt64(Float(setpoint).bitPattern), count: 2, order: "abcd"))
            #expect(simulator.holdingRegisters(44, count: 1) == [UInt16(step)])
            #expect(simulator.coils(3, count: 1) == [step % 2 == 0])
        }
        #expect(simulator.requestCount(functionCode: 3) > readsBefore + 50, "polls kept running meanwhile")
        try await waitUntil("a stats message after the writes") {
            rig.subscriber.messages(on: "edge/gw-c/stats").contains { $0.json["commands_executed"] as? Int == 10 }
        }
        let stats = try #require(rig.subscriber.messages(on: "edge/gw-c/stats").last?.json)
        #expect(stats["polls_failed"] as? Int == 0, "no poll met a garbled or missing answer: \(stats)")
        for trouble in ["invalid response", "timed out", "device offline", "write failed"] {
            #expect(!rig.log.contains(trouble), "\(trouble): \(rig.diagnostics)")
        }
        try await rig.stopGateway()
        simulator.stop()
    }

    /// `enabled: false`: the broker counts no subscription of the gateway. The probe
    /// is shown to see one: the same gateway with commands on adds one per device.
    @Test func disabledCommandsSubscribeToNothing() async throws {
        let port = freeLoopbackPort()
        let broker = try MosquittoBroker(port: port, configuration: """
        listener \(port) 127.0.0.1
        allow_anonymous true
        persistence false
        sys_interval 1
        """)
        try await broker.start()
        let probe = RecordingSubscriber(port: port, filter: "$SYS/broker/subscriptions/count")
        try await probe.waitConnected()
        func counts() -> [Int] { probe.messages.compactMap { Int($0.text) } }
        // mosquitto publishes the count (retained) when it changes, at most every second.
        func waitForCount(_ expected: Int) async throws {
            do {
                try await waitUntil("$SYS subscription count \(expected)", timeout: .seconds(10)) { counts().last == expected }
            } catch {
                Issue.record("subscription counts seen: \(counts()), expected \(expected) last")
                throw error
            }
        }
        // The probe's own two subscriptions (its filter and TestSupport's marker topic).
        let baseline = 2
        try await waitForCount(baseline)
        let off = try await CommandRig(gatewayID: "gw-off", broker: broker, commands: """
        commands:
          enabled: false
          keys: [{ id: ops1, file: KEYFILE }]
        """)
        try await off.startGateway(waitForSubscription: false)
        // The birth follows any SUBSCRIBE on the gateway's connection, so once it is seen, the
        // broker has counted whatever the gateway subscribed to. A sentinel (two
        // subscriptions) then changes the count, which is published with the gateway's part in it.
        try await waitUntil("the birth") { !off.subscriber.messages(on: "edge/gw-off/status").isEmpty }
        let sentinel = RecordingSubscriber(port: port, filter: "sentinel/one")
        try await sentinel.waitConnected()
        // The rig's subscriber: 2; the sentinel: 2; the gateway: none.
        try await waitForCount(baseline + 2 + 2)
        #expect(!off.log.contains("subscribed to commands"))
        // A valid command on the topic is not seen at all.
        let (id, topic, envelope) = try await off.command(["setpoint": 50])
        try await off.publish(topic, envelope)
        try await off.subscriber.roundTrip()
        #expect(off.results(id).isEmpty)
        #expect(!off.log.contains(id))
        #expect(off.setpointRegisters == [0x41F0, 0])

        // The control: the probe sees a gateway's subscription (one per device) when commands are on.
        let on = try await CommandRig(gatewayID: "gw-on", broker: broker)
        try await on.startGateway()
        try await waitUntil("the birth") { !on.subscriber.messages(on: "edge/gw-on/status").isEmpty }
        let sentinel2 = RecordingSubscriber(port: port, filter: "sentinel/two")
        try await sentinel2.waitConnected()
        try await waitForCount(baseline + 4 + 2 + 1 + 2)
    }
}
