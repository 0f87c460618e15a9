// The forwarder's work between events: each event goes to the state machine, and the
// loop does what it answers (publish, read, acknowledge, announce, report).
import Foundation
import GatewayClock
import GatewayConfig
import Logging
import Modbus
import MQTTUplink
import Outbox
import Sealing
import SparkplugB

/// Drives `ForwarderStateMachine` with the uplink and the outbox. Owned by one task
/// (the forwarder's `run()`, or a test): not thread-safe, and never blocks.
final class ForwardingLoop {
    enum Next { case go, stop }

    struct Settings {
        var identity: GatewayIdentity
        var replay = ReplaySettings()
        var maxInflight = 100
        /// How long the offline status's PUBACK is awaited at shutdown.
        var shutdownGrace = Duration.seconds(2)
        /// The command service's counters for the stats topic; nil when commands are off.
        var commandCounters: CommandCounters? = nil
        /// Rows read from the outbox per lease: fewer reads than one per window slot.
        var leaseAhead = 512
        /// Seals the data payloads whose `ts` is corrected at publish time (nil: plain).
        var sealer: Sealer?
        /// Set with `mqtt.format: sparkplug`: the gateway is a Sparkplug B edge node.
        var sparkplug: SparkplugEdge?
        /// `mqtt.message_expiry` (MQTT 5): set on data messages only, never on statuses.
        var messageExpiry: Duration? = nil
    }

    /// Where the loop's requests to other tasks go.
    struct Outlets {
        /// A read for the reader task; its answer comes back as `.leased`.
        var lease: (LeaseRequest) -> Void
        /// Acknowledged outbox ids, for the outbox to delete (with its next write).
        var delete: ([Int64]) -> Void
        /// Topic filters to subscribe to (QoS 1) on the current connection.
        var subscribe: ([String]) -> Void = { _ in }
        /// Ends the connection cleanly and connects again (new session, new Will).
        var reconnect: () -> Void = {}
        /// Acknowledged ids handed to `delete` whose transaction has not ended yet.
        var awaitingDelete: () -> Int = { 0 }
        /// Asks for a `.deleted` event when the next delete transaction ends; false (and no
        /// event) when fewer than the given count await deletion already.
        var wakeWhenDeleted: (Int) -> Bool = { _ in true }
    }

    let settings: Settings
    let uplink: any UplinkPublishing
    /// The uplink speaks MQTT 5 (`uplink.mqtt5`): data messages carry `boot` and `seq` as
    /// user properties (MQTT 3.1.1 has none: not built for every message only to be ignored).
    private let userProperties: Bool
    let outbox: any OutboxReading
    let now: () -> ContinuousClock.Instant
    let logger: Logger
    let outlets: Outlets
    let pubacks: PubackQueue
    let counters: ForwarderCounterState
    let pollCounters: PollCounters
    let devices: () -> [DeviceConfiguration]

    private(set) var machine: ForwarderStateMachine
    var announcer: StatusAnnouncer
    private var rate: TokenBucket
    private var acks = AckBatch()
    private var gaps: GapSchedule
    private var stats: StatsSchedule
    private var publishErrors = PublishErrorLog()
    private var refusals = BrokerRefusalLog()
    private var leaseBackoff = LeaseBackoff()
    /// Outbox ids of messages MQTT can never carry, to be dropped as a reported gap.
    private var unpublishable: [Int64] = []
    private var outboxErrors = OutboxErrorLog()
    /// Set with `mqtt.format: sparkplug` (see ForwardingLoop+Sparkplug.swift).
    var sparkplug: SparkplugSession?
    /// Wall time, boottime, kernel boot id and sync status (the kernel's, or a test's).
    private let timeSource: any TimeSource
    private var timestamps = TimestampCorrector()
    /// Something waits for a retry after `retryDelay`: a message put back after a
    /// transient publish error, or rows held back by `replay.max_rate`.
    private var retryPublishing = false

