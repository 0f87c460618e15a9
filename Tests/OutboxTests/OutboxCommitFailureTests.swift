import Foundation
import Testing
@testable import Outbox

/// A commit that fails for a reason other than the disk (here: another process holds
/// SQLite's write lock past the outbox's busy timeout) loses the batch: it must be counted
/// and reported as a gap like any other loss, not only logged by the caller.
@Suite("commit failures that are not a full disk")
struct OutboxCommitFailureTests {
    @Test func aBatchThatCannotCommitBecauseAnotherWriterHoldsTheLockIsCountedAsDropped() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
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

            await #expect(throws: OutboxError.self, "the batch cannot commit while another process writes") {
                _ = try await outbox.append(drafts(3))
            }
            #expect(try await outbox.statistics().droppedThisBoot == 3, "the lost batch is counted")
            // For the status line: the drop episode shows while it lasts.
            #expect(outbox.dropping?.hasPrefix("DROPPING (io_error) since ") == true, "\(outbox.dropping ?? "nil")")

            input.fileHandleForWriting.write(Data("ROLLBACK;\n.quit\n".utf8))
            try input.fileHandleForWriting.close()
            holder.waitUntilExit()

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
