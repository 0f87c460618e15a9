// From the outbox to the broker: leases in replay order, keeps an inflight window,
// deletes only what the broker acknowledged, announces the gateway's state.
import Foundation
import GatewayConfig
import Logging
import Modbus
import MQTTUplink
import Outbox
import ServiceLifecycle
import Synchronization

/// Everything the forwarder reacts to, in one stream.
enum ForwarderEvent: Sendable {
    case mqtt(MQTTEvent)
    /// Rows up to this outbox id are committed.
    case outboxCommitted(newestID: Int64)
    case deviceStatus(device: String, error: String?)
    /// Housekeeping, every `ForwarderService.tickInterval`: acks, gaps, stats,
    /// rate limiting, shutdown deadline.
    case tick
    case shutdown
}

/// Counters the forwarder keeps for the stats topic.
public struct ForwarderCounters: Sendable, Equatable {
    /// Data messages the broker acknowledged since start.
    public var published: Int64 = 0
    public var inflight: Int = 0
    public var connected = false
}

/// Owns the MQTT uplink. Announces the gateway (birth, Last Will, clean offline
/// status), republishes device statuses after every connect, forwards outbox rows
/// and deletes them once acknowledged, reports gaps, publishes stats.
public final class ForwarderService: Service, Sendable {
    /// Acks are applied to the outbox in batches of at most this many.
    static let ackBatch = 256
    static let tickInterval = Duration.milliseconds(250)

    let identity: GatewayIdentity
    let maxInflight: Int
    let replay: ReplaySettings
    let outbox: Outbox
    let pollCounters: PollCounters
    let logger: Logger
    let uplink: MQTTUplink
    let countersState = Mutex(ForwarderCounters())
    let shutdownGrace: Duration
    private let events: AsyncStream<ForwarderEvent>
    private let eventSink: AsyncStream<ForwarderEvent>.Continuation

    public init(identity: GatewayIdentity, mqtt: MQTTSettings, replay: ReplaySettings = ReplaySettings(),
                outbox: Outbox, pollCounters: PollCounters, logger: Logger, shutdownGrace: Duration = .seconds(2)) {
        self.identity = identity
        self.maxInflight = mqtt.maxInflight
        self.replay = replay
        self.outbox = outbox
        self.pollCounters = pollCounters
        self.logger = logger
        self.shutdownGrace = shutdownGrace
        let (events, sink) = AsyncStream.makeStream(of: ForwarderEvent.self)
        self.events = events
        self.eventSink = sink
        let boot = outbox.boot
        let gateway = identity.id
        let statusTopic = identity.statusTopic
        uplink = MQTTUplink(
            settings: MQTTUplinkSettings(host: mqtt.host, port: mqtt.port, clientID: mqtt.clientID,
                                         keepalive: mqtt.keepalive, maxInflight: mqtt.maxInflight,
                                         reconnectMin: mqtt.reconnectMin, reconnectMax: mqtt.reconnectMax),
            logger: logger,
            will: {
                MQTTMessage(topic: statusTopic,
                            payload: MessageEncoding.status(state: "offline", gateway: gateway, boot: boot, at: Date(),
                                                            extra: ["reason": "connection lost"]),
                            qos: 1, retain: true)
            },
            onEvent: { sink.yield(.mqtt($0)) })
    }

    public var counters: ForwarderCounters { countersState.withLock { $0 } }

    /// Rows up to `newestID` are committed: lease them if the window allows.
    public func outboxCommitted(newestID: Int64) { eventSink.yield(.outboxCommitted(newestID: newestID)) }

    /// A device's status changed: `error` nil means online.
    public func deviceStatusChanged(device: String, error: String?) {
        eventSink.yield(.deviceStatus(device: device, error: error))
    }

