// Timestamps measured before the clock was synchronised, in process: the forwarder
// corrects them from their boottime once a synchronised clock of the same kernel boot
// is seen, leaves other boots' rows unsynchronised, and never reorders on a step.
import Foundation
@testable import Gateway
import GatewayClock
import Modbus
import Outbox
import Synchronization
import Testing

/// A clock the test moves by hand: wall = wallAtBoot + boottime.
final class ManualClock: TimeSource {
    struct State {
        var wallAtBoot: Int64  // milliseconds since 1970
        var boottime: Int64    // nanoseconds
        var bootID: String
        var sync: ClockSync
    }

    private let state: Mutex<State>

    init(wallAtBoot: Int64, boottime: Int64 = 20_000_000_000, bootID: String = "boot-a", sync: ClockSync) {
        state = Mutex(State(wallAtBoot: wallAtBoot, boottime: boottime, bootID: bootID, sync: sync))
    }

    func change(_ body: (inout State) -> Void) { state.withLock { body(&$0) } }

    func now() -> ClockReading {
        state.withLock { state in
            ClockReading(wall: Date(timeIntervalSince1970: Double(state.wallAtBoot + state.boottime / 1_000_000) / 1000),
                         boottime: state.boottime, bootID: state.bootID, sync: state.sync)
        }
    }

    func status() -> ClockStatus {
        let reading = now()
        return ClockStatus(source: "manual", sync: reading.sync, maxErrorMilliseconds: 5, bootID: reading.bootID)
    }
}

/// One poll as the ingest service commits it: payload and measurement from `reading`.
func polled(_ reading: ClockReading, seq: Int64, device: String = "boiler-1") -> (payload: [UInt8], measured: MeasuredAt?) {
    let poll = DevicePoll(device: device, clock: reading,
                          readings: [.init(tag: "t", value: .success(.integer(seq)))])
    return (MessageEncoding.dataMessage(gateway: "gw-test", poll: poll, boot: 1, seq: seq),
            MeasuredAt(boottime: reading.boottime, kernelBootID: reading.bootID,
                       synchronised: reading.sync == .synchronised))
}

func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

func json(_ bytes: [UInt8]) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
}

func milliseconds(_ text: String?) throws -> Int64 {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    let string = try #require(text)
    let date = try #require(formatter.date(from: string), "not a timestamp: \(string)")
    return Int64((date.timeIntervalSince1970 * 1000).rounded())
}

@Suite struct ClockCorrectionTests {
    static let trueWallAtBoot: Int64 = 1_795_000_000_000  // 2026-11-18
    static let threeHours: Int64 = 3 * 3600 * 1000

    var dataMessages: (ForwarderHarness) throws -> [[String: Any]] = { forwarder in
        try forwarder.uplink.sent.filter { $0.message.topic == ForwarderHarness.dataTopic }.map { try json($0.message.payload) }
    }

    /// Cold start with the broker down: 30 polls a second apart on a clock 3 h slow and
    /// unsynchronised; then NTP answers (+3 h step, synchronised) and the link comes
    /// back. Every buffered poll goes out at its true time, marked corrected.
    @Test func aColdStartIsCorrectedOnceTheClockSynchronises() async throws {
        let clock = ManualClock(wallAtBoot: Self.trueWallAtBoot - Self.threeHours, sync: .unsynchronised)
        let forwarder = ForwarderHarness(maxInflight: 100, timeSource: clock)
        var trueTimes: [Int64] = []
        for seq in 1...30 {
            let reading = clock.now()
            trueTimes.append(Self.trueWallAtBoot + reading.boottime / 1_000_000)
            let newest = forwarder.outbox.commit([polled(reading, seq: Int64(seq))], topic: ForwarderHarness.dataTopic)
            try await forwarder.send(.outboxCommitted(newestID: newest))
            clock.change { $0.boottime += 1_000_000_000 }
            try await forwarder.tick()
        }
        clock.change { $0.wallAtBoot = Self.trueWallAtBoot; $0.sync = .synchronised }
        try await forwarder.tick()
        try await forwarder.connect(session: 1)

        let sent = try dataMessages(forwarder)
        #expect(sent.count == 30)
        for (index, message) in sent.enumerated() {
            #expect(message["ts_source"] as? String == "corrected", "\(message)")
            #expect(try milliseconds(message["ts"] as? String) == trueTimes[index], "seq \(index + 1): \(message)")
            #expect(message["seq"] as? Int == index + 1)
        }
        #expect(forwarder.statuses.first?["ts_source"] as? String == "synchronised")
        try await forwarder.acknowledge()
        #expect(forwarder.outbox.remainingIDs.isEmpty)
    }

