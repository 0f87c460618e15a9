import Foundation
import GRDB
import Testing
@testable import Outbox

/// Commits that fail for a reason other than the disk.
///
/// A write lock held by another connection is waited for, whoever holds it: SQLite's
/// SQLITE_BUSY does not say who, the outbox's lock file keeps other gateways out, and any
/// other holder (this process's acknowledgement connection, or a person's sqlite3 shell or
/// VACUUM that bypassed the lock file) gives it back in the end; a plant would rather have
/// the batch wait, logged, than dropped. Any other failure loses the batch: it must be
/// counted and reported as a gap like any other loss, not only logged by the caller.
@Suite("commit failures that are not a full disk")
struct OutboxCommitFailureTests {
    /// Another process (the sqlite3 CLI) holds the write lock past the busy timeout: the
    /// batch waits, the log says what holds it up, and it is committed once the lock is free.
    @Test func aBatchWaitsWhileAnotherProcessHoldsTheWriteLock() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            let logs = LogRecorder()
            let outbox = try Outbox(settings: .init(path: path), logger: logs.logger, now: { Date() }, measuring: nil,
                                    reserveBesides: path, busyTimeout: .milliseconds(100))
            #expect(try await outbox.append(drafts(2)).count == 2)

            // The sqlite3 CLI, another process, takes the write lock and says so with a file.
            let locked = dir.file("locked")
            let input = Pipe()
            let holder = Process()
            holder.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            holder.arguments = ["sqlite3", path]
            holder.standardInput = input
            holder.standardOutput = FileHandle.nullDevice
            holder.standardError = FileHandle.nullDevice
            do {
                try holder.run()
            } catch {
                Issue.record("the sqlite3 CLI is needed to hold the outbox's write lock (apt install sqlite3): \(error)")
                return
            }
            input.fileHandleForWriting.write(Data("BEGIN IMMEDIATE;\n.shell touch \(locked)\n".utf8))
            try await waitFor("sqlite3 holding the write lock") { FileManager.default.fileExists(atPath: locked) }

            let appending = Task { try await outbox.append(drafts(3)) }
            try await waitFor("the outbox to warn that the batch waits for the write lock") {
                logs.entries.contains { $0.level == .warning && $0.message.contains("write lock") }
            }
            let warning = logs.entries.first { $0.level == .warning && $0.message.contains("write lock") }
            #expect(warning?.message.contains("sqlite3") == true, "names what may hold it: \(String(describing: warning))")
            #expect(try await outbox.statistics().droppedThisBoot == 0, "nothing counted while it waits")

            input.fileHandleForWriting.write(Data("ROLLBACK;\n.quit\n".utf8))
            try input.fileHandleForWriting.close()
            holder.waitUntilExit()

            #expect(try await appending.value.map(\.seq) == [3, 4, 5])
            #expect(try await outbox.pendingGaps().isEmpty)
            #expect(try await outbox.statistics().droppedThisBoot == 0)
        }
    }

    /// A commit that fails for another reason (here a trigger another connection added
    /// aborts every insert, standing in for a read-only or damaged file) loses the batch:
    /// counted at once, and written down as an `io_error` gap with the next commit.
    @Test func aBatchThatCannotCommitForAnotherReasonIsCountedAsDropped() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
            #expect(try await outbox.append(drafts(2)).count == 2)

            let other = try DatabaseQueue(path: path)
            try await other.write { db in
                try db.execute(sql: "CREATE TRIGGER refuse BEFORE INSERT ON message BEGIN SELECT RAISE(ABORT, 'refused'); END")
            }
            await #expect(throws: OutboxError.self, "the batch cannot commit") {
                _ = try await outbox.append(drafts(3))
            }
            #expect(try await outbox.statistics().droppedThisBoot == 3, "the lost batch is counted")
            // For the status line: the drop episode shows while it lasts.
            #expect(outbox.dropping?.hasPrefix("DROPPING (io_error) since ") == true, "\(outbox.dropping ?? "nil")")
            try await other.write { db in try db.execute(sql: "DROP TRIGGER refuse") }

            // The next commit writes the loss down: seqs 3...5 in a gap, then seq 6.
            let next = try await outbox.append(drafts(1))
            #expect(next.map(\.seq) == [6])
            #expect(outbox.dropping == nil, "the episode ended with a commit that dropped nothing")
            let gaps = try await outbox.pendingGaps()
            #expect(gaps.map { [$0.firstSeq, $0.lastSeq] } == [[3, 5]])
            #expect(gaps.map(\.reason) == [.ioError])
            #expect(try await outbox.statistics().droppedThisBoot == 3, "counted once")
        }
    }
}
