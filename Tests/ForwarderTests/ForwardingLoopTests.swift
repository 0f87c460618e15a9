// The forwarder's logic in process, against fakes of the uplink and the outbox and in
// virtual time: replay order, the rate limit, a lost connection with messages in
// flight, shutdown and cancellation, read errors and publish errors.
import Foundation
@testable import Gateway
import GatewayConfig
import MQTTUplink
import Outbox
import Testing

@Suite struct ForwardingLoopTests {
    /// The uplink's protocol decides (the loop has no setting of its own): under MQTT 5
    /// every data message carries its (boot, seq) as user properties; MQTT 3.1.1 has
    /// none, so none are built.
    @Test(arguments: [true, false])
    func dataMessagesCarryBootAndSeqAsUserPropertiesUnderMQTT5(mqtt5: Bool) async throws {
        let forwarder = ForwarderHarness(maxInflight: 10, mqtt5: mqtt5)
        try await forwarder.commit(3)
        try await forwarder.connect(session: 1)
        let data = forwarder.uplink.sent.filter { $0.message.topic == ForwarderHarness.dataTopic }
        #expect(data.count == 3)
        for sent in data {
            let names = sent.message.userProperties.map(\.name)
            if mqtt5 {
                #expect(names == ["boot", "seq"], "\(sent.message.userProperties)")
                #expect(sent.message.userProperties.allSatisfy { Int64($0.value) != nil })
            } else {
                #expect(names.isEmpty, "\(sent.message.userProperties)")
            }
        }
        #expect(Set(data.compactMap { $0.message.userProperties.last.flatMap { Int64($0.value) } }).count == (mqtt5 ? 3 : 0),
                "each message its own seq")
    }

    @Test func liveFirstSendsWhatIsCommittedAfterTheConnectBeforeTheBacklog() async throws {
        let forwarder = ForwarderHarness(replay: ReplaySettings(order: .liveFirst), maxInflight: 10)
        try await forwarder.commit(30)  // while disconnected: the backlog
        try await forwarder.connect(session: 1)
        #expect(forwarder.publishedIDs == Array(1...10), "the backlog goes while there is nothing live")
        try await forwarder.commit(5)   // ids 31...35, polled after the connect
        try await forwarder.acknowledge()
        #expect(forwarder.publishedIDs == Array(1...10) + Array(31...35) + Array(11...15),
                "fresh polls overtake the backlog: \(forwarder.publishedIDs)")
        while forwarder.publishedIDs.count < 35 { try await forwarder.acknowledge() }
        try await forwarder.acknowledge()
        #expect(Set(forwarder.publishedIDs) == Set(1...35))
        #expect(forwarder.outbox.remainingIDs.isEmpty)
    }

    @Test func oldestFirstSendsInCommitOrder() async throws {
        let forwarder = ForwarderHarness(replay: ReplaySettings(order: .oldestFirst), maxInflight: 10)
        try await forwarder.commit(30)
        try await forwarder.connect(session: 1)
        try await forwarder.commit(5)
        try await forwarder.acknowledge()
        #expect(forwarder.publishedIDs == Array(1...20))
    }

    /// `replay.max_rate` bounds publishes per (virtual) second; without it the window does.
    @Test(arguments: [40, 200])
    func maxRateBoundsPublishesPerSecond(rate: Int) async throws {
        let forwarder = ForwarderHarness(replay: ReplaySettings(maxRate: rate), maxInflight: 100)
        try await forwarder.commit(5000)
        try await forwarder.connect(session: 1)
        for _ in 0..<40 {  // 10 virtual seconds, the broker acknowledging at once
            try await forwarder.tick(.milliseconds(250))
            try await forwarder.acknowledge()
        }
        let sent = forwarder.publishedIDs.count
        let burst = max(1, rate / 4)
        #expect(sent >= rate * 10 - burst && sent <= rate * 10 + burst, "\(sent) published in 10 s at max_rate \(rate)")
        #expect(forwarder.publishedIDs == Array(1...Int64(sent)), "in order")
    }

    @Test func withoutMaxRateTheWindowIsTheOnlyBound() async throws {
        let forwarder = ForwarderHarness(replay: ReplaySettings(maxRate: 0), maxInflight: 100)
        try await forwarder.commit(5000)
        try await forwarder.connect(session: 1)
        #expect(forwarder.publishedIDs.count == 100)
        for _ in 0..<10 { try await forwarder.acknowledge() }
        #expect(forwarder.publishedIDs.count == 1100, "no virtual time passed, only acknowledgements")
    }

    /// Acknowledged rows not yet deleted are sent again after a crash, as the messages in
    /// flight are: together they never exceed one window.
    @Test func messagesInFlightAndRowsAwaitingDeletionShareTheWindow() async throws {
        let forwarder = ForwarderHarness(maxInflight: 10)
        try await forwarder.commit(50)
        try await forwarder.connect(session: 1)
        #expect(forwarder.publishedIDs == Array(1...10))
        try await forwarder.holdDeletes(true)
        try await forwarder.acknowledge(topic: ForwarderHarness.dataTopic)  // 10 awaiting deletion
        #expect(forwarder.publishedIDs == Array(1...10), "a crash now sends the 10 again: nothing more in flight")
        #expect(forwarder.outbox.remainingIDs == Array(1...50), "nothing deleted yet")
        try await forwarder.holdDeletes(false)
        try await forwarder.send(.deleted)
        #expect(forwarder.publishedIDs == Array(1...20), "the window opens again once the rows are gone")
        #expect(forwarder.outbox.remainingIDs == Array(11...50))
    }

    @Test func messagesInFlightWhenTheConnectionDropsAreSentAgainAndNothingUnacknowledgedIsDeleted() async throws {
        let forwarder = ForwarderHarness(maxInflight: 10)
        try await forwarder.commit(20)
        try await forwarder.connect(session: 1)
        #expect(forwarder.publishedIDs == Array(1...10))
        try await forwarder.acknowledge(limit: 4, topic: ForwarderHarness.dataTopic)  // 1...4 acknowledged, 11...14 go out
        #expect(forwarder.publishedIDs == Array(1...14))
        try await forwarder.disconnect(session: 1)
        #expect(forwarder.outbox.deletedIDs.sorted() == [1, 2, 3, 4], "only what the broker acknowledged is deleted")
        #expect(forwarder.outbox.remainingIDs == Array(5...20))

        // A late PUBACK of the dead connection deletes nothing.
        let stale = try #require(forwarder.uplink.sent.first {
            $0.session == 1 && !$0.acknowledged && $0.message.topic == ForwarderHarness.dataTopic
        })
        _ = forwarder.loop.pubacks.append(session: 1, mid: stale.mid)
        try await forwarder.send(.pubacks)
        #expect(forwarder.outbox.deletedIDs.count == 4)

        try await forwarder.connect(session: 2)
        let again = forwarder.uplink.sent.filter { $0.session == 2 && $0.message.topic == ForwarderHarness.dataTopic }
        #expect(again.count == 10)
        #expect(Array(forwarder.publishedIDs.suffix(10)) == Array(5...14), "re-leased from the oldest unacknowledged")
        for _ in 0..<5 { try await forwarder.acknowledge() }
        #expect(forwarder.outbox.remainingIDs.isEmpty)
        #expect(Set(forwarder.outbox.deletedIDs) == Set(1...20))
        #expect(forwarder.statuses.map { $0["session"] as? Int } == [1, 2], "a birth per connection, with its session")
    }

    @Test func shutdownPublishesTheOfflineStatusAndStopsOnItsAcknowledgement() async throws {
        let forwarder = ForwarderHarness(maxInflight: 10)
        try await forwarder.connect(session: 3)
        try await forwarder.commit(3)
        #expect(try await forwarder.send(.shutdown) == .go, "waits for the PUBACK")
        let offline = try #require(forwarder.statuses.last)
        #expect(offline["state"] as? String == "offline")
        #expect(offline["reason"] as? String == "shutdown")
        #expect(offline["session"] as? Int == 3)
        #expect(forwarder.uplink.sent.last?.message.retain == true)
        #expect(try await forwarder.tick() == .go, "still within the grace period")
        try await forwarder.commit(2)
        #expect(forwarder.publishedIDs == [1, 2, 3], "nothing new is sent once stopping")
        // The broker acknowledges the data and then the offline status.
        #expect(try await forwarder.acknowledge(topic: ForwarderHarness.dataTopic) == .go)
        #expect(try await forwarder.acknowledge() == .stop)
        #expect(forwarder.outbox.deletedIDs.sorted() == [1, 2, 3], "acknowledged data is deleted before stopping")
    }

    @Test func shutdownStopsAfterTheGracePeriodWithoutAnAcknowledgement() async throws {
        let forwarder = ForwarderHarness(shutdownGrace: .seconds(2))
        try await forwarder.connect(session: 1)
        #expect(try await forwarder.send(.shutdown) == .go)
        #expect(try await forwarder.tick(.seconds(1)) == .go)
        #expect(try await forwarder.tick(.seconds(1)) == .stop)
        #expect(forwarder.logs.lines(containing: "did not acknowledge the offline status").count == 1)
    }

    @Test func shutdownWhileDisconnectedStopsAtOnce() async throws {
        let forwarder = ForwarderHarness()
        #expect(try await forwarder.send(.shutdown) == .stop)
        #expect(forwarder.uplink.sent.isEmpty)
    }

    /// Cancelled before a clean stop (the group's graceful period ran out): the
    /// offline status still goes out, and its acknowledgement is recognised.
    @Test func cancellationStillPublishesTheOfflineStatus() async throws {
        let forwarder = ForwarderHarness()
        try await forwarder.connect(session: 2)
        try await forwarder.commit(3)
        let mid = try #require(forwarder.loop.offlineStatusOnCancellation())
        let offline = try #require(forwarder.statuses.last)
        #expect(offline["reason"] as? String == "shutdown")
        #expect(offline["session"] as? Int == 2)
        #expect(forwarder.uplink.sent.last?.mid == mid)
        #expect(forwarder.loop.offlineStatusOnCancellation() == mid, "asked again: the same message, not a second one")
        #expect(!forwarder.loop.offlineStatusAcknowledged())
        for (session, mid) in forwarder.uplink.acknowledge() { _ = forwarder.loop.pubacks.append(session: session, mid: mid) }
        #expect(forwarder.loop.offlineStatusAcknowledged())

        let disconnected = ForwarderHarness()
        #expect(disconnected.loop.offlineStatusOnCancellation() == nil)
        #expect(disconnected.uplink.sent.isEmpty)
    }

    /// A failing outbox read is retried with a growing delay, not at once in a loop,
    /// and logged once per episode.
    @Test func aReadErrorBacksOffAndIsLoggedOnce() async throws {
        let forwarder = ForwarderHarness()
        forwarder.outbox.failLeases(true)
        try await forwarder.connect(session: 1)
        try await forwarder.commit(10)  // settle() fails the test if reads come without pause
        for _ in 0..<40 { try await forwarder.tick(.milliseconds(250)) }  // 10 virtual seconds
        let attempts = forwarder.outbox.leaseCalls
        // 100 ms, doubling up to 5 s: about 7 reads in 10 s (one per tick would be 40).
        #expect(attempts >= 4 && attempts <= 9, "\(attempts) reads in 10 s")
        #expect(forwarder.logs.lines(containing: "cannot read the outbox").count == 1)
        #expect(forwarder.publishedIDs.isEmpty)

        forwarder.outbox.failLeases(false)
        for _ in 0..<24 { try await forwarder.tick(.milliseconds(250)) }  // beyond the longest delay
        #expect(forwarder.publishedIDs == Array(1...10))
        #expect(forwarder.logs.lines(containing: "reading the outbox works again").count == 1)
    }

    /// A message that MQTT can never carry (a topic beyond its limit) does not hold up
    /// the rest, is logged once with its cause, and is dropped as a reported gap
    /// instead of staying in the outbox for ever.
    @Test func anUnpublishableMessageIsDroppedAsAGapLoggedOnceAndDoesNotBlockTheRest() async throws {
        let forwarder = ForwarderHarness(maxInflight: 100)
        let bad = "edge/gw-test/" + String(repeating: "x", count: 70_000) + "/data"
        forwarder.uplink.fail(topic: bad, with: .unpublishable)
        try await forwarder.connect(session: 1)
        try await forwarder.commit(3, topic: bad)
        try await forwarder.commit(5)
        try await forwarder.commit(3, topic: bad)
        #expect(forwarder.publishedIDs == [4, 5, 6, 7, 8])
        let errors = forwarder.logs.lines(containing: "can never be published")
        #expect(errors.count == 1, "once per cause, not per message: \(errors.map(\.message))")
        let line = try #require(errors.first)
        #expect(line.level == .error)
        #expect("\(line.metadata["cause"] ?? "")".contains("too long"))
        #expect("\(line.metadata["topic_bytes"] ?? "")" == "\(bad.utf8.count)")
        #expect("\(line.metadata["topic"] ?? "")".count < 300, "the topic is cut in the log")
        try await forwarder.acknowledge()
        try await forwarder.tick()
        #expect(forwarder.outbox.discardedIDs == [1, 2, 3, 9, 10, 11])
        #expect(forwarder.outbox.deletedIDs == [4, 5, 6, 7, 8])
        #expect(forwarder.outbox.remainingIDs.isEmpty, "nothing left that could never drain")
    }

    /// A message this broker refuses (beyond its maximum packet size) is skipped on this
    /// connection but kept: another connection (or broker) may take it.
    @Test func aMessageTheBrokerRefusesIsSkippedAndKeptForTheNextConnection() async throws {
        let forwarder = ForwarderHarness(maxInflight: 100)
        let big = ForwarderHarness.identity.dataTopic(device: "camera-1")
        forwarder.uplink.fail(topic: big, with: .brokerLimit)
        try await forwarder.connect(session: 1)
        try await forwarder.commit(2, topic: big)
        try await forwarder.commit(3)
        #expect(forwarder.publishedIDs == [3, 4, 5])
        #expect(forwarder.logs.lines(containing: "the broker refuses a message").count == 1)
        try await forwarder.acknowledge()
        try await forwarder.tick()
        #expect(forwarder.outbox.remainingIDs == [1, 2])
        #expect(forwarder.outbox.discardedIDs.isEmpty)
        forwarder.uplink.fail(topic: big, with: nil)
        try await forwarder.disconnect(session: 1)
        try await forwarder.connect(session: 2)
        #expect(forwarder.uplink.sent.filter { $0.session == 2 && $0.message.topic == big }.count == 2)
    }

    /// A publish error that may pass is retried on the next tick, logged once.
    @Test func aTransientPublishErrorIsRetriedAndLoggedOnce() async throws {
        let forwarder = ForwarderHarness()
        forwarder.uplink.fail(topic: ForwarderHarness.dataTopic, with: .transient)
        try await forwarder.connect(session: 1)
        try await forwarder.commit(3)
        for _ in 0..<5 { try await forwarder.tick() }
        #expect(forwarder.publishedIDs.isEmpty)
        #expect(forwarder.logs.lines(containing: "publish failed").count == 1)
        forwarder.uplink.fail(topic: ForwarderHarness.dataTopic, with: nil)
        try await forwarder.tick()
        #expect(forwarder.publishedIDs == [1, 2, 3])
    }
}