    /// The Pi rebooted before NTP ever answered: the rows of the earlier kernel boot
    /// cannot be corrected (their boottime belongs to another boot) and go out as they
    /// were, marked unsynchronised; none is dropped.
    @Test func rowsOfAnEarlierKernelBootGoOutUnsynchronised() async throws {
        let clock = ManualClock(wallAtBoot: Self.trueWallAtBoot - Self.threeHours, bootID: "boot-a", sync: .unsynchronised)
        let forwarder = ForwarderHarness(maxInflight: 100, timeSource: clock)
        var stored: [[UInt8]] = []
        for seq in 1...10 {
            let row = polled(clock.now(), seq: Int64(seq))
            stored.append(row.payload)
            forwarder.outbox.commit([row], topic: ForwarderHarness.dataTopic)
            clock.change { $0.boottime += 1_000_000_000 }
        }
        // A new kernel boot: boottime starts over, and this time NTP answers.
        clock.change { $0 = .init(wallAtBoot: Self.trueWallAtBoot + 600_000, boottime: 15_000_000_000, bootID: "boot-b",
                                  sync: .synchronised) }
        try await forwarder.send(.outboxCommitted(newestID: 10))
        try await forwarder.connect(session: 1)

        let sent = forwarder.uplink.sent.filter { $0.message.topic == ForwarderHarness.dataTopic }.map(\.message.payload)
        #expect(sent.map(text) == stored.map(text), "sent byte for byte as committed")
        for message in try sent.map(json) {
            #expect(message["ts_source"] as? String == "unsynchronised")
        }
        try await forwarder.acknowledge()
        #expect(forwarder.outbox.remainingIDs.isEmpty)
        #expect(forwarder.outbox.deletedIDs == Array(1...10))
    }

    /// A message sent while the clock is still unsynchronised says so; nothing is
    /// corrected without a synchronised reference.
    @Test func withoutASynchronisedClockNothingIsCorrected() async throws {
        let clock = ManualClock(wallAtBoot: Self.trueWallAtBoot, sync: .unsynchronised)
        let forwarder = ForwarderHarness(maxInflight: 100, timeSource: clock)
        try await forwarder.connect(session: 1)
        let row = polled(clock.now(), seq: 1)
        try await forwarder.send(.outboxCommitted(newestID: forwarder.outbox.commit([row], topic: ForwarderHarness.dataTopic)))
        let sent = forwarder.uplink.sent.filter { $0.message.topic == ForwarderHarness.dataTopic }.map(\.message.payload)
        #expect(sent.map(text) == [text(row.payload)])
        #expect(try json(sent[0])["ts_source"] as? String == "unsynchronised")
        #expect(forwarder.statuses.first?["ts_source"] as? String == "unsynchronised")
    }

