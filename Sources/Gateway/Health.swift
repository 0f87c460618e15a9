// The gateway's own health, as the systemd watchdog sees it: every long-running
// loop beats a heartbeat; the watchdog is fed only while all of them are recent.
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// The last time one loop of the gateway showed it was turning.
///
/// A bus beats from its own thread between Modbus requests, so a bus thread stuck
/// in a blocking call stops beating; the forwarder beats each time its event loop
/// handles a tick, so a forwarder stuck on an `await` stops beating too.
public final class Heartbeat: Sendable {
    /// How often the loops beat.
    static let interval = Duration.milliseconds(250)

    /// What beats, for logs and status lines: `forwarder`, `bus tcp://10.0.0.5:502`.
    public let name: String
    private let last = Mutex<ContinuousClock.Instant?>(nil)

    public init(name: String) { self.name = name }

    public func beat() { last.withLock { $0 = .now } }

    /// Nil until the first beat.
    public var lastBeat: ContinuousClock.Instant? { last.withLock { $0 } }
}

/// Feeds systemd: `READY=1` once the outbox is open and every bus and the forwarder
/// have beaten once; `WATCHDOG=1` every half watchdog interval while every heartbeat
/// is younger than the interval; `STATUS=` lines when the summary changes;
/// `STOPPING=1` when graceful shutdown begins.
///
/// A loop that stops beating stops the feeding, so systemd restarts the gateway
/// within about two watchdog intervals of the hang (`WatchdogSec=`).
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

    /// Heartbeats older than `threshold` (or that never beat), with their ages.
    public static func stale(_ heartbeats: [Heartbeat], threshold: Duration,
                             now: ContinuousClock.Instant = .now) -> [(name: String, age: Duration?)] {
        heartbeats.compactMap { heartbeat in
            guard let last = heartbeat.lastBeat else { return (heartbeat.name, nil) }
            let age = now - last
            return age > threshold ? (heartbeat.name, age) : nil
        }
    }

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
        while !heartbeats.allSatisfy({ $0.lastBeat != nil }) {
            guard (try? await Task.sleep(for: .milliseconds(20))) != nil else { return }
        }
        var lastKey = summary()
        notifier.ready(status: lastKey)
        logger.info("ready", metadata: [
            "notify_socket": "\(notifier.socketPath)",
            "watchdog": "\(notifier.watchdogInterval.map { "\($0)" } ?? "off")",
        ])
        let watchdog = notifier.watchdogInterval
        let period = watchdog.map { max($0 / 2, .milliseconds(10)) } ?? .seconds(1)
        // Without a watchdog the status line still says when a loop hangs.
        let threshold = watchdog ?? .seconds(30)
        while (try? await Task.sleep(for: period)) != nil {
            let stale = Self.stale(heartbeats, threshold: threshold)
            let status: String
            // Sent when it changes; ages alone do not count as a change.
            let key: String
            if stale.isEmpty {
                status = summary()
                key = status
                if lastKey.hasPrefix("unhealthy") {
                    logger.notice("every loop is turning again: feeding the watchdog")
                }
            } else {
                let names = stale.map { entry in
                    "\(entry.name) not turning for \(entry.age.map { "\($0)" } ?? "ever")"
                }.joined(separator: ", ")
                status = "unhealthy, watchdog not fed: \(names)"
                key = "unhealthy " + stale.map(\.name).joined(separator: ",")
                if !lastKey.hasPrefix("unhealthy") {
                    logger.error("watchdog not fed: a loop is stuck", metadata: ["stuck": "\(names)"])
                }
            }
            // The status first: a WATCHDOG=1 follows a recovery's status line, never precedes it.
            if key != lastKey { notifier.status(status) }
            lastKey = key
            if stale.isEmpty, watchdog != nil { notifier.watchdog() }
        }
    }
}
