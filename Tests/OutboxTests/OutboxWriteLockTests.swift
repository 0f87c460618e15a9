import Foundation
import GRDB
import Synchronization
import Testing
@testable import Outbox

/// Another connection to the outbox file holding its write lock (`BEGIN IMMEDIATE`), as the
/// outbox's own `AcknowledgementConnection` does while it deletes acknowledged rows, until
/// ``release()``.
private struct WriteLockHolder {
    let queue: DatabaseQueue

    init(path: String) async throws {
        var configuration = Configuration()
        configuration.allowsUnsafeTransactions = true  // the transaction spans several accesses
        queue = try DatabaseQueue(path: path, configuration: configuration)
        try await queue.writeWithoutTransaction { db in try db.execute(sql: "BEGIN IMMEDIATE") }
    }

    func release() async throws {
        try await queue.writeWithoutTransaction { db in try db.execute(sql: "ROLLBACK") }
    }
}

/// Runs `body` on a thread of its own (a bus thread may block, Swift's pool may not) and
/// returns what it returned.
private func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { (continuation: CheckedContinuation<T, Never>) in
        Thread { continuation.resume(returning: body()) }.start()
    }
}

private func waitingForTheLock(_ logs: LogRecorder) -> Bool {
    logs.entries.contains { $0.level == .warning && $0.message.contains("write lock") }
}

/// Since the outbox deletes acknowledged rows on a second connection of its own, that
/// connection can hold the file's write lock past the writer's busy timeout (a slow eMMC
/// write, a starved thread). A batch then waits for the lock: it is never counted as lost
/// for it (the loss path is for a real I/O failure).
@Suite("a write lock held past the busy timeout", .serialized)
struct OutboxWriteLockTests {
    static let busyTimeout = Duration.milliseconds(100)

    func open(_ path: String, _ logs: LogRecorder) throws -> Outbox {
        try Outbox(settings: .init(path: path), logger: logs.logger, now: { Date() }, measuring: nil,
                   reserveBesides: path, busyTimeout: Self.busyTimeout)
    }

    /// The bus thread's synchronous append cannot commit and hands the batch to `append`,
    /// which waits for the lock (and says so) and commits the batch once it is free.
    @Test func aBatchWaitsForTheWriteLockAndIsCommittedNotDropped() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            let logs = LogRecorder()
            let outbox = try open(path, logs)
            #expect(try await outbox.append(drafts(2)).count == 2)

            let holder = try await WriteLockHolder(path: path)
            let batch = drafts(3)
            let immediate = await onOwnThread { outbox.appendOnCallingThread(batch) }
            guard case .needsAppend = immediate else {
                Issue.record("the synchronous append committed although another connection holds the write lock")
                return
            }
            let appending = Task { try await outbox.append(batch) }
            try await waitFor("the outbox to warn that the batch waits for the write lock") { waitingForTheLock(logs) }
            try await holder.release()

            let committed = try await appending.value
            #expect(committed.map(\.seq) == [3, 4, 5], "the batch committed once the lock was free")
            let statistics = try await outbox.statistics()
            #expect(statistics.droppedThisBoot == 0, "nothing counted as lost for a lock")
            #expect(statistics.bufferedMessages == 5)
            #expect(try await outbox.pendingGaps().isEmpty)
            #expect(logs.entries.contains { $0.level == .info && $0.message.contains("write lock is free again") })
        }
    }

    /// A loss handed over at shutdown (`recordLossOnCallingThread`) waits for the lock too
    /// and is written down as a gap, instead of staying in memory of a process about to end.
    @Test func aLossRecordedOnTheCallingThreadWaitsForTheWriteLock() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            let logs = LogRecorder()
            let outbox = try open(path, logs)
            #expect(try await outbox.append(drafts(2)).count == 2)

            let holder = try await WriteLockHolder(path: path)
            let written = Mutex<LossRecord?>(nil)
            Thread { written.withLock { $0 = outbox.recordLossOnCallingThread(4, reason: .shuttingDown) } }.start()
            try await waitFor("the outbox to warn that the loss waits for the write lock") { waitingForTheLock(logs) }
            try await holder.release()
            try await waitFor("the loss to be recorded") { written.withLock { $0 } != nil }

            #expect(written.withLock { $0 } == .gapRecorded, "written to the file, not left in memory")
            let gaps = try await outbox.pendingGaps()
            #expect(gaps.map { [$0.firstSeq, $0.lastSeq] } == [[3, 6]])
            #expect(gaps.map(\.reason) == [.shuttingDown])
            #expect(try await outbox.statistics().droppedThisBoot == 4)
        }
    }

    /// A delete of acknowledged rows that meets the lock keeps its ids for the next
    /// transaction: the rows do not stay in the outbox (and its backlog) until a restart.
    @Test func acknowledgedIdsWhoseDeleteMeetsTheWriteLockAreDeletedLater() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            let logs = LogRecorder()
            let outbox = try open(path, logs)
            let committed = try await outbox.append(drafts(10))

            let holder = try await WriteLockHolder(path: path)
            outbox.acknowledgeWithNextWrite(committed.prefix(4).map(\.id), flushAt: Int.max, delay: .seconds(600))
            await outbox.deleteQueuedAcknowledgements()  // meets the lock
            try await holder.release()

            #expect(try await outbox.append(drafts(1)).map(\.seq) == [11])
            let statistics = try Outbox.readStatistics(path: path)
            #expect(statistics.bufferedMessages == 7, "the four acknowledged rows went with the append")
            #expect(statistics.acknowledgedThisBoot == 4)
            #expect(try await outbox.lease(after: 0, max: 100).map(\.seq) == Array(5...11))
            #expect(!logs.entries.contains { $0.level >= .error }, "\(logs.entries.filter { $0.level >= .error })")
        }
    }

    /// `statistics()` reads the meta row and the oldest row in one snapshot: a delete the
    /// second connection commits between the two reads does not give a backlog with no age.
    @Test func statisticsReadOneSnapshotWhileTheSecondConnectionDeletes() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            let outbox = try open(path, LogRecorder())
            let committed = try await outbox.append(drafts(10))
            let connection = try #require(outbox.acknowledgementConnection)
            let ids = committed.map(\.id)

            // Between the meta read and the oldest row's read, the second connection deletes
            // every row (as the forwarder's acknowledgements do on the MQTT network thread).
            let deleted = Mutex(false)
            try await outbox.database.writeWithoutTransaction { db in
                db.trace { event in
                    guard case let .statement(statement) = event, statement.sql.contains("ORDER BY id LIMIT 1"),
                          !deleted.withLock({ $0 }) else { return }
                    let outcome = connection.delete(taking: { ids })
                    if case .committed = outcome { deleted.withLock { $0 = true } }
                }
            }
            let statistics = try await outbox.statistics()
            try await outbox.database.writeWithoutTransaction { db in db.trace(nil) }

            #expect(deleted.withLock { $0 }, "the second connection deleted between the two reads")
            #expect((statistics.bufferedMessages > 0) == (statistics.oldestAge != nil),
                    "\(statistics.bufferedMessages) buffered, oldest age \(String(describing: statistics.oldestAge))")
            #expect(try await outbox.statistics().bufferedMessages == 0, "the delete itself went through")
        }
    }
}