    /// A bad NTP server steps the clock back an hour while synchronised: nothing already
    /// committed is rewritten, everything goes in seq order, the step is logged.
    @Test func aBackwardsStepWhileSynchronisedReordersAndRewritesNothing() async throws {
        let clock = ManualClock(wallAtBoot: Self.trueWallAtBoot, sync: .synchronised)
        let forwarder = ForwarderHarness(maxInflight: 100, timeSource: clock)
        try await forwarder.connect(session: 1)
        forwarder.uplink.disconnect()
        try await forwarder.send(.mqtt(.disconnected(session: 1, reason: "down")))
        var stored: [[UInt8]] = []
        for seq in 1...20 {
            if seq == 11 {
                clock.change { $0.wallAtBoot -= 3_600_000 }
                try await forwarder.tick()
            }
            let row = polled(clock.now(), seq: Int64(seq))
            stored.append(row.payload)
            forwarder.outbox.commit([row], topic: ForwarderHarness.dataTopic)
            clock.change { $0.boottime += 1_000_000_000 }
        }
        try await forwarder.send(.outboxCommitted(newestID: 20))
        try await forwarder.connect(session: 2)
        let sent = forwarder.uplink.sent.filter { $0.message.topic == ForwarderHarness.dataTopic }.map(\.message.payload)
        #expect(sent.map(text) == stored.map(text), "byte for byte, in seq order")
        let times = try sent.map { try milliseconds(json($0)["ts"] as? String) }
        #expect(times[10] < times[9], "the step shows in ts, not in the order")
        #expect(try sent.map { try json($0)["ts_source"] as? String } == Array(repeating: "synchronised", count: 20))
        #expect(forwarder.logs.lines(containing: "the wall clock stepped").count == 1)
    }

    @Test func onlyTheUnsynchronisedTimestampOfADataMessageIsRewritten() throws {
        let reading = ClockReading(wall: Date(timeIntervalSince1970: 1_000), boottime: 5_000_000_000, bootID: "b",
                                   sync: .unsynchronised)
        // A device name that holds the key's characters is escaped and cannot be taken for it.
        let tricky = polled(reading, seq: 7, device: #"x","ts":"1970-01-01T00:00:00.000Z"#).payload
        let date = Date(timeIntervalSince1970: 1_795_000_000.123)
        let fixed = try #require(MessageEncoding.correctingTimestamp(tricky, to: date))
        let object = try json(fixed)
        #expect(object["device"] as? String == #"x","ts":"1970-01-01T00:00:00.000Z"#)
        #expect(object["ts"] as? String == MessageEncoding.timestamp(date))
        #expect(object["ts_source"] as? String == "corrected")
        #expect(object["seq"] as? Int == 7)
        var synchronised = reading
        synchronised.sync = .synchronised
        #expect(MessageEncoding.correctingTimestamp(polled(synchronised, seq: 1).payload, to: date) == nil)
        #expect(MessageEncoding.correctingTimestamp(fixed, to: date) == nil, "corrected once, never again")
    }

    @Test func theCorrectorUsesOnlyASynchronisedReadingOfTheSameBoot() {
        var corrector = TimestampCorrector()
        let row = MeasuredAt(boottime: 7_000_000_000, kernelBootID: "a", synchronised: false)
        _ = corrector.observe(ClockReading(wall: Date(timeIntervalSince1970: 100), boottime: 10_000_000_000,
                                           bootID: "a", sync: .unsynchronised))
        #expect(corrector.correctedTime(row) == nil, "no synchronised reading yet")
        let step = corrector.observe(ClockReading(wall: Date(timeIntervalSince1970: 10_900), boottime: 11_000_000_000,
                                                  bootID: "a", sync: .synchronised))
        #expect(step == 10_799_000, "the wall clock moved 10,799 s against boottime: \(String(describing: step))")
        #expect(corrector.correctedTime(row) == Date(timeIntervalSince1970: 10_896))
        #expect(corrector.correctedTime(MeasuredAt(boottime: 7_000_000_000, kernelBootID: "b", synchronised: false)) == nil)
        #expect(corrector.correctedTime(MeasuredAt(boottime: 7_000_000_000, kernelBootID: "a", synchronised: true)) == nil)
        #expect(corrector.correctedTime(nil) == nil, "rows from before the migration")
    }
}
