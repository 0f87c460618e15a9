// `/metrics`: the fleet in Prometheus text format, written through swift-prometheus's
// registry from one snapshot (a fresh registry per scrape, so gateways that are
// gone leave no stale series behind).
import Foundation
import Monitor
import Prometheus

public enum MetricsExposition {
    public static func render(_ snapshot: FleetSnapshot) -> [UInt8] {
        let registry = PrometheusCollectorRegistry()
        func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(namespace: "edge_monitor", metricName: name, unitName: "", helpText: help)
        }
        func gauge(_ name: String, _ labels: [(String, String)], help: String) -> Gauge {
            registry.makeGauge(descriptor: descriptor(name, help), labels: labels)
        }
        func counter(_ name: String, _ labels: [(String, String)], help: String) -> Counter {
            registry.makeCounter(descriptor: descriptor(name, help), labels: labels)
        }
        let fleet = snapshot.fleet()
        for gateway in fleet.gateways {
            let id = [("gateway", gateway.id)]
            gauge("gateway_up", id,
                               help: "1 when the gateway is online (birth seen, not stale)")
                .set(gateway.state == .online ? 1.0 : 0.0)
            for state in GatewayState.allCases {
                gauge("gateway_state", id + [("state", state.rawValue)],
                                   help: "1 for the gateway's current state, 0 for the others")
                    .set(gateway.state == state ? 1.0 : 0.0)
            }
            gauge("gateway_last_seen_timestamp_seconds", id,
                               help: "Unix time of the last message from the gateway")
                .set(gateway.lastSeen.timeIntervalSince1970)
            gauge("gateway_boot", id, help: "Boot counter of the gateway")
                .set(Double(gateway.boot ?? 0))
            gauge("gateway_backlog_messages", id,
                               help: "Messages buffered in the gateway's outbox (last stats)")
                .set(Double(gateway.backlog.messages))
            gauge("gateway_backlog_oldest_age_seconds", id,
                               help: "Age of the oldest buffered message (0 when empty)")
                .set(gateway.backlog.oldestAgeSeconds ?? 0)
            counter("gateway_dropped_total", id,
                                 help: "Messages the gateway dropped and reported in gap records")
                .increment(by: gateway.dropped)
            counter("gateway_lost_total", id,
                                 help: "Committed messages that never arrived and were not reported dropped")
                .increment(by: max(0, gateway.lost))
            counter("gateway_duplicates_total", id,
                                 help: "Data messages received more than once")
                .increment(by: gateway.duplicates)
            for (keyID, count) in gateway.sealFailuresByKey.sorted(by: { $0.key < $1.key }) {
                counter("gateway_seal_failures_total", id + [("key_id", keyID)],
                                     help: "Sealed data messages that did not open or verify")
                    .increment(by: count)
            }
            counter("gateway_polls_failed_total", id,
                                 help: "Failed Modbus polls the gateway reports")
                .increment(by: gateway.pollsFailed)
            for device in gateway.devices {
                gauge("device_up", id + [("device", device.name)],
                                   help: "1 when the device answers its polls")
                    .set(device.state == "online" ? 1.0 : 0.0)
            }
        }
        var counts: [GatewayState: Int] = [:]
        for gateway in fleet.gateways { counts[gateway.state, default: 0] += 1 }
        for state in GatewayState.allCases {
            gauge("fleet_gateways", [("state", state.rawValue)],
                               help: "Gateways per state")
                .set(Double(counts[state] ?? 0))
        }
        for reason in IgnoredReason.allCases {
            counter("messages_ignored_total", [("reason", reason.rawValue)],
                                 help: "Messages from the fleet that did not fit the contract")
                .increment(by: snapshot.model.ignored[reason] ?? 0)
        }
        return registry.emitToBuffer()
    }
}
