// The gateway binary end to end: a real mosquitto, a real libmodbus server, the
// real process with its signals.
import Foundation
import GRDB
import Modbus
import Outbox
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Everything one end-to-end scenario runs: broker, device, gateway, subscriber.
final class EndToEnd: @unchecked Sendable {
    let directory: TemporaryDirectory
    let broker: MosquittoBroker
    let modbusPort = freeLoopbackPort()
    var simulator: ModbusSimulator?
    var gateway: ChildProcess?
    let subscriber: RecordingSubscriber
    let gatewayID = "gw-test"
    let outboxPath: String

    /// - Parameter buffer: extra `buffer:` keys, e.g. `max_messages: 50`.
    init(pollInterval: String = "100ms", buffer extraBuffer: String = "", replay: String = "",
         outboxPath: String? = nil) async throws {
        directory = try TemporaryDirectory("e2e")
        self.outboxPath = outboxPath ?? directory.file("outbox.sqlite")
        // Persistent broker and subscriber session: nothing routed while the
        // subscriber reconnects after a broker restart is lost to the test.
        broker = try MosquittoBroker(persistent: true)
        try await broker.start()
        subscriber = RecordingSubscriber(port: broker.port, filter: "edge/#", persistentSession: true)
        try await subscriber.waitConnected()
        try startDevice()
        try """
        gateway:
          id: \(gatewayID)
          stats_interval: 1s
        mqtt:
          host: 127.0.0.1
          port: \(broker.port)
          keepalive: 5s
          reconnect_min: 100ms
          reconnect_max: 1s
        buffer:
          path: \(self.outboxPath)
          \(extraBuffer)
        \(replay)
        log_level: debug
        devices:
          - name: boiler-1
            tcp: { host: 127.0.0.1, port: \(modbusPort) }
            unit_id: 1
            poll_interval: \(pollInterval)
            timeout: 200ms
            tags:
              - { name: temperature, table: holding, address: 0, type: int16, scale: 0.1 }
              - { name: flow, table: holding, address: 2, type: float32 }
              - { name: energy, table: input, address: 0, type: uint32, byte_order: cdab }
        """.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    deinit {
        gateway = nil
        simulator?.stop()
        directory.remove()
    }

    var configPath: String { directory.file("gateway.yaml") }
    var statusTopic: String { "edge/\(gatewayID)/status" }
    var deviceStatusTopic: String { "edge/\(gatewayID)/boiler-1/status" }
    var dataTopic: String { "edge/\(gatewayID)/boiler-1/data" }

    func startDevice() throws {
        let simulator = try ModbusSimulator(port: modbusPort)
        simulator.setHoldingRegisters(0, [715, 0, 0x4148, 0x0000])  // 71.5 °C, flow 12.5
        simulator.setInputRegisters(0, [0x5678, 0x1234])            // energy 0x12345678 in CDAB
        try simulator.start()
        self.simulator = simulator
    }

    func startGateway(environment: [String: String] = [:]) throws {
        gateway = try ChildProcess(try builtProduct("edge-gateway"), ["run", "--config", configPath],
                                   log: directory.file("gateway-\(UUID().uuidString.prefix(6)).log"),
                                   environment: environment)
    }

    func statuses(_ topic: String) -> [String] {
        subscriber.messages(on: topic).map { $0.json["state"] as? String ?? "?" }
    }

    var dataMessages: [[String: Any]] { subscriber.messages(on: dataTopic).map(\.json) }

    /// Explains a failure: the gateway's log and what arrived.
    var diagnostics: String {
        "gateway log:\n\(gateway?.output ?? "-")\nreceived:\n"
            + subscriber.messages.suffix(30).map { "\($0.topic) \($0.text)" }.joined(separator: "\n")
    }
}

/// The measurement times (`ts`) of the data rows still in the outbox on `topic`, read
/// read-only beside the running gateway (as `edge-gateway status` reads its counters).
func bufferedPollTimes(outbox path: String, topic: String) throws -> [Date] {
    var configuration = GRDB.Configuration()
    configuration.readonly = true
    configuration.busyMode = .timeout(5)
    let queue = try DatabaseQueue(path: path, configuration: configuration)
    defer { try? queue.close() }
    let payloads = try queue.read { db in
        try Data.fetchAll(db, sql: "SELECT payload FROM message WHERE topic = ?", arguments: [topic])
    }
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return payloads.compactMap { payload in
        let json = try? JSONSerialization.jsonObject(with: payload) as? [String: Any]
        return (json?["ts"] as? String).flatMap(formatter.date(from:))
    }
}

@Suite(.serialized) struct GatewayProcessTests {
    /// Acknowledged rows are deleted with the next poll's commit; when no poll follows, they
    /// are still deleted (by themselves, within a few seconds).
    @Test func anAcknowledgedRowIsDeletedAlsoWhenNoFurtherPollComes() async throws {
        let e2e = try await EndToEnd(pollInterval: "600s")
        try e2e.startGateway()
        let outbox = e2e.directory.file("outbox.sqlite")
        try await waitUntil("the one poll delivered", timeout: .seconds(20)) { e2e.dataMessages.count >= 1 }
        do {
            try await waitUntil("the acknowledged row deleted with no poll after it", timeout: .seconds(20)) {
                let statistics = try? Outbox.readStatistics(path: outbox)
                return statistics?.bufferedMessages == 0 && statistics?.acknowledgedThisBoot == 1
            }
        } catch {
            Issue.record("\(error): \((try? Outbox.readStatistics(path: outbox)).map { "\($0)" } ?? "-") \(e2e.diagnostics)")
        }
        #expect(try Outbox.readStatistics(path: outbox).committedThisBoot == 1, "\(e2e.diagnostics)")
    }

