// The JSON payloads of the wire contract (docs/ARCHITECTURE.md, "The wire contract"),
// written by hand so the key order is fixed and encoding a poll costs one pass.
import Foundation
import GatewayClock
import GatewayConfig
import Modbus
import Outbox

/// Builds the payloads this gateway publishes.
public enum MessageEncoding {
    /// A data message: one poll of one device.
    ///
    /// Written in one pass into one array sized for the whole message up front (see
    /// `dataMessageCapacity`): no String per value, per key or for the timestamp.
    public static func dataMessage(gateway: String, poll: DevicePoll, boot: Int64, seq: Int64) -> [UInt8] {
        var json = JSONWriter(capacity: dataMessageCapacity(gateway: gateway, poll: poll))
        json.beginObject()
        json.key("gateway"); json.string(gateway)
        json.key("device"); json.string(poll.device)
        json.key("ts"); json.timestamp(poll.timestamp)
        json.key("ts_source"); json.string(TimestampSource(poll.clock.sync).rawValue)
        json.key("boot"); json.integer(boot)
        json.key("seq"); json.integer(seq)
        json.key("values"); json.beginObject()
        for reading in poll.readings {
            guard case let .success(value) = reading.value else { continue }
            json.key(reading.tag)
            switch value {
            case let .integer(integer): json.integer(integer)
            case let .number(number): json.number(number)
            case let .bool(bool): json.bool(bool)
            case let .string(text): json.string(text)
            }
        }
        json.endObject()
        json.key("errors"); json.beginObject()
        for reading in poll.readings {
            guard case let .failure(error) = reading.value else { continue }
            json.key(reading.tag); json.string(error.message)
        }
        json.endObject()
        json.endObject()
        return json.bytes
    }

    /// The size of a data message when no string needs escaping (a little more for
    /// numbers, whose text is not known before it is written): one allocation in the
    /// common case, growth only when something is escaped.
    static func dataMessageCapacity(gateway: String, poll: DevicePoll) -> Int {
        // {"gateway":"","device":"","ts":"<24>","ts_source":"unsynchronised","boot":<20>,"seq":<20>,"values":{},"errors":{}}
        var size = 168 + gateway.utf8.count + poll.device.utf8.count
        for reading in poll.readings {
            size += reading.tag.utf8.count + 4  // "tag":…,
            switch reading.value {
            case let .success(.integer(integer)): size += JSONWriter.digitCount(integer)
            case .success(.number): size += 24  // -1.7976931348623157e+308
            case .success(.bool): size += 5
            case let .success(.string(text)): size += text.utf8.count + 2
            case let .failure(error): size += error.message.utf8.count + 2
            }
        }
        return size
    }

    /// The retained meta payload of a device: where it is and, per tag, what it
    /// is (`{"tags":{"temperature":{"type":"int16","table":"holding","address":0,"unit":"°C"}}}`).
    public static func deviceMeta(_ device: DeviceConfiguration, gateway: String, boot: Int64, at date: Date,
                                  clock: ClockStatus? = nil) -> [UInt8] {
        var json = JSONWriter()
        json.beginObject()
        json.key("gateway"); json.string(gateway)
        json.key("device"); json.string(device.name)
        json.key("bus"); json.string(device.transport.busKey)
        json.key("unit_id"); json.integer(Int64(device.unitID))
        json.key("poll_interval_ms"); json.integer(Int64(device.pollInterval / .milliseconds(1)))
        switch device.publish {
        case .always:
            json.key("publish"); json.string("always")
        case let .onChange(maxInterval):
            json.key("publish"); json.string("on_change")
            json.key("max_interval_ms"); json.integer(Int64(maxInterval / .milliseconds(1)))
        }
        json.key("tags"); json.beginObject()
        for tag in device.tags {
            json.key(tag.name); json.beginObject()
            json.key("type"); json.string(tag.type.rawValue)
            json.key("table"); json.string(tag.table.rawValue)
            json.key("address"); json.integer(Int64(tag.address))
            if let bit = tag.bit { json.key("bit"); json.integer(Int64(bit)) }
            if let unit = tag.unit { json.key("unit"); json.string(unit) }
            if let interval = tag.pollInterval {
                json.key("poll_interval_ms"); json.integer(Int64(interval / .milliseconds(1)))
            }
            switch tag.deadband {
            case .none: break
            case let .absolute(amount): json.key("deadband"); json.number(amount)
            case let .percent(percent): json.key("deadband_percent"); json.number(percent)
            }
            json.endObject()
        }
        json.endObject()
        json.key("boot"); json.integer(boot)
        json.key("ts"); json.timestamp(date)
        if let clock {
            json.key("ts_source"); json.string(TimestampSource(clock.sync).rawValue)
            json.key("time_source"); json.string(clock.source)
        }
        json.endObject()
        return json.bytes
    }

