// Continuity end to end: a contract-following publisher skips seqs, reports gaps,
// tampers with seals; the real monitor process judges, restarts and remembers.
import Foundation
import Monitor
import Sealing
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct ContinuityProcessTests {
    @Test func aSkippedSeqIsLostWithItsExactRangeOnceTheBacklogIsEmpty() async throws {
        let harness = try await MonitorHarness()
        try await harness.startMonitor()
        let publisher = try await ContractPublisher(port: harness.broker.port, gateway: "gw-skip")
        try publisher.birth()
        try publisher.data(Array(1...3) + Array(6...10))
        try publisher.stats(buffered: 2, committed: 10)
        try await publisher.flush()
        try await harness.waitForGateway("gw-skip", "seqs 1-10 but 4-5 received") {
            (($0["boots"] as? [[String: Any]])?.first?["received"] as? [[Int]]) == [[1, 3], [6, 10]]
        }
        // Not lost while the backlog is not empty.
        #expect(try await harness.gateway("gw-skip")?["lost"] as? Int == 0)
        // An empty backlog, and a second look one stats interval later.
        try publisher.stats(buffered: 0, committed: 10)
        try publisher.stats(buffered: 0, committed: 10)
        let view = try await harness.waitForGateway("gw-skip", "lost 2") { $0["lost"] as? Int == 2 }
        let ranges = try #require(view["lost_ranges"] as? [[String: Int]])
        #expect(ranges == [["boot": 1, "first": 4, "last": 5]])
        try await harness.waitForMetric(#"edge_monitor_gateway_lost_total{gateway="gw-skip"} 2"#)
        #expect(harness.logs.contains("DATA LOST"))
        #expect(harness.logs.contains("seqs=4-5"))
        #expect((view["history"] as? [[String: Any]])?.first?["kind"] as? String == "lost")
    }

    @Test func gapRecordsAreDroppedReportedAndLostStaysZero() async throws {
        let harness = try await MonitorHarness()
        try await harness.startMonitor()
        let publisher = try await ContractPublisher(port: harness.broker.port, gateway: "gw-gap")
        try publisher.birth()
        try publisher.data(Array(1...4) + Array(9...12))
        try publisher.gap(first: 5, last: 8)
        try publisher.stats(buffered: 0, committed: 12)
        try publisher.stats(buffered: 0, committed: 12)
        try await publisher.flush()
        let view = try await harness.waitForGateway("gw-gap", "dropped 4") { $0["dropped"] as? Int == 4 }
        #expect(view["lost"] as? Int == 0)
        #expect((view["boots"] as? [[String: Any]])?.first?["gaps"] as? [[Int]] == [[5, 8]])
        try await harness.waitForMetric(#"edge_monitor_gateway_dropped_total{gateway="gw-gap"} 4"#)
        try await harness.waitForMetric(#"edge_monitor_gateway_lost_total{gateway="gw-gap"} 0"#)
    }

    @Test func tamperedAndWronglyKeyedSealsAreCountedPerKey() async throws {
        let keyDirectory = try TemporaryDirectory("monitor-keys")
        defer { keyDirectory.remove() }
        let keyFile = keyDirectory.file("k1.key")
        let key = try SealingKey.generate(id: "k1", file: keyFile)
        let harness = try await MonitorHarness(keys: [("k1", keyFile)])
        try await harness.startMonitor()
        let publisher = try await ContractPublisher(port: harness.broker.port, gateway: "gw-seal")
        try publisher.birth()
        let sealer = Sealer(algorithm: .aes256GCM, key: key)
        try publisher.raw(publisher.dataTopic, try sealer.seal(Array(publisher.dataPayload(1).utf8), topic: publisher.dataTopic))
        var tampered = try sealer.seal(Array(publisher.dataPayload(2).utf8), topic: publisher.dataTopic)
        let marker = Array(#""ct":""#.utf8)
        let start = try #require((0...(tampered.count - marker.count)).first { Array(tampered[$0..<($0 + marker.count)]) == marker })
        let offset = start + marker.count + 3
        tampered[offset] = tampered[offset] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        try publisher.raw(publisher.dataTopic, tampered)
        let stranger = try SealingKey(id: "k9", bytes: Array(repeating: 9, count: 32))
        try publisher.raw(publisher.dataTopic,
                          try Sealer(algorithm: .hmacSHA256, key: stranger).seal(Array(publisher.dataPayload(3).utf8), topic: publisher.dataTopic))
        try await publisher.flush()
        let view = try await harness.waitForGateway("gw-seal", "2 seal failures") { $0["seal_failures"] as? Int == 2 }
        #expect((view["boots"] as? [[String: Any]])?.first?["received"] as? [[Int]] == [[1, 1]])
        try await harness.waitForMetric(#"edge_monitor_gateway_seal_failures_total{gateway="gw-seal",key_id="k1"} 1"#)
        try await harness.waitForMetric(#"edge_monitor_gateway_seal_failures_total{gateway="gw-seal",key_id="k9"} 1"#)
        #expect(harness.logs.contains("bad tag"))
    }

    @Test func restartingTheMonitorMidStreamForgetsNothingAndReportsNoFalseLoss() async throws {
        let harness = try await MonitorHarness()
        try await harness.startMonitor()
        let publisher = try await ContractPublisher(port: harness.broker.port, gateway: "gw-restart")
        try publisher.birth()
        try publisher.data(1...200)
        try await publisher.flush()
        try await harness.waitForGateway("gw-restart", "seqs up to 200") {
            (($0["boots"] as? [[String: Any]])?.first?["received"] as? [[Int]])?.last?.last == 200
        }
        // The state writer stores a change within half a second: the kill below must come
        // after the gateway was stored once (the broker restart also drops its retained
        // birth, so the state file is all the monitor can remember it by).
        try await waitUntil("gw-restart in the state file \(harness.statePath)", timeout: .seconds(10)) {
            try MonitorStore(path: harness.statePath).load(historyLimit: 1).gateways.contains { $0.id == "gw-restart" }
        }
        // Killed mid-stream: up to a second of ledger writes is gone with it.
        try publisher.data(201...400)
        #expect(try await harness.stopMonitor(SIGKILL) != 0)
        // While it is down, 401...600 are published and then the broker dies too, so
        // the monitor's queued session is gone: those seqs never reach it.
        try publisher.data(401...600)
        try await publisher.flush()
        try await harness.broker.stop()
        try await harness.broker.start()
        let again = try await ContractPublisher(port: harness.broker.port, gateway: "gw-restart")
        try await harness.startMonitor()
        // Remembered from the state file, before any new message is needed.
        let restored = try #require(try await harness.gateway("gw-restart"))
        #expect(restored["boot"] as? Int == 1)
        try again.data(601...700)
        try again.stats(buffered: 0, committed: 700)
        try again.stats(buffered: 0, committed: 700)
        try again.stats(buffered: 0, committed: 700)
        try await again.flush()
        let view = try await harness.waitForGateway("gw-restart", "seqs up to 700 and judged") {
            (($0["boots"] as? [[String: Any]])?.first?["received"] as? [[Int]])?.last?.last == 700
                && (($0["boots"] as? [[String: Any]])?.first?["judged_through"] as? Int) == 700
        }
        try await harness.waitForMetric(#"edge_monitor_gateway_lost_total{gateway="gw-restart"} 0"#)
        #expect(view["lost"] as? Int == 0, "\(harness.logs.suffix(3000))")
        // What it could not see is reported as unobserved, not lost.
        let unobserved = (view["boots"] as? [[String: Any]])?.first?["unobserved"] as? [[Int]] ?? []
        #expect(unobserved.last?.last == 600, "unobserved: \(unobserved)")
        // SIGTERM: a clean stop, exit 0.
        #expect(try await harness.stopMonitor(SIGTERM) == 0)
    }

    @Test func badInputIsCountedAndTheMonitorKeepsGoing() async throws {
        let harness = try await MonitorHarness()
        try await harness.startMonitor()
        let publisher = try await ContractPublisher(port: harness.broker.port, gateway: "gw-bad")
        try publisher.raw("edge/gw-bad/status", Array("not json".utf8))
        try publisher.raw("edge/gw-bad/boiler-1/data", Array(#"{"gateway":"gw-bad","boot":1}"#.utf8))
        try publisher.raw("edge/gw-bad/stats", Array(repeating: UInt8(ascii: " "), count: 300 * 1024))
        try publisher.birth()
        try await publisher.flush()
        try await harness.waitForMetric(#"edge_monitor_messages_ignored_total{reason="not_json"} 1"#)
        try await harness.waitForMetric(#"edge_monitor_messages_ignored_total{reason="missing_field"} 1"#)
        try await harness.waitForMetric(#"edge_monitor_messages_ignored_total{reason="too_large"} 1"#)
        try await harness.waitForGateway("gw-bad", "online") { $0["state"] as? String == "online" }
        #expect(harness.monitor?.isRunning == true)
    }

    @Test func metricsPassPromtoolAndStatusExitsNonZeroOnTrouble() async throws {
        let harness = try await MonitorHarness()
        try await harness.startMonitor()
        let publisher = try await ContractPublisher(port: harness.broker.port, gateway: "gw-ok")
        try publisher.birth()
        try publisher.data(1...5)
        try await publisher.flush()
        try await harness.waitForGateway("gw-ok", "online") { $0["state"] as? String == "online" }

        let promtool = try requireTool("promtool", package: "prometheus")
        let metricsFile = harness.directory.file("metrics.txt")
        try await harness.metrics().write(toFile: metricsFile, atomically: true, encoding: .utf8)
        let check = try ChildProcess("/bin/sh", ["-c", "\(promtool) check metrics < \(metricsFile)"],
                                     log: harness.directory.file("promtool.log"))
        #expect(try await check.waitForExit() == 0, "promtool: \(check.output)")

        let monitorBinary = try builtProduct("edge-monitor")
        let url = "http://127.0.0.1:\(harness.httpPort)"
        let healthy = try ChildProcess(monitorBinary, ["status", "--config", harness.configPath, "--url", url],
                                       log: harness.directory.file("status-1.log"))
        #expect(try await healthy.waitForExit() == 0, "\(healthy.output)")
        #expect(healthy.output.contains("gw-ok"))

        let offline = try await ContractPublisher(port: harness.broker.port, gateway: "gw-down")
        try offline.birth()
        try offline.raw("edge/gw-down/status", Array(#"{"state":"offline","reason":"connection lost","session":1,"gateway":"gw-down","boot":1}"#.utf8))
        try await offline.flush()
        try await harness.waitForGateway("gw-down", "offline") { $0["state"] as? String == "offline_connection_lost" }
        let troubled = try ChildProcess(monitorBinary, ["status", "--json", "--config", harness.configPath, "--url", url],
                                        log: harness.directory.file("status-2.log"))
        #expect(try await troubled.waitForExit() == 2, "\(troubled.output)")
        #expect(troubled.output.contains(#""state":"offline_connection_lost""#))

        // With the monitor stopped, status reads the state file.
        #expect(try await harness.stopMonitor(SIGTERM) == 0)
        let fromFile = try ChildProcess(monitorBinary, ["status", "--config", harness.configPath, "--url", url],
                                        log: harness.directory.file("status-3.log"))
        #expect(try await fromFile.waitForExit() == 2, "\(fromFile.output)")
        #expect(fromFile.output.contains("state file"))
        #expect(fromFile.output.contains("gw-down"))
    }
}
