// The gateway process on a test clock (EDGE_GATEWAY_TEST_CLOCK, a file this test
// writes; the machine's clock is never touched): a cold start with the broker down
// and the clock 3 h off, a reboot before NTP answered, a backwards step while
// synchronised; and the real kernel status in the birth.
import CTimex
import Foundation
import GatewayClock
import Modbus
import Outbox
import Synchronization
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The clock file the gateway reads, and the same clock as the test sees it.
/// Runs `rate` times faster than real time, so 30 s of clock take 6 s.
final class TestClockFile: Sendable {
    struct Model {
        var bootID: String
        var sync: ClockSync
        /// Real CLOCK_BOOTTIME (ns) at which `boottime` held.
        var anchor: Int64
        var boottime: Int64
        var wallAtBoot: Int64
        var rate: Int64
    }

    let path: String
    private let model: Mutex<Model>

    init(path: String, bootID: String, sync: ClockSync, boottime: Int64, wallAtBoot: Int64, rate: Int64) throws {
        self.path = path
        model = Mutex(Model(bootID: bootID, sync: sync, anchor: Self.realBoottime(), boottime: boottime,
                            wallAtBoot: wallAtBoot, rate: rate))
        try model.withLock { try Self.write($0, to: path) }
    }

    static func realBoottime() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_BOOTTIME, &spec)
        return Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
    }

    /// The clock's boottime now (ns).
    var boottime: Int64 {
        model.withLock { $0.boottime + (Self.realBoottime() - $0.anchor) * $0.rate }
    }

    /// Changes the clock from now on; boottime goes on continuously unless `body` sets it.
    func change(_ body: (inout Model) -> Void) throws {
        try model.withLock { model in
            let now = Self.realBoottime()
            model.boottime += (now - model.anchor) * model.rate
            model.anchor = now
            body(&model)
            try Self.write(model, to: path)
        }
    }

    private static func write(_ model: Model, to path: String) throws {
        let text = """
        boot_id=\(model.bootID)
        sync=\(model.sync.rawValue)
        maxerror_us=\(model.sync == .synchronised ? 20_000 : 16_000_000)
        anchor_ns=\(model.anchor)
        boottime_ns=\(model.boottime)
        wall_at_boot_ms=\(model.wallAtBoot)
        rate=\(model.rate)

        """
        try text.write(toFile: path + ".new", atomically: false, encoding: .utf8)
        guard rename(path + ".new", path) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
    }
}

/// A scenario on the test clock: the device's `energy` register holds the clock's
/// boottime in tenths of a second, refreshed every 5 ms, so each data message says
/// when (in boottime) it was really polled.
final class ClockScenario: @unchecked Sendable {
    static let rate: Int64 = 5
    /// One poll interval on the test clock (200 ms real × 5).
    static let pollInterval: Int64 = 1_000
    static let threeHours: Int64 = 3 * 3_600_000

    let e2e: EndToEnd
    let clock: TestClockFile
    private var marker: Task<Void, Never>?

    init(sync: ClockSync, wallAtBoot: Int64, bootID: String = "boot-a") async throws {
        e2e = try await EndToEnd(pollInterval: "200ms")
        clock = try TestClockFile(path: e2e.directory.file("clock"), bootID: bootID, sync: sync,
                                  boottime: 50_000_000_000, wallAtBoot: wallAtBoot, rate: Self.rate)
        let simulator = try #require(e2e.simulator)
        marker = Task { [clock] in
            while !Task.isCancelled {
                let tenths = UInt32(clamping: clock.boottime / 100_000_000)
                simulator.setInputRegisters(0, [UInt16(tenths & 0xFFFF), UInt16(tenths >> 16)])  // CDAB
                try? await Task.sleep(for: .milliseconds(5))
            }
        }
    }

    deinit { marker?.cancel() }

