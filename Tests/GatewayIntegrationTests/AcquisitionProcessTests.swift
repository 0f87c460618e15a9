// Issue 4 end to end: the meta topic with units, report by exception through the
// real process, and check-config --explain.
import Foundation
import Modbus
import Testing
import TestSupport

@Suite(.serialized) struct AcquisitionProcessTests {
    @Test func metaTopicCarriesUnitsAndOnlyChangesAndHeartbeatsArePublished() async throws {
        let directory = try TemporaryDirectory("e2e-rbe")
        defer { directory.remove() }
        let broker = try MosquittoBroker()
        try await broker.start()
        defer { Task { try? await broker.stop() } }
        let subscriber = RecordingSubscriber(port: broker.port, filter: "edge/#")
        try await subscriber.waitConnected()
        let modbusPort = freeLoopbackPort()
        let simulator = try ModbusSimulator(port: modbusPort)
        simulator.setHoldingRegisters(0, [715])
        simulator.setCoils(0, [true])
        try simulator.start()
        defer { simulator.stop() }
        let config = directory.file("gateway.yaml")
        try """
        gateway: { id: gw-rbe, stats_interval: 1s }
        mqtt: { host: 127.0.0.1, port: \(broker.port), reconnect_min: 100ms }
        buffer: { path: \(directory.file("outbox.sqlite")) }
        devices:
          - name: boiler
            tcp: { host: 127.0.0.1, port: \(modbusPort) }
            poll_interval: 20ms
            publish: on_change
            max_interval: 2s
            tags:
              - { name: temperature, table: holding, address: 0, type: int16, scale: 0.1, unit: °C, deadband: 1 }
              - { name: pump, table: coils, address: 0 }
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let gateway = try ChildProcess(try builtProduct("edge-gateway"), ["run", "--config", config],
                                       log: directory.file("gateway.log"))
        let data = "edge/gw-rbe/boiler/data"
        func temperatures() -> [Double] {
            subscriber.messages(on: data).compactMap { ($0.json["values"] as? [String: Any])?["temperature"] as? Double }
        }

        try await waitUntil("the retained meta topic") { !subscriber.messages(on: "edge/gw-rbe/boiler/meta").isEmpty }
        let meta = try #require(subscriber.messages(on: "edge/gw-rbe/boiler/meta").first)
        let late = RecordingSubscriber(port: broker.port, filter: "edge/gw-rbe/boiler/meta")
        try await late.waitConnected()
        try await waitUntil("the meta topic for a late subscriber") { !late.messages.isEmpty }
        #expect(late.messages.first?.retained == true)
        let tags = try #require(meta.json["tags"] as? [String: [String: Any]], "\(meta.text)")
        #expect(tags["temperature"]?["unit"] as? String == "°C")
        #expect(tags["temperature"]?["deadband"] as? Double == 1)
        #expect(tags["pump"]?["type"] as? String == "bool")
        #expect(meta.json["publish"] as? String == "on_change")

        // Unchanged polls are counted, not published.
        try await waitUntil("stats with 20 unchanged polls") {
            subscriber.messages(on: "edge/gw-rbe/stats").contains { ($0.json["polls_unchanged"] as? Int ?? 0) >= 20 }
        }
        let stats = try #require(subscriber.messages(on: "edge/gw-rbe/stats").last?.json)
        let unchanged = try #require(stats["polls_unchanged"] as? Int)
        let ok = try #require(stats["polls_ok"] as? Int)
        #expect(unchanged > 0 && ok > unchanged, "\(stats)")
        #expect(temperatures().first == 71.5)

        // A change within the deadband stays quiet until the heartbeat; one beyond it is published.
        simulator.setHoldingRegisters(0, [800])
        try await waitUntil("the change to 80 °C") { temperatures().contains(80) }
        let published = try #require(subscriber.messages(on: data).last?.json)
        #expect((published["values"] as? [String: Any])?["pump"] as? Bool == true, "a message carries every tag")
        try await waitUntil("a heartbeat with the unchanged value") { temperatures().count { $0 == 80 } >= 2 }

        gateway.signal(SIGTERM)
        #expect(try await gateway.waitForExit() == 0, "\(gateway.output)")
    }

    @Test func checkConfigExplainPrintsThePlan() async throws {
        let directory = try TemporaryDirectory("explain")
        defer { directory.remove() }
        let config = directory.file("gateway.yaml")
        try """
        gateway: { id: gw-1 }
        mqtt: { host: 127.0.0.1 }
        devices:
          - name: meter
            rtu: { port: /dev/ttyUSB0, baud: 9600 }
            unit_id: 3
            max_gap: 2
            tags:
              - { name: a, table: holding, address: 0, type: uint16 }
              - { name: b, table: holding, address: 3, type: float32 }
              - { name: c, table: holding, address: 20, type: string, length: 4 }
              - { name: d, table: coils, address: 5 }
              - { name: e, table: input, address: 9, type: int16, poll_interval: 1m }
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let process = try ChildProcess(try builtProduct("edge-gateway"), ["check-config", "--explain", config],
                                       log: directory.file("out.log"))
        #expect(try await process.waitForExit() == 0, "\(process.output)")
        let output = process.output
        #expect(output.contains("meter: /dev/ttyUSB0 unit 3"), "\(output)")
        #expect(output.contains("FC3 holding 0+5 (5 registers): a, b"), "\(output)")
        #expect(output.contains("FC3 holding 20+4 (4 registers): c"), "\(output)")
        #expect(output.contains("FC1 coils 5+1 (1 bit): d"), "\(output)")
        #expect(output.contains("every 60.0 seconds: 1 request"), "\(output)")
        #expect(output.contains("FC4 input 9+1 (1 register): e"), "\(output)")
    }
}