    init(settings: Settings, uplink: any UplinkPublishing, outbox: any OutboxReading, newestCommitted: Int64,
         pubacks: PubackQueue, counters: ForwarderCounterState, pollCounters: PollCounters,
         devices: @escaping () -> [DeviceConfiguration], outlets: Outlets, logger: Logger,
         timeSource: any TimeSource = KernelClock(),
         now: @escaping () -> ContinuousClock.Instant = { ContinuousClock.now }) {
        self.settings = settings
        self.timeSource = timeSource
        self.uplink = uplink
        userProperties = uplink.mqtt5
        self.outbox = outbox
        self.now = now
        self.logger = logger
        self.outlets = outlets
        self.pubacks = pubacks
        self.counters = counters
        self.pollCounters = pollCounters
        self.devices = devices
        let start = now()
        machine = ForwarderStateMachine(order: settings.replay.order, maxInflight: settings.maxInflight,
                                        newestCommitted: newestCommitted)
        announcer = StatusAnnouncer(identity: settings.identity, outbox: outbox)
        rate = TokenBucket(rate: settings.replay.maxRate, now: start)
        gaps = GapSchedule(now: start)
        stats = StatsSchedule(interval: settings.identity.statsInterval, now: start)
        sparkplug = settings.sparkplug.map { SparkplugSession(edge: $0, newestCommitted: newestCommitted) }
    }

    func handle(_ event: ForwarderEvent) async -> Next {
        switch event {
        case let .mqtt(.connected(id)):
            guard machine.connected(session: id) == .announce(session: id) else { break }
            let server = uplink.server(ofSession: id)?.endpoint
            counters.update { $0.connected = true; $0.uplinkProblem = nil; $0.inflight = 0; $0.server = server }
            publishErrors.newEpisode()
            refusals.newEpisode()
            logger.info("connected to broker", metadata: ["session": "\(id)", "server": "\(server ?? "?")"])
            let reading = observeClock()
            if sparkplug != nil {
                await sparkplugConnected(session: id)
            } else {
                announcer.announce(session: id, server: server, devices: devices(), clock: timeSource.status(),
                                   at: reading.wall) { publish($0) }
            }
            gaps.checkSoon(now: now())
            await reportGaps()
            await fill()

        case let .mqtt(.disconnected(id, reason)):
            let wasCurrent = machine.sessionID == id
            let stop = machine.disconnected(session: id, reason: reason)
            if wasCurrent {
                counters.update { $0.connected = false; $0.inflight = 0; $0.uplinkProblem = reason }
                logSkipped()
            }
            flushAcks()
            if stop { return .stop }

        case let .mqtt(.connectFailed(reason, _)):
            machine.connectFailed(reason: reason)
            counters.update { $0.uplinkProblem = reason }
            if machine.isStopped { return .stop }

        case .pubacks:
            var published: Int64 = 0
            defer { if published > 0 { counters.update { [published] in $0.published += published } } }
            for (session, mid) in pubacks.takeAll() {
                switch machine.acknowledged(session: session, mid: mid) {
                case let .data(outboxID):
                    acks.add(outboxID)
                    published += 1
                case let .gap(gap):
                    gaps.reported(gap)
                case .offlineStatus:
                    flushAcks()
                    return .stop
                case .unknown:
                    endClosingSession(acknowledged: mid, session: session)
                }
            }
            // Handed over at once: the outbox deletes them with its next append, or by
            // themselves once a tenth of a window waits or no append came for 10 s.
            flushAcks()
            if !gaps.acknowledged.isEmpty { await reportGaps() }
            await fill()
            // Due stats waiting for the window to empty go out with the PUBACK that empties it.
            if case .waitingForEmptyWindow = stats.state, stats.due(now: now(), inflight: machine.inflightCount) {
                await publishStats()
            }

        case let .leased(result):
            if result.session == machine.sessionID {
                noteLease(result.outcome)
            }
            machine.leased(result)
            await fill()

        case let .mqtt(.message(message)):
            // A Sparkplug node's subscriptions (NCMD, DCMD, the primary host's STATE);
            // command messages of the JSON scheme go to the command service.
            if sparkplug != nil { await sparkplugReceived(message) }

        case .mqtt(.published):
            break  // PUBACKs come through `.pubacks`

        case let .mqtt(.refused(session, mid, reason)):
            // Not delivered: the row stays in the outbox (no ack) and goes again after
            // the next connect; its window slot is free.
            switch machine.acknowledged(session: session, mid: mid) {
            case let .data(outboxID):
                counters.update { $0.refused += 1 }
                refusals.note(reason, outboxID: outboxID, logger: logger)
            case .gap, .unknown:
                refusals.note(reason, outboxID: nil, logger: logger)
            case .offlineStatus:
                flushAcks()
                return .stop
            }
            await fill()

        case .deleted:
            await fill()

        case let .outboxCommitted(newestID, rows):
            machine.committed(newestID: newestID, rows: rows, aheadAtMost: settings.leaseAhead)
            if let known = sparkplug?.newestCommitted, known < newestID { sparkplug?.newestCommitted = newestID }
            await fill()

        case let .deviceStatus(device, error):
            let previous = announcer.deviceErrors[device]
            let message = announcer.deviceChanged(device, error: error)
            if sparkplug != nil {
                sparkplugDeviceChanged(device, error: error, previous: previous)
            } else if machine.isConnected {
                publish(message)
            }

        case let .readBack(device, values):
            sparkplugReadBack(device: device, values: values)

        case .gapsRecorded:
            gaps.recorded()
            await reportGaps()

        case .tick:
            if machine.deadlinePassed(now: now()) {
                logger.warning("the broker did not acknowledge the offline status in time; stopping anyway")
                flushAcks()
                return .stop
            }
            flushAcks()
            endClosingSession(acknowledged: nil, session: nil)
            await dropUnpublishable()
            await reportGaps()
            await fill()
            if stats.due(now: now(), inflight: machine.inflightCount) { await publishStats() }

        case .shutdown:
            switch machine.shutdown() {
            case .stop:
                flushAcks()
                return .stop
            case .alreadyStopping:
                break
            case let .sendOfflineStatus(session):
                // The ingest service has committed its last polls: send what the window
                // takes (the rest waits in the outbox for the next start), then the
                // offline status. One connection delivers in order: once the status is
                // acknowledged, every data message sent before it has been too.
                await leaseForShutdown()
                await fill()
                guard let mid = publish(offlineMessage(session: session)) else {
                    machine.stop()
                    flushAcks()
                    return .stop
                }
                machine.offlineStatusSent(mid: mid, deadline: now() + settings.shutdownGrace)
            }
        }
        counters.update { $0.inflight = machine.inflightCount }
        return .go
    }

