import Foundation
import Testing
@testable import Monitor

/// Builds events the way the decoder would, with a controllable clock.
struct Fleet {
    var model = FleetModel(staleAfter: .auto, historyLimit: 50)
    var now = Date(timeIntervalSince1970: 1_800_000_000)
    let gateway = "gw-01"

    mutating func advance(_ seconds: Double) { now += seconds }

    @discardableResult
    mutating func apply(_ event: FleetEvent) -> [ModelNote] { model.apply(event, at: now) }

    mutating func birth(boot: Int64, session: Int64?, interval: Int64? = 1000, previous: (Int64, Int64)? = nil,
                        retained: Bool = false) {
        apply(.status(gateway: gateway, GatewayStatus(kind: .birth, boot: boot, session: session, statsIntervalMs: interval,
                                                      previousBoot: previous?.0, previousBootLastSeq: previous?.1,
                                                      retained: retained)))
    }

    mutating func status(_ kind: StatusKind, boot: Int64, session: Int64?) {
        apply(.status(gateway: gateway, GatewayStatus(kind: kind, boot: boot, session: session)))
    }

    mutating func data(boot: Int64, _ seqs: [Int64]) {
        for seq in seqs { apply(.data(gateway: gateway, device: "boiler-1", boot: boot, seq: seq)) }
    }

    @discardableResult
    mutating func stats(boot: Int64, buffered: Int64, committed: Int64?) -> [ModelNote] {
        apply(.stats(gateway: gateway, GatewayStats(boot: boot, bufferedMessages: buffered, seqCommitted: committed)))
    }

    var record: GatewayRecord { model.gateways[gateway]! }
    var state: GatewayState { model.state(of: record, at: now) }
    func ledger(_ boot: Int64) -> ContinuityLedger { model.ledgers[gateway]![boot]! }
    var view: GatewayView { FleetSnapshot(model: model, takenAt: now).gateway(gateway)! }
}

@Suite struct SeqRangesTests {
    func inserted(_ set: inout SeqRanges, _ value: Int64) -> Bool { set.insert(value) }

    @Test func mergesNeighboursAndCountsDuplicates() {
        var set = SeqRanges()
        #expect(inserted(&set, 1))
        #expect(inserted(&set, 2))
        #expect(inserted(&set, 5))
        #expect(!inserted(&set, 2))
        #expect(inserted(&set, 4))
        #expect(set.ranges == [1...2, 4...5])
        #expect(inserted(&set, 3))
        #expect(set.ranges == [1...5])
        #expect(set.count == 5)
    }

    @Test func missingAndRemove() {
        var set = SeqRanges([1...3, 7...9])
        #expect(set.missing(in: 1...10).ranges == [4...6, 10...10])
        set.remove(2...8)
        #expect(set.ranges == [1...1, 9...9])
        set.insert(0...20)
        #expect(set.ranges == [0...20])
    }

    @Test func memoryGrowsWithHolesNotMessages() {
        var set = SeqRanges()
        for seq in Int64(1)...100_000 where seq != 500 { set.insert(seq) }
        #expect(set.ranges == [1...499, 501...100_000])
    }

    @Test func codableAsPairs() throws {
        let set = SeqRanges([1...4711, 4713...4713])
        let json = try JSONEncoder().encode(set)
        #expect(String(decoding: json, as: UTF8.self) == "[[1,4711],[4713,4713]]")
        #expect(try JSONDecoder().decode(SeqRanges.self, from: json) == set)
    }
}

@Suite struct LivenessTests {
    @Test func birthThenWillOfTheSameSessionIsOfflineConnectionLost() {
        var fleet = Fleet()
        fleet.birth(boot: 5, session: 1)
        #expect(fleet.state == .online)
        fleet.status(.will, boot: 5, session: 1)
        #expect(fleet.state == .offlineConnectionLost)
    }

