// Waiting for the outbox file's write lock while another connection holds it past the
// writing connection's busy timeout: the write is tried again, never counted as a loss.
//
// The process has two connections to the file: the writer and the one that deletes
// acknowledged rows on the forwarder's thread (`AcknowledgementConnection`). That delete can
// hold the write lock past the writer's busy timeout (a slow eMMC write under dirty-page
// throttling, a starved thread). SQLITE_BUSY does not say who holds the lock; the outbox's
// lock file keeps other gateways out, so any other holder is that second connection or a
// person or tool that bypassed the lock file (a sqlite3 shell left inside a transaction, a
// VACUUM). Either gives the lock back in the end, and a plant would rather have the batch
// wait, in memory and logged, than dropped: the loss path is for a real I/O failure.

import Foundation
import GRDB
import Logging

extension Outbox {
    /// Whether `error` is SQLite's "another connection holds the lock" (`SQLITE_BUSY`,
    /// `SQLITE_LOCKED`, with any extended code): worth waiting for, never a loss.
    static func isLockContention(_ error: any Error) -> Bool {
        guard let error = error as? DatabaseError else { return false }
        return error.resultCode == .SQLITE_BUSY || error.resultCode == .SQLITE_LOCKED
    }

    /// `database.write(body)`, tried again for as long as another connection holds the write
    /// lock (logged by ``WriteLockWait``); any other error is thrown. Ends early only when
    /// the task is cancelled (`CancellationError`).
    func writeWaitingForLock<T: Sendable>(
        doing: String, _ body: @escaping @Sendable (Database) throws -> T
    ) async throws -> T {
        var wait = WriteLockWait(doing: doing, path: settings.path, logger: logger)
        while true {
            let attempt = ContinuousClock.now
            do {
                let result = try await database.write(body)
                wait.ended()
                return result
            } catch let error where Self.isLockContention(error) {
                wait.busy(since: attempt, error: error)
                try await Task.sleep(for: WriteLockWait.pause)
            }
        }
    }

    /// `database.write(body)` on the calling thread (it blocks: a thread of its own, never
    /// Swift's pool), tried again while another connection holds the write lock, for at most
    /// `patience`; then the lock's error is thrown.
    func writeWaitingForLock<T>(
        doing: String, patience: Duration, _ body: (Database) throws -> T
    ) throws -> T {
        var wait = WriteLockWait(doing: doing, path: settings.path, logger: logger)
        let start = ContinuousClock.now
        while true {
            let attempt = ContinuousClock.now
            do {
                let result = try database.write(body)
                wait.ended()
                return result
            } catch let error where Self.isLockContention(error) && ContinuousClock.now - start < patience {
                wait.busy(since: attempt, error: error)
                Thread.sleep(forTimeInterval: 0.01)
            }
        }
    }
}

/// One write waiting for the file's write lock: logged as a warning when the wait begins,
/// again every ``warningInterval`` while it lasts, and at info level when it ends.
struct WriteLockWait {
    /// Between two warnings of one long wait.
    static let warningInterval = Duration.seconds(30)
    /// Between two tries: SQLite already waited its busy timeout in a try that met
    /// `SQLITE_BUSY`; `SQLITE_LOCKED` returns at once and must not spin.
    static let pause = Duration.milliseconds(10)

    private enum State {
        case notWaiting
        case waiting(since: ContinuousClock.Instant, warned: ContinuousClock.Instant)
    }

    /// What waits, for the log ("committing 3 messages").
    let doing: String
    let path: String
    let logger: Logger
    private var state = State.notWaiting

    init(doing: String, path: String, logger: Logger) {
        self.doing = doing
        self.path = path
        self.logger = logger
    }

    /// A try that started at `attempt` met the lock.
    mutating func busy(since attempt: ContinuousClock.Instant, error: any Error) {
        let now = ContinuousClock.now
        let since: ContinuousClock.Instant
        switch state {
        case .notWaiting:
            since = attempt
        case let .waiting(started, warned):
            guard now - warned >= Self.warningInterval else { return }
            since = started
        }
        state = .waiting(since: since, warned: now)
        logger.warning("""
            outbox: another connection holds the write lock of \(path); \(doing) waits for it, nothing is \
            dropped. If this lasts, another process bypassing the gateway's lock file holds the file in a write \
            transaction (a sqlite3 shell, a VACUUM): end that transaction
            """, metadata: ["waited_s": "\(Self.seconds(now - since))", "error": "\(error)"])
    }

    /// The write went through: says so if it had to wait.
    func ended() {
        guard case let .waiting(since, _) = state else { return }
        logger.info("outbox: the write lock is free again; \(doing) went through", metadata: [
            "waited_s": "\(Self.seconds(.now - since))",
        ])
    }

    private static func seconds(_ duration: Duration) -> String {
        String(format: "%.1f", Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18)
    }
}
