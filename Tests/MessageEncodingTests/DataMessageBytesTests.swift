// The data message and its timestamp byte for byte against the encoder they
// replaced (LegacyMessageEncoding.swift): every value type, edge numbers, strings
// that need escaping, errors per tag, both ts_source values, times at the edges
// of the calendar, and random polls.
import Foundation
@testable import Gateway
import GatewayClock
import Modbus
import Testing
import TestSupport


/// Where two byte strings first differ, for failure messages.
func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> String {
    let index = zip(a, b).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(a.count, b.count)
    return "first difference at byte \(index) of \(a.count)/\(b.count): "
        + "\(String(decoding: a.dropFirst(max(0, index - 20)).prefix(40), as: UTF8.self)) vs "
        + "\(String(decoding: b.dropFirst(max(0, index - 20)).prefix(40), as: UTF8.self))"
}

enum EncodingSamples {
    static let integers: [Int64] = [0, 1, -1, 9, 10, -10, 99, 100, 65535, -32768, 32767, 4_294_967_295, -2_147_483_648,
                                    1_000_000_007, 999_999_999_999_999_999, Int64.max, Int64.min, Int64.min + 1]
    static let numbers: [Double] = [0, -0.0, 1, -1, 0.1, 0.3, 71.5, 2.59, 12.9, 0.30000000000000004, 1e-5, 1e-7, 1e15,
                                    1e16, 1e17, 123456789.123, -2.5e-10, 4294967296.5, 9007199254740992,
                                    .greatestFiniteMagnitude, -.greatestFiniteMagnitude, .leastNonzeroMagnitude,
                                    .leastNormalMagnitude, -.leastNonzeroMagnitude, Double(Float.greatestFiniteMagnitude),
                                    3.4028234663852886e38, 100, 1.5e300, 18446744073709551616]
    static let strings: [String] = ["", "plain", "SN-0042 ", "quote \" backslash \\ slash /", "line\nfeed\rreturn\ttab",
                                    "\u{0}\u{1}\u{8}\u{b}\u{c}\u{1f}\u{7f}", "°C m³/h", "emoji 🌡️ and ümlaut",
                                    String(repeating: "long text ", count: 40)]
    static let names: [String] = ["r0", "temperature", "tag with space", "quote\"name", "back\\slash", "ctl\u{1}",
                                  "°C", "a/b", String(repeating: "n", count: 70)]
    static let errors: [String] = ["modbus exception 2: illegal data address", "value is NaN", "value is infinite",
                                   "127.0.0.1:1502: read holding 0+10 from unit 1: timed out \"waiting\"\n", "not read", ""]
    static let dates: [Date] = [
        Date(timeIntervalSince1970: 0), Date(timeIntervalSince1970: 0.0009), Date(timeIntervalSince1970: 0.999),
        Date(timeIntervalSince1970: 1_795_000_000.123), Date(timeIntervalSince1970: 951_782_400.5),  // 2000-02-29
        Date(timeIntervalSince1970: 4_107_542_399.999),  // 2100-02-28T23:59:59.999
        Date(timeIntervalSince1970: 4_107_542_400),  // 2100-03-01
        Date(timeIntervalSince1970: 1_735_689_599.9999), Date(timeIntervalSince1970: 1_735_689_600),
        Date(timeIntervalSince1970: 253_402_300_799.999), Date(timeIntervalSince1970: 253_402_300_800),  // year 10000
        Date(timeIntervalSince1970: 300_000_000_000), Date(timeIntervalSince1970: -0.123), Date(timeIntervalSince1970: -1),
        Date(timeIntervalSince1970: -86_400.5), Date(timeIntervalSince1970: -2_208_988_800),  // 1900
        .distantPast, .distantFuture, Date(timeIntervalSince1970: 1_795_000_000.0005),
    ]

    static func randomValue(_ random: inout SplitMix64) -> Result<TagValue, TagError> {
        switch random.next() % 9 {
        case 0: return .success(.integer(integers.randomElement(using: &random)!))
        case 1: return .success(.integer(Int64(bitPattern: random.next()) >> (random.next() % 64)))
        case 2: return .success(.number(numbers.randomElement(using: &random)!))
        case 3:
            var number = Double(bitPattern: random.next())
            while !number.isFinite { number = Double(bitPattern: random.next()) }
            return .success(.number(number))
        case 4: return .success(.number(Double(Int(random.next() % 2_000_001) - 1_000_000) / 10))
        case 5: return .success(.bool(random.next() % 2 == 0))
        case 6: return .success(.string(strings.randomElement(using: &random)!))
        case 7:
            // A float32 register as decoding gives it: the Float's shortest decimal read as a Double.
            let float = Float(bitPattern: UInt32(truncatingIfNeeded: random.next()))
            return .success(.number(float.isFinite ? Double(float.description)! : 1))
        default: return .failure(TagError(errors.randomElement(using: &random)!))
        }
    }
}

@Suite struct DataMessageBytesTests {
    private func poll(_ readings: [DevicePoll.Reading], device: String = "boiler-1", at date: Date,
                      sync: ClockSync) -> DevicePoll {
        DevicePoll(device: device, clock: ClockReading(wall: date, boottime: 5, bootID: "b", sync: sync), readings: readings)
    }

