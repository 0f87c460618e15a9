// `/metrics`: the fleet in Prometheus text format (0.0.4).
//
// The per-gateway families are written by hand into one buffer, one pass over the
// fleet view per family, each gateway's label text escaped once: swift-prometheus's
// registry took tens of seconds for 10,000 gateways (≈150,000 series created and
// registered per scrape). The fleet-wide families (a few series) still go through
// swift-prometheus's registry, appended after them.
import Foundation
import Monitor
import Prometheus

public enum MetricsExposition {
    public static func render(_ snapshot: FleetSnapshot) -> [UInt8] {
        render(snapshot.fleet(), ignored: snapshot.model.ignored)
    }

    /// `capacity` is a hint (e.g. the last rendering's size). Written into `buffer`'s
    /// storage when the caller hands over its only reference (its contents are replaced).
    public static func render(_ fleet: FleetView, ignored: [IgnoredReason: Int64], reusing buffer: consuming [UInt8] = [],
                              capacity: Int = 0) -> [UInt8] {
        let gateways = fleet.gateways
        var out = ExpositionWriter(reusing: buffer, capacity: max(capacity, 4096 + gateways.count * 1400))
        // `gateway="<id>"`, escaped once per gateway.
        let labels = gateways.map { ExpositionWriter.label("gateway", $0.id) }
        let stateLabels = GatewayState.allCases.map { ExpositionWriter.label("state", $0.rawValue) }

        func family(_ name: StaticString, _ type: StaticString, _ help: StaticString,
                    _ value: (GatewayView, inout ExpositionWriter) -> Void) {
            out.header(name, type: type, help: help)
            for (index, gateway) in gateways.enumerated() {
                out.sampleStart(name, labels[index])
                value(gateway, &out)
            }
        }
        family("edge_monitor_gateway_up", "gauge", "1 when the gateway is online (birth seen, not stale)") {
            $1.gauge($0.state == .online)
        }
        out.header("edge_monitor_gateway_state", type: "gauge", help: "1 for the gateway's current state, 0 for the others")
        for (index, gateway) in gateways.enumerated() {
            for (stateIndex, state) in GatewayState.allCases.enumerated() {
                out.sampleStart("edge_monitor_gateway_state", labels[index], stateLabels[stateIndex])
                out.gauge(gateway.state == state)
            }
        }
        family("edge_monitor_gateway_last_seen_timestamp_seconds", "gauge", "Unix time of the last message from the gateway") {
            $1.milliseconds(Int64(($0.lastSeen.timeIntervalSince1970 * 1000).rounded()))
        }
        family("edge_monitor_gateway_boot", "gauge", "Boot counter of the gateway") { $1.double(Double($0.boot ?? 0)) }
        family("edge_monitor_gateway_backlog_messages", "gauge", "Messages buffered in the gateway's outbox (last stats)") {
            $1.double(Double($0.backlog.messages))
        }
        family("edge_monitor_gateway_backlog_oldest_age_seconds", "gauge", "Age of the oldest buffered message (0 when empty)") {
            $1.double($0.backlog.oldestAgeSeconds ?? 0)
        }
        family("edge_monitor_gateway_dropped_total", "counter", "Messages the gateway dropped and reported in gap records") {
            $1.integer($0.dropped)
        }
        family("edge_monitor_gateway_lost_total", "counter", "Committed messages that never arrived and were not reported dropped") {
            $1.integer(max(0, $0.lost))
        }
        family("edge_monitor_gateway_duplicates_total", "counter", "Data messages received more than once") {
            $1.integer($0.duplicates)
        }
        out.header("edge_monitor_gateway_seal_failures_total", type: "counter", help: "Sealed data messages that did not open or verify")
        for (index, gateway) in gateways.enumerated() where !gateway.sealFailuresByKey.isEmpty {
            for (keyID, count) in gateway.sealFailuresByKey.sorted(by: { $0.key < $1.key }) {
                out.sampleStart("edge_monitor_gateway_seal_failures_total", labels[index], ExpositionWriter.label("key_id", keyID))
                out.integer(count)
            }
        }
        family("edge_monitor_gateway_polls_failed_total", "counter", "Failed Modbus polls the gateway reports") {
            $1.integer($0.pollsFailed)
        }
        out.header("edge_monitor_device_up", type: "gauge", help: "1 when the device answers its polls")
        for (index, gateway) in gateways.enumerated() {
            for device in gateway.devices {
                out.sampleStart("edge_monitor_device_up", labels[index], ExpositionWriter.label("device", device.name))
                out.gauge(device.state == "online")
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
                .increment(by: ignored[reason] ?? 0)
        }
        out.append(registry)
        return out.bytes
    }
}

/// Writes Prometheus text lines; label values escaped as the format requires.
struct ExpositionWriter {
    private(set) var bytes: [UInt8] = []

