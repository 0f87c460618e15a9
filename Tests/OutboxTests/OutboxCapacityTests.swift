import Foundation
import Logging
import Testing
@testable import Outbox

@Suite("capacity limits, drop policies, gaps")
struct OutboxCapacityTests {
    /// 200-byte payloads on a 1-byte topic: 201 accounted bytes each.
    static let messageBytes: Int64 = 201

    func open(
        _ dir: TemporaryDirectory, maxMessages: Int? = nil, maxBytes: Int64? = nil, maxAge: Duration? = nil,
        policy: OutboxSettings.DropPolicy, clock: ManualClock = ManualClock(), logger: Logger = quietLogger
    ) throws -> Outbox {
        try Outbox(
            settings: .init(
                path: dir.file("outbox.sqlite"), maxMessages: maxMessages, maxBytes: maxBytes,
                maxAge: maxAge, dropPolicy: policy),
            logger: logger, now: { clock.now })
    }

    func gapSummary(_ gaps: [OutboxGap]) -> [String] {
        gaps.map { "\($0.boot):\($0.firstSeq)-\($0.lastSeq)x\($0.count) \($0.reason.rawValue)" }
    }

    // MARK: unpublishable

    /// Messages MQTT can never carry leave as a counted drop with a gap record, so the
    /// backlog can drain and consumers see a reported loss.
    @Test func unpublishableMessagesAreDroppedWithAGapRecord() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try open(dir, policy: .dropOldest)
            let committed = try await outbox.append(drafts(6, topic: "t"))
            try await outbox.discardUnpublishable([committed[1].id, committed[2].id, committed[4].id, 999])
            #expect(try await outbox.lease(after: 0, max: 100).map(\.seq) == [1, 4, 6])
            #expect(gapSummary(try await outbox.pendingGaps()) == ["1:2-3x2 unpublishable", "1:5-5x1 unpublishable"])
            let stats = try await outbox.statistics()
            #expect(stats.bufferedMessages == 3)
            #expect(stats.bufferedBytes == 3 * Self.messageBytes)
            #expect(stats.dropped == 3)
        }
    }

    /// The stored text is the wire text; a stored reason this version does not know (written
    /// by another version into the same file) is read as `.unrecognized` with its text, so
    /// the loss is still reported instead of failing every gap read.
    @Test func gapReasonsAreStoredAsTextAndUnknownTextStaysReadable() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try open(dir, policy: .dropOldest)
            let committed = try await outbox.append(drafts(4, topic: "t"))
            try await outbox.discardUnpublishable([committed[0].id])
            try await outbox.discardUnpublishable([committed[2].id])
            let path = dir.file("outbox.sqlite")
            let (status, stored) = try run("/usr/bin/env", ["sqlite3", path, "SELECT reason FROM gap ORDER BY id"])
            guard status == 0 else {
                Issue.record("sqlite3 CLI needed to read and edit the gap table: \(stored)")
                return
            }
            #expect(stored == "unpublishable\nunpublishable\n")
            let edit = try run("/usr/bin/env", [
                "sqlite3", path, "UPDATE gap SET reason = 'from_a_newer_version' WHERE first_seq = 3",
            ])
            #expect(edit.status == 0, "\(edit.output)")
            let gaps = try await outbox.pendingGaps()
            #expect(gaps.map(\.reason) == [.unpublishable, .unrecognized("from_a_newer_version")])
            #expect(gaps.map(\.reason.rawValue) == ["unpublishable", "from_a_newer_version"])
            #expect(DropReason.recorded.map { DropReason(rawValue: $0.rawValue) } == DropReason.recorded)
        }
    }

    // MARK: max_messages

    @Test func maxMessagesDropOldestDeletesTheOldest() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try open(dir, maxMessages: 5, policy: .dropOldest)
            _ = try await outbox.append(drafts(3, topic: "t"))
            let second = try await outbox.append(drafts(4, topic: "t"))
            #expect(second.map(\.seq) == [4, 5, 6, 7])
            #expect(try await outbox.lease(after: 0, max: 100).map(\.seq) == [3, 4, 5, 6, 7])
            #expect(gapSummary(try await outbox.pendingGaps()) == ["1:1-2x2 max_messages"])

            // The episode goes on: the same gap record grows.
            _ = try await outbox.append(drafts(3, topic: "t"))
            #expect(try await outbox.lease(after: 0, max: 100).map(\.seq) == [6, 7, 8, 9, 10])
            #expect(gapSummary(try await outbox.pendingGaps()) == ["1:1-5x5 max_messages"])

            let stats = try await outbox.statistics()
            #expect(stats.bufferedMessages == 5)
            #expect(stats.bufferedBytes == 5 * Self.messageBytes)
            #expect(stats.dropped == 5)
            #expect(stats.droppedThisBoot == 5)
            #expect(stats.committedThisBoot == 10)
        }
    }

    @Test func maxMessagesDropOldestWithABatchLargerThanTheLimit() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try open(dir, maxMessages: 5, policy: .dropOldest)
            let committed = try await outbox.append(drafts(8, topic: "t"))
            #expect(committed.map(\.seq) == [4, 5, 6, 7, 8])
            #expect(try await outbox.lease(after: 0, max: 100) == committed)
            #expect(gapSummary(try await outbox.pendingGaps()) == ["1:1-3x3 max_messages"])
        }
    }

    @Test func maxMessagesDropNewestRejectsIncoming() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try open(dir, maxMessages: 5, policy: .dropNewest)
            _ = try await outbox.append(drafts(3, topic: "t"))
            let second = try await outbox.append(drafts(4, topic: "t"))
            #expect(second.map(\.seq) == [4, 5])
            _ = try await outbox.append(drafts(2, topic: "t"))
            #expect(gapSummary(try await outbox.pendingGaps()) == ["1:6-9x4 max_messages"])

            // Room again after two acks: two more fit, the third is rejected.
            let buffered = try await outbox.lease(after: 0, max: 100)
            #expect(buffered.map(\.seq) == [1, 2, 3, 4, 5])
            await outbox.acknowledgeNow([buffered[0].id, buffered[1].id])
            let third = try await outbox.append(drafts(3, topic: "t"))
            #expect(third.map(\.seq) == [10, 11])
            #expect(gapSummary(try await outbox.pendingGaps()) == [
                "1:6-9x4 max_messages", "1:12-12x1 max_messages",
            ])
            let stats = try await outbox.statistics()
            #expect(stats.bufferedMessages == 5)
            #expect(stats.dropped == 5)
            #expect(stats.committedThisBoot == 7)
            #expect(stats.acknowledgedThisBoot == 2)
        }
    }

    // MARK: max_bytes

    @Test func maxBytesDropOldestDeletesTheOldest() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try open(dir, maxBytes: 5 * Self.messageBytes, policy: .dropOldest)
            _ = try await outbox.append(drafts(4, topic: "t"))
            let second = try await outbox.append(drafts(3, topic: "t"))
            #expect(second.map(\.seq) == [5, 6, 7])
            #expect(try await outbox.lease(after: 0, max: 100).map(\.seq) == [3, 4, 5, 6, 7])
            #expect(gapSummary(try await outbox.pendingGaps()) == ["1:1-2x2 max_bytes"])
            let stats = try await outbox.statistics()
            #expect(stats.bufferedBytes == 5 * Self.messageBytes)
            #expect(stats.dropped == 2)
        }
    }

    @Test func maxBytesDropOldestFreesEnoughForALargeMessage() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try open(dir, maxBytes: 5 * Self.messageBytes, policy: .dropOldest)
            _ = try await outbox.append(drafts(5, topic: "t"))
            // 3 * 201 - 1 payload bytes + 1 topic byte: three old messages must go.
            let big = try await outbox.append(drafts(1, topic: "t", size: 3 * 201 - 1))
            #expect(big.map(\.seq) == [6])
            #expect(try await outbox.lease(after: 0, max: 100).map(\.seq) == [4, 5, 6])
            #expect(try await outbox.statistics().bufferedBytes == 5 * Self.messageBytes)
            #expect(gapSummary(try await outbox.pendingGaps()) == ["1:1-3x3 max_bytes"])
        }
    }

    @Test func maxBytesDropNewestRejectsIncoming() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try open(dir, maxBytes: 5 * Self.messageBytes, policy: .dropNewest)
            _ = try await outbox.append(drafts(4, topic: "t"))
            let second = try await outbox.append(drafts(3, topic: "t"))
            #expect(second.map(\.seq) == [5])
            #expect(try await outbox.lease(after: 0, max: 100).map(\.seq) == [1, 2, 3, 4, 5])
            #expect(gapSummary(try await outbox.pendingGaps()) == ["1:6-7x2 max_bytes"])
            #expect(try await outbox.statistics().dropped == 2)
        }
    }

    @Test(arguments: [OutboxSettings.DropPolicy.dropOldest, .dropNewest])
    func aMessageLargerThanMaxBytesIsRejectedAlone(policy: OutboxSettings.DropPolicy) async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try open(dir, maxBytes: 5 * Self.messageBytes, policy: policy)
            _ = try await outbox.append(drafts(3, topic: "t"))
            let committed = try await outbox.append(drafts(1, topic: "t", size: 2000) + drafts(1, topic: "t"))
            #expect(committed.map(\.seq) == [5])
            #expect(try await outbox.lease(after: 0, max: 100).map(\.seq) == [1, 2, 3, 5])
            #expect(gapSummary(try await outbox.pendingGaps()) == ["1:4-4x1 max_bytes"])
        }
    }

    // MARK: max_age

    @Test(arguments: [OutboxSettings.DropPolicy.dropOldest, .dropNewest])
    func maxAgeDropsExpiredMessagesWhateverThePolicy(policy: OutboxSettings.DropPolicy) async throws {
        try await withTemporaryDirectory { dir in
            let clock = ManualClock()
            let outbox = try open(dir, maxAge: .seconds(60), policy: policy, clock: clock)
            _ = try await outbox.append(drafts(3, topic: "t"))
            clock.advance(by: .seconds(30))
            _ = try await outbox.append(drafts(2, topic: "t"))
            clock.advance(by: .seconds(30))
            // The first three are exactly 60 s old: not yet expired.
            _ = try await outbox.append(drafts(1, topic: "t"))
            #expect(try await outbox.statistics().bufferedMessages == 6)
            clock.advance(by: .milliseconds(1))
            let committed = try await outbox.append(drafts(1, topic: "t"))
            #expect(committed.map(\.seq) == [7])
            #expect(try await outbox.lease(after: 0, max: 100).map(\.seq) == [4, 5, 6, 7])
            #expect(gapSummary(try await outbox.pendingGaps()) == ["1:1-3x3 max_age"])
            let stats = try await outbox.statistics()
            #expect(stats.dropped == 3)
            #expect(stats.oldestAge == .milliseconds(30_001))
        }
    }

    // MARK: counters, gaps, logging

    @Test func dropCountersPersistAcrossReopen() async throws {
        try await withTemporaryDirectory { dir in
            do {
                let outbox = try open(dir, maxMessages: 2, policy: .dropOldest)
                _ = try await outbox.append(drafts(5, topic: "t"))
                #expect(try await outbox.statistics().dropped == 3)
            }
            let reopened = try open(dir, maxMessages: 2, policy: .dropOldest)
            let stats = try await reopened.statistics()
            #expect(stats.dropped == 3)
            #expect(stats.droppedThisBoot == 0)
            #expect(stats.committedThisBoot == 0)
            // Unreported gaps survive too; dropping boot 1's seq 4 now continues its record.
            _ = try await reopened.append(drafts(1, topic: "t"))
            #expect(gapSummary(try await reopened.pendingGaps()) == ["1:1-4x4 max_messages"])
        }
    }

    @Test func markGapsReportedRemovesThemAndKeepsATailThatGrewMeanwhile() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try open(dir, maxMessages: 2, policy: .dropNewest)
            _ = try await outbox.append(drafts(4, topic: "t"))  // seq 3-4 dropped
            let reported = try await outbox.pendingGaps()
            #expect(gapSummary(reported) == ["1:3-4x2 max_messages"])
            _ = try await outbox.append(drafts(3, topic: "t"))  // seq 5-7 dropped: the gap grows
            try await outbox.markGapsReported(reported)
            let remaining = try await outbox.pendingGaps()
            #expect(gapSummary(remaining) == ["1:5-7x3 max_messages"])
            try await outbox.markGapsReported(remaining)
            try await outbox.markGapsReported(remaining)  // twice is harmless
            #expect(try await outbox.pendingGaps().isEmpty)
            // The next drop starts a fresh record.
            _ = try await outbox.append(drafts(1, topic: "t"))
            #expect(gapSummary(try await outbox.pendingGaps()) == ["1:8-8x1 max_messages"])
        }
    }

    @Test func dropsAreLoggedOncePerEpisode() async throws {
        try await withTemporaryDirectory { dir in
            let logs = LogRecorder()
            let outbox = try open(dir, maxMessages: 2, policy: .dropOldest, logger: logs.logger)
            _ = try await outbox.append(drafts(3, topic: "t"))  // drops 1: episode starts
            _ = try await outbox.append(drafts(1, topic: "t"))  // drops 1
            _ = try await outbox.append(drafts(2, topic: "t"))  // drops 2
            await outbox.acknowledgeNow(try await outbox.lease(after: 0, max: 10).map(\.id))
            _ = try await outbox.append(drafts(1, topic: "t"))  // no drop: episode ends
            _ = try await outbox.append(drafts(1, topic: "t"))  // no drop, nothing to say

            let warnings = logs.entries.filter { $0.level == .warning }
            let ends = logs.entries.filter { $0.message.contains("stopped dropping") }
            #expect(warnings.count == 1)
            #expect(warnings.first?.metadata["reason"] == "max_messages")
            #expect(ends.count == 1)
            #expect(ends.first?.level == .info)
            #expect(ends.first?.metadata["dropped"] == "4")
        }
    }
}
