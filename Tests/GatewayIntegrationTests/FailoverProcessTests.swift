// mqtt.servers end to end: the real gateway, two real mosquittos, a real libmodbus
// server. The first broker stops: data continues on the second; it comes back: the
// gateway fails back after failback_after; no seq is missing across both.
import Foundation
import Modbus
import Testing
import TestSupport

@Suite(.serialized) struct FailoverProcessTests {
    @Test func failsOverToTheSecondBrokerAndBackWithoutLosingASeq() async throws {
        let directory = try TemporaryDirectory("failover")
        defer { directory.remove() }
        // Persistent brokers and subscriber sessions: what a broker accepted before a
        // graceful stop reaches its subscriber after the restart.
        let first = try MosquittoBroker(persistent: true)
        let second = try MosquittoBroker(persistent: true)
        try await first.start()
        try await second.start()
        let onFirst = RecordingSubscriber(port: first.port, filter: "edge/#", persistentSession: true)
        let onSecond = RecordingSubscriber(port: second.port, filter: "edge/#", persistentSession: true)
        try await onFirst.waitConnected()
        try await onSecond.waitConnected()
        let modbusPort = freeLoopbackPort()
        let simulator = try ModbusSimulator(port: modbusPort)
        simulator.setHoldingRegisters(0, [715])
        try simulator.start()
        defer { simulator.stop() }
        let configPath = directory.file("gateway.yaml")
        try """
        gateway: { id: gw-failover, stats_interval: 1s }
        mqtt:
          servers:
            - { host: 127.0.0.1, port: \(first.port) }
            - { host: 127.0.0.1, port: \(second.port) }
          failback_after: 3s
          keepalive: 5s
          reconnect_min: 100ms
          reconnect_max: 1s
        buffer: { path: \(directory.file("outbox.sqlite")) }
        log_level: debug
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
        let dataTopic = "edge/gw-failover/boiler-1/data"
        let statusTopic = "edge/gw-failover/status"
        func seqs(_ subscriber: RecordingSubscriber) -> [Int] {
            subscriber.messages(on: dataTopic).compactMap { $0.json["seq"] as? Int }
        }
        func births(_ subscriber: RecordingSubscriber) -> [[String: Any]] {
            subscriber.messages(on: statusTopic).map(\.json).filter { $0["state"] as? String == "online" }
        }
        var diagnostics: String { "gateway log:\n\(gateway.output.suffix(4000))" }

        try await waitUntil("data on the first broker") { seqs(onFirst).count >= 5 }
        #expect(births(onFirst).first?["server"] as? String == "127.0.0.1:\(first.port)", "\(births(onFirst))")
        #expect(seqs(onSecond).isEmpty, "nothing on the second broker while the first works")

        try await first.stop(graceful: true)
        // reconnect_max (1 s) plus connects: a generous deadline, not a measurement.
        try await waitUntil("data on the second broker", timeout: .seconds(10)) { seqs(onSecond).count >= 5 }
        #expect(births(onSecond).last?["server"] as? String == "127.0.0.1:\(second.port)", "\(births(onSecond)) \(diagnostics)")

        let birthsOnFirst = births(onFirst).count
        try await first.start()
        try await waitUntil("failback to the first broker after failback_after", timeout: .seconds(20)) {
            births(onFirst).count > birthsOnFirst
        }
        let highestOnSecond = seqs(onSecond).max() ?? 0
        try await waitUntil("data on the first broker again", timeout: .seconds(10)) {
            (seqs(onFirst).max() ?? 0) > highestOnSecond + 5
        }
        // The second broker saw the gateway leave: its Will, so its retained status is not 'online'.
        try await waitUntil("the Will on the second broker", timeout: .seconds(10)) {
            onSecond.messages(on: statusTopic).last?.json["state"] as? String == "offline"
        }
        gateway.signal(SIGTERM)
        _ = try await gateway.waitForExit()

        let all = Set(seqs(onFirst) + seqs(onSecond))
        let highest = all.max() ?? 0
        let missing = Set(1...highest).subtracting(all)
        #expect(missing.isEmpty, "seq missing across the failover: \(missing.sorted()) \(diagnostics)")
        // Each broker received the outbox in order (a replay may repeat, never go back past what it resent).
        for subscriber in [onFirst, onSecond] {
            let received = seqs(subscriber)
            let regressions = zip(received, received.dropFirst()).filter { $0.1 < $0.0 }
            #expect(regressions.count <= 2, "out of order beyond replays: \(regressions) \(diagnostics)")
        }
    }
}
