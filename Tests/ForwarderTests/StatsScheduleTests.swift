import Testing
@testable import Gateway

/// Stats wait (a bounded time) for the messages in flight, so that a gateway whose polls
/// line up with its stats schedule still reports the empty backlog a monitor judges on.
/// `due`, outside `#expect` (which cannot call a mutating method).
private func publish(_ schedule: inout StatsSchedule, at now: ContinuousClock.Instant, inflight: Int) -> Bool {
    schedule.due(now: now, inflight: inflight)
}

@Suite struct StatsScheduleTests {
    let start = ContinuousClock.now

    @Test func dueStatsWaitForTheWindowToEmpty() {
        var schedule = StatsSchedule(interval: .seconds(1), now: start)
        #expect(!publish(&schedule, at: start + .milliseconds(999), inflight: 0))
        // Due, but a poll's message is in flight: wait.
        #expect(!publish(&schedule, at: start + .seconds(1), inflight: 1))
        #expect(schedule.state == .waitingForEmptyWindow(until: start + .milliseconds(1250)))
        #expect(schedule.next == start + .milliseconds(1250))
        #expect(!publish(&schedule, at: start + .milliseconds(1002), inflight: 1))
        // Its PUBACK empties the window: published now, the next one an interval later.
        #expect(publish(&schedule, at: start + .milliseconds(1003), inflight: 0))
        #expect(schedule.state == .scheduled(at: start + .milliseconds(2003)))
    }

    @Test func theWaitIsBounded() {
        var schedule = StatsSchedule(interval: .seconds(1), now: start)
        #expect(!publish(&schedule, at: start + .seconds(1), inflight: 100))
        #expect(!publish(&schedule, at: start + .milliseconds(1249), inflight: 100))
        // A window that never empties (a replay) still gets its stats, late by the wait.
        #expect(publish(&schedule, at: start + .milliseconds(1250), inflight: 100))
        #expect(schedule.next == start + .milliseconds(2250))
    }

    @Test func withNothingInFlightStatsGoOutWhenDue() {
        var schedule = StatsSchedule(interval: .seconds(10), now: start)
        #expect(publish(&schedule, at: start + .seconds(10), inflight: 0))
        #expect(schedule.next == start + .seconds(20))
    }
}
