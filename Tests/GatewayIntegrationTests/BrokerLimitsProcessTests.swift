// What an MQTT 5 broker announces in CONNACK, honoured by the gateway: the Receive
// Maximum as the inflight window (on the wire, against a peer that withholds PUBACK),
// the Maximum Packet Size (a larger message is skipped and kept, not sent forever) and
// the server keepalive (a real mosquitto with max_keepalive).
import Foundation
import Modbus
import Outbox
import Testing
import TestSupport

private let peersRepositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().path

@Suite(.serialized) struct BrokerLimitsProcessTests {
    private func gatewayConfig(_ directory: TemporaryDirectory, id: String, brokerPort: Int, modbusPort: Int,
                               keepalive: String = "5s", devices: String) throws -> String {
        let path = directory.file("gateway.yaml")
        try """
        gateway: { id: \(id), stats_interval: 60s }
        mqtt:
          host: 127.0.0.1
          port: \(brokerPort)
          protocol: 5
          keepalive: \(keepalive)
          max_inflight: 100
          reconnect_min: 100ms
          reconnect_max: 1s
        buffer: { path: \(directory.file("outbox.sqlite")) }
        devices:
        \(devices)
        """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    private func device(_ name: String, unit: Int = 1, modbusPort: Int, tags: Int) -> String {
        let list = (0..<tags).map { "      - { name: t\($0), table: holding, address: \($0), type: int16 }" }
        return """
          - name: \(name)
            unit_id: \(unit)
            tcp: { host: 127.0.0.1, port: \(modbusPort) }
            poll_interval: 100ms
            timeout: 200ms
            tags:
        \(list.joined(separator: "\n"))
        """
    }

    /// The broker allows 3 unacknowledged publishes while the gateway's own window is 100:
    /// until PUBACK, exactly 3 are on the wire; one PUBACK lets exactly one more go. The
    /// broker also imposes a 5 s keepalive on the gateway's 30 s: its PINGREQs (which end
    /// each count) come at the broker's keepalive, or the peer's two counts would take a minute.
    @Test func theServersReceiveMaximumIsTheInflightWindowAndItsKeepaliveIsUsed() async throws {
        let directory = try TemporaryDirectory("receive-maximum")
        defer { directory.remove() }
        let python = try requireTool("python3", package: "python3")
        let port = freeLoopbackPort()
        let server = try ChildProcess(python, [peersRepositoryRoot + "/Tests/MQTTPeers/receive_maximum_server.py", "\(port)", "3", "5"],
                                      log: directory.file("server.log"))
        defer { server.signal(SIGKILL) }
        try await waitUntil("the MQTT 5 peer listening") { server.output.contains("listening") }
        let modbusPort = freeLoopbackPort()
        let simulator = try ModbusSimulator(port: modbusPort)
        try simulator.start()
        defer { simulator.stop() }
        let config = try gatewayConfig(directory, id: "gw-rm", brokerPort: port, modbusPort: modbusPort, keepalive: "30s",
                                       devices: device("boiler-1", modbusPort: modbusPort, tags: 1))
        let gateway = try ChildProcess(try builtProduct("edge-gateway"), ["run", "--config", config],
                                       log: directory.file("gateway.log"))
        defer { gateway.signal(SIGKILL) }
        // Each count ends at the gateway's PINGREQ, sent after a keepalive with nothing it may
        // send: 5 s (the broker's) twice; 30 s (the gateway's own) would miss this deadline.
        _ = try await server.waitForExit(timeout: .seconds(28))
        let lines = server.output.split(separator: "\n").map(String.init)
        #expect(lines.contains("window 3"), "\(server.output) \(gateway.output.suffix(2000))")
        #expect(lines.contains("after_one_puback 1"), "\(server.output)")
        #expect(gateway.output.contains("receive_maximum=3"), "the limit is logged: \(gateway.output.suffix(2000))")
        #expect(gateway.output.contains("server_keepalive=\"5 s\""), "\(gateway.output.suffix(2000))")
    }

    /// A data message larger than the broker's Maximum Packet Size is not sent (libmosquitto
    /// refuses it before the wire), logged once with the cause, and kept in the outbox for
    /// another connection; the connection stays up and the other device's data flows.
    @Test func aMessageLargerThanTheServersMaximumPacketSizeIsSkippedAndKept() async throws {
        let directory = try TemporaryDirectory("max-packet")
        defer { directory.remove() }
        let port = freeLoopbackPort()
        let broker = try MosquittoBroker(port: port, configuration: """
        listener \(port) 127.0.0.1
        allow_anonymous true
        persistence false
        max_packet_size 1200
        max_keepalive 10
        """)
        try await broker.start()
        let subscriber = RecordingSubscriber(port: port, filter: "edge/#")
        try await subscriber.waitConnected()
        let modbusPort = freeLoopbackPort()
        let simulator = try ModbusSimulator(port: modbusPort)
        simulator.setHoldingRegisters(0, Array(repeating: 12345, count: 120))
        try simulator.start()
        defer { simulator.stop() }
        // "t0":12345 for each of 120 tags: the big device's message is over 1,500 bytes.
        // (The simulator answers every unit id; the two devices share its connection.)
        let config = try gatewayConfig(directory, id: "gw-mps", brokerPort: port, modbusPort: modbusPort, keepalive: "30s",
                                       devices: device("small", modbusPort: modbusPort, tags: 1) + "\n"
                                           + device("big", unit: 2, modbusPort: modbusPort, tags: 120))
        let gateway = try ChildProcess(try builtProduct("edge-gateway"), ["run", "--config", config],
                                       log: directory.file("gateway.log"))
        defer { gateway.signal(SIGKILL) }
        let smallTopic = "edge/gw-mps/small/data"
        try await waitUntil("50 data messages of the small device", timeout: .seconds(30)) {
            subscriber.messages(on: smallTopic).count >= 50
        }
        try await subscriber.roundTrip()
        #expect(subscriber.messages(on: "edge/gw-mps/big/data").isEmpty)
        let births = subscriber.messages(on: "edge/gw-mps/status").filter { $0.json["state"] as? String == "online" }
        #expect(births.count == 1, "one connection throughout: \(births.map(\.text))")
        let output = gateway.output
        #expect(output.contains("maximum_packet_size=1200"), "\(output.suffix(3000))")
        // mosquitto's max_keepalive 10 against the gateway's 30 s: the broker imposes 10 s.
        #expect(output.contains("server_keepalive=\"10 s\""), "\(output.suffix(3000))")
        let refusals = output.split(separator: "\n").filter { $0.contains("the broker refuses a message") }
        let dataRefusals = refusals.filter { $0.contains("topic=edge/gw-mps/big/data") }
        #expect(dataRefusals.count == 1, "logged once per topic and connection, not per attempt: \(refusals)")
        #expect(dataRefusals.first?.contains("larger than the broker's maximum packet size") == true, "\(refusals)")
        // The big device's polls are all still in the outbox.
        let buffered = try Outbox.readStatistics(path: directory.file("outbox.sqlite")).bufferedMessages
        #expect(buffered >= 10, "the big device's messages are kept: \(buffered) buffered")
    }
}
