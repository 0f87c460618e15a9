// From the outbox to the broker: leases in replay order, keeps an inflight window,
// deletes only what the broker acknowledged, announces the gateway's state.
import DequeModule
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
    /// Any MQTT event but PUBACKs, which arrive through `PubackQueue`.
    case mqtt(MQTTEvent)
    /// `PubackQueue` went from empty to not empty.
    case pubacks
    /// The reader's answer to a `LeaseRequest`.
    case leased(LeaseResult)
    /// Rows up to this outbox id are committed.
    case outboxCommitted(newestID: Int64)
    case deviceStatus(device: String, error: String?)
    /// Housekeeping, every `ForwarderService.tickInterval`: acks, gaps, stats,
    /// rate limiting, shutdown deadline.
    case tick
    case shutdown
}

/// What to read next from the outbox, for one session.
struct LeaseRequest: Sendable {
    enum Side: Sendable { case live, backlog }

    var session: Int
    var side: Side
    /// Rows with a greater id are wanted.
    var cursor: Int64
    /// `.live`: the newest id known committed when asking; when nothing is found,
    /// every row up to it is gone (acknowledged or dropped) and the cursor moves
    /// past it. `.backlog`: the backlog's last id; nothing beyond it is wanted.
    var limit: Int64
    var max: Int
}

/// Rows read for a `LeaseRequest`, and where its side's cursor goes next.
struct LeaseResult: Sendable {
    var session: Int
    var side: LeaseRequest.Side
    var rows: [OutboxMessage]
    var cursor: Int64
}

/// Acknowledgements from the network thread, waiting for the forwarder.
final class PubackQueue: Sendable {
    private let queued = Mutex<[(session: Int, mid: Int32)]>([])

    /// Returns true when the queue was empty: the caller wakes the forwarder.
    func append(session: Int, mid: Int32) -> Bool {
        queued.withLock { queue in
            queue.append((session, mid))
            return queue.count == 1
        }
    }

    func takeAll() -> [(session: Int, mid: Int32)] {
        queued.withLock { queue in
            defer { queue.removeAll(keepingCapacity: true) }
            return queue
        }
    }
}

/// Counters the forwarder keeps for the stats topic.
public struct ForwarderCounters: Sendable, Equatable {
    /// Data messages the broker acknowledged since start.
    public var published: Int64 = 0
    public var inflight: Int = 0
    public var connected = false
    /// Why the last connection attempt failed or the last connection ended; nil while connected.
    public var uplinkProblem: String?
}