    public func run() async throws {
        let loop = try await ForwardingLoop(service: self)
        uplink.start()
        defer { uplink.stop() }
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                let sink = eventSink
                group.addTask {
                    while (try? await Task.sleep(for: Self.tickInterval)) != nil {
                        sink.yield(.tick)
                    }
                }
                for await event in events {
                    if await loop.handle(event) == .stop { break }
                }
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.eventSink.yield(.shutdown)
        }
    }
}

/// The forwarder's state, owned by its `run()` task alone.
private final class ForwardingLoop {
    enum Next { case go, stop }

    /// One MQTT connection as the forwarder sees it.
    struct Session {
        var id: Int
        /// Highest outbox id sent in this session from the live side (everything
        /// for `oldest_first`).
        var liveCursor: Int64
        /// `live_first` only: the backlog is ids `backlogCursor + 1 ... backlogEnd`.
        var backlogCursor: Int64 = 0
        var backlogEnd: Int64 = 0
        /// mid → outbox id of data messages awaiting PUBACK.
        var inflight: [Int32: Int64] = [:]
        /// mid → gap record awaiting PUBACK.
        var gapsInflight: [Int32: OutboxGap] = [:]
        /// True when the last lease found nothing to send.
        var drained = false
    }

    let service: ForwarderService
    var session: Session?
    var pendingAcks: [Int64] = []
    var deviceErrors: [String: String?] = [:]
    var newestCommittedID: Int64
    var stopping = false
    var offlineStatusMid: Int32?
    var stopDeadline: ContinuousClock.Instant?
    var nextStats: ContinuousClock.Instant
    var nextGapCheck = ContinuousClock.now
    /// Token bucket for `replay.max_rate`.
    var tokens: Double = 0
    var tokensUpdated = ContinuousClock.now

    var outbox: Outbox { service.outbox }
    var logger: Logger { service.logger }
    var identity: GatewayIdentity { service.identity }

    init(service: ForwarderService) async throws {
        self.service = service
        newestCommittedID = try await service.outbox.newestID()
        nextStats = ContinuousClock.now + service.identity.statsInterval
    }

    func handle(_ event: ForwarderEvent) async -> Next {
        switch event {
        case let .mqtt(.connected(id)):
            await connected(session: id)

        case let .mqtt(.disconnected(id, _)):
            guard session?.id == id else { break }
            // What was in flight stays in the outbox and goes again next session.
            session = nil
            service.countersState.withLock { $0.connected = false; $0.inflight = 0 }
            await flushAcks()
            if stopping { return .stop }

        case .mqtt(.connectFailed):
            if stopping { return .stop }

        case let .mqtt(.published(id, mid)):
            guard session?.id == id else { break }
            if mid == offlineStatusMid {
                await flushAcks()
                return .stop
            }
            await acknowledged(mid: mid)

        case .mqtt(.message):
            break

        case let .outboxCommitted(newestID):
            newestCommittedID = max(newestCommittedID, newestID)
            if session != nil {
                session?.drained = false
                await fill()
            }

        case let .deviceStatus(device, error):
            deviceErrors[device] = .some(error)
            if session != nil {
                publishRetained(identity.deviceStatusTopic(device: device), devicePayload(error))
            }

        case .tick:
            if let stopDeadline, ContinuousClock.now >= stopDeadline {
                logger.warning("the broker did not acknowledge the offline status in time; stopping anyway")
                await flushAcks()
                return .stop
            }
            await flushAcks()
            await reportGaps()
            await fill()
            if ContinuousClock.now >= nextStats {
                nextStats = ContinuousClock.now + identity.statsInterval
                await publishStats()
            }

        case .shutdown:
            guard session != nil else {
                stopping = true
                await flushAcks()
                return .stop
            }
            // The ingest service has committed its last polls: send what the window
            // takes (the rest waits in the outbox for the next start), then the
            // offline status. One connection delivers in order: once the status is
            // acknowledged, every data message sent before it has been too.
            await fill()
            stopping = true
            offlineStatusMid = publishRetained(
                identity.statusTopic,
                MessageEncoding.status(state: "offline", gateway: identity.id, boot: outbox.boot, at: Date(),
                                       extra: ["reason": "shutdown"]))
            if offlineStatusMid == nil {
                await flushAcks()
                return .stop
            }
            stopDeadline = ContinuousClock.now + service.shutdownGrace
        }
        return .go
    }