    /// The retained `<prefix>/<gw>/status` payload: the birth, the Last Will or the
    /// clean offline status, each naming the MQTT connection (`session`) it belongs to.
    ///
    /// `{"state":"online","gateway":…,"boot":…,"session":…,"ts":…,"stats_interval_ms":…,
    /// ["previous_boot":…,"previous_boot_last_seq":…,]["outbox_quarantined":…][,"boot_recovered_above":…,"boot_recovered_from":"state_file"|"quarantined_outbox"]
    /// [,"ts_source":…,"time_source":…[,"clock_maxerror_ms":…],"kernel_boot_id":…]}` or
    /// `{"state":"offline","reason":"shutdown","gateway":…,"boot":…,"session":…,"ts":…}` or the Last Will
    /// `{"state":"offline","reason":"connection lost","gateway":…,"boot":…,"session":…,"connected_at":…}`
    /// (no `ts`: the Will is written when its connection begins).
    /// Consumers order these by `(boot, session)`, never by time.
    public static func gatewayStatus(_ status: GatewayStatus, gateway: String, boot: Int64, session: Int,
                                     at date: Date) -> [UInt8] {
        var json = JSONWriter()
        json.beginObject()
        json.key("state"); json.string(status.state.rawValue)
        if case let .offline(reason) = status {
            json.key("reason"); json.string(reason.rawValue)
        }
        json.key("gateway"); json.string(gateway)
        json.key("boot"); json.integer(boot)
        json.key("session"); json.integer(Int64(session))
        // The Will is built at CONNECT and published by the broker when the connection
        // is gone: its time is when the connection began, not when the gateway vanished.
        // A `ts` there would be older than the birth of the same session.
        json.key(status.isWill ? "connected_at" : "ts"); json.timestamp(date)
        if case let .online(birth) = status {
            json.key("stats_interval_ms"); json.integer(Int64(birth.statsInterval / .milliseconds(1)))
            if let server = birth.server {
                json.key("server"); json.string(server)
            }
            if let previous = birth.previousBoot {
                json.key("previous_boot"); json.integer(previous.boot)
                json.key("previous_boot_last_seq"); json.integer(previous.lastSeq)
            }
            if let quarantined = birth.quarantinedOutbox {
                json.key("outbox_quarantined"); json.string(quarantined)
            }
            if let recovery = birth.bootRecovery {
                json.key("boot_recovered_above"); json.integer(recovery.previousBoot)
                json.key("boot_recovered_from"); json.string(recovery.source.rawValue)
            }
            if let clock = birth.clock {
                json.key("ts_source"); json.string(TimestampSource(clock.sync).rawValue)
                json.key("time_source"); json.string(clock.source)
                if let maxError = clock.maxErrorMilliseconds {
                    json.key("clock_maxerror_ms"); json.integer(maxError)
                }
                json.key("kernel_boot_id"); json.string(clock.bootID)
            }
        }
        json.endObject()
        return json.bytes
    }

