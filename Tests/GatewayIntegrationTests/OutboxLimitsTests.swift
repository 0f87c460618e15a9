// The outbox's limits and damage, seen from the wire: drops reported as gap
// records, a corrupt file quarantined and announced, stats published.
import Foundation
import Outbox
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct OutboxLimitsTests {
    @Test func dropsBeyondMaxMessagesArriveAsGapRecordsAndEverythingElseReplays() async throws {
        let e2e = try await EndToEnd(pollInterval: "20ms", buffer: "max_messages: 40")
        try await e2e.broker.stop(graceful: true)
        try e2e.startGateway()
        let outbox = e2e.directory.file("outbox.sqlite")
        try await waitUntil("drops while the broker is down", timeout: .seconds(30)) {
            ((try? Outbox.readStatistics(path: outbox))?.dropped ?? 0) >= 60
        }
        try await e2e.broker.start()
        let gapsTopic = "edge/\(e2e.gatewayID)/gaps"
        try await waitUntil("a gap record and the replay", timeout: .seconds(20)) {
            !e2e.subscriber.messages(on: gapsTopic).isEmpty && e2e.dataMessages.count >= 40
        }
        e2e.gateway!.signal(SIGTERM)
        #expect(try await e2e.gateway!.waitForExit() == 0)
        try await e2e.subscriber.roundTrip()

        // Every seq of the boot is either delivered or inside a reported gap.
        var explained = Set(e2e.dataMessages.compactMap { $0["seq"] as? Int })
        let gaps = e2e.subscriber.messages(on: gapsTopic).map(\.json)
        for gap in gaps {
            #expect(gap["boot"] as? Int == 1)
            #expect(gap["reason"] as? String == "max_messages", "\(gap)")
            let first = try #require(gap["first_seq"] as? Int), last = try #require(gap["last_seq"] as? Int)
            #expect(gap["count"] as? Int == last - first + 1)
            explained.formUnion(first...last)
        }
        let highest = explained.max() ?? 0
        #expect(Set(1...highest) == explained, "seqs neither delivered nor in a gap record")
        // drop_oldest: the oldest went, the newest polls were kept and delivered.
        #expect(gaps.contains { ($0["first_seq"] as? Int) == 1 }, "the first polls were the ones dropped: \(gaps)")
        let statistics = try Outbox.readStatistics(path: outbox)
        let inGaps = gaps.reduce(0) { $0 + ($1["count"] as? Int ?? 0) }
        #expect(statistics.dropped == Int64(inGaps), "every drop is counted once and reported")
        #expect(statistics.bufferedMessages == 0)
    }

    @Test func aCorruptOutboxIsQuarantinedAnnouncedAndTheGatewayRuns() async throws {
        let e2e = try await EndToEnd()
        let outbox = e2e.directory.file("outbox.sqlite")
        try Data((0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 31) }).write(to: URL(fileURLWithPath: outbox))
        try e2e.startGateway()
        try await waitUntil("birth and data") {
            e2e.statuses(e2e.statusTopic).contains("online") && e2e.dataMessages.count >= 2
        }
        let birth = try #require(e2e.subscriber.messages(on: e2e.statusTopic).first)
        let quarantined = try #require(birth.json["outbox_quarantined"] as? String, "birth announces it: \(birth.text)")
        #expect(quarantined.hasPrefix(outbox + ".corrupt-"))
        #expect(FileManager.default.fileExists(atPath: quarantined), "the damaged file is kept for inspection")
        #expect(e2e.gateway!.output.contains("corrupt"), "and logged")
        #expect(e2e.dataMessages.first?["seq"] as? Int == 1)
    }

    @Test func statsArePublishedWithTheOutboxCounters() async throws {
        let e2e = try await EndToEnd()
        try e2e.startGateway()
        let statsTopic = "edge/\(e2e.gatewayID)/stats"
        try await waitUntil("a stats message after some polls") {
            e2e.subscriber.messages(on: statsTopic).contains { ($0.json["polls_ok"] as? Int ?? 0) > 0 }
        }
        let stats = try #require(e2e.subscriber.messages(on: statsTopic).last?.json)
        for key in ["buffered_messages", "buffered_bytes", "dropped", "published", "inflight", "polls_ok",
                    "polls_failed", "poll_overruns", "boot"] {
            #expect(stats[key] is Int, "stats has \(key): \(stats)")
        }
        #expect(stats["dropped"] as? Int == 0)
    }
}

@Suite(.serialized) struct ReplayOrderTests {
    /// With `live_first` and a rate limit, fresh polls overtake a backlog that drains behind them.
    @Test func liveFirstSendsFreshPollsBeforeTheBacklogHasDrained() async throws {
        let e2e = try await EndToEnd(pollInterval: "20ms", replay: "replay: { order: live_first, max_rate: 100 }")
        try await e2e.broker.stop(graceful: true)
        try e2e.startGateway()
        let outbox = e2e.directory.file("outbox.sqlite")
        try await waitUntil("a backlog of 300", timeout: .seconds(30)) {
            ((try? Outbox.readStatistics(path: outbox))?.bufferedMessages ?? 0) >= 300
        }
        let backlogEnd = Int(try Outbox.readStatistics(path: outbox).committedThisBoot)
        try await e2e.broker.start()
        try await waitUntil("the backlog to drain", timeout: .seconds(30)) {
            e2e.dataMessages.contains { $0["seq"] as? Int == backlogEnd }
        }
        let seqs = e2e.dataMessages.compactMap { $0["seq"] as? Int }
        let lastOfBacklog = try #require(seqs.firstIndex(of: backlogEnd))
        let firstLive = try #require(seqs.firstIndex { $0 > backlogEnd + 50 }, "live polls arrived")
        #expect(firstLive < lastOfBacklog, "live polls came before the end of the backlog")
        // Everything still arrives.
        try await waitUntil("no seq missing") {
            let all = Set(e2e.dataMessages.compactMap { $0["seq"] as? Int })
            return all.count == all.max()
        }
    }
}