    @Test func anOldWillNeverOverwritesANewerBirth() {
        var fleet = Fleet()
        fleet.birth(boot: 5, session: 3)
        // The Will of session 2 arrives late (its ts would even be earlier: order is by (boot, session)).
        fleet.status(.will, boot: 5, session: 2)
        #expect(fleet.state == .online)
        #expect(fleet.record.session == 3)
        // A Will of an older boot too.
        fleet.status(.will, boot: 4, session: 9)
        #expect(fleet.state == .online)
    }

    @Test func aBirthAfterItsOwnWillIsIgnored() {
        var fleet = Fleet()
        fleet.birth(boot: 5, session: 1)
        fleet.status(.will, boot: 5, session: 1)
        fleet.birth(boot: 5, session: 1, retained: true)
        #expect(fleet.state == .offlineConnectionLost)
        fleet.birth(boot: 5, session: 2)
        #expect(fleet.state == .online)
    }

    @Test func shutdownAndRestartWithTheNewBoot() {
        var fleet = Fleet()
        fleet.birth(boot: 5, session: 1)
        fleet.status(.shutdown, boot: 5, session: 1)
        #expect(fleet.state == .offlineShutdown)
        fleet.birth(boot: 6, session: 1)
        #expect(fleet.state == .online)
        #expect(fleet.record.boot == 6)
        let kinds = fleet.model.history[fleet.gateway]!.map(\.kind)
        #expect(kinds == [.birth, .shutdown, .birth])
    }

    @Test func onlyStatsMeansUnknown() {
        var fleet = Fleet()
        fleet.stats(boot: 1, buffered: 0, committed: 3)
        #expect(fleet.state == .unknown)
    }

    @Test func staleAfterThreeStatsIntervalsWithoutStatsOrData() {
        var fleet = Fleet()
        fleet.birth(boot: 1, session: 1, interval: 1000)
        fleet.advance(2.9)
        #expect(fleet.state == .online)
        fleet.stats(boot: 1, buffered: 0, committed: 0)
        fleet.advance(2.9)
        fleet.data(boot: 1, [1])
        fleet.advance(2.9)
        #expect(fleet.state == .online)
        fleet.advance(0.2)
        #expect(fleet.state == .stale)
        let notes = fleet.model.tick(at: fleet.now)
        #expect(notes.contains { $0.message.contains("stale") })
        #expect(fleet.model.history[fleet.gateway]!.last?.kind == .stale)
        fleet.stats(boot: 1, buffered: 0, committed: 1)
        #expect(fleet.state == .online)
    }

    @Test func fixedStaleAfterOverridesTheBirth() {
        var fleet = Fleet()
        fleet.model.staleAfter = .fixed(.seconds(10))
        fleet.birth(boot: 1, session: 1, interval: 1000)
        fleet.advance(9)
        #expect(fleet.state == .online)
        fleet.advance(2)
        #expect(fleet.state == .stale)
    }

    @Test func devicesFollowTheirStatus() {
        var fleet = Fleet()
        fleet.birth(boot: 1, session: 1)
        fleet.apply(.deviceStatus(gateway: fleet.gateway, device: "boiler-1", online: false, error: "timeout"))
        #expect(fleet.view.devices.map(\.state) == ["offline"])
        #expect(fleet.view.devices.first?.error == "timeout")
        fleet.apply(.deviceStatus(gateway: fleet.gateway, device: "boiler-1", online: true, error: nil))
        #expect(fleet.view.devices.map(\.state) == ["online"])
        #expect(fleet.model.history[fleet.gateway]!.filter { $0.kind == .device }.count == 2)
    }
}

