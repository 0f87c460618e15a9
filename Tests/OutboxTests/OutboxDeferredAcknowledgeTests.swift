import Foundation
import Synchronization
import Testing
@testable import Outbox


/// Counts what `whenAcknowledgementsWritten` reports.
private final class WrittenCount: Sendable {
    private let total = Mutex(0)
    func observe(_ outbox: Outbox) { outbox.whenAcknowledgementsWritten { count in self.total.withLock { $0 += count } } }
    var value: Int { total.withLock { $0 } }
}

// The tests read the counters from the file (`Outbox.readStatistics`, another connection):
// `Outbox.statistics()` would itself delete the waiting ids first.

/// Never reached in these tests: only an append, a lease or the size bound deletes.
private let longDelay = Duration.seconds(600)

@Suite("acknowledging with the next write: deleted in the next append, or alone when none comes")
struct OutboxDeferredAcknowledgeTests {
    @Test func queuedIdsAreDeletedInsideTheNextAppendAndOnlyThem() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite"), synchronous: .full), logger: quietLogger)
            let written = WrittenCount()
            written.observe(outbox)
            let first = try await outbox.append(drafts(5))
            outbox.acknowledgeWithNextWrite(first.prefix(3).map(\.id), flushAt: 100, delay: longDelay)
            // Not yet: no transaction has run since.
            #expect(try Outbox.readStatistics(path: dir.file("outbox.sqlite")).bufferedMessages == 5)
            #expect(written.value == 0)

            _ = try await outbox.append(drafts(1))
            let statistics = try Outbox.readStatistics(path: dir.file("outbox.sqlite"))
            #expect(statistics.bufferedMessages == 3, "5 + 1 committed, 3 acknowledged")
            #expect(statistics.acknowledgedThisBoot == 3)
            #expect(statistics.bufferedBytes == 3 * Int64(200 + "edge/gw-01/boiler-1/data".utf8.count))
            #expect(written.value == 3)
            // The unacknowledged rows are all still there.
            #expect(try await outbox.lease(after: 0, max: 100).map(\.seq) == [4, 5, 6])
            #expect(try await outbox.synchronousLevel() == 2, "the append committed with synchronous = FULL")
        }
    }

    @Test func withoutAnAppendTheyAreDeletedAloneAfterTheDelay() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite"), synchronous: .full), logger: quietLogger)
            let written = WrittenCount()
            written.observe(outbox)
            let committed = try await outbox.append(drafts(4))
            outbox.acknowledgeWithNextWrite(committed.prefix(3).map(\.id), flushAt: 100, delay: .milliseconds(100))
            try await waitFor("the acknowledged rows deleted without an append") {
                try Outbox.readStatistics(path: dir.file("outbox.sqlite")).bufferedMessages == 1
            }
            #expect(try Outbox.readStatistics(path: dir.file("outbox.sqlite")).acknowledgedThisBoot == 3)
            #expect(written.value == 3)
            #expect(try await outbox.synchronousLevel() == 2, "synchronous is FULL again after the delete")
        }
    }

    @Test func enoughWaitingIdsAreDeletedAtOnce() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite")), logger: quietLogger)
            let committed = try await outbox.append(drafts(10))
            outbox.acknowledgeWithNextWrite([committed[0].id], flushAt: 4, delay: longDelay)
            outbox.acknowledgeWithNextWrite(committed[1...3].map(\.id), flushAt: 4, delay: longDelay)
            try await waitFor("four acknowledged rows deleted without an append") {
                try Outbox.readStatistics(path: dir.file("outbox.sqlite")).bufferedMessages == 6
            }
        }
    }

    @Test func aLeaseNeverReturnsAQueuedAcknowledgedRow() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite")), logger: quietLogger)
            let committed = try await outbox.append(drafts(3))
            outbox.acknowledgeWithNextWrite(committed.prefix(2).map(\.id), flushAt: 100, delay: longDelay)
            #expect(try await outbox.lease(after: 0, max: 100).map(\.seq) == [3])
            #expect(try Outbox.readStatistics(path: dir.file("outbox.sqlite")).acknowledgedThisBoot == 2)
        }
    }

    /// With `drop_oldest` at the limit, the queued acknowledged rows make the room: nothing
    /// is counted as dropped.
    @Test func queuedAcknowledgedRowsAreNeverCountedAsDropped() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite"), maxMessages: 5, dropPolicy: .dropOldest),
                                    logger: quietLogger)
            let committed = try await outbox.append(drafts(5))
            outbox.acknowledgeWithNextWrite(committed.prefix(2).map(\.id), flushAt: 100, delay: longDelay)
            let more = try await outbox.append(drafts(2))
            #expect(more.map(\.seq) == [6, 7])
            let statistics = try Outbox.readStatistics(path: dir.file("outbox.sqlite"))
            #expect(statistics.dropped == 0)
            #expect(statistics.bufferedMessages == 5)
            #expect(statistics.acknowledgedThisBoot == 2)
            #expect(try await outbox.pendingGaps().isEmpty)
        }
    }

    /// The stats' backlog is what is still to be sent: acknowledged rows waiting for the
    /// next append are deleted before `statistics()` counts (a monitor judges losses only
    /// on an empty backlog, which a polling gateway would otherwise never report).
    @Test func statisticsCountOnlyWhatIsStillToBeSent() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite")), logger: quietLogger)
            let committed = try await outbox.append(drafts(3))
            outbox.acknowledgeWithNextWrite(committed.map(\.id), flushAt: 100, delay: longDelay)
            #expect(try Outbox.readStatistics(path: dir.file("outbox.sqlite")).bufferedMessages == 3, "still in the file")
            let statistics = try await outbox.statistics()
            #expect(statistics.bufferedMessages == 0)
            #expect(statistics.oldestAge == nil)
            #expect(statistics.acknowledgedThisBoot == 3)
        }
    }

    @Test func queuedIdsAreDeletedOnRequestAtShutdown() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite")), logger: quietLogger)
            let committed = try await outbox.append(drafts(2))
            outbox.acknowledgeWithNextWrite(committed.map(\.id), flushAt: 100, delay: longDelay)
            await outbox.deleteQueuedAcknowledgements()
            #expect(try Outbox.readStatistics(path: dir.file("outbox.sqlite")).bufferedMessages == 0)
        }
    }
}

