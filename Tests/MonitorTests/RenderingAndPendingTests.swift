import Foundation
import GatewayConfig
import Synchronization
import Testing
@testable import Monitor
@testable import MonitorHTTP

/// A model with every shape a gateway object can take: no status yet, no boot and
/// no session, lost ranges in two boots, seal failures under two keys, a device with and
/// one without an error, a draining backlog, and ids that need escaping.
func variedFleet() -> FleetModel {
    var model = FleetModel(staleAfter: .auto, historyLimit: 50)
    var now = Date(timeIntervalSince1970: 1_800_000_000.123)
    func apply(_ event: FleetEvent) { model.apply(event, at: now) }
    let odd = "gw \"quoted\" \\ back/slash\n\u{1}ünï"
    for (index, id) in ["gw-01", "gw-02", odd, "gw-stats-only"].enumerated() {
        if id != "gw-stats-only" {
            apply(.status(gateway: id, GatewayStatus(kind: .birth, boot: 2, session: Int64(index + 1), statsIntervalMs: 1000)))
        }
        apply(.stats(gateway: id, GatewayStats(boot: 2, bufferedMessages: 500, bufferedBytes: 9000, oldestAgeMs: 14_237,
                                               pollsFailed: 3, seqCommitted: 10)))
    }
    for seq: Int64 in [1, 2, 5, 9, 10] { apply(.data(gateway: "gw-01", device: "boiler-1", boot: 2, seq: seq)) }
    apply(.data(gateway: "gw-01", device: "boiler-1", boot: 2, seq: 5))
    apply(.gap(gateway: "gw-01", GapRecord(boot: 2, first: 3, last: 3, reason: "outbox full")))
    apply(.sealFailure(gateway: "gw-02", keyID: "k2", reason: "bad tag"))
    apply(.sealFailure(gateway: "gw-02", keyID: "k1", reason: "unknown key"))
    apply(.deviceStatus(gateway: "gw-01", device: "boiler-1", online: true, error: nil))
    apply(.deviceStatus(gateway: "gw-01", device: "pump \"2\"", online: false, error: "timeout after 1000 ms\nretrying"))
    now += 7.5
    for id in ["gw-01", "gw-02", odd] {
        apply(.stats(gateway: id, GatewayStats(boot: 2, bufferedMessages: 0, oldestAgeMs: nil, seqCommitted: 10)))
    }
    now += 1.25
    for id in ["gw-01", "gw-02", odd] {
        apply(.stats(gateway: id, GatewayStats(boot: 2, bufferedMessages: 0, oldestAgeMs: nil, seqCommitted: 10)))
    }
    // A second boot with a hole: lost ranges in two boots.
    apply(.status(gateway: "gw-01", GatewayStatus(kind: .birth, boot: 3, session: 1, statsIntervalMs: 1000)))
    for seq: Int64 in [1, 4] { apply(.data(gateway: "gw-01", device: "boiler-1", boot: 3, seq: seq)) }
    apply(.stats(gateway: "gw-01", GatewayStats(boot: 3, bufferedMessages: 120, oldestAgeMs: 900, seqCommitted: 4)))
    now += 2
    apply(.stats(gateway: "gw-01", GatewayStats(boot: 3, bufferedMessages: 0, seqCommitted: 4)))
    apply(.stats(gateway: "gw-01", GatewayStats(boot: 3, bufferedMessages: 0, seqCommitted: 4)))
    // Draining: a backlog that falls (drain rate and ETA set).
    apply(.stats(gateway: "gw-02", GatewayStats(boot: 2, bufferedMessages: 300, oldestAgeMs: 5000, seqCommitted: 10)))
    now += 3
    apply(.stats(gateway: "gw-02", GatewayStats(boot: 2, bufferedMessages: 100, oldestAgeMs: 1000, seqCommitted: 10)))
    apply(.status(gateway: "gw-shutdown", GatewayStatus(kind: .shutdown, boot: 1, session: 4)))
    // Seen through a device status only: no boot, no session.
    apply(.deviceStatus(gateway: "gw-device-only", device: "meter", online: true, error: nil))
    return model
}