/// Owns the MQTT uplink. Announces the gateway (birth, Last Will, clean offline
/// status), republishes device statuses after every connect, forwards outbox rows
/// and deletes them once acknowledged, reports gaps, publishes stats.
public final class ForwarderService: Service, Sendable {
    /// Acks are applied to the outbox in batches of at most this many.
    static let ackBatch = 1024
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
    private let acks: AsyncStream<[Int64]>
    let ackSink: AsyncStream<[Int64]>.Continuation
    private let leaseRequests: AsyncStream<LeaseRequest>
    let leaseSink: AsyncStream<LeaseRequest>.Continuation
    let pubacks = PubackQueue()
    /// Devices whose retained meta topic is published after every connect.
    let announcedDevices = Mutex<[DeviceConfiguration]>([])
    /// Beaten each time the forwarding loop handles a tick (see `WatchdogService`).
    public let heartbeat = Heartbeat(name: "forwarder")

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
        (acks, ackSink) = AsyncStream.makeStream(of: [Int64].self)
        (leaseRequests, leaseSink) = AsyncStream.makeStream(of: LeaseRequest.self)
        let boot = outbox.boot
        let gateway = identity.id
        let statusTopic = identity.statusTopic
        uplink = MQTTUplink(
            settings: MQTTUplinkSettings(host: mqtt.host, port: mqtt.port, clientID: mqtt.clientID,
                                         keepalive: mqtt.keepalive, maxInflight: mqtt.maxInflight,
                                         reconnectMin: mqtt.reconnectMin, reconnectMax: mqtt.reconnectMax)
                .secured(by: mqtt)
                .bound(interface: mqtt.bindInterface, address: mqtt.bindAddress),
            logger: logger,
            will: { session in
                MQTTMessage(topic: statusTopic,
                            payload: MessageEncoding.gatewayStatus(.offline(.connectionLost), gateway: gateway,
                                                                   boot: boot, session: session, at: Date()),
                            qos: 1, retain: true)
            },
            onEvent: { [pubacks] event in
                // PUBACKs come in bursts: queue them and wake the forwarder once per
                // burst instead of once per message.
                guard case let .published(session, mid) = event else {
                    sink.yield(.mqtt(event))
                    return
                }
                if pubacks.append(session: session, mid: mid) { sink.yield(.pubacks) }
            })
    }

    public var counters: ForwarderCounters { countersState.withLock { $0 } }

    /// Publishes (retained, after every connect) `<prefix>/<gw>/<device>/meta` for each device.
    public func announce(devices: [DeviceConfiguration]) {
        announcedDevices.withLock { $0 = devices }
    }

    /// Rows up to `newestID` are committed: lease them if the window allows.
    public func outboxCommitted(newestID: Int64) { eventSink.yield(.outboxCommitted(newestID: newestID)) }

    /// A device's status changed: `error` nil means online.
    public func deviceStatusChanged(device: String, error: String?) {
        eventSink.yield(.deviceStatus(device: device, error: error))
    }

    public func run() async throws {
        let loop = try await ForwardingLoop(service: self)
        heartbeat.beat()  // turning: the outbox answered
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
                // Rows are read ahead and acknowledged rows deleted beside the
                // forwarding, so neither a read nor an fsync stalls the window.
                group.addTask { await self.readAhead() }
                async let acksWritten: Void = deleteAcknowledged()
                for await event in events {
                    if await loop.handle(event) == .stop { break }
                }
                ackSink.finish()
                await acksWritten
                leaseSink.finish()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.eventSink.yield(.shutdown)
        }
    }
}

extension ForwarderService {
    /// Answers lease requests, one at a time.
    private func readAhead() async {
        for await request in leaseRequests {
            var result = LeaseResult(session: request.session, side: request.side, rows: [], cursor: request.cursor)
            do {
                let rows = try await outbox.lease(after: request.cursor, max: request.max)
                switch request.side {
                case .live:
                    result.rows = rows
                    result.cursor = rows.last?.id ?? max(request.cursor, request.limit)
                case .backlog:
                    result.rows = rows.filter { $0.id <= request.limit }
                    // Short of what was asked, or cut at the limit: the backlog is done.
                    let done = rows.count < request.max || result.rows.count < rows.count
                    result.cursor = done ? request.limit : result.rows.last?.id ?? request.limit
                }
            } catch {
                logger.error("cannot read the outbox", metadata: ["error": "\(error)"])
            }
            eventSink.yield(.leased(result))
        }
    }

    /// Deletes acknowledged rows, batch by batch, until the forwarder stops.
    private func deleteAcknowledged() async {
        for await ids in acks {
            do {
                try await outbox.acknowledge(ids)
            } catch {
                // Not deleted means sent again later: a duplicate, never a loss.
                logger.error("cannot delete acknowledged messages", metadata: [
                    "count": "\(ids.count)", "error": "\(error)",
                ])
            }
        }
    }
}

/// The forwarder's state, owned by its `run()` task alone.
private final class ForwardingLoop {
    enum Next { case go, stop }

    /// Rows read from the outbox per lease: fewer reads than one per window slot.
    static let leaseAhead = 512

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
        /// Rows leased ahead, not yet published (the cursors are past them);
        /// `live` goes first.
        var live: Deque<OutboxMessage> = []
        var backlog: Deque<OutboxMessage> = []
        /// A lease request is out; its answer comes as `.leased`.
        var leasing = false