    @Test func reconnectsAfterTheBrokerRestartsAndReplaysWithoutGaps() async throws {
        let e2e = try await EndToEnd()
        try e2e.startGateway()
        try await waitUntil("data flowing") { e2e.dataMessages.count >= 3 }
        let outageStart = Date()
        try await e2e.broker.stop(graceful: true)  // keeps the subscriber's session for the restart
        // While the broker is down the gateway keeps polling into its outbox.
        let outbox = e2e.directory.file("outbox.sqlite")
        // Counts the polls measured inside the outage, not every buffered row: rows polled
        // before the stop that were not acknowledged yet are buffered too, and counting them
        // let the broker come back with only 3 outage polls taken (under load).
        try await waitUntil("the outage to be noticed and 5 outage polls buffered", timeout: .seconds(10)) {
            e2e.gateway!.output.contains("connection to broker lost")
                && ((try? bufferedPollTimes(outbox: outbox, topic: e2e.dataTopic))?.filter { $0 > outageStart }.count ?? 0) >= 5
        }
        let outageEnd = Date()
        try await e2e.broker.start()
        let seqsBefore = Set(e2e.dataMessages.compactMap { $0["seq"] as? Int })
        try await waitUntil("second birth and replay", timeout: .seconds(20)) {
            e2e.statuses(e2e.statusTopic).filter { $0 == "online" }.count >= 2
                && (e2e.dataMessages.compactMap { $0["seq"] as? Int }.max() ?? 0) > (seqsBefore.max() ?? 0) + 10
        }
        let seqs = Set(e2e.dataMessages.compactMap { $0["seq"] as? Int })
        let highest = seqs.max() ?? 0
        let missing = Set(1...highest).subtracting(seqs)
        #expect(missing.isEmpty, "seq missing after the broker outage: \(missing.sorted()) \(e2e.diagnostics)")
        #expect(e2e.dataMessages.allSatisfy { $0["boot"] as? Int == 1 })
        // Polls taken while the broker was down arrive, with the time they were measured.
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let polledDuringOutage = e2e.dataMessages.filter { message in
            guard let ts = (message["ts"] as? String).flatMap(formatter.date(from:)) else { return false }
            return ts > outageStart && ts < outageEnd
        }
        #expect(polledDuringOutage.count >= 5, "\(e2e.diagnostics)")
    }

    @Test func refusesToStartOnABadConfigWithExitCode78() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("gateway.yaml")
        try "gateway:\n  id: gw\nmqtt:\n  host: 127.0.0.1\n  prot: 1883\ndevices: []\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        for arguments in [["run", "--config", path], ["check-config", path]] {
            let child = try ChildProcess(try builtProduct("edge-gateway"), arguments, log: directory.file("out-\(arguments[0]).log"))
            let status = try await child.waitForExit()
            #expect(status == 78, "\(arguments[0]) exit status")
            #expect(child.output.contains("mqtt.prot"), "names the unknown key: \(child.output)")
            #expect(child.output.contains("devices"), "names the empty device list: \(child.output)")
        }
    }
}

/// The wire additions a central monitor relies on: `session` in every gateway status
/// (birth, Will, clean offline), the stats interval and where the previous boot ended
/// in the birth, `seq_committed` in stats.
@Suite(.serialized) struct GatewayStatusSessionTests {
    /// Live (not retained) gateway statuses, in arrival order.
    func statuses(_ e2e: EndToEnd) -> [[String: Any]] {
        e2e.subscriber.messages(on: e2e.statusTopic).filter { !$0.retained }.map(\.json)
    }