    private func expectSame(gateway: String, _ poll: DevicePoll, boot: Int64, seq: Int64,
                            sourceLocation: SourceLocation = #_sourceLocation) {
        let new = MessageEncoding.dataMessage(gateway: gateway, poll: poll, boot: boot, seq: seq)
        let old = LegacyMessageEncoding.dataMessage(gateway: gateway, poll: poll, boot: boot, seq: seq)
        let same = new == old  // a Bool: the arrays themselves would flood the failure message
        #expect(same, "\(firstDifference(new, old))", sourceLocation: sourceLocation)
    }

    @Test(arguments: [ClockSync.synchronised, .unsynchronised])
    func everyValueTypeAndEdgeValue(sync: ClockSync) {
        var readings: [DevicePoll.Reading] = []
        for (index, value) in EncodingSamples.integers.enumerated() { readings.append(.init(tag: "i\(index)", value: .success(.integer(value)))) }
        for (index, value) in EncodingSamples.numbers.enumerated() { readings.append(.init(tag: "n\(index)", value: .success(.number(value)))) }
        readings.append(.init(tag: "on", value: .success(.bool(true))))
        readings.append(.init(tag: "off", value: .success(.bool(false))))
        for (index, text) in EncodingSamples.strings.enumerated() { readings.append(.init(tag: "s\(index)", value: .success(.string(text)))) }
        for (index, text) in EncodingSamples.errors.enumerated() { readings.append(.init(tag: "e\(index)", value: .failure(TagError(text)))) }
        for (index, name) in EncodingSamples.names.enumerated() { readings.append(.init(tag: name, value: .success(.integer(Int64(index))))) }
        for (index, name) in EncodingSamples.names.enumerated() { readings.append(.init(tag: name, value: .failure(TagError("e\(index)")))) }
        let date = Date(timeIntervalSince1970: 1_795_000_000.123)
        expectSame(gateway: "gw-01", poll(readings, at: date, sync: sync), boot: 12, seq: 4711)
    }

    @Test func emptyPollsAndOnlyErrors() {
        let date = Date(timeIntervalSince1970: 1_795_000_000)
        expectSame(gateway: "gw", poll([], at: date, sync: .synchronised), boot: 1, seq: 1)
        expectSame(gateway: "gw", poll([.init(tag: "a", value: .failure(TagError("not read")))], at: date, sync: .unsynchronised),
                   boot: 1, seq: 2)
        expectSame(gateway: "gw", poll([.init(tag: "a", value: .success(.bool(true)))], at: date, sync: .synchronised),
                   boot: 1, seq: 3)
    }

    @Test func gatewayAndDeviceNamesThatNeedEscaping() {
        let date = Date(timeIntervalSince1970: 1_795_000_000.5)
        for name in EncodingSamples.names + EncodingSamples.strings {
            expectSame(gateway: name, poll([.init(tag: "t", value: .success(.integer(1)))], device: name, at: date,
                                           sync: .synchronised), boot: 3, seq: 9)
        }
    }

    @Test func bootAndSeqAtTheirEdges() {
        let date = Date(timeIntervalSince1970: 1_795_000_000.5)
        for boot in EncodingSamples.integers {
            expectSame(gateway: "gw", poll([.init(tag: "t", value: .success(.integer(1)))], at: date, sync: .synchronised),
                       boot: boot, seq: boot == .min ? .max : -boot)
        }
    }

    @Test func timestampsAtTheEdgesOfTheCalendar() {
        for date in EncodingSamples.dates {
            let new = MessageEncoding.timestamp(date), old = LegacyMessageEncoding.timestamp(date)
            #expect(new == old, "\(date.timeIntervalSince1970)")
            expectSame(gateway: "gw", poll([.init(tag: "t", value: .success(.integer(1)))], at: date, sync: .unsynchronised),
                       boot: 1, seq: 1)
        }
    }

    @Test func randomTimestampsFrom1970To9999() {
        var random = SplitMix64(seed: 0x7157)
        for _ in 0..<200_000 {
            let milliseconds = Int64(random.next() % UInt64(UTCTimestamp.lastFourDigitYear + 1))
            let date = Date(timeIntervalSince1970: Double(milliseconds) / 1000 + Double(random.next() % 1000) / 1e6)
            let new = MessageEncoding.timestamp(date), old = LegacyMessageEncoding.timestamp(date)
            if new != old {
                Issue.record("\(date.timeIntervalSince1970): \(new) vs \(old)")
                return
            }
        }
    }

    @Test(arguments: 0..<40)
    func randomPolls(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        let count = Int(random.next() % 150)
        let readings = (0..<count).map { index in
            DevicePoll.Reading(tag: random.next() % 5 == 0 ? EncodingSamples.names.randomElement(using: &random)! : "tag_\(index)",
                               value: EncodingSamples.randomValue(&random))
        }
        let date = Date(timeIntervalSince1970: Double(random.next() % 4_000_000_000_000) / 1000)
        expectSame(gateway: "gw-\(seed)", poll(readings, device: "device-\(seed)", at: date,
                                               sync: seed % 2 == 0 ? .synchronised : .unsynchronised),
                   boot: Int64(random.next() % 1000), seq: Int64(bitPattern: random.next()))
    }
}
