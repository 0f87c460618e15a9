import Foundation
import GatewayConfig
import Testing
@testable import Monitor
@testable import MonitorHTTP

@Suite struct MonitorStoreTests {
    func temporaryPath() -> String {
        NSTemporaryDirectory() + "monitor-store-\(UUID().uuidString)/monitor.sqlite"
    }

    @Test func aRestoredModelRemembersGatewaysLedgersAndHistoryWithoutFalseLoss() async throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        var fleet = Fleet()
        fleet.birth(boot: 4, session: 2)
        fleet.data(boot: 4, [1, 2, 3, 5])
        fleet.apply(.gap(gateway: fleet.gateway, GapRecord(boot: 4, first: 4, last: 4, reason: "outbox full")))
        fleet.apply(.ignored(.notJSON, topic: "t", detail: "d"))
        let store = try MonitorStore(path: path)
        try await store.write(fleet.model.takeChanges(), historyLimit: 50)
        // Later seqs the monitor gets before it stops, written in a second batch.
        fleet.data(boot: 4, [6, 7])
        try await store.write(fleet.model.takeChanges(), historyLimit: 50)

        // "Restart": a new store on the same file.
        let reopened = try MonitorStore(path: path)
        let contents = try reopened.load(historyLimit: 50)
        fleet.advance(600)
        var restored = Fleet()
        restored.now = fleet.now
        restored.model = FleetModel(staleAfter: .auto, historyLimit: 50, restoring: contents.gateways, ledgers: contents.ledgers,
                                    history: contents.history, ignored: contents.ignored, at: restored.now)
        #expect(restored.record.boot == 4)
        #expect(restored.state == .online)  // a grace period after the restart, not stale at once
        #expect(restored.ledger(4).received.ranges == [1...3, 5...7])
        #expect(restored.record.dropped == 1)
        #expect(restored.model.history[restored.gateway]?.map(\.kind) == [.birth, .gap])
        #expect(restored.model.ignored[.notJSON] == 1)
        // While the monitor was down 8...12 were published; it sees 13 on.
        restored.data(boot: 4, [13, 14])
        restored.stats(boot: 4, buffered: 0, committed: 14)
        restored.stats(boot: 4, buffered: 0, committed: 14)
        #expect(restored.record.lost == 0)
        #expect(restored.ledger(4).unobserved.ranges == [8...12])
    }

    @Test func historyIsBoundedInTheFile() async throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        var fleet = Fleet()
        fleet.model.historyLimit = 5
        let store = try MonitorStore(path: path)
        for session in Int64(1)...20 {
            fleet.birth(boot: 1, session: session)
            try await store.write(fleet.model.takeChanges(), historyLimit: 5)
        }
        let contents = try store.load(historyLimit: 100)
        #expect(contents.history.count == 5)
        #expect(contents.history.last?.detail.contains("session 20") == true)
    }
}

@Suite struct ExpositionTests {
    func sampleFleet() -> Fleet {
        var fleet = Fleet()
        fleet.birth(boot: 2, session: 1)
        fleet.data(boot: 2, [1, 3])
        fleet.apply(.deviceStatus(gateway: fleet.gateway, device: "boiler-1", online: true, error: nil))
        fleet.apply(.sealFailure(gateway: fleet.gateway, keyID: "k1", reason: "bad tag"))
        fleet.stats(boot: 2, buffered: 0, committed: 3)
        fleet.stats(boot: 2, buffered: 0, committed: 3)
        fleet.stats(boot: 2, buffered: 0, committed: 3)
        return fleet
    }

