// MQTT 5 properties end to end with a real mosquitto: `mqtt.will_delay` (the Will Delay
// Interval on a session that outlives the connection) and `mqtt.message_expiry` (the
// broker drops a data message nobody took in time).
import Foundation
import Modbus
import Outbox
import Testing
import TestSupport

@Suite(.serialized) struct MQTT5SessionProcessTests {
    /// A gateway polling one register every 100 ms under MQTT 5.
    private struct Site {
        let directory: TemporaryDirectory
        let simulator: ModbusSimulator
        let configPath: String
        let outboxPath: String

        init(_ name: String, brokerPort: Int, mqtt: String) throws {
            directory = try TemporaryDirectory(name)
            let modbusPort = freeLoopbackPort()
            simulator = try ModbusSimulator(port: modbusPort)
            simulator.setHoldingRegisters(0, [715])
            try simulator.start()
            configPath = directory.file("gateway.yaml")
            outboxPath = directory.file("outbox.sqlite")
            try """
            gateway: { id: \(name), stats_interval: 1s }
            mqtt:
              host: 127.0.0.1
              port: \(brokerPort)
              protocol: 5
              keepalive: 5s
              reconnect_min: 100ms
              reconnect_max: 1s
            \(mqtt)
            buffer: { path: \(outboxPath) }
            devices:
              - name: boiler-1
                tcp: { host: 127.0.0.1, port: \(modbusPort) }
                poll_interval: 100ms
                timeout: 200ms
                tags:
                  - { name: temperature, table: holding, address: 0, type: int16 }
            """.write(toFile: configPath, atomically: true, encoding: .utf8)
        }

        func startGateway(_ run: Int) throws -> ChildProcess {
            try ChildProcess(try builtProduct("edge-gateway"), ["run", "--config", configPath],
                             log: directory.file("gateway-\(run).log"))
        }

        func finish() {
            simulator.stop()
            directory.remove()
        }
    }