@Suite struct FleetJSONRenderingTests {
    @Test func theHandWrittenFleetJSONIsTheEncodersDocument() throws {
        let model = variedFleet()
        let snapshot = FleetSnapshot(model: model, takenAt: Date(timeIntervalSince1970: 1_800_000_014))
        let fleet = snapshot.fleet()
        // The fleet has what the comparison must cover.
        #expect(fleet.gateways.contains { $0.boot == nil && $0.session == nil })
        #expect(fleet.gateways.contains { $0.lostRanges.count >= 2 })
        #expect(fleet.gateways.contains { $0.sealFailuresByKey.count == 2 })
        #expect(fleet.gateways.contains { $0.devices.contains { $0.error != nil } && $0.devices.contains { $0.error == nil } })
        #expect(fleet.gateways.contains { $0.backlog.etaSeconds != nil && $0.backlog.oldestAgeSeconds != nil })
        #expect(Set(fleet.gateways.map(\.state)).count >= 3)

        let encoded = try FleetSnapshot.encoder().encode(fleet)
        let rendered = Data(fleet.renderedJSON())
        let expected = try JSONSerialization.jsonObject(with: encoded) as! NSDictionary
        let actual = try #require(try JSONSerialization.jsonObject(with: rendered) as? NSDictionary,
                                  "not JSON: \(String(decoding: rendered, as: UTF8.self))")
        #expect(actual == expected, "hand-written:\n\(String(decoding: rendered, as: UTF8.self))\nJSONEncoder:\n\(String(decoding: encoded, as: UTF8.self))")
        // And it reads back through the API's decoder (as `edge-monitor status` does).
        let decoded = try FleetSnapshot.decoder().decode(FleetView.self, from: rendered)
        #expect(decoded.gateways.map(\.id) == fleet.gateways.map(\.id))
    }

    @Test func theMetricsOfTheVariedFleetAreWellFormed() {
        let model = variedFleet()
        let text = String(decoding: MetricsExposition.render(FleetSnapshot(model: model, takenAt: Date(timeIntervalSince1970: 1_800_000_014))),
                          as: UTF8.self)
        #expect(text.contains(#"edge_monitor_gateway_last_seen_timestamp_seconds{gateway="gw-02"} 1800000013.873"#))
        #expect(text.contains(#"edge_monitor_gateway_backlog_messages{gateway="gw-02"} 100.0"#))
        #expect(text.contains(#"edge_monitor_gateway_backlog_oldest_age_seconds{gateway="gw-02"} 1.0"#))
        #expect(text.contains(#"edge_monitor_gateway_seal_failures_total{gateway="gw-02",key_id="k1"} 1"#))
        #expect(text.contains(#"edge_monitor_device_up{gateway="gw-01",device="pump \"2\""} 0.0"#))
        #expect(text.contains(#"edge_monitor_gateway_up{gateway="gw \"quoted\" \\ back/slash\n"#))
        #expect(text.contains(#"edge_monitor_fleet_gateways{state="online"} 1.0"#))
        // Every sample line: name{labels} value.
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            #expect(line.wholeMatch(of: /[a-z_]+\{.*\} -?[0-9.e+]+/) != nil, "malformed: \(line)")
        }
    }
}

@Suite struct PendingChangesTests {
    func record(_ id: String, boot: Int64) -> GatewayRecord {
        var record = GatewayRecord(id: id, at: Date(timeIntervalSince1970: 0))
        record.boot = boot
        return record
    }