@Suite struct ForwarderAnnouncementTests {
    /// Every connection announces the gateway (with its session) and the devices'
    /// last statuses, also those that changed while disconnected.
    @Test func everyConnectAnnouncesTheGatewayAndTheDevicesLastStatuses() async throws {
        let forwarder = ForwarderHarness()
        try await forwarder.send(.deviceStatus(device: "boiler-1", error: "connection refused"))
        #expect(forwarder.uplink.sent.isEmpty, "nothing goes out while disconnected")
        try await forwarder.connect(session: 1)
        let deviceTopic = ForwarderHarness.identity.deviceStatusTopic(device: "boiler-1")
        let first = forwarder.uplink.sent.map(\.message)
        #expect(first.map(\.topic) == [ForwarderHarness.identity.statusTopic, deviceTopic])
        #expect(first.allSatisfy { $0.retain && $0.qos == 1 })
        let birth = try #require(forwarder.statuses.first)
        #expect(birth["state"] as? String == "online")
        #expect(birth["session"] as? Int == 1)
        #expect(birth["stats_interval_ms"] as? Int == 3_600_000)

        try await forwarder.send(.deviceStatus(device: "boiler-1", error: nil))
        try await forwarder.disconnect(session: 1)
        try await forwarder.connect(session: 2)
        let again = forwarder.uplink.sent.filter { $0.session == 2 }.map(\.message)
        #expect(again.map(\.topic) == [ForwarderHarness.identity.statusTopic, deviceTopic])
        let device = try #require(again.last.flatMap { try? JSONSerialization.jsonObject(with: Data($0.payload)) as? [String: Any] })
        #expect(device["state"] as? String == "online", "the last status, not the first: \(device)")
    }

