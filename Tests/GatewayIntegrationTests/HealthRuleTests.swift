// The watchdog's rule for one loop, on instants the test chooses: a bus waiting
// inside a bounded request is alive until the request's deadline (plus the
// threshold as margin); only past that, or silent between requests, is it stuck.
import Gateway
import Testing

@Suite struct HealthRuleTests {
    let threshold = Duration.seconds(30)
    let start = ContinuousClock.now

    @Test func aLoopThatNeverBeatIsStarting() {
        let heartbeat = Heartbeat(name: "bus tcp://10.0.0.5:502")
        #expect(heartbeat.health(threshold: threshold, now: start) == .starting)
        #expect(!heartbeat.health(threshold: threshold, now: start).isAlive)
        #expect(heartbeat.lastBeat == nil)
    }

    @Test func aBeatIsAliveForTheThresholdThenStuck() {
        let heartbeat = Heartbeat(name: "forwarder")
        heartbeat.beat(at: start)
        #expect(heartbeat.health(threshold: threshold, now: start + .seconds(30)) == .turning)
        #expect(heartbeat.health(threshold: threshold, now: start + .seconds(31)) == .stuck(for: .seconds(31)))
    }

    @Test func aBusInsideABoundedRequestIsAliveUntilItsDeadlinePlusTheMargin() {
        let heartbeat = Heartbeat(name: "bus tcp://10.0.0.6:502")
        heartbeat.beat(at: start)
        // A silent device: a 1 min read, twice the watchdog interval.
        let deadline = start + .seconds(60)
        heartbeat.enterRequest(deadline: deadline)
        for offset in [0, 31, 59, 60, 90] {
            let health = heartbeat.health(threshold: threshold, now: start + .seconds(offset))
            #expect(health == .waiting(until: deadline), "at +\(offset) s: \(health)")
            #expect(health.isAlive)
        }
        // Still inside the call past its deadline and the margin: hung.
        let hung = heartbeat.health(threshold: threshold, now: start + .seconds(91))
        #expect(hung == .stuck(for: .seconds(31)))
        #expect(!hung.isAlive)
    }

    @Test func aBeatAfterTheRequestEndsTheWait() {
        let heartbeat = Heartbeat(name: "bus /dev/ttyUSB0")
        heartbeat.enterRequest(deadline: start + .seconds(60))
        heartbeat.beat(at: start + .seconds(2))
        #expect(heartbeat.health(threshold: threshold, now: start + .seconds(40)) == .stuck(for: .seconds(38)),
                "back from the request, the bus must beat again")
        #expect(heartbeat.lastBeat == start + .seconds(2))
    }

    @Test func theWatchdogListsOnlyTheLoopsThatAreNotAlive() {
        let turning = Heartbeat(name: "forwarder")
        turning.beat(at: start + .seconds(50))
        let waiting = Heartbeat(name: "bus tcp://10.0.0.6:502")
        waiting.enterRequest(deadline: start + .seconds(45))
        let silent = Heartbeat(name: "bus tcp://10.0.0.5:502")
        silent.beat(at: start)
        let unhealthy = WatchdogService.unhealthy([turning, waiting, silent], threshold: threshold, now: start + .seconds(60))
        #expect(unhealthy.map(\.name) == ["bus tcp://10.0.0.5:502"])
        #expect(unhealthy.first?.health == .stuck(for: .seconds(60)))
    }
}

extension HealthRuleTests {
    /// The forwarder between events: idle is alive however long it lasts; busy with an
    /// event (a request entered at the instant it took the event up) is stuck once the
    /// event has taken longer than the threshold.
    @Test func anIdleLoopIsAliveAndABusyOneIsStuckPastTheThreshold() {
        let heartbeat = Heartbeat(name: "forwarder")
        heartbeat.idle()
        #expect(heartbeat.health(threshold: threshold, now: start + .seconds(3600)) == .idle)
        #expect(heartbeat.health(threshold: threshold, now: start + .seconds(3600)).isAlive)
        #expect(heartbeat.health(threshold: .zero, now: start) != .starting, "it has started: READY may go out")
        heartbeat.enterRequest(deadline: start)
        #expect(heartbeat.health(threshold: threshold, now: start + .seconds(30)).isAlive)
        #expect(heartbeat.health(threshold: threshold, now: start + .seconds(31)) == .stuck(for: .seconds(31)))
    }
}