    static var realNow: Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded()) }

    func startGateway() throws {
        try e2e.startGateway(environment: [TimeSources.clockFileVariable: clock.path,
                                           TimeSources.testFlagVariable: "1"])
    }

    var buffered: Int { (try? Outbox.readStatistics(path: e2e.outboxPath).bufferedMessages) ?? 0 }

    func data(boot: Int) -> [[String: Any]] { e2e.dataMessages.filter { $0["boot"] as? Int == boot } }

    /// The clock's boottime (ms) when the message's poll ran, from the device.
    static func polledAt(_ message: [String: Any]) throws -> Int64 {
        let values = try #require(message["values"] as? [String: Any], "\(message)")
        return Int64(try #require(values["energy"] as? Int, "\(message)")) * 100
    }

    static func ts(_ message: [String: Any]) throws -> Int64 {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let text = try #require(message["ts"] as? String, "\(message)")
        let date = try #require(formatter.date(from: text), "\(text)")
        return Int64((date.timeIntervalSince1970 * 1000).rounded())
    }

    /// Seqs of `boot` missing below the highest received.
    func missing(boot: Int) -> [Int] {
        let seqs = Set(data(boot: boot).compactMap { $0["seq"] as? Int })
        return Array(Set(1...(seqs.max() ?? 0)).subtracting(seqs)).sorted()
    }
}

