// `/metrics`: the fleet in Prometheus text format (0.0.4).
//
// The per-gateway families are written directly, one pass over the snapshot:
// swift-prometheus's registry took tens of seconds for 10,000 gateways (≈150,000
// series created and registered per scrape). The fleet-wide families still go
// through swift-prometheus's registry, appended after them.
import Foundation
import Monitor
import Prometheus

public enum MetricsExposition {
    public static func render(_ snapshot: FleetSnapshot) -> [UInt8] {
        let fleet = snapshot.fleet()
        var text = ExpositionWriter()
        let gateways = fleet.gateways
        func family(_ name: String, _ type: String, _ help: String, _ samples: (inout ExpositionWriter) -> Void) {
            text.header("edge_monitor_" + name, type: type, help: help)
            samples(&text)
        }
        family("gateway_up", "gauge", "1 when the gateway is online (birth seen, not stale)") { out in
            for g in gateways { out.sample("edge_monitor_gateway_up", [("gateway", g.id)], g.state == .online ? "1.0" : "0.0") }
        }
        family("gateway_state", "gauge", "1 for the gateway's current state, 0 for the others") { out in
            for g in gateways {
                for state in GatewayState.allCases {
                    out.sample("edge_monitor_gateway_state", [("gateway", g.id), ("state", state.rawValue)], g.state == state ? "1.0" : "0.0")
                }
            }
        }
        family("gateway_last_seen_timestamp_seconds", "gauge", "Unix time of the last message from the gateway") { out in
            for g in gateways {
                out.sample("edge_monitor_gateway_last_seen_timestamp_seconds", [("gateway", g.id)],
                           String(format: "%.3f", g.lastSeen.timeIntervalSince1970))
            }
        }
        family("gateway_boot", "gauge", "Boot counter of the gateway") { out in
            for g in gateways { out.sample("edge_monitor_gateway_boot", [("gateway", g.id)], "\(Double(g.boot ?? 0))") }
        }
        family("gateway_backlog_messages", "gauge", "Messages buffered in the gateway's outbox (last stats)") { out in
            for g in gateways { out.sample("edge_monitor_gateway_backlog_messages", [("gateway", g.id)], "\(Double(g.backlog.messages))") }
        }
        family("gateway_backlog_oldest_age_seconds", "gauge", "Age of the oldest buffered message (0 when empty)") { out in
            for g in gateways {
                out.sample("edge_monitor_gateway_backlog_oldest_age_seconds", [("gateway", g.id)], "\(g.backlog.oldestAgeSeconds ?? 0)")
            }
        }
        family("gateway_dropped_total", "counter", "Messages the gateway dropped and reported in gap records") { out in
            for g in gateways { out.sample("edge_monitor_gateway_dropped_total", [("gateway", g.id)], "\(g.dropped)") }
        }
        family("gateway_lost_total", "counter", "Committed messages that never arrived and were not reported dropped") { out in
            for g in gateways { out.sample("edge_monitor_gateway_lost_total", [("gateway", g.id)], "\(max(0, g.lost))") }
        }
        family("gateway_duplicates_total", "counter", "Data messages received more than once") { out in
            for g in gateways { out.sample("edge_monitor_gateway_duplicates_total", [("gateway", g.id)], "\(g.duplicates)") }
        }
        family("gateway_seal_failures_total", "counter", "Sealed data messages that did not open or verify") { out in
            for g in gateways {
                for (keyID, count) in g.sealFailuresByKey.sorted(by: { $0.key < $1.key }) {
                    out.sample("edge_monitor_gateway_seal_failures_total", [("gateway", g.id), ("key_id", keyID)], "\(count)")
                }
            }
        }
        family("gateway_polls_failed_total", "counter", "Failed Modbus polls the gateway reports") { out in
            for g in gateways { out.sample("edge_monitor_gateway_polls_failed_total", [("gateway", g.id)], "\(g.pollsFailed)") }
        }
        family("device_up", "gauge", "1 when the device answers its polls") { out in
            for g in gateways {
                for device in g.devices {
                    out.sample("edge_monitor_device_up", [("gateway", g.id), ("device", device.name)], device.state == "online" ? "1.0" : "0.0")
                }
            }
        }

        // Fleet-wide families: few series, through swift-prometheus's registry.
        let registry = PrometheusCollectorRegistry()
        func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(namespace: "edge_monitor", metricName: name, unitName: "", helpText: help)
        }
        var counts: [GatewayState: Int] = [:]
        for gateway in gateways { counts[gateway.state, default: 0] += 1 }
        for state in GatewayState.allCases {
            registry.makeGauge(descriptor: descriptor("fleet_gateways", "Gateways per state"), labels: [("state", state.rawValue)])
                .set(Double(counts[state] ?? 0))
        }
        for reason in IgnoredReason.allCases {
            registry.makeCounter(descriptor: descriptor("messages_ignored_total", "Messages from the fleet that did not fit the contract"),
                                 labels: [("reason", reason.rawValue)])
                .increment(by: snapshot.model.ignored[reason] ?? 0)
        }
        var bytes = text.bytes
        registry.emit(into: &bytes)
        return bytes
    }
}

/// Writes Prometheus text lines; label values escaped as the format requires.
struct ExpositionWriter {
    private(set) var bytes: [UInt8] = []

    init() { bytes.reserveCapacity(1 << 20) }

    mutating func header(_ name: String, type: String, help: String) {
        bytes.append(contentsOf: "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n".utf8)
    }

    mutating func sample(_ name: String, _ labels: [(String, String)], _ value: String) {
        bytes.append(contentsOf: name.utf8)
        bytes.append(UInt8(ascii: "{"))
        for (index, (key, labelValue)) in labels.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            bytes.append(contentsOf: key.utf8)
            bytes.append(contentsOf: "=\"".utf8)
            for byte in labelValue.utf8 {
                switch byte {
                case UInt8(ascii: "\\"): bytes.append(contentsOf: "\\\\".utf8)
                case UInt8(ascii: "\""): bytes.append(contentsOf: "\\\"".utf8)
                case UInt8(ascii: "\n"): bytes.append(contentsOf: "\\n".utf8)
                default: bytes.append(byte)
                }
            }
            bytes.append(UInt8(ascii: "\""))
        }
        bytes.append(UInt8(ascii: "}"))
        bytes.append(UInt8(ascii: " "))
        bytes.append(contentsOf: value.utf8)
        bytes.append(UInt8(ascii: "\n"))
    }
}
