// edge-monitor's ops files as their own tools judge them: the alert rules with
// `promtool check rules` and `promtool test rules` (recorded series), the Grafana
// dashboard's queries against the metric names of the contract (and PromQL's
// parser), and the systemd unit with `systemd-analyze verify` and `security`.
import Foundation
import GatewayConfig
import Testing
import TestSupport

/// The metric names edge-monitor serves at /metrics (the contract between the
/// monitor's core and these files; the browser test checks them against a real
/// monitor's output too).
let contractMetricNames: Set<String> = [
    "edge_monitor_gateway_up", "edge_monitor_gateway_state", "edge_monitor_gateway_last_seen_timestamp_seconds",
    "edge_monitor_gateway_boot", "edge_monitor_gateway_backlog_messages",
    "edge_monitor_gateway_backlog_oldest_age_seconds", "edge_monitor_gateway_dropped_total",
    "edge_monitor_gateway_lost_total", "edge_monitor_gateway_duplicates_total",
    "edge_monitor_gateway_seal_failures_total", "edge_monitor_gateway_polls_failed_total",
    "edge_monitor_device_up", "edge_monitor_fleet_gateways", "edge_monitor_messages_ignored_total",
]

/// Every `edge_…` metric name in a PromQL expression.
func edgeMetricNames(in expression: String) -> Set<String> {
    Set(expression.matches(of: /\bedge_[a-z0-9_]+/).map { String($0.output) })
}

let promtoolAvailable = (try? requireTool("promtool", package: "prometheus")) != nil

@Suite struct PrometheusRulesTests {
    let rules = repositoryRoot + "/deploy/prometheus/edge-fleet.rules.yml"
    let tests = repositoryRoot + "/deploy/prometheus/edge-fleet.rules.test.yml"

    @Test(.enabled(if: isCI || promtoolAvailable, "needs promtool (make deps installs prometheus)"))
    func rulesAreValidAndPassTheirRecordedSeries() async throws {
        let promtool = try requireTool("promtool", package: "prometheus")
        let directory = try TemporaryDirectory("promtool")
        defer { directory.remove() }
        let check = try await runCommand(promtool, ["check", "rules", rules], in: directory)
        #expect(check.status == 0 && check.output.contains("SUCCESS"), "promtool check rules: \(check.output)")
        // The unit tests: offline only after its delay, lost at once, a healthy gateway quiet.
        let test = try await runCommand(promtool, ["test", "rules", tests], in: directory)
        #expect(test.status == 0 && test.output.contains("SUCCESS"), "promtool test rules: \(test.output)")
    }

    @Test func rulesUseOnlyTheMonitorsMetrics() throws {
        let text = try String(contentsOfFile: rules, encoding: .utf8)
        let used = edgeMetricNames(in: text)
        #expect(used.subtracting(contractMetricNames).isEmpty, "unknown metrics: \(used.subtracting(contractMetricNames))")
        for alert in ["EdgeGatewayOffline", "EdgeGatewayStopped", "EdgeGatewayStale", "EdgeGatewayBacklogOld", "EdgeGatewayDataLost",
                      "EdgeGatewaySealFailures", "EdgeDeviceOffline"] {
            #expect(text.contains("- alert: \(alert)\n"), "no alert \(alert)")
        }
        // Every rule carries a severity.
        #expect(text.components(separatedBy: "- alert: ").count - 1 == text.components(separatedBy: "severity: ").count - 1)
    }

    @Test func recordedSeriesCoverTheDelays() throws {
        let text = try String(contentsOfFile: tests, encoding: .utf8)
        for name in ["healthy gateway, no alert", "offline fires after its delay", "lost fires at once"] {
            #expect(text.contains("- name: \(name)\n"), "the unit tests lost the case '\(name)'")
        }
    }
}

@Suite struct GrafanaDashboardTests {
    let path = repositoryRoot + "/deploy/grafana/edge-fleet.json"

    /// Every string under one of `keys` in the dashboard: `expr` (the panels' PromQL),
    /// `definition` (the template variable's query).
    func strings(_ object: Any, keys: Set<String> = ["expr"]) -> [String] {
        switch object {
        case let dictionary as [String: Any]:
            var found: [String] = []
            for (key, value) in dictionary {
                if keys.contains(key), let text = value as? String { found.append(text) }
                found += strings(value, keys: keys)
            }
            return found
        case let array as [Any]: return array.flatMap { strings($0, keys: keys) }
        default: return []
        }
    }