    private func connected(session id: Int) async {
        var fresh = Session(id: id, liveCursor: 0)
        if service.replay.order == .liveFirst {
            // What is committed now is the backlog; whatever comes after goes first.
            fresh.liveCursor = newestCommittedID
            fresh.backlogEnd = newestCommittedID
        }
        session = fresh
        service.countersState.withLock { $0.connected = true }
        logger.info("connected to broker", metadata: [
            "broker": "\(service.uplink.settings.endpoint)", "session": "\(id)",
        ])
        var extra: KeyValuePairs<String, String> = [:]
        if let quarantined = outbox.quarantinedPath {
            extra = ["outbox_quarantined": quarantined]
        }
        publishRetained(identity.statusTopic,
                        MessageEncoding.status(state: "online", gateway: identity.id, boot: outbox.boot,
                                               at: Date(), extra: extra))
        for (device, error) in deviceErrors.sorted(by: { $0.key < $1.key }) {
            publishRetained(identity.deviceStatusTopic(device: device), devicePayload(error))
        }
        nextGapCheck = ContinuousClock.now
        await reportGaps()
        await fill()
    }

    private func acknowledged(mid: Int32) async {
        guard session != nil else { return }
        if let gap = session!.gapsInflight.removeValue(forKey: mid) {
            do {
                try await outbox.markGapsReported([gap])
            } catch {
                logger.error("cannot mark a gap record reported", metadata: ["error": "\(error)"])
            }
            return
        }
        guard let outboxID = session!.inflight.removeValue(forKey: mid) else { return }
        pendingAcks.append(outboxID)
        let inflight = session!.inflight.count
        service.countersState.withLock { $0.published += 1; $0.inflight = inflight }
        if pendingAcks.count >= ForwarderService.ackBatch || (session!.drained && inflight == 0) {
            await flushAcks()
        }
        if inflight <= service.maxInflight / 2 {
            await fill()
        }
    }

    private func flushAcks() async {
        guard !pendingAcks.isEmpty else { return }
        let ids = pendingAcks
        pendingAcks.removeAll(keepingCapacity: true)
        do {
            try await outbox.acknowledge(ids)
        } catch {
            // Not deleted means sent again later: a duplicate, never a loss.
            logger.error("cannot delete acknowledged messages", metadata: ["count": "\(ids.count)", "error": "\(error)"])
        }
    }

    /// How many messages the rate limit allows now (all of `wanted` when unlimited).
    private func allowance(_ wanted: Int) -> Int {
        let rate = service.replay.maxRate
        guard rate > 0 else { return wanted }
        let now = ContinuousClock.now
        let elapsed = Double((now - tokensUpdated) / .milliseconds(1)) / 1000
        tokensUpdated = now
        // At most a quarter second's worth at once: the burst stays small.
        tokens = min(tokens + elapsed * Double(rate), max(1, Double(rate) / 4))
        return min(wanted, Int(tokens))
    }

    /// Sends as much as the window and the rate allow, in replay order.
    private func fill() async {
        guard !stopping, var current = session else { return }
        defer {
            session = current
            service.countersState.withLock { $0.inflight = current.inflight.count }
        }
        while current.inflight.count < service.maxInflight {
            let room = allowance(service.maxInflight - current.inflight.count)
            if room == 0 { return }
            let batch: [OutboxMessage]
            var fromBacklog = false
            do {
                batch = try await nextBatch(&current, room: room, fromBacklog: &fromBacklog)
            } catch {
                logger.error("cannot read the outbox", metadata: ["error": "\(error)"])
                return
            }
            if batch.isEmpty {
                current.drained = true
                return
            }
            for message in batch {
                let sent: (session: Int, mid: Int32)
                do {
                    sent = try service.uplink.publish(MQTTMessage(topic: message.topic, payload: message.payload,
                                                                  qos: Int(message.qos)))
                } catch {
                    return  // the connection went; its disconnect event follows
                }
                guard sent.session == current.id else { return }
                tokens -= 1
                current.inflight[sent.mid] = message.id
                if fromBacklog { current.backlogCursor = message.id } else { current.liveCursor = message.id }
            }
        }
    }