/// The timer behind the delete of their own: it ticks every `delay` while ids wait (one
/// source, never re-armed at a tick) and stops once a tick finds none.
@Suite("the deferred-delete timer: ticking only while ids wait")
struct PendingAcknowledgementsTimerTests {
    let settings = PendingAcknowledgements.Settings(flushAt: 100, delay: .seconds(600))

    @Test func aTickWithYoungIdsKeepsTheSameTimerAndDeletesNothing() {
        let pending = PendingAcknowledgements()
        #expect(!pending.timerIsTicking, "nothing waits: no timer")
        #expect(pending.add([1], settings: settings, onTimer: {}) == .nothing)
        #expect(pending.timerIsTicking)
        // The poll's id is younger than `delay`: the repeating timer looks again later.
        #expect(pending.timerFired() == .nothing)
        #expect(pending.timerIsTicking)
        #expect(pending.add([2], settings: settings, onTimer: {}) == .nothing)
        #expect(pending.take() == [1, 2])
    }

    @Test func theTimerStopsWhenATickFindsNothingWaitingAndStartsAgainWithTheNextId() {
        let pending = PendingAcknowledgements()
        _ = pending.add([1], settings: settings, onTimer: {})
        _ = pending.take()  // the next append deleted it
        #expect(pending.timerFired() == .nothing)
        #expect(!pending.timerIsTicking, "an idle gateway's outbox keeps no timer")
        _ = pending.add([2], settings: settings, onTimer: {})
        #expect(pending.timerIsTicking)
    }

    @Test func aTickDeletesWhatWaitedTheDelay() {
        let pending = PendingAcknowledgements()
        _ = pending.add([1], settings: .init(flushAt: 100, delay: .zero), onTimer: {})
        #expect(pending.timerFired() == .flush)
        #expect(pending.timerFired() == .nothing, "one delete under way at a time")
        #expect(pending.take() == [1])
        _ = pending.flushEnded()
        #expect(pending.timerFired() == .nothing)
        #expect(!pending.timerIsTicking)
    }
}
