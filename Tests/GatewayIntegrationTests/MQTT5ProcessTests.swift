// mqtt.protocol: 5 end to end: a real mosquitto whose ACL denies the data topic answers
// each data PUBLISH with PUBACK reason code 0x87 (not authorised). Under MQTT 5 that is
// a refusal: nothing is deleted from the outbox, it is counted and logged.
import Foundation
import Modbus
import Outbox
import Testing
import TestSupport

@Suite(.serialized) struct MQTT5ProcessTests {
    @Test func aPUBACKWithAFailureReasonCodeDeletesNothing() async throws {
        let directory = try TemporaryDirectory("mqtt5")
        defer { directory.remove() }
        let aclPath = directory.file("acl")
        // Anonymous clients may do anything but publish data.
        try "topic deny edge/gw-v5/+/data\ntopic readwrite #\n".write(toFile: aclPath, atomically: true, encoding: .utf8)
        let port = freeLoopbackPort()
        let broker = try MosquittoBroker(port: port, configuration: """
        listener \(port) 127.0.0.1
        allow_anonymous true
        acl_file \(aclPath)
        persistence false
        """)
        try await broker.start()
        let subscriber = RecordingSubscriber(port: port, filter: "edge/#")
        try await subscriber.waitConnected()
        let modbusPort = freeLoopbackPort()
        let simulator = try ModbusSimulator(port: modbusPort)
        simulator.setHoldingRegisters(0, [715])
        try simulator.start()
        defer { simulator.stop() }
        let outboxPath = directory.file("outbox.sqlite")
        let configPath = directory.file("gateway.yaml")
        try """
        gateway: { id: gw-v5, stats_interval: 1s }
        mqtt:
          host: 127.0.0.1
          port: \(port)
          protocol: 5
          keepalive: 5s
          reconnect_min: 100ms
          reconnect_max: 1s
        buffer: { path: \(outboxPath) }
        devices:
          - name: boiler-1
            tcp: { host: 127.0.0.1, port: \(modbusPort) }
            poll_interval: 100ms
            timeout: 200ms
            tags:
              - { name: temperature, table: holding, address: 0, type: int16 }
        """.write(toFile: configPath, atomically: true, encoding: .utf8)
        let gateway = try ChildProcess(try builtProduct("edge-gateway"), ["run", "--config", configPath],
                                       log: directory.file("gateway.log"))
        defer { gateway.signal(SIGKILL) }
        let statsTopic = "edge/gw-v5/stats"
        func refusedInStats() -> Int {
            subscriber.messages(on: statsTopic).compactMap { $0.json["refused"] as? Int }.max() ?? 0
        }
        try await waitUntil("stats counting refused messages", timeout: .seconds(20)) { refusedInStats() >= 10 }
        let stats = subscriber.messages(on: statsTopic).last?.json ?? [:]
        #expect(stats["published"] as? Int == 0, "a refused message is never counted as published: \(stats)")
        #expect(subscriber.messages(on: "edge/gw-v5/boiler-1/data").isEmpty)
        // The birth (allowed) arrived: the connection works, only data is refused.
        #expect(subscriber.messages(on: "edge/gw-v5/status").contains { $0.json["state"] as? String == "online" })
        // Every poll is still in the outbox: nothing was deleted.
        let buffered = try Outbox.readStatistics(path: outboxPath).bufferedMessages
        let committed = stats["seq_committed"] as? Int ?? 0
        #expect(buffered >= committed && committed >= 10, "buffered \(buffered), committed \(committed)")
        #expect(gateway.output.contains("the broker refused a message"), "\(gateway.output.suffix(3000))")
        #expect(gateway.output.contains("0x87"), "the reason code is logged: \(gateway.output.suffix(3000))")
    }

    /// Data messages carry `boot` and `seq` as MQTT 5 user properties.
    @Test func dataMessagesCarryBootAndSeqAsUserProperties() async throws {
        let directory = try TemporaryDirectory("mqtt5-props")
        defer { directory.remove() }
        let broker = try MosquittoBroker()
        try await broker.start()
        let modbusPort = freeLoopbackPort()
        let simulator = try ModbusSimulator(port: modbusPort)
        simulator.setHoldingRegisters(0, [715])
        try simulator.start()
        defer { simulator.stop() }
        // mosquitto_sub itself prints the user properties it received (%P: key:value).
        let sub = try ChildProcess(try requireTool("mosquitto_sub", package: "mosquitto-clients"),
                                   ["-h", "127.0.0.1", "-p", "\(broker.port)", "-V", "5", "-q", "1",
                                    "-t", "edge/gw-props/+/data", "-F", "%t %P", "-C", "3"],
                                   log: directory.file("sub.log"))
        defer { sub.signal(SIGKILL) }
        // Whenever it has subscribed, the next polls (every 200 ms) reach it: no need to wait here.
        let configPath = directory.file("gateway.yaml")
        try """
        gateway: { id: gw-props }
        mqtt: { host: 127.0.0.1, port: \(broker.port), protocol: 5, keepalive: 5s }
        buffer: { path: \(directory.file("outbox.sqlite")) }
        devices:
          - name: boiler-1
            tcp: { host: 127.0.0.1, port: \(modbusPort) }
            poll_interval: 200ms
            tags:
              - { name: temperature, table: holding, address: 0, type: int16 }
        """.write(toFile: configPath, atomically: true, encoding: .utf8)
        let gateway = try ChildProcess(try builtProduct("edge-gateway"), ["run", "--config", configPath],
                                       log: directory.file("gateway.log"))
        defer { gateway.signal(SIGKILL) }
        _ = try await sub.waitForExit(timeout: .seconds(20))
        let lines = sub.output.split(separator: "\n").map(String.init)
        #expect(lines.count == 3, "\(sub.output)")
        for line in lines {
            #expect(line.hasPrefix("edge/gw-props/boiler-1/data "), "\(line)")
            #expect(line.contains("boot:1") && line.contains("seq:"), "user properties boot and seq: \(line)")
        }
    }
}
