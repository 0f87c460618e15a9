// The monitor watching real edge-gateway processes that poll `edge-gateway simulate`.
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// One real gateway: its simulator process, its configuration and its process.
final class GatewayUnderWatch: @unchecked Sendable {
    let id: String
    let directory: TemporaryDirectory
    let simulatorPort = freeLoopbackPort()
    private(set) var simulator: ChildProcess?
    private(set) var process: ChildProcess?

    init(id: String, brokerPort: Int, pollInterval: String = "200ms", buffer: String = "", extra: String = "") throws {
        self.id = id
        directory = try TemporaryDirectory("fleet-\(id)")
        try """
        gateway:
          id: \(id)
          stats_interval: 1s
        mqtt:
          host: 127.0.0.1
          port: \(brokerPort)
          keepalive: 5s
          reconnect_min: 100ms
          reconnect_max: 1s
        buffer:
          path: \(directory.file("outbox.sqlite"))
          \(buffer)
        \(extra)
        devices:
          - name: boiler-1
            tcp: { host: 127.0.0.1, port: \(simulatorPort) }
            unit_id: 1
            poll_interval: \(pollInterval)
            timeout: 500ms
            tags:
              - { name: temperature, table: holding, address: 0, type: int16, scale: 0.1 }
        """.write(toFile: directory.file("gateway.yaml"), atomically: true, encoding: .utf8)
    }

    deinit {
        process = nil
        simulator = nil
        directory.remove()
    }

    func start() async throws {
        if simulator == nil {
            simulator = try ChildProcess(try builtProduct("edge-gateway"), ["simulate", "--port", "\(simulatorPort)"],
                                         log: directory.file("simulator.log"))
            let port = simulatorPort
            try await waitUntil("edge-gateway simulate on \(port)") { isListening(port: port) }
        }
        process = try ChildProcess(try builtProduct("edge-gateway"), ["run", "--config", directory.file("gateway.yaml")],
                                   log: directory.file("gateway-\(UUID().uuidString.prefix(6)).log"))
    }

    func stop(_ signal: Int32) async throws {
        guard let process else { return }
        process.signal(signal)
        _ = try await process.waitForExit()
        self.process = nil
    }
}