    /// A gap record goes out on the gaps topic and is marked reported only once the
    /// broker acknowledged it.
    @Test func gapRecordsAreMarkedReportedOnlyAfterTheirAcknowledgement() async throws {
        let forwarder = ForwarderHarness()
        let gap = OutboxGap(id: 7, boot: 1, firstSeq: 10, lastSeq: 14, count: 5, reason: .maxMessages)
        forwarder.outbox.record(gap)
        try await forwarder.connect(session: 1)
        let gapsTopic = ForwarderHarness.identity.gapsTopic
        let sent = try #require(forwarder.uplink.sent.first { $0.message.topic == gapsTopic })
        let record = try #require(try JSONSerialization.jsonObject(with: Data(sent.message.payload)) as? [String: Any])
        #expect(record["first_seq"] as? Int == 10 && record["last_seq"] as? Int == 14 && record["count"] as? Int == 5)
        #expect(record["reason"] as? String == "max_messages", "the wire text is the enum's raw value")
        try await forwarder.tick()
        #expect(forwarder.outbox.reportedGaps.isEmpty, "not acknowledged yet")
        try await forwarder.acknowledge(topic: gapsTopic)
        try await forwarder.tick()
        #expect(forwarder.outbox.reportedGaps == [gap])
        try await forwarder.tick(.seconds(2))
        #expect(forwarder.uplink.sent.filter { $0.message.topic == gapsTopic }.count == 1, "reported once")
    }
}

