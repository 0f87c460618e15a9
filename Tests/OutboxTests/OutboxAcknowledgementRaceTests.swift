import Foundation
import Synchronization
import Testing
@testable import Outbox

/// Where the thread handing acknowledged ids over deletes them itself (the second
/// connection), an append that drops the oldest rows (at `max_messages`) must never drop
/// rows already taken for deletion: the broker acknowledged them, so they are neither lost
/// (a gap record, counted dropped) nor left to a delete that finds nothing.
@Suite("acknowledging: rows taken for deletion on the handing thread are never dropped")
struct OutboxAcknowledgementRaceTests {
    /// The two ways the handing thread deletes on the second connection.
    enum Entry: String, CaseIterable, Sendable {
        /// `acknowledgeWithNextWrite` reaching `flushAt`.
        case dueAtFlushAt
        /// `deleteQueuedAcknowledgementsSoon`, asked by a forwarder held back by the ids.
        case askedSoon
    }

    /// An outbox full at `max_messages` (10 rows); the four oldest acknowledged. Right after
    /// the handing thread took their ids (the test hook `onceAfterTake`), a bus thread's
    /// append of one message comes, which drops the oldest row if it can commit. Whichever
    /// order the two end up in, the acknowledged rows are deleted as acknowledged, never
    /// dropped; the append's message is committed (by `append` when the immediate one had to
    /// give way) and, with four rows gone, drops nothing.
    @Test(arguments: Entry.allCases)
    func anAppendFallingAfterTheTakeDropsNoAcknowledgedRow(_ entry: Entry) async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            let outbox = try Outbox(settings: .init(path: path, synchronous: .full, maxMessages: 10, dropPolicy: .dropOldest),
                                    logger: quietLogger)
            let committed = try await outbox.append(drafts(10))
            let acknowledged = committed.prefix(4).map(\.id)
            let busBatch = drafts(1)
            if entry == .askedSoon {
                outbox.acknowledgeWithNextWrite(acknowledged, flushAt: 100, delay: .seconds(600))
            }
            // The bus thread's append, inside the window between the take and the delete.
            let appendInWindow = Mutex<ImmediateAppend?>(nil)
            outbox.pendingAcknowledgements.onceAfterTake {
                let result = outbox.appendOnCallingThread(busBatch)
                appendInWindow.withLock { $0 = result }
            }
            await onOwnThread {
                switch entry {
                case .dueAtFlushAt:
                    outbox.acknowledgeWithNextWrite(acknowledged, flushAt: 4, delay: .seconds(600))
                case .askedSoon:
                    outbox.deleteQueuedAcknowledgementsSoon()
                }
            }
            let inWindow = try #require(appendInWindow.withLock { $0 }, "the append ran between the take and the delete")
            try await waitFor("the four oldest rows to be gone (acknowledged or dropped)") {
                let statistics = try Outbox.readStatistics(path: path)
                return statistics.acknowledgedThisBoot + statistics.droppedThisBoot >= 4
            }
            if case .needsAppend = inWindow {
                _ = try await outbox.append(busBatch)  // as the bus thread does
            }

            let gaps = try await outbox.pendingGaps()
            #expect(!gaps.contains { $0.firstSeq <= 4 }, "no gap record for acknowledged seqs 1…4: \(gaps)")
            let statistics = try await outbox.statistics()
            #expect(statistics.droppedThisBoot == 0, "nothing had to be dropped once the four rows went")
            #expect(statistics.acknowledgedThisBoot == 4, "every acknowledged row deleted as acknowledged")
            #expect(statistics.bufferedMessages == 7)
            #expect(try await outbox.lease(after: 0, max: 100).map(\.seq) == Array(5...11))
        }
    }
}
