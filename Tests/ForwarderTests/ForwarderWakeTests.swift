// The forwarder without a periodic tick: it asks for a wake-up only when something is
// due (stats, a retry, a read backoff, a gap check after the outbox wrote records), and
// driven by those wake-ups alone (as `ForwarderService`'s alarm drives it) every
// retry path still completes.
import Foundation
@testable import Gateway
import GatewayConfig
import Outbox
import Testing

@Suite struct ForwarderWakeTests {
    /// Between polls an idle forwarder (connected, everything acknowledged) sleeps until
    /// its stats are due: no quarter-second tick.
    @Test func anIdleForwarderWakesOnlyForItsStats() async throws {
        let forwarder = ForwarderHarness()
        try await forwarder.connect(session: 1)
        for _ in 0..<3 {
            try await forwarder.commit(1)
            try await forwarder.acknowledge()
        }
        #expect(forwarder.publishedIDs == [1, 2, 3])
        #expect(forwarder.outbox.remainingIDs.isEmpty)
        let wake = try #require(forwarder.wakeIn, "the stats are always due some time")
        #expect(wake > .seconds(3000), "stats every hour in the harness, nothing else due: \(wake)")
        // Disconnected (the uplink retries on its own thread): still nothing but the stats.
        try await forwarder.disconnect(session: 1)
        try await forwarder.commit(5)
        #expect(try #require(forwarder.wakeIn) > .seconds(3000))
    }

    /// A message put back after a transient publish error is retried after a quarter
    /// second, driven by the wake-up the loop asks for.
    @Test func aTransientPublishErrorAsksForARetry() async throws {
        let forwarder = ForwarderHarness()
        forwarder.uplink.fail(topic: ForwarderHarness.dataTopic, with: .transient)
        try await forwarder.connect(session: 1)
        try await forwarder.commit(3)
        #expect(forwarder.wakeIn == ForwardingLoop.retryDelay)
        try await forwarder.tickWhenDue()
        #expect(forwarder.publishedIDs.isEmpty)
        forwarder.uplink.fail(topic: ForwarderHarness.dataTopic, with: nil)
        #expect(try await forwarder.tickWhenDue() == ForwardingLoop.retryDelay)
        #expect(forwarder.publishedIDs == [1, 2, 3])
        try await forwarder.acknowledge()
        #expect(try #require(forwarder.wakeIn) > .seconds(3000), "nothing waits any more")
    }

    /// Rows held back by `replay.max_rate` go out on the wake-ups the loop asks for, at
    /// the rate, and the wake-ups stop once the backlog is through.
    @Test func rateLimitedRowsAreSentOnTheWakeUpsTheLoopAsksFor() async throws {
        let forwarder = ForwarderHarness(replay: ReplaySettings(maxRate: 40), maxInflight: 100)
        try await forwarder.commit(200)
        try await forwarder.connect(session: 1)
        var waited = Duration.zero
        while forwarder.publishedIDs.count < 200, waited < .seconds(60) {
            waited += try #require(try await forwarder.tickWhenDue(), "rows wait: a wake-up is due")
            try await forwarder.acknowledge()
        }
        #expect(forwarder.publishedIDs == Array(1...200), "all of them, in order")
        #expect(waited >= .seconds(4) && waited <= .seconds(6), "200 rows at 40/s: about 5 virtual seconds, \(waited)")
        try await forwarder.acknowledge()
        #expect(try #require(forwarder.wakeIn) > .seconds(3000))
    }

    /// A failing read backs off (100 ms, doubling) on wake-ups at the backoff's end, and
    /// the rows go once reads work again.
    @Test func aFailingReadIsRetriedAtTheEndOfItsBackoff() async throws {
        let forwarder = ForwarderHarness()
        forwarder.outbox.failLeases(true)
        try await forwarder.connect(session: 1)
        try await forwarder.commit(5)
        #expect(forwarder.wakeIn == .milliseconds(100))
        #expect(try await forwarder.tickWhenDue() == .milliseconds(100))
        #expect(forwarder.wakeIn == .milliseconds(200), "doubling")
        forwarder.outbox.failLeases(false)
        try await forwarder.tickWhenDue()
        #expect(forwarder.publishedIDs == [1, 2, 3, 4, 5])
        try await forwarder.acknowledge()
        #expect(try #require(forwarder.wakeIn) > .seconds(3000))
    }