    /// The retained `<prefix>/<gw>/<device>/status` payload:
    /// `{"state":"online"|"offline",["error":…,]"gateway":…,"boot":…,"ts":…}`; `error` nil means online.
    public static func deviceStatus(error: String?, gateway: String, boot: Int64, at date: Date) -> [UInt8] {
        var json = JSONWriter()
        json.beginObject()
        json.key("state"); json.string((error == nil ? Presence.online : .offline).rawValue)
        if let error {
            json.key("error"); json.string(error)
        }
        json.key("gateway"); json.string(gateway)
        json.key("boot"); json.integer(boot)
        json.key("ts"); json.timestamp(date)
        json.endObject()
        return json.bytes
    }

    /// A gap record: messages `firstSeq...lastSeq` of `boot` were dropped for `reason`.
    public static func gap(gateway: String, boot: Int64, firstSeq: Int64, lastSeq: Int64, count: Int64,
                           reason: String, at date: Date) -> [UInt8] {
        var json = JSONWriter()
        json.beginObject()
        json.key("gateway"); json.string(gateway)
        json.key("boot"); json.integer(boot)
        json.key("first_seq"); json.integer(firstSeq)
        json.key("last_seq"); json.integer(lastSeq)
        json.key("count"); json.integer(count)
        json.key("reason"); json.string(reason)
        json.key("ts"); json.timestamp(date)
        json.endObject()
        return json.bytes
    }

    /// A flat object of integer counters (the stats topic), keys in the given order.
    /// With `sync`, `ts_source` follows `ts` (the sync status of the clock that gave it);
    /// with `server`, the broker this connection is on.
    public static func counters(_ fields: [(String, Int64?)], gateway: String, boot: Int64, at date: Date,
                                sync: ClockSync? = nil, server: String? = nil) -> [UInt8] {
        var json = JSONWriter()
        json.beginObject()
        json.key("gateway"); json.string(gateway)
        json.key("boot"); json.integer(boot)
        json.key("ts"); json.timestamp(date)
        if let sync {
            json.key("ts_source"); json.string(TimestampSource(sync).rawValue)
        }
        if let server {
            json.key("server"); json.string(server)
        }
        for (key, value) in fields {
            json.key(key)
            if let value { json.integer(value) } else { json.null() }
        }
        json.endObject()
        return json.bytes
    }