    /// SIGKILL and a restart within `will_delay`: the broker resumes the session and never
    /// publishes the Will, so the retained status never says offline. SIGKILL without a
    /// restart: the Will comes, but not before `will_delay`.
    @Test func aRestartWithinTheWillDelayNeverShowsOfflineAndAWillComesOnlyAfterIt() async throws {
        let willDelay = 10
        let broker = try MosquittoBroker()
        try await broker.start()
        let statusTopic = "edge/gw-wd/status"
        let subscriber = RecordingSubscriber(port: broker.port, filter: statusTopic)
        try await subscriber.waitConnected()
        let site = try Site("gw-wd", brokerPort: broker.port, mqtt: "  will_delay: \(willDelay)s")
        defer { site.finish() }
        func statuses() -> [[String: Any]] { subscriber.messages(on: statusTopic).map(\.json) }
        func births(boot: Int) -> [[String: Any]] {
            statuses().filter { $0["state"] as? String == "online" && $0["boot"] as? Int == boot }
        }

        let first = try site.startGateway(1)
        defer { first.signal(SIGKILL) }
        try await waitUntil("the birth of boot 1", timeout: .seconds(20)) { !births(boot: 1).isEmpty }
        let firstKill = ContinuousClock.now
        first.signal(SIGKILL)
        _ = try await first.waitForExit()
        let second = try site.startGateway(2)
        defer { second.signal(SIGKILL) }
        try await waitUntil("the birth of boot 2", timeout: .seconds(20)) { !births(boot: 2).isEmpty }
        let secondBirth = try #require(subscriber.messages(on: statusTopic).first {
            $0.json["state"] as? String == "online" && $0.json["boot"] as? Int == 2
        })
        // The scenario holds only if boot 2 connected within the delay.
        try #require(secondBirth.arrived - firstKill < .seconds(willDelay),
                     "boot 2 took \(secondBirth.arrived - firstKill) to connect, longer than will_delay: no verdict")
        let connectLog = second.output
        #expect(!connectLog.contains("shortened the session"), "\(connectLog.suffix(2000))")

        // Now no restart: the Will of boot 2 comes, `will_delay` after the connection died.
        let secondKill = ContinuousClock.now
        second.signal(SIGKILL)
        _ = try await second.waitForExit()
        try await waitUntil("the Will of boot 2", timeout: .seconds(willDelay + 15)) {
            statuses().contains { $0["state"] as? String == "offline" }
        }
        try await subscriber.roundTrip()
        let recorded = subscriber.messages(on: statusTopic)
        let shown = recorded.map { "\($0.json["state"] ?? "?") boot \($0.json["boot"] ?? "?")" }
        // Boot 1's Will, had the broker kept it, was due `will_delay` after the first kill,
        // before boot 2's: everything up to boot 2's Will has been seen, and it never came.
        let offline = recorded.filter { $0.json["state"] as? String == "offline" }
        #expect(offline.count == 1, "only boot 2's Will, never boot 1's: \(shown)")
        let will = try #require(offline.first)
        #expect(will.json["boot"] as? Int == 2 && will.json["reason"] as? String == "connection lost", "\(will.json)")
        #expect(recorded.last?.json["state"] as? String == "offline", "the Will is the last status: \(shown)")
        // mosquitto counts the delay in whole seconds of its clock: allow one second less.
        #expect(will.arrived - secondKill >= .seconds(willDelay - 1),
                "the Will came \(will.arrived - secondKill) after SIGKILL, will_delay is \(willDelay) s")
        #expect(births(boot: 1).count == 1 && births(boot: 2).count == 1, "\(shown)")
    }

    /// Data messages carry the Message Expiry Interval: a v5 subscriber sees it, and a
    /// persistent session away longer than it is not sent what expired meanwhile, while
    /// what is younger still arrives.
    @Test func theBrokerDropsDataMessagesOlderThanTheMessageExpiry() async throws {
        let expiry = 4
        let broker = try MosquittoBroker()
        try await broker.start()
        let dataTopic = "edge/gw-exp/boiler-1/data"
        let live = RecordingSubscriber(port: broker.port, filter: dataTopic)
        try await live.waitConnected()
        let site = try Site("gw-exp", brokerPort: broker.port, mqtt: "  message_expiry: \(expiry)s")
        defer { site.finish() }
        let gateway = try site.startGateway(1)
        defer { gateway.signal(SIGKILL) }
        let mosquittoSub = try requireTool("mosquitto_sub", package: "mosquitto-clients")
        // A persistent MQTT 5 session (fixed id, no clean start, an hour of session expiry)
        // subscribed at QoS 1: while it is away, the broker queues data for it.
        func persistentSubscriber(_ run: Int) throws -> ChildProcess {
            try ChildProcess(mosquittoSub, ["-h", "127.0.0.1", "-p", "\(broker.port)", "-V", "5", "-q", "1",
                                            "-i", "expiry-sub", "-c", "-x", "3600", "-t", dataTopic, "-F", "%E|%p"],
                             log: site.directory.file("sub-\(run).log"))
        }
        /// (expiry interval as received, seq, poll time) of each line `sub` printed.
        func received(_ sub: ChildProcess) -> [(expiry: Int?, seq: Int, polled: Date)] {
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            return sub.output.split(separator: "\n").compactMap { line in
                let parts = line.split(separator: "|", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
                guard parts.count == 2,
                      let json = (try? JSONSerialization.jsonObject(with: Data(parts[1].utf8))) as? [String: Any],
                      let seq = json["seq"] as? Int,
                      let polled = (json["ts"] as? String).flatMap(formatter.date(from:)) else { return nil }
                return (Int(parts[0]), seq, polled)
            }
        }
        func liveSeqs() -> [Int] { live.messages(on: dataTopic).compactMap { $0.json["seq"] as? Int } }

        let first = try persistentSubscriber(1)
        defer { first.signal(SIGKILL) }
        try await waitUntil("data at the persistent subscriber", timeout: .seconds(20)) { received(first).count >= 5 }
        // The property reaches an MQTT 5 subscriber (the broker sends what is left of it).
        let seen = received(first)
        #expect(seen.allSatisfy { ($0.expiry ?? 0) >= 1 && ($0.expiry ?? .max) <= expiry }, "\(first.output.prefix(2000))")
        first.signal(SIGTERM)
        _ = try await first.waitForExit()
        let lastSeen = try #require(received(first).map(\.seq).max())

        // Away for more than twice the expiry, measured by the gateway's own polls (10 a second).
        try await waitUntil("polls while the subscriber is away", timeout: .seconds(60)) {
            (liveSeqs().max() ?? 0) >= lastSeen + 10 * expiry * 2 + 20
        }
        let back = Date()
        let second = try persistentSubscriber(2)
        defer { second.signal(SIGKILL) }
        let newestBeforeReturn = liveSeqs().max() ?? 0
        try await waitUntil("live data after the return", timeout: .seconds(20)) {
            (received(second).map(\.seq).max() ?? 0) > newestBeforeReturn + 5
        }
        let queued = received(second).filter { $0.seq > lastSeen && $0.seq <= newestBeforeReturn }
        let queuedSeqs = Set(queued.map(\.seq))
        // Polled more than expiry + 3 s before the return: expired in the broker.
        let stale = queued.filter { back.timeIntervalSince($0.polled) > Double(expiry + 3) }
        #expect(stale.isEmpty, "expired messages were delivered: seq \(stale.map(\.seq).prefix(20))")
        #expect(!queuedSeqs.contains(lastSeen + 1), "the first message of the absence had expired")
        // Seen live in the last second before the return: young enough to be delivered.
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let recent = live.messages(on: dataTopic).compactMap { message -> Int? in
            guard let seq = message.json["seq"] as? Int, seq > lastSeen, seq <= newestBeforeReturn,
                  let polled = (message.json["ts"] as? String).flatMap(formatter.date(from:)),
                  back.timeIntervalSince(polled) < 1 else { return nil }
            return seq
        }
        #expect(!recent.isEmpty)
        #expect(Set(recent).isSubset(of: queuedSeqs),
                "younger than the expiry but not delivered: \(Set(recent).subtracting(queuedSeqs).sorted())")
    }
}