    @Test func appendingKeepsTheNewestOfEachAndEveryHistoryEntry() {
        var older = ModelChanges()
        older.gateways = [record("a", boot: 1), record("b", boot: 1)]
        older.ledgers = [("a", ContinuityLedger(boot: 1, blindAfter: nil)), ("b", ContinuityLedger(boot: 1, blindAfter: nil))]
        older.history = [HistoryEntry(gateway: "a", at: Date(timeIntervalSince1970: 1), kind: .birth, detail: "1")]
        older.ignored = [.notJSON: 1]
        var newer = ModelChanges()
        newer.gateways = [record("a", boot: 2)]
        var ledger = ContinuityLedger(boot: 1, blindAfter: nil)
        _ = ledger.receive(1)
        newer.ledgers = [("a", ledger)]
        newer.history = [HistoryEntry(gateway: "a", at: Date(timeIntervalSince1970: 2), kind: .will, detail: "2")]
        newer.ignored = [.notJSON: 3]
        older.append(newer, historyLimit: 10)
        #expect(older.gateways.count == 2)
        #expect(older.gateways.first { $0.id == "a" }?.boot == 2)
        #expect(older.gateways.first { $0.id == "b" }?.boot == 1)
        #expect(older.ledgers.count == 2)
        #expect(older.ledgers.first { $0.gateway == "a" }?.ledger.received.ranges == [1...1])
        #expect(older.history.map(\.detail) == ["1", "2"])
        #expect(older.ignored == [.notJSON: 3])
    }

    @Test func aNewerRemovalDropsOlderLedgersAndHistoryStaysBounded() {
        var older = ModelChanges()
        older.ledgers = [("a", ContinuityLedger(boot: 5, blindAfter: nil)), ("b", ContinuityLedger(boot: 1, blindAfter: nil))]
        older.history = (1...4).map { HistoryEntry(gateway: "a", at: Date(timeIntervalSince1970: Double($0)), kind: .birth, detail: "\($0)") }
        var newer = ModelChanges()
        newer.removedLedgers = ["a"]
        newer.ledgers = [("a", ContinuityLedger(boot: 1, blindAfter: nil))]
        newer.history = (5...6).map { HistoryEntry(gateway: "a", at: Date(timeIntervalSince1970: Double($0)), kind: .birth, detail: "\($0)") }
        older.append(newer, historyLimit: 3)
        #expect(older.removedLedgers == ["a"])
        #expect(older.ledgers.map { "\($0.gateway)/\($0.ledger.boot)" }.sorted() == ["a/1", "b/1"])
        #expect(older.history.map(\.detail) == ["4", "5", "6"])
    }
}

@Suite struct MonitorMQTTSettingsTests {
    @Test func serversAndFailbackAfterReachTheUplink() throws {
        let configuration = try MonitorConfigurationLoader.parse(yaml: """
            mqtt:
              servers:
                - { host: 10.8.0.1 }
                - { host: 10.8.0.2, port: 1884 }
              failback_after: 2m
            """)
        let uplink = MonitorSettings.uplink(for: configuration.mqtt)
        #expect(uplink.servers.map(\.endpoint) == ["10.8.0.1:1883", "10.8.0.2:1884"])
        #expect(uplink.failbackAfter == .seconds(120))
        #expect(uplink.cleanSession == false)
        #expect(uplink.mqtt5 == false)
    }

    @Test func protocol5IsRefusedNamingTheKey() {
        #expect {
            try MonitorConfigurationLoader.parse(yaml: "mqtt:\n  host: broker\n  protocol: 5\n")
        } throws: { error in
            let text = "\(error)"
            return text.contains("mqtt.protocol") && text.contains("3.1.1") && text.contains("monitor.yaml:3:")
        }
        #expect(throws: Never.self) { try MonitorConfigurationLoader.parse(yaml: "mqtt:\n  host: broker\n  protocol: 3.1.1\n") }
    }
}

@Suite struct RenderedBytesTests {
    @Test(arguments: [0, 7, -7, 10, -10, 1_800_000_013, Int64.max, Int64.min])
    func decimalDigitsAreWhatStringWrites(_ value: Int64) {
        var bytes = Array("x=".utf8)
        bytes.appendDecimal(value)
        #expect(String(decoding: bytes, as: UTF8.self) == "x=\(value)")
    }

