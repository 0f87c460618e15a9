import Foundation
import Testing
@testable import Outbox

@Suite("append, lease, acknowledge, boot")
struct OutboxBasicTests {
    @Test func appendAssignsConsecutiveSeqsInOneBoot() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite")), logger: quietLogger)
            #expect(outbox.boot == 1)
            let first = try await outbox.append(drafts(3))
            let second = try await outbox.append(drafts(2))
            let all = first + second
            #expect(all.map(\.seq) == [1, 2, 3, 4, 5])
            #expect(all.allSatisfy { $0.boot == 1 })
            #expect(zip(all, all.dropFirst()).allSatisfy { $0.id < $1.id })
            // The payload was rendered with the seq and boot the outbox assigned.
            #expect(all[3].payload == payload(boot: 1, seq: 4))
            let stats = try await outbox.statistics()
            #expect(stats.bufferedMessages == 5)
            #expect(stats.bufferedBytes == all.reduce(0) { $0 + $1.accountedBytes })
            #expect(stats.committedThisBoot == 5)
            #expect(stats.dropped == 0)
        }
    }

    /// Large batches are rendered on another thread beside the insert loop
    /// (`PayloadRenderer`): every payload still carries its own seq, in order,
    /// also across batches and with drop_newest rejecting part of a batch.
    @Test(arguments: [1, 127, 128, 1000, 2001])
    func largeBatchesRenderEachPayloadWithItsSeq(batch: Int) async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite"), maxMessages: 3000,
                                                    dropPolicy: .dropNewest), logger: quietLogger)
            let first = try await outbox.append(drafts(batch))
            let second = try await outbox.append(drafts(batch))
            let all = first + second
            let stored = min(2 * batch, 3000)
            #expect(all.map(\.seq) == (1...Int64(stored)).map { $0 })
            #expect(all.allSatisfy { $0.payload == payload(boot: 1, seq: $0.seq) })
            let leased = try await outbox.lease(after: 0, max: 10_000)
            #expect(leased == all)
            #expect(try await outbox.statistics().dropped == Int64(2 * batch - stored))
        }
    }

    @Test func emptyAppendCommitsNothing() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite")), logger: quietLogger)
            #expect(try await outbox.append([]).isEmpty)
            #expect(try await outbox.append(drafts(1)).map(\.seq) == [1])
        }
    }

    @Test func bootIncrementsAcrossReopenAndSeqRestartsAtOne() async throws {
        try await withTemporaryDirectory { dir in
            let settings = OutboxSettings(path: dir.file("outbox.sqlite"))
            do {
                let outbox = try Outbox(settings: settings, logger: quietLogger)
                #expect(outbox.boot == 1)
                _ = try await outbox.append(drafts(4))
            }
            do {
                let outbox = try Outbox(settings: settings, logger: quietLogger)
                #expect(outbox.boot == 2)
                let messages = try await outbox.append(drafts(2))
                #expect(messages.map(\.seq) == [1, 2])
                #expect(messages.allSatisfy { $0.boot == 2 })
                let stats = try await outbox.statistics()
                #expect(stats.bufferedMessages == 6)
                #expect(stats.committedThisBoot == 2)
                #expect(stats.boot == 2)
            }
            let third = try Outbox(settings: settings, logger: quietLogger)
            #expect(third.boot == 3)
        }
    }

    /// The last seq of each boot survives into the next one (for the birth), and
    /// `seqCommitted` counts dropped seqs too: they are covered by gap records.
    @Test func theNextBootKnowsTheLastSeqThePreviousOneCommitted() async throws {
        try await withTemporaryDirectory { dir in
            let settings = OutboxSettings(path: dir.file("outbox.sqlite"), maxMessages: 5, dropPolicy: .dropNewest)
            do {
                let outbox = try Outbox(settings: settings, logger: quietLogger)
                #expect(outbox.previousBoot == nil, "a new file has no previous boot")
                #expect(try await outbox.statistics().seqCommitted == 0)
                _ = try await outbox.append(drafts(3))
                _ = try await outbox.append(drafts(4))  // 2 of them dropped: max_messages 5
                let stats = try await outbox.statistics()
                #expect(stats.seqCommitted == 7)
                #expect(stats.droppedThisBoot == 2)
            }
            do {
                let outbox = try Outbox(settings: settings, logger: quietLogger)
                #expect(outbox.previousBoot == OutboxBootEnd(boot: 1, lastSeq: 7))
                #expect(try await outbox.statistics().seqCommitted == 0)
                #expect(try Outbox.readStatistics(path: settings.path).seqCommitted == 0)
            }
            // A boot that committed nothing ends at seq 0.
            let third = try Outbox(settings: settings, logger: quietLogger)
            #expect(third.previousBoot == OutboxBootEnd(boot: 2, lastSeq: 0))
        }
    }

    @Test func committedMessagesSurviveReopenUnchanged() async throws {
        try await withTemporaryDirectory { dir in
            let settings = OutboxSettings(path: dir.file("outbox.sqlite"))
            var committed: [OutboxMessage] = []
            do {
                let outbox = try Outbox(settings: settings, logger: quietLogger)
                committed += try await outbox.append(drafts(10, topic: "edge/gw-01/a/data"))
                committed += try await outbox.append([
                    OutboxDraft(topic: "edge/gw-01/b/data", qos: 2) { _, _ in [0, 255, 7] },
                ])
            }
            let reopened = try Outbox(settings: settings, logger: quietLogger)
            let leased = try await reopened.lease(after: 0, max: 100)
            #expect(leased == committed)
            #expect(leased.last?.qos == 2)
            #expect(leased.last?.payload == [0, 255, 7])
        }
    }

    /// The files as a `kill -9` leaves them: copied while the outbox is still open, so the
    /// WAL is not checkpointed and nothing was closed.
    @Test func committedMessagesSurviveAKillWithoutClose() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
            let committed = try await outbox.append(drafts(500))
            let crashed = dir.file("crashed.sqlite")
            for suffix in ["", "-wal"] {
                try FileManager.default.copyItem(atPath: path + suffix, toPath: crashed + suffix)
            }
            let recovered = try Outbox(settings: .init(path: crashed), logger: quietLogger)
            #expect(recovered.quarantinedPath == nil)
            #expect(recovered.boot == 2)
            #expect(try await recovered.lease(after: 0, max: 1000) == committed)
            #expect(try await recovered.append(drafts(1)).map(\.seq) == [1])
            _ = outbox
        }
    }

    @Test func leaseReturnsOldestFirstAfterTheGivenId() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite")), logger: quietLogger)
            let committed = try await outbox.append(drafts(10))
            let firstBatch = try await outbox.lease(after: 0, max: 4)
            #expect(firstBatch == Array(committed[0..<4]))
            let secondBatch = try await outbox.lease(after: firstBatch.last!.id, max: 4)
            #expect(secondBatch == Array(committed[4..<8]))
            let rest = try await outbox.lease(after: secondBatch.last!.id, max: 100)
            #expect(rest == Array(committed[8...]))
            #expect(try await outbox.lease(after: rest.last!.id, max: 100).isEmpty)
            #expect(try await outbox.lease(after: 0, max: 0).isEmpty)
            // Leasing deletes nothing.
            #expect(try await outbox.statistics().bufferedMessages == 10)
        }
    }

    @Test func acknowledgeDeletesAndDuplicateAcksAreHarmless() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite")), logger: quietLogger)
            let committed = try await outbox.append(drafts(10))
            let acked = [committed[0].id, committed[1].id, committed[2].id, committed[5].id]
            await outbox.acknowledgeNow(acked)
            await outbox.acknowledgeNow(acked)  // a duplicate PUBACK
            await outbox.acknowledgeNow([committed[5].id, 999_999, -1])  // partly unknown
            let remaining = try await outbox.lease(after: 0, max: 100)
            #expect(remaining.map(\.seq) == [4, 5, 7, 8, 9, 10])
            let stats = try await outbox.statistics()
            #expect(stats.bufferedMessages == 6)
            #expect(stats.bufferedBytes == remaining.reduce(0) { $0 + $1.accountedBytes })
            #expect(stats.acknowledgedThisBoot == 4)
            #expect(stats.acknowledged == 4)
            await outbox.acknowledgeNow(remaining.map(\.id))
            let empty = try await outbox.statistics()
            #expect(empty.bufferedMessages == 0)
            #expect(empty.bufferedBytes == 0)
            #expect(empty.oldestAge == nil)
        }
    }

    /// After everything was acknowledged, new messages still get ids above every id handed
    /// out before, so a forwarder leasing "after the last id" does not skip them.
    @Test func idsAreNeverReusedAfterDeletes() async throws {
        try await withTemporaryDirectory { dir in
            let settings = OutboxSettings(path: dir.file("outbox.sqlite"))
            var second: [OutboxMessage] = []
            do {
                // Closed before reopening: one Outbox per file at a time (its lock).
                let outbox = try Outbox(settings: settings, logger: quietLogger)
                let first = try await outbox.append(drafts(5))
                await outbox.acknowledgeNow(first.map(\.id))
                second = try await outbox.append(drafts(1))
                #expect(second[0].id > first.last!.id)
                await outbox.acknowledgeNow(second.map(\.id))
            }
            let reopened = try Outbox(settings: settings, logger: quietLogger)
            let third = try await reopened.append(drafts(1))
            #expect(third[0].id > second[0].id)
        }
    }

    @Test func statisticsReportTheOldestAge() async throws {
        try await withTemporaryDirectory { dir in
            let clock = ManualClock()
            let outbox = try Outbox(
                settings: .init(path: dir.file("outbox.sqlite")), logger: quietLogger, now: { clock.now })
            _ = try await outbox.append(drafts(2))
            clock.advance(by: .seconds(90))
            _ = try await outbox.append(drafts(2))
            clock.advance(by: .seconds(10))
            #expect(try await outbox.statistics().oldestAge == .seconds(100))
        }
    }

    @Test func readStatisticsReadsWithoutBumpingBoot() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            do {
                let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
                let committed = try await outbox.append(drafts(7))
                await outbox.acknowledgeNow([committed[0].id])
                // While the gateway runs.
                let live = try Outbox.readStatistics(path: path)
                #expect(live.bufferedMessages == 6)
                #expect(live.acknowledgedThisBoot == 1)
                #expect(live.boot == 1)
            }
            let stopped = try Outbox.readStatistics(path: path)
            #expect(stopped.bufferedMessages == 6)
            #expect(stopped.boot == 1)
            let next = try Outbox(settings: .init(path: path), logger: quietLogger)
            #expect(next.boot == 2)
        }
    }

    @Test func readStatisticsOfAMissingFileSaysSo() throws {
        let error = #expect(throws: OutboxError.self) {
            try Outbox.readStatistics(path: "/nonexistent/outbox.sqlite")
        }
        #expect(error?.kind == .notFound)
        #expect(error?.description.contains("/nonexistent/outbox.sqlite") == true)
    }

    @Test func concurrentAppendsNeverShareASeq() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite")), logger: quietLogger)
            let seqs = try await withThrowingTaskGroup(of: [Int64].self) { group in
                for _ in 0..<8 {
                    group.addTask { try await outbox.append(drafts(25)).map(\.seq) }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(seqs.sorted() == Array(1...200))
        }
    }

    @Test func ackRangesCoverExactlyTheGivenIds() {
        #expect(Outbox.contiguousRanges([5]) == [5...5])
        #expect(Outbox.contiguousRanges([3, 1, 2, 2, 7, 9, 8, 11]) == [1...3, 7...9, 11...11])
    }
}