    /// The next rows to send: for `live_first` what is newer than the backlog
    /// first, then the backlog; otherwise simply the oldest unsent.
    private func nextBatch(_ current: inout Session, room: Int, fromBacklog: inout Bool) async throws -> [OutboxMessage] {
        let live = try await outbox.lease(after: current.liveCursor, max: room)
        if !live.isEmpty || current.backlogCursor >= current.backlogEnd { return live }
        fromBacklog = true
        let backlog = try await outbox.lease(after: current.backlogCursor, max: room)
            .prefix { $0.id <= current.backlogEnd }
        if backlog.isEmpty { current.backlogCursor = current.backlogEnd }
        return Array(backlog)
    }

    private func reportGaps() async {
        guard var current = session, current.gapsInflight.isEmpty, ContinuousClock.now >= nextGapCheck else { return }
        nextGapCheck = ContinuousClock.now + .seconds(1)
        let gaps: [OutboxGap]
        do {
            gaps = try await outbox.pendingGaps()
        } catch {
            logger.error("cannot read gap records", metadata: ["error": "\(error)"])
            return
        }
        guard !gaps.isEmpty else { return }
        for gap in gaps {
            let payload = MessageEncoding.gap(gateway: identity.id, boot: gap.boot, firstSeq: gap.firstSeq,
                                              lastSeq: gap.lastSeq, count: gap.count, reason: gap.reason, at: Date())
            guard let sent = try? service.uplink.publish(MQTTMessage(topic: identity.gapsTopic, payload: payload, qos: 1)),
                  sent.session == current.id
            else { break }
            current.gapsInflight[sent.mid] = gap
        }
        session = current
    }

    @discardableResult
    private func publishRetained(_ topic: String, _ payload: [UInt8]) -> Int32? {
        try? service.uplink.publish(MQTTMessage(topic: topic, payload: payload, qos: 1, retain: true)).mid
    }

    private func devicePayload(_ error: String?) -> [UInt8] {
        MessageEncoding.status(state: error == nil ? "online" : "offline", gateway: identity.id,
                               boot: outbox.boot, at: Date(), extra: error.map { ["error": $0] } ?? [:])
    }

    private func publishStats() async {
        let polls = service.pollCounters.snapshot
        let forwarder = service.counters
        let buffered: OutboxStatistics
        do {
            buffered = try await outbox.statistics()
        } catch {
            logger.error("cannot read outbox statistics", metadata: ["error": "\(error)"])
            return
        }
        logger.debug("stats", metadata: [
            "buffered": "\(buffered.bufferedMessages)", "published": "\(forwarder.published)",
            "dropped": "\(buffered.dropped)", "polls_failed": "\(polls.pollsFailed)",
        ])
        guard session != nil else { return }
        let oldest = buffered.oldestAge.map { Int64($0 / .milliseconds(1)) }
        let payload = MessageEncoding.counters([
            ("buffered_messages", Int64(buffered.bufferedMessages)),
            ("buffered_bytes", buffered.bufferedBytes),
            ("oldest_age_ms", oldest),
            ("dropped", buffered.dropped),
            ("published", forwarder.published),
            ("inflight", Int64(forwarder.inflight)),
            ("polls_ok", polls.pollsOK),
            ("polls_failed", polls.pollsFailed),
            ("poll_overruns", polls.overruns),
        ], gateway: identity.id, boot: outbox.boot, at: Date())
        _ = try? service.uplink.publish(MQTTMessage(topic: identity.statsTopic, payload: payload, qos: 0))
    }
}
