// The gateway's own health, as the systemd watchdog sees it: every long-running
// loop beats a heartbeat; the watchdog is fed only while all of them are alive
// (recently beaten, or waiting inside a request that is not past its deadline).
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// How one loop of the gateway stands at a moment, by the watchdog's rule.
public enum LoopHealth: Sendable, Equatable {
    /// It has not beaten yet (the gateway is starting).
    case starting
    /// It beat within the threshold.
    case turning
    /// It waits for work (an event), with nothing under way that could hang: alive
    /// however long it waits (the forwarder between two events).
    case idle
    /// Its thread is inside a bounded request (a Modbus call) whose deadline, plus
    /// the threshold as margin, has not passed: waiting on a silent device is not a hang.
    case waiting(until: ContinuousClock.Instant)
    /// Hung: no beat for longer than the threshold, or still inside a request past
    /// its deadline plus the threshold. `for` is how long it has been silent
    /// (since the last beat, or since the request's deadline).
    case stuck(for: Duration)

    public var isAlive: Bool {
        switch self {
        case .turning, .idle, .waiting: true
        case .starting, .stuck: false
        }
    }
}

/// The last sign of life of one loop of the gateway.
///
/// A bus beats from its own thread after each Modbus request and, just before a
/// blocking call or an idle wait for its next poll, says until when it is away at
/// most (`enterRequest`). The forwarder says it is busy (`enterRequest` with the
/// instant it took up an event) while it handles an event, and `idle` while it waits
/// for the next one: a forwarder stuck on an `await` inside an event is stuck once
/// the threshold has passed, and an idle one needs no timer to stay alive.
public final class Heartbeat: Sendable {
    /// The last sign of life.
    enum Pulse: Sendable, Equatable {
        case none
        case beat(at: ContinuousClock.Instant)
        /// Entered a call that returns by `deadline` unless something is broken.
        case inRequest(deadline: ContinuousClock.Instant)
        /// Waiting for work; nothing is under way.
        case idle
    }

    /// What beats, for logs and status lines: `forwarder`, `bus tcp://10.0.0.5:502`.
    public let name: String
    private let pulse = Mutex(Pulse.none)

    public init(name: String) { self.name = name }

    public func beat(at now: ContinuousClock.Instant = .now) { pulse.withLock { $0 = .beat(at: now) } }

    /// The loop's thread enters a call that returns by `deadline` (e.g. a Modbus
    /// request with its response timeout): alive until then, plus the margin.
    public func enterRequest(deadline: ContinuousClock.Instant) {
        pulse.withLock { $0 = .inRequest(deadline: deadline) }
    }

    /// The loop waits for work with nothing under way (see `LoopHealth.idle`).
    public func idle() { pulse.withLock { $0 = .idle } }

    /// Nil until the first beat.
    public var lastBeat: ContinuousClock.Instant? {
        pulse.withLock { pulse in
            if case let .beat(at) = pulse { return at }
            return nil
        }
    }

    /// The watchdog's rule: alive while the last beat is at most `threshold` old, while
    /// inside a request whose deadline is at most `threshold` past, or while idle.
    public func health(threshold: Duration, now: ContinuousClock.Instant = .now) -> LoopHealth {
        switch pulse.withLock({ $0 }) {
        case .none:
            return .starting
        case let .beat(at):
            let age = now - at
            return age > threshold ? .stuck(for: age) : .turning
        case let .inRequest(deadline):
            let late = now - deadline
            return late > threshold ? .stuck(for: late) : .waiting(until: deadline)
        case .idle:
            return .idle
        }
    }
}

/// Feeds systemd: `READY=1` once the outbox is open and every bus and the forwarder
/// have beaten once; `WATCHDOG=1` every half watchdog interval while every loop is
/// alive by `Heartbeat.health` with the interval as threshold; `STATUS=` lines when the summary changes;
/// `STOPPING=1` when graceful shutdown begins.
///
/// A loop that stops beating stops the feeding, so systemd restarts the gateway
/// within about two watchdog intervals of the hang (`WatchdogSec=`). It wakes only at
/// `period(watchdog:)`, and a changed status line travels in the same datagram as the
/// `WATCHDOG=1` it goes with: one wake-up of the gateway and one of the manager per check.
public struct WatchdogService: Service {
    let notifier: SystemdNotifier?
    let heartbeats: [Heartbeat]
    let summary: @Sendable () -> String
    let logger: Logger