    /// Gap records the outbox writes while connected (a full disk, a full outbox) are
    /// read when it says so, at most once a second, and published; no timer reads them
    /// while none were written.
    @Test func gapRecordsAreReadWhenTheOutboxWritesThemNotOnATimer() async throws {
        let forwarder = ForwarderHarness()
        try await forwarder.connect(session: 1)
        #expect(try #require(forwarder.wakeIn) > .seconds(3000), "read at the connect; nothing new since")
        let gapsTopic = ForwarderHarness.identity.gapsTopic
        let first = OutboxGap(id: 1, boot: 1, firstSeq: 1, lastSeq: 3, count: 3, reason: .diskFull)
        try await forwarder.recordGap(first)
        // Within a second of the read at the connect: read when that second is over.
        let wait = try #require(forwarder.wakeIn)
        #expect(wait <= GapSchedule.interval)
        try await forwarder.tickWhenDue()
        #expect(forwarder.uplink.sent.filter { $0.message.topic == gapsTopic }.count == 1)
        try await forwarder.acknowledge(topic: gapsTopic)
        #expect(forwarder.outbox.reportedGaps == [first], "marked as soon as the broker acknowledged it")
        // The record is checked once more (a drop episode may have grown it), then no more.
        try await forwarder.tickWhenDue()
        #expect(try #require(forwarder.wakeIn) > .seconds(3000))
        #expect(forwarder.uplink.sent.filter { $0.message.topic == gapsTopic }.count == 1, "reported once")
        // Long after: a new record is read at once.
        _ = try await forwarder.tick(.seconds(10))
        try await forwarder.recordGap(OutboxGap(id: 2, boot: 1, firstSeq: 9, lastSeq: 9, count: 1, reason: .diskFull))
        #expect(forwarder.uplink.sent.filter { $0.message.topic == gapsTopic }.count == 2)
    }

    /// At shutdown the loop wakes at the grace period's end without a periodic tick.
    @Test func shutdownWakesAtTheEndOfTheGracePeriod() async throws {
        let forwarder = ForwarderHarness(shutdownGrace: .seconds(2))
        try await forwarder.connect(session: 1)
        #expect(try await forwarder.send(.shutdown) == .go)
        #expect(forwarder.wakeIn == .seconds(2))
        try await forwarder.tickWhenDue()
        #expect(forwarder.loop.machine.isStopped)
    }
}

/// The live path without a read: rows handed on with their commit event are published
/// as they are when nothing older waits to be read; otherwise they are read in order.
@Suite struct CommittedRowsTests {
    @Test func rowsHandedWithTheirCommitGoWithoutARead() async throws {
        let forwarder = ForwarderHarness()
        try await forwarder.connect(session: 1)
        let reads = forwarder.outbox.leaseCalls
        for _ in 0..<5 {
            try await forwarder.commitHandingRows(2)
            try await forwarder.acknowledge()
        }
        #expect(forwarder.publishedIDs == Array(1...10))
        #expect(forwarder.outbox.leaseCalls == reads, "no read on the live path")
        #expect(forwarder.outbox.remainingIDs.isEmpty, "deleted once acknowledged")
    }

    /// More committed than one read takes (`leaseAhead`, 512): rows handed on meanwhile
    /// must not be taken, or the unread rows between would be skipped for good.
    @Test func handedRowsNeverSkipRowsNotReadYet() async throws {
        let forwarder = ForwarderHarness(maxInflight: 10)
        try await forwarder.commitHandingRows(600)  // disconnected: read after the connect
        try await forwarder.connect(session: 1)     // reads 1...512
        try await forwarder.commitHandingRows(5)    // 601...605 while 513...600 are unread
        for _ in 0..<70 { try await forwarder.acknowledge() }
        let published = forwarder.publishedIDs
        #expect(published == Array(1...605), "in order, none skipped, none twice: \(published.count) published")
        #expect(forwarder.outbox.remainingIDs.isEmpty)
    }

    /// A backlog to read first keeps handed rows from overtaking it or going twice:
    /// they are read after it, in id order, once.
    @Test func handedRowsWaitForOlderOnesAndGoOnce() async throws {
        for order in [ReplaySettings.Order.oldestFirst, .liveFirst] {
            let forwarder = ForwarderHarness(replay: ReplaySettings(order: order), maxInflight: 10)
            try await forwarder.commitHandingRows(30)  // disconnected: kept, read later
            try await forwarder.connect(session: 1)
            try await forwarder.commitHandingRows(5)
            try await forwarder.commitHandingRows(5)
            for round in 0..<10 {
                try await forwarder.acknowledge()
                if round % 3 == 0 { try await forwarder.commitHandingRows(1) }  // 4 more, in between
            }
            for _ in 0..<10 { try await forwarder.acknowledge() }
            let published = forwarder.publishedIDs
            #expect(published.count == Set(published).count, "\(order): nothing twice: \(published)")
            #expect(Set(published) == Set(1...44), "\(order): all of them: \(published)")
            if order == .oldestFirst { #expect(published == Array(1...44), "in commit order") }
            #expect(forwarder.outbox.remainingIDs.isEmpty, "\(order): all acknowledged and deleted")
        }
    }
}
