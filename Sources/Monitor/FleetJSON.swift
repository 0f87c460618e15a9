// `/api/fleet` written by hand into one buffer: the same document as
// `FleetSnapshot.encoder().encode(fleet)` (tests compare the two), at a fraction of
// JSONEncoder's cost for 10,000 gateways.
import Foundation
import Gateway

extension FleetView {
    /// This view as `/api/fleet` JSON. `capacity` is a hint (e.g. the last rendering's size).
    /// Written into `buffer`'s storage when the caller hands over its only reference
    /// (its contents are replaced), so a large document needs no new pages.
    public func renderedJSON(reusing buffer: consuming [UInt8] = [], capacity: Int = 0) -> [UInt8] {
        var out = JSONBytes(reusing: buffer, capacity: max(capacity, 256 + gateways.count * 640))
        out.raw(#"{"generated_at":"#)
        out.timestamp(generatedAt)
        out.raw(#","totals":{"gateways":"#)
        out.integer(Int64(totals.gateways))
        out.raw(#","online":"#)
        out.integer(Int64(totals.online))
        out.raw(#","offline":"#)
        out.integer(Int64(totals.offline))
        out.raw(#","stale":"#)
        out.integer(Int64(totals.stale))
        out.raw(#","unknown":"#)
        out.integer(Int64(totals.unknown))
        out.raw(#","lost":"#)
        out.integer(totals.lost)
        out.raw(#"},"gateways":["#)
        for (index, gateway) in gateways.enumerated() {
            if index > 0 { out.byte(UInt8(ascii: ",")) }
            gateway.write(to: &out)
        }
        out.raw("]}")
        return out.bytes
    }
}

extension GatewayView {
    /// The gateway object; keys and their presence as `Codable` writes them.
    func write(to out: inout JSONBytes) {
        out.raw(#"{"id":"#)
        out.string(id)
        out.raw(#","state":"#)
        out.string(state.rawValue)
        out.raw(#","since":"#)
        out.timestamp(since)
        out.raw(#","last_seen":"#)
        out.timestamp(lastSeen)
        if let boot {
            out.raw(#","boot":"#)
            out.integer(boot)
        }
        if let session {
            out.raw(#","session":"#)
            out.integer(session)
        }
        out.raw(#","backlog":{"messages":"#)
        out.integer(backlog.messages)
        out.raw(#","bytes":"#)
        out.integer(backlog.bytes)
        out.raw(#","oldest_age_s":"#)
        out.number(backlog.oldestAgeSeconds)
        out.raw(#","drain_rate_per_s":"#)
        out.number(backlog.drainRatePerSecond)
        out.raw(#","eta_s":"#)
        out.number(backlog.etaSeconds)
        out.raw(#"},"replaying":"#)
        out.raw(replaying ? "true" : "false")
        out.raw(#","dropped":"#)
        out.integer(dropped)
        out.raw(#","lost":"#)
        out.integer(lost)
        out.raw(#","lost_ranges":["#)
        for (index, range) in lostRanges.enumerated() {
            if index > 0 { out.byte(UInt8(ascii: ",")) }
            out.raw(#"{"boot":"#)
            out.integer(range.boot)
            out.raw(#","first":"#)
            out.integer(range.first)
            out.raw(#","last":"#)
            out.integer(range.last)
            out.byte(UInt8(ascii: "}"))
        }
        out.raw(#"],"duplicates":"#)
        out.integer(duplicates)
        out.raw(#","seal_failures":"#)
        out.integer(sealFailures)
        out.raw(#","seal_failures_by_key":{"#)
        for (index, key) in sealFailuresByKey.keys.sorted().enumerated() {
            if index > 0 { out.byte(UInt8(ascii: ",")) }
            out.string(key)
            out.byte(UInt8(ascii: ":"))
            out.integer(sealFailuresByKey[key] ?? 0)
        }
        out.raw(#"},"continuity":"#)
        out.string(continuity.rawValue)
        out.raw(#","polls_failed":"#)
        out.integer(pollsFailed)
        out.raw(#","devices":["#)
        for (index, device) in devices.enumerated() {
            if index > 0 { out.byte(UInt8(ascii: ",")) }
            out.raw(#"{"name":"#)
            out.string(device.name)
            out.raw(#","state":"#)
            out.string(device.state)
            if let error = device.error {
                out.raw(#","error":"#)
                out.string(error)
            }
            out.raw(#","since":"#)
            out.timestamp(device.since)
            out.byte(UInt8(ascii: "}"))
        }
        out.raw("]}")
    }
}

/// Appends JSON tokens to a byte buffer.
struct JSONBytes {
    private(set) var bytes: [UInt8] = []

    init(reusing buffer: consuming [UInt8], capacity: Int) {
        bytes = consume buffer
        bytes.removeAll(keepingCapacity: true)
        bytes.reserveCapacity(capacity)
    }

    mutating func byte(_ byte: UInt8) { bytes.append(byte) }

    mutating func raw(_ text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    /// A JSON string: quotes, backslashes and control characters escaped.
    mutating func string(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): raw(#"\""#)
            case UInt8(ascii: "\\"): raw(#"\\"#)
            case UInt8(ascii: "\n"): raw(#"\n"#)
            case UInt8(ascii: "\r"): raw(#"\r"#)
            case UInt8(ascii: "\t"): raw(#"\t"#)
            case 0..<0x20:
                raw(#"\u00"#)
                bytes.append(Self.hex[Int(byte >> 4)])
                bytes.append(Self.hex[Int(byte & 0xF)])
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private static let hex = Array("0123456789abcdef".utf8)

    mutating func integer(_ value: Int64) {
        bytes.appendDecimal(value)
    }

    /// A finite number, or `null` (also for NaN and infinities, which JSON cannot carry).
    mutating func number(_ value: Double?) {
        guard let value, value.isFinite else { raw("null"); return }
        if value == value.rounded(), abs(value) < 1e15 {
            integer(Int64(value))
        } else {
            bytes.append(contentsOf: value.description.utf8)
        }
    }

    /// `"2026-11-24T02:00:00.000Z"`, exactly as `MessageEncoding.timestamp` writes it.
    mutating func timestamp(_ date: Date) {
        let milliseconds = Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
        guard milliseconds >= 0 else {
            bytes.append(UInt8(ascii: "\""))
            bytes.append(contentsOf: MessageEncoding.timestamp(date).utf8)
            bytes.append(UInt8(ascii: "\""))
            return
        }
        var seconds = time_t(milliseconds / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        bytes.append(UInt8(ascii: "\""))
        padded(Int(parts.tm_year) + 1900, 4)
        bytes.append(UInt8(ascii: "-"))
        padded(Int(parts.tm_mon) + 1, 2)
        bytes.append(UInt8(ascii: "-"))
        padded(Int(parts.tm_mday), 2)
        bytes.append(UInt8(ascii: "T"))
        padded(Int(parts.tm_hour), 2)
        bytes.append(UInt8(ascii: ":"))
        padded(Int(parts.tm_min), 2)
        bytes.append(UInt8(ascii: ":"))
        padded(Int(parts.tm_sec), 2)
        bytes.append(UInt8(ascii: "."))
        padded(Int(milliseconds % 1000), 3)
        raw("Z\"")
    }

    private mutating func padded(_ value: Int, _ width: Int) {
        var divisor = 1
        for _ in 1..<width { divisor *= 10 }
        if value >= divisor * 10 {
            integer(Int64(value))
            return
        }
        var rest = value
        while divisor > 0 {
            bytes.append(UInt8(ascii: "0") + UInt8(rest / divisor))
            rest %= divisor
            divisor /= 10
        }
    }
}
