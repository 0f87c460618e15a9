// The watchdog's rule for one loop, on instants the test chooses: a bus waiting
// inside a bounded request is alive until the request's deadline (plus the
// threshold as margin); only past that, or silent between requests, is it stuck.
import Gateway
import Logging
import Synchronization
import Testing
import TestSupport

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

/// What the watchdog costs an idle gateway: how often it wakes, and how many datagrams
/// (each a wake-up of the service manager) a check sends.
extension HealthRuleTests {
    @Test func withoutAWatchdogTheLoopsAreCheckedOnlyForTheStatusLine() {
        #expect(WatchdogService.period(watchdog: .seconds(30)) == .seconds(15), "WATCHDOG=1 within half of WatchdogSec=")
        #expect(WatchdogService.period(watchdog: .milliseconds(10)) == .milliseconds(10))
        #expect(WatchdogService.period(watchdog: nil) == WatchdogService.statusPeriod)
        #expect(WatchdogService.statusPeriod >= .seconds(10), "not every second for a status line alone")
    }

    /// A summary that changes at every check (the published count of a polling gateway):
    /// each check sends one datagram, its status line first and WATCHDOG=1 after it.
    @Test func aChangedStatusLineGoesInTheSameDatagramAsTheWatchdogPing() async throws {
        do {
            let directory = try TemporaryDirectory("watchdog-datagrams")
            let socket = try NotifySocket(abstract: false, directory: directory)
            defer { socket.stop() }
            let notifier = try SystemdNotifier(socketPath: socket.path, watchdogInterval: .milliseconds(100))
            let heartbeat = Heartbeat(name: "forwarder")
            heartbeat.idle()
            let checks = Atomic<Int>(0)
            var logger = Logger(label: "watchdog-test")
            logger.logLevel = .error
            let service = WatchdogService(notifier: notifier, heartbeats: [heartbeat], logger: logger) {
                "\(checks.add(1, ordering: .relaxed).newValue) published"
            }
            let running = Task { await service.run() }
            defer { running.cancel() }
            try await waitUntil("READY=1 and four WATCHDOG=1 after it") {
                socket.datagrams.filter { $0.has("WATCHDOG=1") }.count >= 4
            }
            running.cancel()
            await running.value
            let datagrams = socket.datagrams
            let ready = try #require(datagrams.firstIndex { $0.has("READY=1") })
            let afterReady = datagrams[(ready + 1)...]
            #expect(afterReady.allSatisfy { $0.has("WATCHDOG=1") }, "no datagram of its own for a status line: \(datagrams.map(\.text))")
            #expect(afterReady.allSatisfy { $0.status != nil }, "the status line changed at every check")
            #expect(afterReady.allSatisfy { $0.assignments.last == "WATCHDOG=1" }, "the status line first")
        }
    }
}