    @Test func aDocumentIsWrittenInChunksThatAddUpToIt() {
        let document = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        for size in [1000, 999, 128, 1, 4096] {
            let chunks = Array(FleetRendering.chunks(document, size: size))
            #expect(chunks.count == (document.count + size - 1) / size)
            #expect(chunks.allSatisfy { $0.readableBytes <= size && $0.readableBytes > 0 })
            #expect(chunks.flatMap { Array($0.readableBytesView) } == document, "chunk size \(size)")
        }
        #expect(Array(FleetRendering.chunks([], size: 128)).isEmpty)
    }
}

@Suite struct RenderingReuseTests {
    @Test func aDocumentWrittenIntoTheLastOnesStorageIsTheFreshDocument() {
        let first = FleetSnapshot(model: variedFleet(), takenAt: Date(timeIntervalSince1970: 1_800_000_014)).fleet()
        let second = FleetSnapshot(model: variedFleet(), takenAt: Date(timeIntervalSince1970: 1_800_000_900)).fleet()
        var json = first.renderedJSON()
        let jsonStorage = json.withUnsafeBufferPointer { $0.baseAddress }
        json = second.renderedJSON(reusing: consume json)
        #expect(json == second.renderedJSON())
        #expect(json.withUnsafeBufferPointer { $0.baseAddress } == jsonStorage, "the storage was not reused")

        var metrics = MetricsExposition.render(first, ignored: [:])
        let metricsStorage = metrics.withUnsafeBufferPointer { $0.baseAddress }
        metrics = MetricsExposition.render(second, ignored: [.notJSON: 3], reusing: consume metrics)
        #expect(sortedLines(metrics) == sortedLines(MetricsExposition.render(second, ignored: [.notJSON: 3])))
        #expect(metrics.withUnsafeBufferPointer { $0.baseAddress } == metricsStorage, "the storage was not reused")
    }

    @Test func eachGenerationIsServedItsOwnDocuments() async {
        var small = Fleet()
        small.birth(boot: 2, session: 1)
        small.data(boot: 2, [1, 3])
        let models = [variedFleet(), small.model, variedFleet()]
        let generation = Generation()
        let rendering = FleetRendering {
            let index = generation.index.load(ordering: .acquiring)
            return FleetSnapshot(model: models[index], takenAt: Date(timeIntervalSince1970: 1_800_000_014 + Double(index) * 100),
                                 generation: UInt64(index))
        }
        var held: [[UInt8]] = []  // a response still writing an older document
        for index in models.indices {
            generation.index.store(index, ordering: .releasing)
            let snapshot = FleetSnapshot(model: models[index], takenAt: Date(timeIntervalSince1970: 1_800_000_014 + Double(index) * 100))
            let metrics = await rendering.bytes(.metrics)
            #expect(sortedLines(metrics) == sortedLines(MetricsExposition.render(snapshot)), "generation \(index)")
            let json = await rendering.bytes(.fleetJSON)
            #expect(json == snapshot.fleet().renderedJSON(), "generation \(index)")
            #expect(await rendering.bytes(.metrics) == metrics)
            if index == 0 { held = [metrics, json] }
        }
        let first = FleetSnapshot(model: models[0], takenAt: Date(timeIntervalSince1970: 1_800_000_014))
        #expect(sortedLines(held[0]) == sortedLines(MetricsExposition.render(first)), "a held document changed")
        #expect(held[1] == first.fleet().renderedJSON(), "a held document changed")
    }
}

/// The lines of a /metrics document, sorted: swift-prometheus emits its (fleet-wide)
/// families in an order that differs from one registry to the next.
private func sortedLines(_ document: [UInt8]) -> [String] {
    String(decoding: document, as: UTF8.self).split(separator: "\n").map(String.init).sorted()
}

/// The generation a test's snapshot closure serves.
private final class Generation: Sendable {
    let index = Atomic<Int>(0)
}
