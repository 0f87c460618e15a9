// When the machine's clock reads the kernel's sync status again: at once after a step of
// the wall clock, else once the period has passed (the status is reused in between).
@testable import GatewayClock
import Testing

@Suite struct SyncStatusRefreshTests {
    typealias Check = SyncStatusRefresh.Check
    static let second: Int64 = 1_000_000_000
    let last = Check(wall: 1_795_000_000 * second, boottime: 600 * second)

    /// The same clock `elapsed` later, its wall clock moved by `step` more than boottime.
    func later(_ elapsed: Int64, step: Int64 = 0) -> Check {
        Check(wall: last.wall + elapsed + step, boottime: last.boottime + elapsed)
    }

    @Test func reusedWithinThePeriodWhileTheClockRuns() {
        #expect(!SyncStatusRefresh.isDue(last: last, now: last))
        #expect(!SyncStatusRefresh.isDue(last: last, now: later(Self.second)))
        #expect(!SyncStatusRefresh.isDue(last: last, now: later(SyncStatusRefresh.period - 1)))
    }

    @Test func readAgainOnceThePeriodPassed() {
        #expect(SyncStatusRefresh.isDue(last: last, now: later(SyncStatusRefresh.period)))
        #expect(SyncStatusRefresh.isDue(last: last, now: later(3_600 * Self.second)))
    }

    /// Setting the clock sets STA_UNSYNC at once: a reading after the step must not keep
    /// the status from before it, whichever way and however little beyond the tolerance.
    @Test func readAgainAtOnceAfterAStep() {
        let tolerance = SyncStatusRefresh.stepTolerance
        #expect(SyncStatusRefresh.isDue(last: last, now: later(Self.second, step: 3 * 3_600 * Self.second)))
        #expect(SyncStatusRefresh.isDue(last: last, now: later(Self.second, step: -Self.second)))
        #expect(SyncStatusRefresh.isDue(last: last, now: later(1, step: tolerance + 1)))
        #expect(SyncStatusRefresh.isDue(last: last, now: later(1, step: -tolerance - 1)))
        // Two reads of the clocks a preempted thread took apart are not a step.
        #expect(!SyncStatusRefresh.isDue(last: last, now: later(Self.second, step: -tolerance)))
    }

    /// A boottime before the last read (another clock source, a reading raced by another
    /// thread's refresh) is never trusted to reuse the status.
    @Test func readAgainWhenBoottimeWentBack() {
        #expect(SyncStatusRefresh.isDue(last: last, now: Check(wall: last.wall - 1, boottime: last.boottime - 1)))
    }
}