/// Sparkplug's bdSeq (migration `v4-sparkplug`): starts at 0, +1 per CONNECT, wraps at 256, survives reopening.
@Suite struct SparkplugBdSeqTests {
    @Test func bdSeqStartsAtZeroIncrementsWrapsAndSurvivesReopen() async throws {
        try await withTemporaryDirectory { dir in
            let settings = OutboxSettings(path: dir.file("outbox.sqlite"))
            do {
                let outbox = try Outbox(settings: settings, logger: quietLogger)
                #expect(try await outbox.lastSparkplugBdSeq() == nil)
                #expect(try outbox.nextSparkplugBdSeq() == 0)
                #expect(try outbox.nextSparkplugBdSeq() == 1)
                #expect(try await outbox.lastSparkplugBdSeq() == 1)
            }
            do {
                let outbox = try Outbox(settings: settings, logger: quietLogger)
                #expect(try await outbox.lastSparkplugBdSeq() == 1)
                var taken: [UInt8] = []
                for _ in 0..<256 { taken.append(try outbox.nextSparkplugBdSeq()) }
                #expect(taken.first == 2)
                #expect(taken[253] == 255)
                #expect(taken[254] == 0)
                #expect(taken.last == 1)
            }
            let third = try Outbox(settings: settings, logger: quietLogger)
            #expect(try third.nextSparkplugBdSeq() == 2)
        }
    }
}