    /// UTC with milliseconds: `2026-11-21T19:00:00.123Z`.
    public static func timestamp(_ date: Date) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(24)
        UTCTimestamp.append(date, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// The `state` of a status payload.
public enum Presence: String, Sendable {
    case online
    case offline
}

/// Why the gateway's status says offline (its `reason`).
public enum OfflineReason: String, Sendable {
    /// The Last Will: the broker lost the connection without a DISCONNECT.
    case connectionLost = "connection lost"
    /// The gateway stopped cleanly.
    case shutdown
}

/// What the gateway's retained status announces.
public enum GatewayStatus: Sendable {
    /// What a birth carries besides the gateway, boot, session and time.
    public struct Birth: Sendable {
        /// How often the stats topic is published (a consumer's staleness clock).
        public var statsInterval: Duration
        /// Where the previous boot ended, when the outbox knows.
        public var previousBoot: OutboxBootEnd?
        /// Where a corrupt outbox was moved at start, if that happened.
        public var quarantinedOutbox: String?
        /// Set when the outbox did not hold the last boot: the boot found elsewhere and where.
        public var bootRecovery: BootRecovery?
        /// The clock's status when the birth is sent (its source, sync, kernel boot).
        public var clock: ClockStatus?
        /// The broker (`host:port`) this connection is on, of `mqtt.servers`.
        public var server: String?

        public init(statsInterval: Duration, previousBoot: OutboxBootEnd?, quarantinedOutbox: String?,
                    bootRecovery: BootRecovery? = nil, clock: ClockStatus? = nil) {
            self.statsInterval = statsInterval
            self.previousBoot = previousBoot
            self.quarantinedOutbox = quarantinedOutbox
            self.bootRecovery = bootRecovery
            self.clock = clock
        }
    }

    case online(Birth)
    case offline(OfflineReason)

    public var state: Presence {
        switch self {
        case .online: .online
        case .offline: .offline
        }
    }

    /// The Last Will: written at CONNECT, published by the broker once the connection is gone.
    var isWill: Bool {
        if case .offline(.connectionLost) = self { return true }
        return false
    }
}

/// A minimal streaming JSON writer (objects, strings, numbers) that writes bytes
/// straight into its array: integers digit by digit, strings copied whole unless
/// they need escaping, the timestamp by arithmetic.
struct JSONWriter {
    private(set) var bytes: [UInt8] = []
    private var needsComma = false

    init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    mutating func beginObject() {
        separate()
        bytes.append(UInt8(ascii: "{"))
        needsComma = false
    }

    mutating func endObject() {
        bytes.append(UInt8(ascii: "}"))
        needsComma = true
    }

    mutating func beginArray() {
        separate()
        bytes.append(UInt8(ascii: "["))
        needsComma = false
    }

    mutating func endArray() {
        bytes.append(UInt8(ascii: "]"))
        needsComma = true
    }

    mutating func key(_ name: String) {
        separate()
        appendQuoted(name)
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    mutating func string(_ value: String) {
        separate()
        appendQuoted(value)
        needsComma = true
    }

    /// `date` as a string value: `"2026-11-21T19:00:00.123Z"`.
    mutating func timestamp(_ date: Date) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        UTCTimestamp.append(date, to: &bytes)
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    /// The decimal digits of `value`, as `String(value)` writes them.
    mutating func integer(_ value: Int64) {
        separate()
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        var magnitude = value.magnitude
        let start = bytes.count
        repeat {
            bytes.append(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: magnitude % 10))
            magnitude /= 10
        } while magnitude > 0
        var low = start, high = bytes.count - 1
        while low < high {
            bytes.swapAt(low, high)
            low += 1
            high -= 1
        }
        needsComma = true
    }

    mutating func bool(_ value: Bool) { raw(value ? "true" : "false") }
    mutating func null() { raw("null") }

    /// Finite numbers only (callers turn NaN and infinities into tag errors). The
    /// text is Swift's shortest form that reads back as the same Double (`description`).
    mutating func number(_ value: Double) {
        precondition(value.isFinite, "JSON has no NaN or infinity")
        raw(value.description)
    }

    /// Characters `integer(value)` writes.
    static func digitCount(_ value: Int64) -> Int {
        var count = value < 0 ? 2 : 1
        var magnitude = value.magnitude
        while magnitude >= 10 {
            magnitude /= 10
            count += 1
        }
        return count
    }

    private mutating func raw(_ text: String) {
        separate()
        bytes.append(contentsOf: text.utf8)
        needsComma = true
    }

    private mutating func separate() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
        needsComma = false
    }

    private mutating func appendQuoted(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        // Native strings: one copy of the whole text when nothing in it needs escaping.
        let copied: Bool? = text.utf8.withContiguousStorageIfAvailable { utf8 in
            guard !utf8.contains(where: Self.needsEscape) else { return false }
            bytes.append(contentsOf: utf8)
            return true
        }
        if copied != true {
            for byte in text.utf8 { appendEscaped(byte) }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private static func needsEscape(_ byte: UInt8) -> Bool {
        byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\")
    }

    private mutating func appendEscaped(_ byte: UInt8) {
        switch byte {
        case UInt8(ascii: "\""): bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "\""))
        case UInt8(ascii: "\\"): bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "\\"))
        case 0x0A: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "n"))
        case 0x0D: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "r"))
        case 0x09: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "t"))
        case 0..<0x20:
            let hex: StaticString = "0123456789abcdef"
            bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0")])
            hex.withUTF8Buffer { digits in
                bytes.append(digits[Int(byte >> 4)])
                bytes.append(digits[Int(byte & 0xF)])
            }
        default: bytes.append(byte)
        }
    }
}
