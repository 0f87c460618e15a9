import Foundation
import Testing
@testable import Outbox

/// A lease right after an append returns exactly the rows that append committed, as the
/// file holds them (read back after reopening), and never a row deleted or dropped since.
@Suite("leasing right after an append")
struct OutboxLeaseTests {
    @Test func theRowsJustCommittedAreLeasedAsTheFileHoldsThem() async throws {
        try await withTemporaryDirectory { dir in
            let settings = OutboxSettings(path: dir.file("outbox.sqlite"))
            var leased: [OutboxMessage] = []
            do {
                let outbox = try Outbox(settings: settings, logger: quietLogger)
                let older = try await outbox.append(drafts(3, size: 50))
                var measured = drafts(4, size: 120)
                measured[1] = OutboxDraft(topic: "edge/gw-01/other/data", qos: 0,
                                          measured: MeasuredAt(boottime: 42_000_000, kernelBootID: "boot-a",
                                                               synchronised: false)) { _, _ in [1, 2, 3] }
                let newest = try await outbox.append(measured)
                leased = try await outbox.lease(after: newest[0].id - 1, max: 100)
                #expect(leased == newest)
                #expect(try await outbox.lease(after: newest[1].id, max: 1) == [newest[2]])
                #expect(try await outbox.lease(after: newest.last!.id, max: 100).isEmpty)
                // Reaching below the last append reads the file: the older rows come first.
                #expect(try await outbox.lease(after: 0, max: 100) == older + newest)
            }
            // The same rows read back from the file by a fresh outbox.
            let reopened = try Outbox(settings: settings, logger: quietLogger)
            #expect(try await reopened.lease(after: leased[0].id - 1, max: 100) == leased)
        }
    }

    @Test func acknowledgedAndDiscardedRowsAreNotLeasedAgain() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite")), logger: quietLogger)
            let committed = try await outbox.append(drafts(6))
            await outbox.acknowledgeNow([committed[0].id, committed[1].id])
            #expect(try await outbox.lease(after: 0, max: 100) == Array(committed[2...]))
            let next = try await outbox.append(drafts(3))
            try await outbox.discardUnpublishable([next[1].id])
            #expect(try await outbox.lease(after: next[0].id - 1, max: 100) == [next[0], next[2]])
            await outbox.acknowledgeNow(next.map(\.id))
            #expect(try await outbox.lease(after: committed.last!.id, max: 100).isEmpty)
        }
    }

    /// A batch larger than `max_messages` pushes out its own first rows: they are gone
    /// from the lease as from the file.
    @Test func rowsTheAppendDroppedItselfAreNotLeased() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite"), maxMessages: 4), logger: quietLogger)
            let committed = try await outbox.append(drafts(6))
            #expect(committed.map(\.seq) == [3, 4, 5, 6])
            #expect(try await outbox.lease(after: 0, max: 100) == committed)
            #expect(try await outbox.lease(after: committed[0].id - 1, max: 100) == committed)
        }
    }
}