@Suite struct BacklogTests {
    @Test func drainRateOverTheLastMinuteAndETA() {
        var fleet = Fleet()
        fleet.birth(boot: 1, session: 1)
        fleet.stats(boot: 1, buffered: 1000, committed: 1000)
        fleet.advance(10)
        fleet.stats(boot: 1, buffered: 800, committed: 1000)
        let view = fleet.view
        #expect(view.backlog.drainRatePerSecond == 20)
        #expect(view.backlog.etaSeconds == 40)
        #expect(view.replaying)
        // Growing: no ETA.
        fleet.advance(10)
        fleet.stats(boot: 1, buffered: 1200, committed: 1400)
        #expect(fleet.view.backlog.etaSeconds == nil)
        // Draining again after the rise: measured from the peak, not from the minute's start.
        fleet.advance(5)
        fleet.stats(boot: 1, buffered: 1100, committed: 1400)
        #expect(fleet.view.backlog.drainRatePerSecond == 20)
        #expect(fleet.view.backlog.etaSeconds == 55)
        // Samples older than a minute fall out of the window.
        fleet.advance(61)
        fleet.stats(boot: 1, buffered: 600, committed: 1400)
        #expect(fleet.record.backlogSamples.count == 1)
    }
}

@Suite struct ContinuityTests {
    /// A gateway the monitor saw from its birth, so seq 1 on is tracked.
    func watched() -> Fleet {
        var fleet = Fleet()
        fleet.birth(boot: 7, session: 1)
        return fleet
    }

    @Test func aMissingSeqIsLostOnlyAfterAnEmptyBacklogThatFollowsTheCommittedReport() {
        var fleet = watched()
        fleet.data(boot: 7, [1, 2, 3, 4, 5, 7, 8, 9, 10])
        fleet.stats(boot: 7, buffered: 3, committed: 10)
        #expect(fleet.record.lost == 0)
        // First look: 6 is missing, but data may still be queued behind the stats.
        fleet.stats(boot: 7, buffered: 0, committed: 10)
        #expect(fleet.record.lost == 0)
        #expect(fleet.ledger(7).suspect.ranges == [6...6])
        let notes = fleet.stats(boot: 7, buffered: 0, committed: 10)
        #expect(fleet.record.lost == 1)
        #expect(fleet.view.lostRanges == [LostRange(boot: 7, first: 6, last: 6)])
        #expect(notes.contains { $0.level == .error && $0.metadata["seqs"] == "6" })
        #expect(fleet.model.history[fleet.gateway]!.last?.kind == .lost)
    }

    @Test func aReportDoesNotConfirmItself() {
        var fleet = watched()
        fleet.data(boot: 7, [1, 2])
        // Committed 4 with an empty backlog in one message: 3 and 4 may still be on their way.
        fleet.stats(boot: 7, buffered: 0, committed: 4)
        #expect(fleet.record.lost == 0)
        fleet.data(boot: 7, [4])
        fleet.stats(boot: 7, buffered: 0, committed: 4)
        fleet.stats(boot: 7, buffered: 0, committed: 4)
        #expect(fleet.view.lostRanges == [LostRange(boot: 7, first: 3, last: 3)])
    }

    @Test func dataQueuedBehindTheStatsArrivesBeforeTheSecondLookAndIsNotLost() {
        var fleet = watched()
        fleet.data(boot: 7, [1, 2])
        fleet.stats(boot: 7, buffered: 5, committed: 6)
        // The empty-backlog stats overtook 3...6 (QoS 0 beside queued QoS 1 data).
        fleet.stats(boot: 7, buffered: 0, committed: 6)
        fleet.data(boot: 7, [3, 4, 5, 6])
        fleet.stats(boot: 7, buffered: 0, committed: 6)
        #expect(fleet.record.lost == 0)
        #expect(fleet.ledger(7).judgedThrough == 6)
    }

    @Test func aBacklogThatIsNotEmptyNeverDeclaresLoss() {
        var fleet = watched()
        fleet.data(boot: 7, [1, 2, 5])
        for _ in 0..<5 { fleet.stats(boot: 7, buffered: 2, committed: 5) }
        #expect(fleet.record.lost == 0)
        fleet.data(boot: 7, [3, 4])
        fleet.stats(boot: 7, buffered: 0, committed: 5)
        #expect(fleet.record.lost == 0)
    }