    /// - Parameter summary: the status line while healthy (e.g. broker and backlog).
    public init(notifier: SystemdNotifier?, heartbeats: [Heartbeat], logger: Logger,
                summary: @escaping @Sendable () -> String) {
        self.notifier = notifier
        self.heartbeats = heartbeats
        self.logger = logger
        self.summary = summary
    }

    /// The loops that are not alive by `Heartbeat.health(threshold:now:)`, with their health.
    public static func unhealthy(_ heartbeats: [Heartbeat], threshold: Duration,
                                 now: ContinuousClock.Instant = .now) -> [(name: String, health: LoopHealth)] {
        heartbeats.compactMap { heartbeat in
            let health = heartbeat.health(threshold: threshold, now: now)
            return health.isAlive ? nil : (heartbeat.name, health)
        }
    }

    /// What the watchdog last told systemd, so a status line goes out only on a change.
    private enum Verdict: Equatable {
        case healthy(status: String)
        /// The names of the loops that are not alive.
        case unhealthy(loops: [String])

        var isHealthy: Bool { if case .healthy = self { true } else { false } }
    }

    /// How often the loops are checked: half the watchdog interval (systemd wants a
    /// `WATCHDOG=1` within it), or, without a watchdog, `statusPeriod`.
    public static func period(watchdog: Duration?) -> Duration {
        watchdog.map { max($0 / 2, .milliseconds(10)) } ?? statusPeriod
    }

    /// Without a watchdog only the status line needs the check: a hung loop shows in it
    /// within `statusThreshold` + this, and an idle gateway is not woken every second.
    public static let statusPeriod = Duration.seconds(15)
    /// Without a watchdog, how long a loop may be silent before the status line calls it stuck.
    static let statusThreshold = Duration.seconds(30)

    public func run() async {
        guard let notifier else {
            // Not under systemd: nothing to tell anyone.
            await cancelWhenGracefulShutdown { while (try? await Task.sleep(for: .seconds(3600))) != nil {} }
            return
        }
        await withGracefulShutdownHandler {
            await cancelWhenGracefulShutdown { await feed(notifier) }
        } onGracefulShutdown: {
            notifier.stopping(status: "stopping: committing what is in hand, sending the offline status")
        }
    }

    private func feed(_ notifier: SystemdNotifier) async {
        // Ready once every loop has turned once.
        while heartbeats.contains(where: { $0.health(threshold: .zero) == .starting }) {
            guard (try? await Task.sleep(for: .milliseconds(20))) != nil else { return }
        }
        var last = Verdict.healthy(status: summary())
        notifier.ready(status: summary())
        logger.info("ready", metadata: [
            "notify_socket": "\(notifier.socketPath)",
            "watchdog": "\(notifier.watchdogInterval.map { "\($0)" } ?? "off")",
        ])
        let watchdog = notifier.watchdogInterval
        let period = Self.period(watchdog: watchdog)
        // Without a watchdog the status line still says when a loop hangs.
        let threshold = watchdog ?? Self.statusThreshold
        while (try? await Task.sleep(for: period)) != nil {
            let unhealthy = Self.unhealthy(heartbeats, threshold: threshold)
            // Ages alone do not count as a change.
            let verdict: Verdict = unhealthy.isEmpty ? .healthy(status: summary()) : .unhealthy(loops: unhealthy.map(\.name))
            // Healthy and fed: the status line (when it changed) and WATCHDOG=1 in one datagram.
            let feeding = verdict.isHealthy && watchdog != nil
            if verdict != last {
                switch verdict {
                case let .healthy(status):
                    if !last.isHealthy { logger.notice("every loop is turning again: feeding the watchdog") }
                    // The status first: a WATCHDOG=1 follows a recovery's status line, never precedes it.
                    if feeding { notifier.watchdog(status: status) } else { notifier.status(status) }
                case .unhealthy:
                    let names = unhealthy.map { entry in
                        switch entry.health {
                        case let .stuck(silent): "\(entry.name) not turning for \(silent)"
                        case .starting, .turning, .idle, .waiting: "\(entry.name) not turning ever"
                        }
                    }.joined(separator: ", ")
                    if last.isHealthy {
                        logger.error("watchdog not fed: a loop is stuck", metadata: ["stuck": "\(names)"])
                    }
                    notifier.status("unhealthy, watchdog not fed: \(names)")
                }
            }
            if feeding, verdict == last { notifier.watchdog() }
            last = verdict
        }
    }
}
