// The data message encoder as it was before the allocation-light one (commit a000754),
// kept verbatim as the oracle of the byte-for-byte tests: the payload is a contract.
import Foundation
@testable import Gateway
import Modbus

enum LegacyMessageEncoding {
    static func dataMessage(gateway: String, poll: DevicePoll, boot: Int64, seq: Int64) -> [UInt8] {
        var json = LegacyJSONWriter()
        json.beginObject()
        json.key("gateway"); json.string(gateway)
        json.key("device"); json.string(poll.device)
        json.key("ts"); json.string(timestamp(poll.timestamp))
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

    /// UTC with milliseconds: `2026-11-21T19:00:00.123Z`.
    static func timestamp(_ date: Date) -> String {
        let milliseconds = Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
        var seconds = time_t(milliseconds / 1000)
        let millis = Int(milliseconds % 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(millis), 3))Z"
    }
}

/// The JSON writer the data message was written with (verbatim, renamed).
struct LegacyJSONWriter {
    private(set) var bytes: [UInt8] = []
    private var needsComma = false

    init() { bytes.reserveCapacity(256) }

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

    mutating func integer(_ value: Int64) { raw(String(value)) }
    mutating func bool(_ value: Bool) { raw(value ? "true" : "false") }
    mutating func null() { raw("null") }

    /// Finite numbers only (callers turn NaN and infinities into tag errors).
    mutating func number(_ value: Double) {
        precondition(value.isFinite, "JSON has no NaN or infinity")
        raw("\(value)")
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
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case 0x0A: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case 0x0D: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case 0x09: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                                          hex[Int(byte >> 4)], hex[Int(byte & 0xF)]])
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}
