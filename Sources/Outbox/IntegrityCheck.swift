// The outbox's integrity check (`PRAGMA quick_check`) after start: a big file is checked
// on its own read connection and thread while the gateway already polls and forwards,
// instead of holding up the start for as long as reading the whole file takes.

import Foundation
import GRDB
import Logging
import Synchronization

/// What the integrity check of the open outbox file has found so far.
public enum OutboxIntegrity: Sendable, Equatable {
    /// The check runs in the background (the file was too big to check before opening).
    case checking
    /// `quick_check` found nothing (before opening, or in the background).
    case ok
    /// The background check found damage; the outbox keeps running on the file (what is
    /// readable is still forwarded) and the next start moves the file aside.
    case corrupt(findings: [String])
    /// The background check could not run to its end (an I/O error, or the outbox closed).
    case unchecked(reason: String)
}

/// Runs `PRAGMA quick_check` on a read-only connection of its own, on a thread of its own
/// (never GRDB's writer queue, never Swift's cooperative pool), and reports the result.
///
/// In WAL mode the check reads a snapshot beside the writer: appends and deletes go on.
/// While it runs, the snapshot keeps SQLite from resetting the WAL, so the outbox does not
/// force a truncating checkpoint then (see ``Outbox/append(_:)``).
final class BackgroundIntegrityCheck: Sendable {
    private let result = Mutex<OutboxIntegrity>(.checking)
    /// The check's connection while it runs, so ``cancel()`` can interrupt it, and whether
    /// it was cancelled (also before the connection existed: the check then never starts).
    private let connection = Mutex<(queue: DatabaseQueue?, cancelled: Bool)>((nil, false))

    var integrity: OutboxIntegrity { result.withLock { $0 } }

    /// Starts the check of `path`; `report` is called once, on the check's thread, with the
    /// outcome, before ``integrity`` shows it: whoever sees `.corrupt` also finds the error
    /// logged and `<path>.check-failed` written.
    init(path: String, report: @escaping @Sendable (OutboxIntegrity) -> Void) {
        let thread = Thread { [self] in
            let outcome = self.check(path)
            report(outcome)
            self.result.withLock { $0 = outcome }
        }
        thread.name = "outbox-check"
        thread.start()
    }

    private func check(_ path: String) -> OutboxIntegrity {
        var configuration = Configuration()
        configuration.readonly = true
        configuration.label = "outbox-check"
        configuration.busyMode = .timeout(5)
        configuration.prepareDatabase { db in
            // The check reads every page once: a small cache keeps the process small.
            try db.execute(sql: "PRAGMA cache_size = -512")
        }
        do {
            let queue = try DatabaseQueue(path: path, configuration: configuration)
            let cancelled = connection.withLock { state in
                if !state.cancelled { state.queue = queue }
                return state.cancelled
            }
            defer {
                connection.withLock { $0.queue = nil }
                try? queue.close()
            }
            if cancelled { return .unchecked(reason: "cancelled before it started") }
            let findings = try queue.read { db in try String.fetchAll(db, sql: "PRAGMA quick_check") }
            return findings == ["ok"] ? .ok : .corrupt(findings: findings)
        } catch let error as DatabaseError
            where error.resultCode == .SQLITE_CORRUPT || error.resultCode == .SQLITE_NOTADB
        {
            return .corrupt(findings: ["\(error)"])
        } catch {
            return .unchecked(reason: "\(error)")
        }
    }

    /// Stops a running check (the outbox is closing).
    func cancel() {
        connection.withLock { state in
            state.cancelled = true
            state.queue?.interrupt()
        }
    }
}

/// `<outbox>.check-failed`: written when the background check finds damage, so the next
/// start checks the file before opening it (whatever its size) and moves it aside.
struct FailedCheckMarker {
    let path: String

    init(besides outboxPath: String) {
        path = outboxPath + ".check-failed"
    }

    var exists: Bool { FileManager.default.fileExists(atPath: path) }

    func record(_ findings: [String]) throws {
        try (findings.prefix(20).joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}