    func dashboard() throws -> [String: Any] {
        let data = try #require(FileManager.default.contents(atPath: path), "no \(path)")
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any], "the dashboard is not a JSON object")
    }

    @Test func queriesUseOnlyTheMonitorsMetrics() throws {
        let queries = strings(try dashboard(), keys: ["expr", "definition"])
        #expect(queries.count >= 15, "only \(queries.count) queries")
        var used: Set<String> = []
        for query in queries {
            let names = edgeMetricNames(in: query)
            #expect(!names.isEmpty, "a query on no edge-monitor metric: \(query)")
            #expect(names.isSubset(of: contractMetricNames), "\(query) uses \(names.subtracting(contractMetricNames))")
            used.formUnion(names)
        }
        // What the issue asks the dashboard to show.
        for name in ["edge_monitor_gateway_state", "edge_monitor_gateway_backlog_messages", "edge_monitor_gateway_lost_total",
                     "edge_monitor_gateway_dropped_total", "edge_monitor_gateway_seal_failures_total", "edge_monitor_device_up"] {
            #expect(used.contains(name), "the dashboard does not show \(name)")
        }
    }

    @Test func datasourceIsAnImportInput() throws {
        let board = try dashboard()
        let inputs = try #require(board["__inputs"] as? [[String: Any]])
        #expect(inputs.contains { $0["name"] as? String == "DS_PROMETHEUS" && $0["pluginId"] as? String == "prometheus" })
        let text = try String(contentsOfFile: path, encoding: .utf8)
        // No datasource bound to one installation's uid.
        let uids = Set(text.matches(of: /"uid": "([^"]*)"/).map { String($0.output.1) })
        #expect(uids == ["${DS_PROMETHEUS}", "edge-fleet"], "\(uids)")
    }

    @Test(.enabled(if: isCI || promtoolAvailable, "needs promtool (make deps installs prometheus)"))
    func queriesParseAsPromQL() async throws {
        // promtool has no query checker; a recording rule per query is parsed by PromQL's own parser.
        let promtool = try requireTool("promtool", package: "prometheus")
        let directory = try TemporaryDirectory("dashboard")
        defer { directory.remove() }
        var rules = "groups:\n  - name: dashboard\n    rules:\n"
        for (index, query) in strings(try dashboard()).enumerated() {
            let concrete = query.replacingOccurrences(of: "$__rate_interval", with: "5m")
                .replacingOccurrences(of: "$gateway", with: ".*")
            let quoted = String(decoding: try JSONSerialization.data(withJSONObject: [concrete]), as: UTF8.self).dropFirst().dropLast()
            rules += "      - record: dashboard_query_\(index)\n        expr: \(quoted)\n"
        }
        try rules.write(toFile: directory.file("queries.yml"), atomically: true, encoding: .utf8)
        let check = try await runCommand(promtool, ["check", "rules", directory.file("queries.yml")], in: directory)
        #expect(check.status == 0, "a dashboard query does not parse: \(check.output)")
    }
}

@Suite struct MonitorSystemdUnitTests {
    @Test func unitVerifiesAndIsRatedOK() async throws {
        let analyze = try requireTool("systemd-analyze", package: "systemd")
        let directory = try TemporaryDirectory("monitor-unit")
        defer { directory.remove() }
        let unit = try String(contentsOfFile: repositoryRoot + "/systemd/edge-monitor.service", encoding: .utf8)
        #expect(unit.contains("ExecStart=/usr/bin/edge-monitor run --config /etc/edge-monitor/monitor.yaml\n"))
        #expect(unit.contains("User=edge-monitor\n") && unit.contains("StateDirectory=edge-monitor\n"))
        // verify checks that ExecStart= exists: the monitor binary just built, else a
        // stand-in (the rating does not depend on the binary).
        let binary = (try? builtProduct("edge-monitor")) ?? "/bin/true"
        let path = directory.file("edge-monitor.service")
        try unit.replacingOccurrences(of: "/usr/bin/edge-monitor", with: binary).write(toFile: path, atomically: true, encoding: .utf8)

        let verify = try await runCommand(analyze, ["verify", path], in: directory)
        #expect(verify.status == 0 && verify.output.isEmpty, "systemd-analyze verify: \(verify.output)")

        let security = try await runCommand(analyze, ["security", "--offline=true", path], in: directory)
        let match = try #require(security.output.firstMatch(of: /Overall exposure level for [^:]+: ([0-9.]+) (\w+)/),
                                 "no rating in: \(security.output)")
        let exposure = try #require(Double(String(match.1)))
        print("systemd-analyze security edge-monitor.service: exposure \(exposure) \(match.2)")
        #expect(exposure <= 2.5, "\(security.output)")
    }

    @Test func exampleConfigurationLoadsAndMatchesTheUnit() throws {
        // The monitor's own loader reads the shipped example without a problem.
        let example = try MonitorConfigurationLoader.load(file: repositoryRoot + "/monitor.yaml")
        // The unit's StateDirectory is where the example keeps the state.
        #expect(example.statePath == "/var/lib/edge-monitor/monitor.sqlite")
        #expect(example.listenHost == "127.0.0.1" && example.listenPort == 9470)
        #expect(example.topicPrefix == "edge")
        #expect(example.staleAfter == .auto)
        #expect(example.mqtt.clientID == "edge-monitor")
        // make demo rewrites these two lines; they must stay as the script expects them.
        let text = try String(contentsOfFile: repositoryRoot + "/monitor.yaml", encoding: .utf8)
        #expect(text.contains("  state: /var/lib/edge-monitor/monitor.sqlite\n") && text.contains("  listen: 127.0.0.1:9470\n"))
    }
}
