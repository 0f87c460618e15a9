import Foundation
import GRDB
import Synchronization
import Testing
@testable import Outbox

/// Runs `body` on a thread of its own (never one of libdispatch's or Swift's pool), as the
/// forwarder hands ids over on the MQTT network thread; returns once it returned.
func onOwnThread(_ body: @escaping @Sendable () -> Void) async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let thread = Thread {
            body()
            continuation.resume()
        }
        thread.start()
    }
}

/// Where the observer of `whenAcknowledgementsWritten` ran, and how many ids it was told of.
private final class WrittenWhere: Sendable {
    private let state = Mutex<(threads: [UInt], count: Int)>(([], 0))
    func observe(_ outbox: Outbox) {
        outbox.whenAcknowledgementsWritten { count in
            self.state.withLock { $0.threads.append(UInt(pthread_self())); $0.count += count }
        }
    }
    var threads: [UInt] { state.withLock { $0.threads } }
    var count: Int { state.withLock { $0.count } }
}

@Suite("acknowledging: a due delete runs on the handing thread when the write lock is free", .serialized)
struct OutboxAcknowledgementConnectionTests {
    /// Rows awaiting deletion hold the forwarder's window: with the file's write lock free the
    /// delete is done before `acknowledgeWithNextWrite` returns, on the caller's thread (no
    /// hop to the writer's thread and back).
    @Test func aDueDeleteIsDoneOnTheCallingThreadBeforeItReturns() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            let outbox = try Outbox(settings: .init(path: path, synchronous: .full), logger: quietLogger)
            let written = WrittenWhere()
            written.observe(outbox)
            let committed = try await outbox.append(drafts(10))
            let caller = Mutex<UInt>(0)
            let bufferedOnReturn = Mutex<Int?>(nil)
            await onOwnThread {
                caller.withLock { $0 = UInt(pthread_self()) }
                outbox.acknowledgeWithNextWrite(committed.prefix(4).map(\.id), flushAt: 4, delay: .seconds(600))
                bufferedOnReturn.withLock { $0 = try? Outbox.readStatistics(path: path).bufferedMessages }
            }
            #expect(bufferedOnReturn.withLock { $0 } == 6, "the four rows were gone when the call returned")
            #expect(written.count == 4)
            #expect(written.threads == [caller.withLock { $0 }], "the delete ended on the calling thread")
            let statistics = try Outbox.readStatistics(path: path)
            #expect(statistics.acknowledgedThisBoot == 4)
            #expect(try await outbox.lease(after: 0, max: 100).map(\.seq) == Array(5...10))
            #expect(try await outbox.synchronousLevel() == 2, "the writer's connection still commits with FULL")
        }
    }

    /// While another connection writes, the caller does not wait for it: the ids go to the
    /// writer's queue, which deletes them once the lock is free. Nothing is deleted meanwhile.
    @Test func whileTheWriteLockIsTakenTheCallerDoesNotWaitAndTheWriterDeletesLater() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            let outbox = try Outbox(settings: .init(path: path, synchronous: .full), logger: quietLogger)
            let written = WrittenWhere()
            written.observe(outbox)
            let committed = try await outbox.append(drafts(10))
            // Another process's writer, as far as SQLite can tell: holds the write lock.
            var holding = Configuration()
            holding.allowsUnsafeTransactions = true  // the transaction spans several accesses
            let holder = try DatabaseQueue(path: path, configuration: holding)
            try await holder.writeWithoutTransaction { db in try db.execute(sql: "BEGIN IMMEDIATE") }
            await onOwnThread {
                outbox.acknowledgeWithNextWrite(committed.prefix(4).map(\.id), flushAt: 4, delay: .seconds(600))
            }
            // Returned while the lock is still held: nothing could be deleted yet.
            #expect(written.count == 0)
            #expect(try await holder.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM message") } == 10)
            try await holder.writeWithoutTransaction { db in try db.execute(sql: "ROLLBACK") }
            try await waitFor("the writer's queue to delete the four rows once the lock is free") {
                try Outbox.readStatistics(path: path).bufferedMessages == 6
            }
            #expect(written.count == 4)
            #expect(try Outbox.readStatistics(path: path).acknowledgedThisBoot == 4)
        }
    }
}

@Suite("acknowledging: a forwarder held back by waiting ids has them deleted at once")
struct OutboxDeleteSoonTests {
    /// Fewer ids than `flushAt` wait (they would wait for the next append): asked, the
    /// outbox deletes them before returning, on the caller's thread.
    @Test func fewWaitingIdsAreDeletedWhenAsked() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            let outbox = try Outbox(settings: .init(path: path, synchronous: .full), logger: quietLogger)
            let committed = try await outbox.append(drafts(10))
            outbox.acknowledgeWithNextWrite(committed.prefix(3).map(\.id), flushAt: 100, delay: .seconds(600))
            #expect(try Outbox.readStatistics(path: path).bufferedMessages == 10, "below flushAt: they wait")
            let bufferedOnReturn = Mutex<Int?>(nil)
            await onOwnThread {
                outbox.deleteQueuedAcknowledgementsSoon()
                bufferedOnReturn.withLock { $0 = try? Outbox.readStatistics(path: path).bufferedMessages }
            }
            #expect(bufferedOnReturn.withLock { $0 } == 7)
            #expect(try await outbox.lease(after: 0, max: 100).map(\.seq) == Array(4...10))
            // Nothing waits: asking again does nothing.
            outbox.deleteQueuedAcknowledgementsSoon()
            #expect(try Outbox.readStatistics(path: path).acknowledgedThisBoot == 3)
        }
    }
}