extension ForwarderAnnouncementTests {
    /// Gap records are read every second: an outbox that fails to answer is logged
    /// when it starts and when it works again, not every second.
    @Test func aFailingGapReadIsLoggedOncePerEpisode() async throws {
        let forwarder = ForwarderHarness()
        forwarder.outbox.failGapReads(true)
        try await forwarder.connect(session: 1)
        for _ in 0..<20 { try await forwarder.tick(.milliseconds(500)) }
        #expect(forwarder.logs.lines(containing: "cannot read gap records").count == 1)
        forwarder.outbox.failGapReads(false)
        forwarder.outbox.record(OutboxGap(id: 1, boot: 1, firstSeq: 1, lastSeq: 1, count: 1, reason: .maxAge))
        for _ in 0..<4 { try await forwarder.tick(.milliseconds(500)) }
        #expect(forwarder.logs.lines(containing: "the outbox works again: read gap records").count == 1)
        #expect(forwarder.uplink.sent.contains { $0.message.topic == ForwarderHarness.identity.gapsTopic })
    }
}

@Suite struct TokenBucketTests {
    @Test func allowsTheRateInQuarterSecondBursts() {
        let start = ContinuousClock.now
        var bucket = TokenBucket(rate: 100, now: start)
        #expect(bucket.allowance(1000, now: start) == 0)
        #expect(bucket.allowance(1000, now: start + .seconds(10)) == 25, "a long pause buys a quarter second's worth")
        for _ in 0..<25 { bucket.spend() }
        #expect(bucket.allowance(1000, now: start + .seconds(10) + .milliseconds(100)) == 10)
    }

    @Test func zeroMeansUnlimited() {
        let start = ContinuousClock.now
        var bucket = TokenBucket(rate: 0, now: start)
        #expect(bucket.allowance(1000, now: start) == 1000)
    }
}