    @Test func exactRangesAcrossSeveralHoles() {
        var fleet = watched()
        fleet.data(boot: 7, Array(1...39) + Array(48...60) + [62])
        fleet.stats(boot: 7, buffered: 0, committed: 62)
        fleet.stats(boot: 7, buffered: 0, committed: 62)
        fleet.stats(boot: 7, buffered: 0, committed: 62)
        #expect(fleet.record.lost == 9)
        #expect(fleet.view.lostRanges == [LostRange(boot: 7, first: 40, last: 47), LostRange(boot: 7, first: 61, last: 61)])
    }

    @Test func gapRecordsAreDroppedReportedNotLost() {
        var fleet = watched()
        fleet.data(boot: 7, [1, 2, 8, 9])
        fleet.apply(.gap(gateway: fleet.gateway, GapRecord(boot: 7, first: 3, last: 7, reason: "outbox full")))
        fleet.stats(boot: 7, buffered: 0, committed: 9)
        fleet.stats(boot: 7, buffered: 0, committed: 9)
        #expect(fleet.record.dropped == 5)
        #expect(fleet.record.lost == 0)
        #expect(fleet.ledger(7).dropped.ranges == [3...7])
        // The same record again (re-delivered) does not count twice.
        fleet.apply(.gap(gateway: fleet.gateway, GapRecord(boot: 7, first: 3, last: 7, reason: "outbox full")))
        #expect(fleet.record.dropped == 5)
    }

    @Test func aLateGapRecordReclassifiesLostAsDropped() {
        var fleet = watched()
        fleet.data(boot: 7, [1, 4])
        fleet.stats(boot: 7, buffered: 0, committed: 4)
        fleet.stats(boot: 7, buffered: 0, committed: 4)
        fleet.stats(boot: 7, buffered: 0, committed: 4)
        #expect(fleet.record.lost == 2)
        fleet.apply(.gap(gateway: fleet.gateway, GapRecord(boot: 7, first: 2, last: 3, reason: "outbox full")))
        #expect(fleet.record.lost == 0)
        #expect(fleet.record.dropped == 2)
        #expect(fleet.view.lostRanges.isEmpty)
    }

    @Test func duplicatesAreCountedNotLost() {
        var fleet = watched()
        fleet.data(boot: 7, [1, 2, 3, 2, 3])
        #expect(fleet.record.duplicates == 2)
        #expect(fleet.ledger(7).received.ranges == [1...3])
    }

    @Test func thePreviousBootIsJudgedByTheBirthsLastSeq() {
        var fleet = watched()
        fleet.data(boot: 7, [1, 2, 3])
        fleet.status(.will, boot: 7, session: 1)
        // Boot 8 says boot 7 ended at seq 5; 4 arrives in the replay, 5 never does.
        fleet.birth(boot: 8, session: 1, previous: (7, 5))
        fleet.data(boot: 7, [4])
        fleet.stats(boot: 8, buffered: 0, committed: 0)
        fleet.stats(boot: 8, buffered: 0, committed: 0)
        #expect(fleet.record.lost == 1)
        #expect(fleet.view.lostRanges == [LostRange(boot: 7, first: 5, last: 5)])
    }

    @Test func withoutALiveBirthTheSeqsBeforeTheFirstOneAreUnobservedNotLost() {
        var fleet = Fleet()
        fleet.birth(boot: 3, session: 1, retained: true)  // the monitor started while the gateway ran
        fleet.data(boot: 3, [500, 501, 503])
        fleet.stats(boot: 3, buffered: 0, committed: 503)
        fleet.stats(boot: 3, buffered: 0, committed: 503)
        fleet.stats(boot: 3, buffered: 0, committed: 503)
        #expect(fleet.ledger(3).unobserved.ranges == [1...499])
        #expect(fleet.view.lostRanges == [LostRange(boot: 3, first: 502, last: 502)])
    }

    @Test func aLiveBirthMakesSeqOneCount() {
        var fleet = watched()
        fleet.data(boot: 7, [2, 3])
        fleet.stats(boot: 7, buffered: 0, committed: 3)
        fleet.stats(boot: 7, buffered: 0, committed: 3)
        fleet.stats(boot: 7, buffered: 0, committed: 3)
        #expect(fleet.view.lostRanges == [LostRange(boot: 7, first: 1, last: 1)])
    }