    /// The forwarder was cancelled (the service group's graceful period ran out):
    /// publishes the offline status (reason `shutdown`) unless it is out already,
    /// sending no more data. Returns its message id to await, nil when not connected.
    func offlineStatusOnCancellation() -> Int32? {
        if let mid = machine.offlineStatusMid { return mid }
        guard case let .sendOfflineStatus(session) = machine.shutdown() else { return nil }
        guard let mid = publish(offlineMessage(session: session)) else {
            machine.stop()
            return nil
        }
        machine.offlineStatusSent(mid: mid, deadline: now())
        return mid
    }

    /// True once the PUBACK of the offline status (`mid`) arrived; other PUBACKs
    /// taken meanwhile are booked as usual.
    func offlineStatusAcknowledged() -> Bool {
        var acknowledged = false
        for (session, mid) in pubacks.takeAll() {
            switch machine.acknowledged(session: session, mid: mid) {
            case let .data(outboxID):
                acks.add(outboxID)
                counters.update { $0.published += 1 }
            case .offlineStatus:
                acknowledged = true
            case .gap, .unknown:
                break
            }
        }
        flushAcks()
        return acknowledged
    }

    /// How soon a retry comes (a put-back message, rate-limited rows, an outbox write that
    /// failed): the old housekeeping tick's period.
    static let retryDelay = Duration.milliseconds(250)

    /// When the loop next needs a `.tick`, nil when nothing is due until an event comes.
    /// The live path needs none (commits, lease answers, PUBACKs and deletes are events):
    /// an idle forwarder wakes only for the stats (and, while one waits, the gap check, a
    /// retry, a read backoff, or a shutdown or NDEATH deadline).
    func nextWake(now instant: ContinuousClock.Instant) -> ContinuousClock.Instant? {
        var wake = stats.next
        func earliest(_ other: ContinuousClock.Instant?) {
            if let other, other < wake { wake = other }
        }
        if case let .stopping(_, deadline) = machine.state { earliest(deadline) }
        if let state = sparkplug, case let .closing(_, deadline) = state.births { earliest(deadline) }
        if retryPublishing || !unpublishable.isEmpty || !gaps.acknowledged.isEmpty {
            earliest(instant + Self.retryDelay)
        }
        // A backoff already over lets the next event's fill read (the tick at it did).
        if let retry = leaseBackoff.retryAt, retry > instant { earliest(retry) }
        if machine.readyForGaps { earliest(gaps.wake) }
        return wake
    }

