// The synchronous append of the live path (`appendOnCallingThread`): the same commit as
// `append`, and a hand-back to `append` whenever the outbox needs its async recovery.
import Foundation
import Synchronization
import Testing
@testable import Outbox

/// Runs `body` on a thread of its own (a blocking call never runs on Swift's cooperative pool).
func onDedicatedThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread { continuation.resume(returning: body()) }.start()
    }
}

/// The rows of an `ImmediateAppend`, or nil when it handed the drafts back.
func committedRows(_ result: ImmediateAppend) -> [OutboxMessage]? {
    if case let .committed(rows) = result { return rows }
    return nil
}

@Suite("outbox: synchronous append on the calling thread")
struct OutboxImmediateAppendTests {
    @Test func itCommitsWithTheSameSeqsAsAppendInterleaved() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite")), logger: quietLogger)
            let first = await onDedicatedThread { committedRows(outbox.appendOnCallingThread(drafts(3))) }
            let second = try await outbox.append(drafts(2))
            let third = await onDedicatedThread { committedRows(outbox.appendOnCallingThread(drafts(1))) }
            #expect(first?.map(\.seq) == [1, 2, 3])
            #expect(second.map(\.seq) == [4, 5])
            #expect(third?.map(\.seq) == [6])
            let stored = try await outbox.lease(after: 0, max: 100)
            #expect(stored.map(\.seq) == Array(1...6))
            #expect(stored.map(\.payload) == (1...6).map { payload(boot: outbox.boot, seq: $0) })
            let statistics = try await outbox.statistics()
            #expect(statistics.committedThisBoot == 6)
            #expect(statistics.bufferedMessages == 6)
        }
    }

    @Test func acknowledgedRowsQueuedForTheNextWriteGoInsideIt() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite")), logger: quietLogger)
            let written = Mutex(0)
            outbox.whenAcknowledgementsWritten { count in written.withLock { $0 += count } }
            let rows = await onDedicatedThread { committedRows(outbox.appendOnCallingThread(drafts(3))) } ?? []
            #expect(rows.count == 3)
            // Neither enough ids nor long enough for a delete of their own.
            outbox.acknowledgeWithNextWrite(rows.prefix(2).map(\.id), flushAt: 1_000, delay: .seconds(3600))
            #expect(written.withLock { $0 } == 0)
            let next = await onDedicatedThread { committedRows(outbox.appendOnCallingThread(drafts(1))) }
            #expect(next?.map(\.seq) == [4])
            #expect(written.withLock { $0 } == 2, "the synchronous append took the acknowledged ids")
            #expect(try await outbox.lease(after: 0, max: 100).map(\.seq) == [3, 4])
            let statistics = try await outbox.readStatisticsForTest()
            #expect(statistics.acknowledgedThisBoot == 2)
            #expect(statistics.bufferedMessages == 2)
        }
    }

    @Test func withoutItsReserveFileTheOutboxHandsTheDraftsBackAndAppendCommitsThem() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
            _ = try await outbox.append(drafts(2))
            // A missing reserve means the disk filled up: recovery is `append`'s.
            try FileManager.default.removeItem(atPath: path + "-reserve")
            let handed = drafts(3)
            let result = await onDedicatedThread { outbox.appendOnCallingThread(handed) }
            #expect(committedRows(result) == nil, "handed back, not committed")
            let before = try await outbox.readStatisticsForTest()
            #expect(before.committedThisBoot == 2, "nothing of the handed-back batch was committed")
            // The same drafts through `append`: no seq skipped, none reused.
            #expect(try await outbox.append(handed).map(\.seq) == [3, 4, 5])
            // `append` made the reserve again: the synchronous path commits again.
            #expect(FileManager.default.fileExists(atPath: path + "-reserve"))
            let again = await onDedicatedThread { committedRows(outbox.appendOnCallingThread(drafts(1))) }
            #expect(again?.map(\.seq) == [6])
        }
    }
}

extension Outbox {
    /// The counters as they are in the file, without deleting queued acknowledgements first
    /// (`statistics()` does): what the appends themselves wrote.
    func readStatisticsForTest() async throws -> OutboxStatistics {
        try Outbox.readStatistics(path: settings.path)
    }
}