    func births(_ e2e: EndToEnd, boot: Int) -> [[String: Any]] {
        statuses(e2e).filter { $0["state"] as? String == "online" && $0["boot"] as? Int == boot }
    }

    @Test func everyStatusNamesItsSessionAndTheBirthSaysWhereThePreviousBootEnded() async throws {
        let e2e = try await EndToEnd()
        try e2e.startGateway()

        // Boot 1, first connection: session 1, the stats interval, no previous boot.
        try await waitUntil("the first birth") { !births(e2e, boot: 1).isEmpty }
        let first = births(e2e, boot: 1)[0]
        #expect(first["session"] as? Int == 1, "\(first)")
        #expect(first["stats_interval_ms"] as? Int == 1000, "\(first)")
        #expect(first["previous_boot"] == nil && first["previous_boot_last_seq"] == nil,
                "a new outbox knows no previous boot: \(first)")

        // Stats carry the highest seq committed in this boot.
        let statsTopic = "edge/\(e2e.gatewayID)/stats"
        try await waitUntil("stats with seq_committed > 0") {
            e2e.subscriber.messages(on: statsTopic).contains { ($0.json["seq_committed"] as? Int ?? 0) > 0 }
        }
        let stats = try #require(e2e.subscriber.messages(on: statsTopic).last?.json)
        #expect(stats["boot"] as? Int == 1)

        // A new connection (broker restart) increments the session within the boot.
        try await e2e.broker.stop(graceful: true)
        try await waitUntil("the outage to be noticed") { e2e.gateway!.output.contains("connection to broker lost") }
        try await e2e.broker.start()
        try await waitUntil("a second birth", timeout: .seconds(20)) { births(e2e, boot: 1).count >= 2 }
        let second = births(e2e, boot: 1)[1]
        let secondSession = try #require(second["session"] as? Int, "\(second)")
        #expect(secondSession > 1, "a reconnection carries a higher session: \(second)")

        // SIGKILL: the Will carries the session of the connection it was set on.
        e2e.gateway!.signal(SIGKILL)
        _ = try await e2e.gateway!.waitForExit()
        try await waitUntil("the Last Will") { statuses(e2e).last?["state"] as? String == "offline" }
        let will = try #require(statuses(e2e).last)
        #expect(will["reason"] as? String == "connection lost", "\(will)")
        #expect(will["boot"] as? Int == 1)
        #expect(will["session"] as? Int == secondSession, "the Will and its birth name the same session: \(will) \(second)")

        // Boot 2's birth names where boot 1 ended: its last committed seq, as the outbox has it.
        let boot1 = try Outbox.readStatistics(path: e2e.outboxPath)
        #expect(boot1.boot == 1)
        #expect(boot1.seqCommitted > 0)
        try e2e.startGateway()
        try await waitUntil("boot 2's birth") { !births(e2e, boot: 2).isEmpty }
        let rebirth = births(e2e, boot: 2)[0]
        #expect(rebirth["session"] as? Int == 1, "the session counts from 1 in every boot: \(rebirth)")
        #expect(rebirth["previous_boot"] as? Int == 1, "\(rebirth)")
        #expect(rebirth["previous_boot_last_seq"] as? Int == Int(boot1.seqCommitted), "\(rebirth)")
        // ... and every seq up to it arrives (the backlog of boot 1 is replayed in boot 2).
        let boot1Seqs = { Set(e2e.dataMessages.filter { $0["boot"] as? Int == 1 }.compactMap { $0["seq"] as? Int }) }
        try await waitUntil("boot 1 replayed up to its last committed seq", timeout: .seconds(20)) {
            boot1Seqs().isSuperset(of: 1...Int(boot1.seqCommitted))
        }
        #expect((boot1Seqs().max() ?? 0) == Int(boot1.seqCommitted), "nothing of boot 1 beyond its last seq")

        // A clean stop: the offline status names the session of boot 2's connection.
        e2e.gateway!.signal(SIGTERM)
        #expect(try await e2e.gateway!.waitForExit(timeout: .seconds(5)) == 0, "\(e2e.diagnostics)")
        try await e2e.subscriber.roundTrip()
        let shutdown = try #require(statuses(e2e).last)
        #expect(shutdown["reason"] as? String == "shutdown", "\(shutdown)")
        #expect(shutdown["boot"] as? Int == 2)
        #expect(shutdown["session"] as? Int == rebirth["session"] as? Int, "\(shutdown)")
    }
}