@Suite(.serialized) struct FleetGatewayTests {
    @Test func killStopAndRestartRealGatewaysShowInTheAPIAndMetrics() async throws {
        let harness = try await MonitorHarness()
        try await harness.startMonitor()
        let gateways = try ["gw-1", "gw-2", "gw-3"].map { try GatewayUnderWatch(id: $0, brokerPort: harness.broker.port) }
        for gateway in gateways { try await gateway.start() }
        for gateway in gateways {
            try await harness.waitForGateway(gateway.id, "online with data", timeout: .seconds(30)) { view in
                view["state"] as? String == "online"
                    && ((view["boots"] as? [[String: Any]])?.first?["received"] as? [[Int]])?.isEmpty == false
            }
        }

        // SIGKILL: the broker sends the Will at once (MQTT 3.1.1 has no Will delay); 2 s to show it.
        try await gateways[0].stop(SIGKILL)
        try await harness.waitForGateway("gw-1", "offline (connection lost)", timeout: .seconds(2)) {
            $0["state"] as? String == "offline_connection_lost"
        }
        try await harness.waitForMetric(#"edge_monitor_gateway_state{gateway="gw-1",state="offline_connection_lost"} 1.0"#,
                                        timeout: .seconds(2))
        try await harness.waitForMetric(#"edge_monitor_gateway_up{gateway="gw-1"} 0.0"#, timeout: .seconds(2))

        // SIGTERM: a clean stop.
        try await gateways[1].stop(SIGTERM)
        try await harness.waitForGateway("gw-2", "offline (shutdown)", timeout: .seconds(5)) {
            $0["state"] as? String == "offline_shutdown"
        }
        try await harness.waitForMetric(#"edge_monitor_gateway_state{gateway="gw-2",state="offline_shutdown"} 1.0"#,
                                        timeout: .seconds(2))

        // Restart: online with the next boot.
        try await gateways[1].start()
        let restarted = try await harness.waitForGateway("gw-2", "online with boot 2", timeout: .seconds(30)) {
            $0["state"] as? String == "online" && $0["boot"] as? Int == 2
        }
        let kinds = (restarted["history"] as? [[String: Any]] ?? []).compactMap { $0["kind"] as? String }
            .filter { ["birth", "will", "shutdown"].contains($0) }
        #expect(kinds == ["birth", "shutdown", "birth"], "status history, newest first: \(kinds)")
        try await harness.waitForMetric(#"edge_monitor_gateway_boot{gateway="gw-2"} 2.0"#, timeout: .seconds(5))

        // The healthy gateway's seqs are judged (an empty backlog after a committed report): none lost.
        try await harness.waitForGateway("gw-3", "judged", timeout: .seconds(15)) {
            (($0["boots"] as? [[String: Any]])?.first?["judged_through"] as? Int ?? 0) > 0
        }
        // The page is served, and nothing is reported lost.
        let page = try await harness.get("/")
        #expect(page.status == 200)
        #expect(page.contentType.hasPrefix("text/html"))
        let fleet = try await harness.fleet()
        let totals = try #require(fleet["totals"] as? [String: Any])
        #expect(totals["gateways"] as? Int == 3)
        #expect(totals["lost"] as? Int == 0, "\(harness.logs.suffix(3000))")
        for gateway in gateways { try await gateway.stop(SIGTERM) }
    }
}

@Suite(.serialized) struct FleetOutageTests {
    /// The first boot's ledger of a gateway view.
    static func boot(_ view: [String: Any]) -> [String: Any] {
        (view["boots"] as? [[String: Any]])?.last ?? [:]
    }

    @Test func aBrokerOutageShowsTheBacklogRiseAndDrainWithAnETAAndNothingLost() async throws {
        let harness = try await MonitorHarness()
        try await harness.startMonitor()
        // Replay slower than it polls new data, so the drain lasts long enough to see.
        let gateway = try GatewayUnderWatch(id: "gw-outage", brokerPort: harness.broker.port,
                                            pollInterval: "100ms", extra: "replay:\n  max_rate: 25\n")
        try await gateway.start()
        try await harness.waitForGateway(gateway.id, "online and judged", timeout: .seconds(30)) {
            $0["state"] as? String == "online" && (Self.boot($0)["judged_through"] as? Int ?? 0) > 0
        }
        // The broker goes away (gracefully, so the monitor's queued session survives) for 6 s.
        try await harness.broker.stop(graceful: true)
        let outage = ContinuousClock.now
        try await waitUntil("6 s of outage", timeout: .seconds(10)) { ContinuousClock.now - outage >= .seconds(6) }
        try await harness.broker.start()
        let backlog = try await harness.waitForGateway(gateway.id, "a backlog with an ETA", timeout: .seconds(30)) {
            let backlog = $0["backlog"] as? [String: Any] ?? [:]
            return (backlog["messages"] as? Int ?? 0) > 0 && backlog["eta_s"] as? Double != nil
        }
        #expect(backlog["replaying"] as? Bool == true)
        let committed = (Self.boot(backlog)["highest_committed"] as? Int) ?? 0
        let drained = try await harness.waitForGateway(gateway.id, "drained and judged past the outage", timeout: .seconds(60)) {
            (($0["backlog"] as? [String: Any])?["messages"] as? Int) == 0
                && (Self.boot($0)["judged_through"] as? Int ?? 0) > committed
        }
        #expect(drained["lost"] as? Int == 0, "\(harness.logs.suffix(3000))")
        #expect(drained["dropped"] as? Int == 0)
        try await gateway.stop(SIGTERM)
    }

    @Test func aTinyOutboxDropsDuringAnOutageAreDroppedReportedNotLost() async throws {
        let harness = try await MonitorHarness()
        try await harness.startMonitor()
        let gateway = try GatewayUnderWatch(id: "gw-tiny", brokerPort: harness.broker.port,
                                            pollInterval: "100ms", buffer: "max_messages: 20")
        try await gateway.start()
        try await harness.waitForGateway(gateway.id, "online and judged", timeout: .seconds(30)) {
            $0["state"] as? String == "online" && (Self.boot($0)["judged_through"] as? Int ?? 0) > 0
        }
        try await harness.broker.stop(graceful: true)
        let outage = ContinuousClock.now
        try await waitUntil("5 s of outage", timeout: .seconds(10)) { ContinuousClock.now - outage >= .seconds(5) }
        try await harness.broker.start()
        let view = try await harness.waitForGateway(gateway.id, "drops reported and judged", timeout: .seconds(60)) {
            ($0["dropped"] as? Int ?? 0) > 0 && (($0["backlog"] as? [String: Any])?["messages"] as? Int) == 0
                && (Self.boot($0)["judged_through"] as? Int ?? 0) >= (Self.boot($0)["gaps"] as? [[Int]])?.last?.last ?? Int.max
        }
        #expect(view["lost"] as? Int == 0, "\(harness.logs.suffix(3000))")
        try await harness.waitForMetric(#"edge_monitor_gateway_lost_total{gateway="gw-tiny"} 0"#)
        try await gateway.stop(SIGTERM)
    }
}

@Suite(.serialized) struct BridgedGatewayTests {
    @Test func aGatewayBehindABridgeWhoseLocalBrokerDiesTurnsStale() async throws {
        let harness = try await MonitorHarness()
        try await harness.startMonitor()
        // A plant broker bridged to the central one: the gateway's Will stays on the plant side.
        let localPort = freeLoopbackPort()
        let local = try MosquittoBroker(port: localPort, configuration: """
            listener \(localPort) 127.0.0.1
            allow_anonymous true
            persistence false
            connection central
            address 127.0.0.1:\(harness.broker.port)
            topic edge/# out 1
            cleansession true
            """)
        try await local.start()
        let gateway = try GatewayUnderWatch(id: "gw-bridged", brokerPort: localPort)
        try await gateway.start()
        try await harness.waitForGateway(gateway.id, "online through the bridge", timeout: .seconds(30)) {
            $0["state"] as? String == "online"
        }
        try await local.stop()
        // stale_after is auto: 3 × the 1 s stats interval the birth announces.
        let stale = try await harness.waitForGateway(gateway.id, "stale", timeout: .seconds(3 + 3)) {
            $0["state"] as? String == "stale"
        }
        #expect((stale["history"] as? [[String: Any]])?.first?["kind"] as? String == "stale")
        try await harness.waitForMetric(#"edge_monitor_gateway_state{gateway="gw-bridged",state="stale"} 1.0"#)
        try await harness.waitForMetric(#"edge_monitor_gateway_up{gateway="gw-bridged"} 0.0"#)
        try await gateway.stop(SIGTERM)
    }
}