    @Test func aReconnectOpensABlindWindowNotALoss() {
        var fleet = watched()
        fleet.data(boot: 7, [1, 2, 3])
        // The monitor was away while 4...9 were published; it reconnects and sees 10 on.
        fleet.model.connectionEstablished()
        fleet.data(boot: 7, [10, 11])
        fleet.stats(boot: 7, buffered: 0, committed: 11)
        fleet.stats(boot: 7, buffered: 0, committed: 11)
        #expect(fleet.record.lost == 0)
        #expect(fleet.ledger(7).unobserved.ranges == [4...9])
    }

    @Test func aLateArrivalAfterLossIsNoLongerLost() {
        var fleet = watched()
        fleet.data(boot: 7, [1, 3])
        fleet.stats(boot: 7, buffered: 0, committed: 3)
        fleet.stats(boot: 7, buffered: 0, committed: 3)
        fleet.stats(boot: 7, buffered: 0, committed: 3)
        #expect(fleet.record.lost == 1)
        fleet.data(boot: 7, [2])
        #expect(fleet.record.lost == 0)
        #expect(fleet.view.lostRanges.isEmpty)
    }

    @Test func committedGoingBackwardsIsCountedAsBadInput() {
        var fleet = watched()
        fleet.stats(boot: 7, buffered: 0, committed: 10)
        fleet.stats(boot: 7, buffered: 0, committed: 4)
        #expect(fleet.model.ignored[.seqBackwards] == 1)
        #expect(fleet.ledger(7).reportedCommitted == 10)
    }

    @Test func unreadableSealedDataMakesContinuityUnknownNotLost() {
        var fleet = watched()
        fleet.apply(.unreadableSealed(gateway: fleet.gateway, keyID: "k1"))
        fleet.stats(boot: 7, buffered: 0, committed: 50)
        fleet.stats(boot: 7, buffered: 0, committed: 50)
        #expect(fleet.view.continuity == .unknown)
        #expect(fleet.record.lost == 0)
    }

    @Test func sealFailuresAreCountedPerKeyAndLoggedOncePerEpisode() {
        var fleet = watched()
        let first = fleet.apply(.sealFailure(gateway: fleet.gateway, keyID: "k1", reason: "bad tag"))
        let second = fleet.apply(.sealFailure(gateway: fleet.gateway, keyID: "k1", reason: "bad tag"))
        fleet.apply(.sealFailure(gateway: fleet.gateway, keyID: "k2", reason: "wrong key id"))
        #expect(first.count == 1)
        #expect(second.isEmpty)
        #expect(fleet.record.sealFailures == ["k1": 2, "k2": 1])
        fleet.apply(.sealOpened(gateway: fleet.gateway, keyID: "k1"))
        let again = fleet.apply(.sealFailure(gateway: fleet.gateway, keyID: "k1", reason: "bad tag"))
        #expect(again.count == 1)
        #expect(fleet.view.sealFailures == 4)
    }
}

@Suite struct OutboxResetTests {
    @Test func aBirthFromAReplacedOutboxStartsTheBootsAfresh() {
        var fleet = Fleet()
        fleet.birth(boot: 12, session: 1)
        fleet.data(boot: 12, [1, 2, 3])
        var reset = GatewayStatus(kind: .birth, boot: 1, session: 1, statsIntervalMs: 1000)
        // Without the marker an older boot is an old status and ignored.
        fleet.apply(.status(gateway: fleet.gateway, reset))
        #expect(fleet.record.boot == 12)
        reset.outboxReset = true
        fleet.apply(.status(gateway: fleet.gateway, reset))
        #expect(fleet.record.boot == 1)
        #expect(fleet.state == .online)
        #expect(fleet.model.ledgers[fleet.gateway] == nil)
        #expect(fleet.model.takeChanges().removedLedgers == [fleet.gateway])
        fleet.data(boot: 1, [1, 2])
        #expect(fleet.record.duplicates == 0)
    }
}