@Suite(.serialized) struct ClockProcessTests {
    /// Cold start with the broker down and the clock 3 h slow and unsynchronised;
    /// 30 s of polls; NTP answers (+3 h, synchronised); the broker returns. Every
    /// buffered poll arrives at its true time within one poll interval, marked corrected.
    @Test func aColdStartWithTheBrokerDownIsCorrectedWhenTheClockSynchronises() async throws {
        let trueWallAtBoot = ClockScenario.realNow - 50_000
        let scenario = try await ClockScenario(sync: .unsynchronised,
                                               wallAtBoot: trueWallAtBoot - ClockScenario.threeHours)
        let e2e = scenario.e2e
        try await e2e.broker.stop(graceful: true)
        try scenario.startGateway()
        try await waitUntil("30 s of polls buffered on the test clock", timeout: .seconds(40)) { scenario.buffered >= 30 }
        let bufferedBeforeSync = scenario.buffered
        try scenario.clock.change { $0.wallAtBoot = trueWallAtBoot; $0.sync = .synchronised }
        try await e2e.broker.start()
        try await waitUntil("the backlog and live polls after it", timeout: .seconds(30)) {
            scenario.data(boot: 1).filter { $0["ts_source"] as? String == "synchronised" }.count >= 5
                && scenario.missing(boot: 1).isEmpty
        }

        let messages = scenario.data(boot: 1).sorted { ($0["seq"] as? Int ?? 0) < ($1["seq"] as? Int ?? 0) }
        #expect(scenario.missing(boot: 1).isEmpty, "\(e2e.diagnostics)")
        let corrected = messages.filter { $0["ts_source"] as? String == "corrected" }
        #expect(corrected.count >= bufferedBeforeSync, "every poll buffered before the sync: \(e2e.diagnostics)")
        #expect(!messages.contains { $0["ts_source"] as? String == "unsynchronised" }, "\(e2e.diagnostics)")
        for message in messages {
            let truth = trueWallAtBoot + (try ClockScenario.polledAt(message))
            let error = try ClockScenario.ts(message) - truth
            #expect(abs(error) <= ClockScenario.pollInterval,
                    "seq \(message["seq"] ?? "?") is \(error) ms off its true time: \(message)")
        }
        // Corrected ones come first (they were polled first), then synchronised ones.
        let sources = messages.compactMap { $0["ts_source"] as? String }
        #expect(sources == sources.sorted { $0 == "corrected" && $1 != "corrected" })
        let birth = try #require(e2e.subscriber.messages(on: e2e.statusTopic).last { $0.json["state"] as? String == "online" }?.json)
        #expect(birth["ts_source"] as? String == "synchronised", "\(birth)")
        #expect(birth["time_source"] as? String == "test_clock_file", "\(birth)")
        #expect(birth["kernel_boot_id"] as? String == "boot-a", "\(birth)")
        try await waitUntil("stats counting the corrections") {
            e2e.subscriber.messages(on: "edge/\(e2e.gatewayID)/stats").contains {
                ($0.json["ts_corrected"] as? Int ?? 0) >= bufferedBeforeSync
            }
        }
    }

    /// The machine reboots before NTP ever answered: the rows of the earlier kernel boot
    /// cannot be corrected and arrive with the time they were committed with, marked
    /// unsynchronised; none is dropped.
    @Test func rowsFromAKernelBootThatNeverSawSyncArriveUnsynchronised() async throws {
        let trueWallAtBoot = ClockScenario.realNow - 50_000
        let wrongWallAtBoot = trueWallAtBoot - ClockScenario.threeHours
        let scenario = try await ClockScenario(sync: .unsynchronised, wallAtBoot: wrongWallAtBoot)
        let e2e = scenario.e2e
        try await e2e.broker.stop(graceful: true)
        try scenario.startGateway()
        try await waitUntil("10 s of polls buffered", timeout: .seconds(30)) { scenario.buffered >= 10 }
        e2e.gateway!.signal(SIGTERM)
        #expect(try await e2e.gateway!.waitForExit(timeout: .seconds(10)) == 0, "\(e2e.diagnostics)")
        let firstBoot = try Outbox.readStatistics(path: e2e.outboxPath)

        // A new kernel boot: boottime starts over, and this time NTP answers.
        let secondWallAtBoot = ClockScenario.realNow - 20_000
        try scenario.clock.change {
            $0.bootID = "boot-b"
            $0.boottime = 20_000_000_000
            $0.wallAtBoot = secondWallAtBoot
            $0.sync = .synchronised
        }
        try scenario.startGateway()
        try await e2e.broker.start()
        try await waitUntil("boot 1's backlog and boot 2's polls", timeout: .seconds(30)) {
            Set(scenario.data(boot: 1).compactMap { $0["seq"] as? Int }).isSuperset(of: 1...Int(firstBoot.seqCommitted))
                && scenario.data(boot: 2).count >= 3
        }
        let first = scenario.data(boot: 1)
        #expect(Set(first.compactMap { $0["seq"] as? Int }) == Set(1...Int(firstBoot.seqCommitted)), "none dropped")
        for message in first {
            #expect(message["ts_source"] as? String == "unsynchronised", "\(message)")
            let error = try ClockScenario.ts(message) - (wrongWallAtBoot + (try ClockScenario.polledAt(message)))
            #expect(abs(error) <= ClockScenario.pollInterval, "sent with the time it was committed with: \(message)")
        }
        for message in scenario.data(boot: 2) {
            #expect(message["ts_source"] as? String == "synchronised", "\(message)")
        }
    }

    /// A bad NTP server steps the clock back an hour while it says synchronised:
    /// nothing is lost, reordered or rewritten; ts goes back once, seq keeps counting.
    @Test func aBackwardsStepWhileSynchronisedKeepsTheLedger() async throws {
        let wallAtBoot = ClockScenario.realNow - 50_000
        let scenario = try await ClockScenario(sync: .synchronised, wallAtBoot: wallAtBoot)
        let e2e = scenario.e2e
        try scenario.startGateway()
        try await waitUntil("10 polls") { scenario.data(boot: 1).count >= 10 }
        try scenario.clock.change { $0.wallAtBoot -= 3_600_000 }
        let before = scenario.data(boot: 1).count
        try await waitUntil("10 polls after the step") { scenario.data(boot: 1).count >= before + 10 }
        e2e.gateway!.signal(SIGTERM)
        #expect(try await e2e.gateway!.waitForExit(timeout: .seconds(10)) == 0, "\(e2e.diagnostics)")
        try await e2e.subscriber.roundTrip()

        let messages = scenario.data(boot: 1)  // in arrival order
        let seqs = messages.compactMap { $0["seq"] as? Int }
        #expect(seqs == Array(1...seqs.count), "every seq once, in order: \(seqs)")
        let committed = try Outbox.readStatistics(path: e2e.outboxPath)
        #expect(Int(committed.seqCommitted) == seqs.count && committed.bufferedMessages == 0, "\(committed)")
        let times = try messages.map(ClockScenario.ts)
        let backwards = zip(times, times.dropFirst()).filter { $1 < $0 }
        #expect(backwards.count == 1, "ts goes back once, at the step: \(times)")
        #expect(messages.allSatisfy { $0["ts_source"] as? String == "synchronised" })
        #expect(e2e.gateway!.output.contains("the wall clock stepped"), "\(e2e.diagnostics)")
    }

    /// Without the override the gateway reads the kernel's own NTP state: the birth
    /// reports what ntp_adjtime tells this test, and the kernel's boot id.
    @Test func theBirthReportsTheKernelsRealSyncStatus() async throws {
        let e2e = try await EndToEnd()
        try e2e.startGateway()
        try await waitUntil("the birth") {
            e2e.subscriber.messages(on: e2e.statusTopic).contains { $0.json["state"] as? String == "online" }
        }
        var state = timex()
        var error: Int32 = 0
        let result = ctimex_read(&state, &error)
        #expect(result != -1, "ntp_adjtime failed: errno \(error)")
        let kernelSynchronised = state.status & Int32(STA_UNSYNC) == 0 && result != TIME_ERROR
            && Int64(state.maxerror) < 16_000_000
        let timesyncd = FileManager.default.fileExists(atPath: "/run/systemd/timesync")
        let expected = kernelSynchronised
            && (!timesyncd || FileManager.default.fileExists(atPath: "/run/systemd/timesync/synchronized"))
        let birth = try #require(e2e.subscriber.messages(on: e2e.statusTopic).first { $0.json["state"] as? String == "online" }?.json)
        #expect(birth["ts_source"] as? String == (expected ? "synchronised" : "unsynchronised"), "\(birth)")
        #expect(birth["time_source"] as? String == (timesyncd ? "ntp_adjtime+timesyncd" : "ntp_adjtime"), "\(birth)")
        let bootID = try String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(birth["kernel_boot_id"] as? String == bootID, "\(birth)")
        // maxerror grows by 500 µs per second between NTP updates (and drops at one):
        // the gateway's reading was a few seconds before this one.
        let reported = try #require(birth["clock_maxerror_ms"] as? Int, "\(birth)")
        #expect(abs(reported - Int(state.maxerror) / 1000) <= 1000, "gateway \(reported) ms, kernel now \(state.maxerror) µs")
        try await waitUntil("data") { !e2e.dataMessages.isEmpty }
        #expect(e2e.dataMessages[0]["ts_source"] as? String == birth["ts_source"] as? String)
    }

    /// The clock file outside a test: the gateway refuses to start (exit 78) and says
    /// why, before it opens the outbox.
    @Test func theTestClockIsRefusedWithoutTheTestFlag() async throws {
        let e2e = try await EndToEnd()
        let clock = try TestClockFile(path: e2e.directory.file("clock"), bootID: "x", sync: .synchronised,
                                      boottime: 1, wallAtBoot: 0, rate: 1)
        try e2e.startGateway(environment: [TimeSources.clockFileVariable: clock.path])
        #expect(try await e2e.gateway!.waitForExit(timeout: .seconds(10)) == 78)
        #expect(e2e.gateway!.output.contains("test-only override"), "\(e2e.diagnostics)")
        #expect(!FileManager.default.fileExists(atPath: e2e.outboxPath), "refused before the outbox was opened")
    }

    /// A clock file that lacks a field is refused naming the file and the field.
    @Test func aBadClockFileIsRefusedNamingTheField() throws {
        let directory = try TemporaryDirectory("clock")
        defer { directory.remove() }
        let path = directory.file("clock")
        try "boot_id=x\nsync=synchronised\nmaxerror_us=1\nanchor_ns=1\nboottime_ns=1\nrate=1\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        let error = #expect(throws: ClockOverrideError.self) {
            try TimeSources.fromEnvironment([TimeSources.clockFileVariable: path, TimeSources.testFlagVariable: "1"])
        }
        #expect(error?.description.contains(path) == true && error?.description.contains("wall_at_boot_ms") == true,
                "\(String(describing: error))")
        #expect(try TimeSources.fromEnvironment([:]) is KernelClock)
    }
}