    init(reusing buffer: consuming [UInt8], capacity: Int) {
        bytes = consume buffer
        bytes.removeAll(keepingCapacity: true)
        bytes.reserveCapacity(capacity)
    }

    /// `key="value"` with the value escaped (backslash, quote, newline).
    static func label(_ key: String, _ value: String) -> [UInt8] {
        var text: [UInt8] = []
        text.reserveCapacity(key.utf8.count + value.utf8.count + 3)
        text.append(contentsOf: key.utf8)
        text.append(contentsOf: "=\"".utf8)
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\\"): text.append(contentsOf: "\\\\".utf8)
            case UInt8(ascii: "\""): text.append(contentsOf: "\\\"".utf8)
            case UInt8(ascii: "\n"): text.append(contentsOf: "\\n".utf8)
            default: text.append(byte)
            }
        }
        text.append(UInt8(ascii: "\""))
        return text
    }

    /// The registry's families, after the lines written so far (in place: no copy of them).
    mutating func append(_ registry: PrometheusCollectorRegistry) {
        registry.emit(into: &bytes)
    }

    private mutating func raw(_ text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    mutating func header(_ name: StaticString, type: StaticString, help: StaticString) {
        raw("# HELP ")
        raw(name)
        bytes.append(UInt8(ascii: " "))
        raw(help)
        raw("\n# TYPE ")
        raw(name)
        bytes.append(UInt8(ascii: " "))
        raw(type)
        bytes.append(UInt8(ascii: "\n"))
    }

    /// `name{<label>[,<extra>]} ` (labels from `label(_:_:)`): the value follows.
    mutating func sampleStart(_ name: StaticString, _ label: [UInt8], _ extra: [UInt8]? = nil) {
        raw(name)
        bytes.append(UInt8(ascii: "{"))
        bytes.append(contentsOf: label)
        if let extra {
            bytes.append(UInt8(ascii: ","))
            bytes.append(contentsOf: extra)
        }
        raw("} ")
    }

    /// `1.0` or `0.0`, then the end of the line.
    mutating func gauge(_ on: Bool) {
        raw(on ? "1.0\n" : "0.0\n")
    }

    mutating func integer(_ value: Int64) {
        bytes.appendDecimal(value)
        bytes.append(UInt8(ascii: "\n"))
    }

    /// As Swift prints a `Double` (`120.0`, `14.2`), then the end of the line.
    mutating func double(_ value: Double) {
        if value.isFinite, value == value.rounded(), abs(value) < 1e15 {
            bytes.appendDecimal(Int64(value))
            raw(".0\n")
        } else {
            bytes.append(contentsOf: value.description.utf8)
            bytes.append(UInt8(ascii: "\n"))
        }
    }

    /// Seconds with three decimals from milliseconds, then the end of the line.
    mutating func milliseconds(_ value: Int64) {
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        let magnitude = Int64(value.magnitude)
        bytes.appendDecimal(magnitude / 1000)
        bytes.append(UInt8(ascii: "."))
        let fraction = magnitude % 1000
        bytes.append(UInt8(ascii: "0") + UInt8(fraction / 100))
        bytes.append(UInt8(ascii: "0") + UInt8(fraction / 10 % 10))
        bytes.append(UInt8(ascii: "0") + UInt8(fraction % 10))
        bytes.append(UInt8(ascii: "\n"))
    }
}