    @Test func metricsNameEveryContractSeries() {
        let fleet = sampleFleet()
        let text = String(decoding: MetricsExposition.render(FleetSnapshot(model: fleet.model, takenAt: fleet.now)), as: UTF8.self)
        for line in [
            #"edge_monitor_gateway_up{gateway="gw-01"} 1.0"#,
            #"edge_monitor_gateway_state{gateway="gw-01",state="online"} 1.0"#,
            #"edge_monitor_gateway_state{gateway="gw-01",state="stale"} 0.0"#,
            #"edge_monitor_gateway_boot{gateway="gw-01"} 2.0"#,
            #"edge_monitor_gateway_lost_total{gateway="gw-01"} 1"#,
            #"edge_monitor_gateway_seal_failures_total{gateway="gw-01",key_id="k1"} 1"#,
            #"edge_monitor_device_up{gateway="gw-01",device="boiler-1"} 1.0"#,
            #"edge_monitor_fleet_gateways{state="online"} 1.0"#,
            #"edge_monitor_messages_ignored_total{reason="not_json"} 0"#,
        ] {
            #expect(text.contains(line), "missing: \(line)")
        }
        for name in ["edge_monitor_gateway_last_seen_timestamp_seconds", "edge_monitor_gateway_backlog_messages",
                     "edge_monitor_gateway_backlog_oldest_age_seconds", "edge_monitor_gateway_dropped_total",
                     "edge_monitor_gateway_duplicates_total", "edge_monitor_gateway_polls_failed_total"] {
            #expect(text.contains("# TYPE \(name) "), "missing: \(name)")
        }
    }

    @Test func fleetJSONFollowsTheContract() throws {
        let fleet = sampleFleet()
        let snapshot = FleetSnapshot(model: fleet.model, takenAt: fleet.now)
        let object = try JSONSerialization.jsonObject(with: FleetSnapshot.encoder().encode(snapshot.fleet())) as! [String: Any]
        let totals = object["totals"] as! [String: Any]
        #expect(totals["gateways"] as? Int == 1)
        #expect(totals["lost"] as? Int == 1)
        let gateway = (object["gateways"] as! [[String: Any]])[0]
        #expect(gateway["state"] as? String == "online")
        #expect(gateway["continuity"] as? String == "tracked")
        let lostRanges = gateway["lost_ranges"] as! [[String: Any]]
        #expect(lostRanges.first?["first"] as? Int == 2)
        let backlog = gateway["backlog"] as! [String: Any]
        #expect(backlog.keys.contains("eta_s"))
        let detail = try JSONSerialization.jsonObject(with: FleetSnapshot.encoder().encode(snapshot.detail("gw-01")!)) as! [String: Any]
        #expect(detail["id"] as? String == "gw-01")
        #expect((detail["history"] as! [[String: Any]]).first?["kind"] as? String == "lost")  // newest first
        let boots = detail["boots"] as! [[String: Any]]
        #expect(boots.first?["received"] as? [[Int]] == [[1, 1], [3, 3]])
        #expect(boots.first?["highest_committed"] as? Int == 3)
    }
}

@Suite struct MonitorConfigurationTests {
    @Test func readsTheContractExample() throws {
        let configuration = try MonitorConfigurationLoader.parse(yaml: """
            monitor:
              listen: 0.0.0.0:9471
              state: /tmp/m.sqlite
              topic_prefix: plant/edge
              stale_after: 3m
              history: 50
            mqtt:
              host: broker.example
              port: 8883
            log_level: debug
            """)
        #expect(configuration.listenHost == "0.0.0.0")
        #expect(configuration.listenPort == 9471)
        #expect(configuration.topicPrefix == "plant/edge")
        #expect(configuration.staleAfter == .fixed(.seconds(180)))
        #expect(configuration.historyLimit == 50)
        #expect(configuration.mqtt.clientID == "edge-monitor")
        #expect(configuration.mqtt.port == 8883)
    }

    @Test func problemsNameTheirPlace() {
        #expect {
            try MonitorConfigurationLoader.parse(yaml: "monitor:\n  listen: nowhere\n  stale_after: soon\nmqtt:\n  port: 1\n")
        } throws: { error in
            let text = "\(error)"
            return text.contains("monitor.listen") && text.contains("monitor.stale_after") && text.contains("mqtt.host")
        }
    }
}

@Suite struct ExpositionEscapingTests {
    @Test func labelValuesAreEscaped() {
        var fleet = Fleet()
        fleet.apply(.status(gateway: #"gw"\x"#, GatewayStatus(kind: .birth, boot: 1, session: 1)))
        let text = String(decoding: MetricsExposition.render(FleetSnapshot(model: fleet.model, takenAt: fleet.now)), as: UTF8.self)
        #expect(text.contains(#"edge_monitor_gateway_up{gateway="gw\"\\x"} 1.0"#))
    }
}