    // MARK: - Publishing

    /// Sends as much as the window and the rate allow, one message per free slot,
    /// from rows leased ahead; asks for more while half a batch is still in hand.
    func fill() async {
        retryPublishing = false  // set again below if something still waits
        guard let session = machine.sessionID, machine.isConnected else { return }
        // A Sparkplug node sends no data before its births (nor while its primary host is offline).
        if sparkplug?.births.allowsData == false { return }
        // Acknowledged rows not yet deleted are sent again after a crash, as the messages in
        // flight are: they share the window, so what a crash sends again stays within one
        // window. Held back by them, the loop asks to be woken when a delete ends (`.deleted`).
        let deleting = outlets.awaitingDelete()
        let room = max(0, machine.room - deleting)
        var allowed = rate.allowance(room, now: now())
        // Rows held back by the rate alone go on the next retry (a free slot comes as a PUBACK).
        retryPublishing = allowed < room && machine.hasLeasedRows
        if allowed > 0 { observeClock() }
        let sparkplugFormat = settings.sparkplug != nil
        while allowed > 0, let (message, side) = machine.nextToPublish() {
            var outgoing: MQTTMessage
            var sequenced = false
            if sparkplugFormat {
                // Metric timestamps corrected as the JSON `ts` is (a row polled unsynchronised).
                guard let rendered = sparkplugData(message, pollTime: timestamps.correctedPollTime(for: message)) else {
                    unpublishable.append(message.id)  // dropped on the tick as a reported gap
                    continue
                }
                (outgoing, sequenced) = rendered
            } else {
                let payload = timestamps.payload(for: message, sealer: settings.sealer)
                outgoing = MQTTMessage(topic: message.topic, payload: payload, qos: Int(message.qos))
            }
            // MQTT 5 only: (boot, seq) readable without parsing (or opening) the payload.
            if userProperties {
                outgoing.userProperties = [MQTTUserProperty("boot", "\(message.boot)"),
                                           MQTTUserProperty("seq", "\(message.seq)")]
            }
            outgoing.messageExpiry = settings.messageExpiry
            do {
                let sent = try uplink.publish(outgoing)
                if sequenced { _ = sparkplug?.sequence.take() }
                rate.spend()
                allowed -= 1
                // Sent on a newer connection whose `.connected` is still on its way: that
                // session starts over from the outbox (a duplicate at worst).
                guard sent.session == session else { return }
                machine.published(message, session: sent.session, mid: sent.mid)
            } catch {
                publishErrors.note(error, logger: logger)
                switch error.kind {
                case .unpublishable:
                    unpublishable.append(message.id)  // dropped on the tick; the rest flows
                    continue
                case .brokerLimit:
                    continue  // skipped on this connection; it stays in the outbox
                case .notConnected, .transient:
                    machine.putBack(message, side: side)  // again after `retryDelay`, or on the next connection
                    retryPublishing = true
                    return
                }
            }
        }
        // Rows wait, the window has room, and rows awaiting deletion took it: woken by the
        // next delete that ends, or at once when one ended since `deleting` was read.
        if deleting > 0, machine.room > 0, machine.hasLeasedRows, !outlets.wakeWhenDeleted(deleting) {
            await fill()
            return
        }
        guard leaseBackoff.allows(now: now()), let request = machine.leaseRequest(batch: settings.leaseAhead) else {
            return
        }
        outlets.lease(request)
    }

    /// Reads the clock (cheap: the sync status is refreshed about once a second) for
    /// the corrections, and logs a step of the wall clock.
    @discardableResult
    private func observeClock() -> ClockReading {
        let reading = timeSource.now()
        if let step = timestamps.observe(reading) {
            logger.warning("the wall clock stepped; seq order stays the truth, nothing already sent is changed", metadata: [
                "step_ms": "\(step)", "clock_sync": "\(reading.sync.rawValue)",
            ])
        }
        return reading
    }

    /// Publishes one message (announcements, gap records, stats); returns its message
    /// id, nil when it could not be queued on the current session.
    @discardableResult
    func publish(_ message: MQTTMessage) -> Int32? {
        do {
            let sent = try uplink.publish(message)
            return sent.session == machine.sessionID ? sent.mid : nil
        } catch {
            publishErrors.note(error, logger: logger)
            return nil
        }
    }