        /// Nothing leased is waiting and nothing more is known to be committed.
        func drained(newestCommitted: Int64) -> Bool {
            live.isEmpty && backlog.isEmpty && !leasing && liveCursor >= newestCommitted
                && backlogCursor >= backlogEnd
        }
    }

    let service: ForwarderService
    var session: Session?
    var pendingAcks: [Int64] = []
    /// Gap records the broker acknowledged, to be marked reported.
    var reportedGaps: [OutboxGap] = []
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

        case let .mqtt(.disconnected(id, reason)):
            guard session?.id == id else { break }
            // What was in flight stays in the outbox and goes again next session.
            session = nil
            service.countersState.withLock { $0.connected = false; $0.inflight = 0; $0.uplinkProblem = reason }
            flushAcks()
            if stopping { return .stop }

        case let .mqtt(.connectFailed(reason, _)):
            service.countersState.withLock { $0.uplinkProblem = reason }
            if stopping { return .stop }

        case .pubacks:
            for (id, mid) in service.pubacks.takeAll() where session?.id == id {
                if mid == offlineStatusMid {
                    flushAcks()
                    return .stop
                }
                acknowledged(mid: mid)
            }
            if let current = session, pendingAcks.count >= ForwarderService.ackBatch
                || (current.inflight.isEmpty && current.drained(newestCommitted: newestCommittedID)) {
                flushAcks()
            }
            await fill()

        case .mqtt(.published):
            break  // delivered through `.pubacks`

        case let .leased(result):
            guard session?.id == result.session else { break }
            session!.leasing = false
            switch result.side {
            case .live:
                session!.liveCursor = result.cursor
                session!.live.append(contentsOf: result.rows)
            case .backlog:
                session!.backlogCursor = result.cursor
                session!.backlog.append(contentsOf: result.rows)
            }
            await fill()

        case .mqtt(.message):
            break

        case let .outboxCommitted(newestID):
            newestCommittedID = max(newestCommittedID, newestID)
            await fill()

        case let .deviceStatus(device, error):
            deviceErrors[device] = .some(error)
            if session != nil {
                publishRetained(identity.deviceStatusTopic(device: device), devicePayload(error))
            }

        case .tick:
            service.heartbeat.beat()
            if let stopDeadline, ContinuousClock.now >= stopDeadline {
                logger.warning("the broker did not acknowledge the offline status in time; stopping anyway")
                flushAcks()
                return .stop
            }
            flushAcks()
            await reportGaps()
            await fill()
            if ContinuousClock.now >= nextStats {
                nextStats = ContinuousClock.now + identity.statsInterval
                await publishStats()
            }

        case .shutdown:
            guard session != nil else {
                stopping = true
                flushAcks()
                return .stop
            }
            // The ingest service has committed its last polls: send what the window
            // takes (the rest waits in the outbox for the next start), then the
            // offline status. One connection delivers in order: once the status is
            // acknowledged, every data message sent before it has been too.
            await leaseForShutdown()
            await fill()
            stopping = true
            offlineStatusMid = publishRetained(
                identity.statusTopic,
                MessageEncoding.gatewayStatus(.offline(.shutdown), gateway: identity.id, boot: outbox.boot,
                                              session: session!.id, at: Date()))
            if offlineStatusMid == nil {
                flushAcks()
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
        service.countersState.withLock { $0.connected = true; $0.uplinkProblem = nil }
        logger.info("connected to broker", metadata: [
            "broker": "\(service.uplink.settings.endpoint)", "session": "\(id)",
        ])
        let birth = GatewayStatus.Birth(statsInterval: identity.statsInterval, previousBoot: outbox.previousBoot,
                                        quarantinedOutbox: outbox.quarantinedPath)
        publishRetained(identity.statusTopic,
                        MessageEncoding.gatewayStatus(.online(birth), gateway: identity.id, boot: outbox.boot,
                                                      session: id, at: Date()))
        for (device, error) in deviceErrors.sorted(by: { $0.key < $1.key }) {
            publishRetained(identity.deviceStatusTopic(device: device), devicePayload(error))
        }
        for device in service.announcedDevices.withLock({ $0 }) {
            publishRetained(identity.deviceMetaTopic(device: device.name),
                            MessageEncoding.deviceMeta(device, gateway: identity.id, boot: outbox.boot, at: Date()))
        }
        nextGapCheck = ContinuousClock.now
        await reportGaps()
        await fill()
    }

    /// Books one PUBACK: a gap record is marked reported later (on the tick), a
    /// data message goes to the next ack batch.
    private func acknowledged(mid: Int32) {
        if let gap = session!.gapsInflight.removeValue(forKey: mid) {
            reportedGaps.append(gap)
            return
        }
        guard let outboxID = session!.inflight.removeValue(forKey: mid) else { return }
        pendingAcks.append(outboxID)
        let inflight = session!.inflight.count
        service.countersState.withLock { $0.published += 1; $0.inflight = inflight }
    }

    /// Hands the acknowledged ids to the deleting task.
    private func flushAcks() {
        guard !pendingAcks.isEmpty else { return }
        service.ackSink.yield(pendingAcks)
        pendingAcks.removeAll(keepingCapacity: true)
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

    /// At shutdown, reads what the window can still take right now instead of
    /// through the reader (its answer would come too late).
    private func leaseForShutdown() async {
        guard var current = session.take() else { return }
        defer { session = current }
        let room = service.maxInflight - current.inflight.count - current.live.count
        guard room > 0 else { return }
        do {
            let rows = try await outbox.lease(after: current.liveCursor, max: room)
            current.live.append(contentsOf: rows)
            current.liveCursor = rows.last?.id ?? current.liveCursor
        } catch {
            logger.error("cannot read the outbox", metadata: ["error": "\(error)"])
        }
    }

    /// Sends as much as the window and the rate allow, one message per free slot,
    /// from rows leased ahead; asks for more while half a batch is still in hand.
    private func fill() async {
        // Moved out, not copied: a copy would duplicate the window and the leased
        // rows on every call (copy-on-write).
        guard !stopping, var current = session.take() else { return }
        defer {
            session = current
            service.countersState.withLock { $0.inflight = current.inflight.count }
        }
        var room = allowance(service.maxInflight - current.inflight.count)
        while room > 0, let message = current.live.popFirst() ?? current.backlog.popFirst() {
            let sent: (session: Int, mid: Int32)
            do {
                sent = try service.uplink.publish(MQTTMessage(topic: message.topic, payload: message.payload,
                                                              qos: Int(message.qos)))
            } catch {
                return  // the connection went; its disconnect event follows
            }
            guard sent.session == current.id else { return }
            tokens -= 1
            room -= 1
            current.inflight[sent.mid] = message.id
        }
        guard !current.leasing else { return }
        if current.liveCursor < newestCommittedID && current.live.count < Self.leaseAhead / 2 {
            current.leasing = true
            service.leaseSink.yield(LeaseRequest(session: current.id, side: .live, cursor: current.liveCursor,
                                                 limit: newestCommittedID, max: Self.leaseAhead))
        } else if current.backlogCursor < current.backlogEnd && current.backlog.count < Self.leaseAhead / 2 {
            current.leasing = true
            service.leaseSink.yield(LeaseRequest(session: current.id, side: .backlog, cursor: current.backlogCursor,
                                                 limit: current.backlogEnd, max: Self.leaseAhead))
        }
    }

    private func reportGaps() async {
        if !reportedGaps.isEmpty {
            do {
                try await outbox.markGapsReported(reportedGaps)
                reportedGaps.removeAll()
            } catch {
                logger.error("cannot mark gap records reported", metadata: ["error": "\(error)"])
            }
        }
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
        MessageEncoding.deviceStatus(error: error, gateway: identity.id, boot: outbox.boot, at: Date())
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
            ("seq_committed", buffered.seqCommitted),
            ("published", forwarder.published),
            ("inflight", Int64(forwarder.inflight)),
            ("polls_ok", polls.pollsOK),
            ("polls_failed", polls.pollsFailed),
            ("poll_overruns", polls.overruns),
            ("polls_unchanged", polls.pollsUnchanged),
            ("modbus_requests", polls.requests),
        ], gateway: identity.id, boot: outbox.boot, at: Date())
        _ = try? service.uplink.publish(MQTTMessage(topic: identity.statsTopic, payload: payload, qos: 0))
    }
}
