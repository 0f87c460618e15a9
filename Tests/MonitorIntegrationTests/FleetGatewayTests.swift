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

    init(id: String, brokerPort: Int) throws {
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
        devices:
          - name: boiler-1
            tcp: { host: 127.0.0.1, port: \(simulatorPort) }
            unit_id: 1
            poll_interval: 200ms
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

        // The page is served, and nothing of the healthy gateway is reported lost.
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