    private func logSkipped() {
        guard publishErrors.skipped > 0 else { return }
        logger.error("messages skipped during the connection because the broker refused them", metadata: [
            "count": "\(publishErrors.skipped)",
        ])
    }

    /// Drops the messages MQTT can never carry: a counted, reported gap instead of a
    /// backlog that never drains. Kept for a retry if the outbox cannot write.
    private func dropUnpublishable() async {
        guard !unpublishable.isEmpty else { return }
        do {
            try await outbox.discardUnpublishable(unpublishable)
            unpublishable.removeAll()
            gaps.checkSoon(now: now())
            outboxErrors.succeeded(.dropUnpublishable, logger: logger)
        } catch {
            outboxErrors.failed(.dropUnpublishable, error, logger: logger)
        }
    }

    // MARK: - Reading

    private func noteLease(_ outcome: LeaseResult.Outcome) {
        switch outcome {
        case let .failed(error):
            if leaseBackoff.failed(now: now()) {
                logger.error("cannot read the outbox; retrying with backoff (up to every \(LeaseBackoff.longest))",
                             metadata: ["error": "\(error)"])
            }
        case .rows:
            if let failures = leaseBackoff.succeeded() {
                logger.info("reading the outbox works again", metadata: ["failed_reads": "\(failures)"])
            }
        }
    }

    /// At shutdown, reads what the window can still take right now instead of
    /// through the reader (its answer would come too late).
    private func leaseForShutdown() async {
        guard let (after, room) = machine.shutdownLease else { return }
        do {
            machine.leasedForShutdown(try await outbox.lease(after: after, max: room))
        } catch {
            logger.error("cannot read the outbox", metadata: ["error": "\(error)"])
        }
    }

    // MARK: - Acknowledgements, gaps, stats

    /// Hands the acknowledged ids to the outbox for deletion.
    private func flushAcks() {
        if let ids = acks.take() { outlets.delete(ids) }
    }

    private func reportGaps() async {
        if !gaps.acknowledged.isEmpty {
            do {
                try await outbox.markGapsReported(gaps.acknowledged)
                gaps.markedReported()
                outboxErrors.succeeded(.markGapsReported, logger: logger)
            } catch {
                outboxErrors.failed(.markGapsReported, error, logger: logger)
            }
        }
        guard machine.readyForGaps, let session = machine.sessionID, gaps.due(now: now()) else { return }
        let pending: [OutboxGap]
        do {
            pending = try await outbox.pendingGaps()
            outboxErrors.succeeded(.readGaps, logger: logger)
        } catch {
            gaps.readFailed()
            outboxErrors.failed(.readGaps, error, logger: logger)
            return
        }
        for gap in pending {
            guard let mid = publish(GapSchedule.message(gap, identity: settings.identity)) else { break }
            machine.gapSent(gap, session: session, mid: mid)
        }
    }

    private func publishStats() async {
        let polls = pollCounters.snapshot
        let forwarder = counters.value
        let buffered: OutboxStatistics
        do {
            buffered = try await outbox.statistics()
            outboxErrors.succeeded(.readStatistics, logger: logger)
        } catch {
            outboxErrors.failed(.readStatistics, error, logger: logger)
            return
        }
        logger.debug("stats", metadata: [
            "buffered": "\(buffered.bufferedMessages)", "published": "\(forwarder.published)",
            "dropped": "\(buffered.dropped)", "polls_failed": "\(polls.pollsFailed)",
        ])
        guard machine.isConnected else { return }
        let reading = observeClock()
        if sparkplug != nil {
            sparkplugStats(SparkplugNodeHealth(boot: outbox.boot, backlog: Int64(buffered.bufferedMessages),
                                               dropped: buffered.dropped, pollsFailed: Int64(polls.pollsFailed),
                                               pollOverruns: polls.overruns,
                                               commands: commandCounts))
            return
        }
        publish(StatsSchedule.message(identity: settings.identity, boot: outbox.boot, outbox: buffered,
                                      forwarder: forwarder, polls: polls, at: reading.wall,
                                      clock: .init(status: timeSource.status(), corrected: timestamps.corrected,
                                                   steps: timestamps.steps),
                                      commands: settings.commandCounters?.snapshot))
    }
}
