// Small fakes for the forwarder's two ports, a hand-moved clock, a log recorder, and a
// harness that drives a `ForwardingLoop` the way `ForwarderService` does, in process.
import Foundation
@testable import Gateway
import GatewayClock
import GatewayConfig
import Logging
import Modbus
import MQTTUplink
import Outbox
import Sealing
import Synchronization
import Testing

/// An MQTT connection that records what is published and acknowledges on request.
final class FakeUplink: UplinkPublishing {
    struct Sent: Sendable {
        var session: Int
        var mid: Int32
        var message: MQTTMessage
        var acknowledged = false
    }

    private struct State {
        var session: Int?
        var nextMid: Int32 = 1
        var sent: [Sent] = []
        /// Topic → the error a publish to it gets.
        var failing: [String: MQTTPublishError.Kind] = [:]
    }

    private let state = Mutex(State())
    let mqtt5: Bool

    init(mqtt5: Bool = false) {
        self.mqtt5 = mqtt5
    }

    func connect(session: Int) { state.withLock { $0.session = session } }
    func disconnect() { state.withLock { $0.session = nil } }

    func fail(topic: String, with kind: MQTTPublishError.Kind?) {
        state.withLock { $0.failing[topic] = kind }
    }

    func publish(_ message: MQTTMessage) throws(MQTTPublishError) -> (session: Int, mid: Int32) {
        try state.withLock { state throws(MQTTPublishError) in
            guard let session = state.session else {
                throw MQTTPublishError(kind: .notConnected, code: nil, cause: "not connected", topic: message.topic,
                                       payloadBytes: message.payload.count)
            }
            if let kind = state.failing[message.topic] {
                let (code, cause): (Int32, String) = switch kind {
                case .unpublishable: (18, "Malformed UTF-8: the topic is too long")
                case .brokerLimit: (25, "Packet larger than the broker's maximum packet size")
                case .transient, .notConnected: (1, "Out of memory.")
                }
                throw MQTTPublishError(kind: kind, code: code, cause: cause,
                                       topic: message.topic, payloadBytes: message.payload.count)
            }
            let mid = state.nextMid
            state.nextMid += 1
            state.sent.append(Sent(session: session, mid: mid, message: message))
            return (session, mid)
        }
    }

    var sent: [Sent] { state.withLock { $0.sent } }

    /// Marks up to `limit` unacknowledged messages of the current session acknowledged
    /// (oldest first, `topic` only if given) and returns their (session, mid).
    func acknowledge(limit: Int = .max, topic: String? = nil) -> [(session: Int, mid: Int32)] {
        state.withLock { state in
            var acked: [(Int, Int32)] = []
            for index in state.sent.indices where acked.count < limit {
                let sent = state.sent[index]
                guard !sent.acknowledged, sent.session == state.session,
                      topic == nil || sent.message.topic == topic else { continue }
                state.sent[index].acknowledged = true
                acked.append((sent.session, sent.mid))
            }
            return acked
        }
    }
}

struct FakeOutboxError: Error, CustomStringConvertible {
    var description: String { "disk I/O error (fake)" }
}

/// An outbox in memory: rows in id order, deletes by id, reads that can be made to fail.
final class FakeOutbox: OutboxReading {
    let boot: Int64 = 1
    let previousBoot: OutboxBootEnd? = nil
    let quarantinedPath: String? = nil
    let bootRecovery: BootRecovery? = nil

    private struct State {
        var rows: [OutboxMessage] = []
        var nextID: Int64 = 1
        var deleted: [Int64] = []
        var discarded: [Int64] = []
        var leaseCalls = 0
        var leasesFail = false
        var gaps: [OutboxGap] = []
        var gapsFail = false
        var reportedGaps: [OutboxGap] = []
    }

    private let state = Mutex(State())

    /// Commits `count` messages on `topic`; returns the newest id.
    @discardableResult
    func commit(_ count: Int, topic: String = "edge/gw-test/boiler-1/data",
                payload: ((Int64) -> [UInt8])? = nil) -> Int64 {
        state.withLock { state in
            for _ in 0..<count {
                let id = state.nextID
                state.nextID += 1
                state.rows.append(OutboxMessage(id: id, boot: 1, seq: id, topic: topic, qos: 1,
                                                payload: payload?(id) ?? Array("{\"seq\":\(id)}".utf8), createdAt: Date()))
            }
            return state.nextID - 1
        }
    }

    /// Commits messages with these payloads and measurements on `topic`; returns the newest id.
    @discardableResult
    func commit(_ rows: [(payload: [UInt8], measured: MeasuredAt?)], topic: String) -> Int64 {
        state.withLock { state in
            for row in rows {
                let id = state.nextID
                state.nextID += 1
                state.rows.append(OutboxMessage(id: id, boot: 1, seq: id, topic: topic, qos: 1, payload: row.payload,
                                                createdAt: Date(), measured: row.measured))
            }
            return state.nextID - 1
        }
    }

    /// The rows after `id`, as a commit hands them on (not counted as a read).
    func rows(after id: Int64) -> [OutboxMessage] { state.withLock { $0.rows.filter { $0.id > id } } }

    func failLeases(_ fail: Bool) { state.withLock { $0.leasesFail = fail } }
    var leaseCalls: Int { state.withLock { $0.leaseCalls } }
    var remainingIDs: [Int64] { state.withLock { $0.rows.map(\.id) } }
    var deletedIDs: [Int64] { state.withLock { $0.deleted } }
    var discardedIDs: [Int64] { state.withLock { $0.discarded } }

    func newestID() async throws -> Int64 { state.withLock { $0.nextID - 1 } }

    func lease(after id: Int64, max: Int) async throws -> [OutboxMessage] {
        try state.withLock { state in
            state.leaseCalls += 1
            if state.leasesFail { throw FakeOutboxError() }
            return Array(state.rows.filter { $0.id > id }.prefix(max))
        }
    }

    func acknowledge(_ ids: [Int64]) async throws {
        state.withLock { state in
            let gone = Set(ids)
            state.deleted += state.rows.filter { gone.contains($0.id) }.map(\.id)
            state.rows.removeAll { gone.contains($0.id) }
        }
    }

    func discardUnpublishable(_ ids: [Int64]) async throws {
        state.withLock { state in
            let gone = Set(ids)
            state.discarded += state.rows.filter { gone.contains($0.id) }.map(\.id)
            state.rows.removeAll { gone.contains($0.id) }
        }
    }

    func record(_ gap: OutboxGap) { state.withLock { $0.gaps.append(gap) } }
    var reportedGaps: [OutboxGap] { state.withLock { $0.reportedGaps } }

    func failGapReads(_ fail: Bool) { state.withLock { $0.gapsFail = fail } }

    func pendingGaps() async throws -> [OutboxGap] {
        try state.withLock { state in
            if state.gapsFail { throw FakeOutboxError() }
            return state.gaps
        }
    }

    func markGapsReported(_ gaps: [OutboxGap]) async throws {
        state.withLock { state in
            state.reportedGaps += gaps
            state.gaps.removeAll { gap in gaps.contains(gap) }
        }
    }
    func statistics() async throws -> OutboxStatistics { throw FakeOutboxError() }
}

/// Log lines, recorded.
final class LogRecorder: Sendable {
    struct Line: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: Logger.Metadata
    }

    private let recorded = Mutex<[Line]>([])

    var lines: [Line] { recorded.withLock { $0 } }

    func lines(containing text: String) -> [Line] { lines.filter { $0.message.contains(text) } }

    var logger: Logger {
        Logger(label: "forwarder-test") { _ in Handler(recorder: self) }
    }

    fileprivate func record(_ line: Line) { recorded.withLock { $0.append(line) } }

    private struct Handler: LogHandler {
        let recorder: LogRecorder
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        func log(event: LogEvent) {
            recorder.record(Line(level: event.level, message: "\(event.message)",
                                 metadata: metadata.merging(event.metadata ?? [:]) { $1 }))
        }

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
    }
}

/// Drives a `ForwardingLoop` like `ForwarderService` does, but in one task and in
/// virtual time: lease requests and ack batches are served at once by `settle()`.
final class ForwarderHarness {
    static let identity = GatewayIdentity(id: "gw-test", statsInterval: .seconds(3600))
    static let dataTopic = identity.dataTopic(device: "boiler-1")

    let uplink: FakeUplink
    let outbox = FakeOutbox()
    let logs = LogRecorder()
    private let clock = Clock()
    private let queue = Outlets()
    private(set) var loop: ForwardingLoop!

    /// Virtual time, moved by the test only.
    final class Clock {
        var now = ContinuousClock.now
    }

    /// What the loop asked of the reader and the deleter, not yet served.
    final class Outlets {
        var leases: [LeaseRequest] = []
        var deletes: [[Int64]] = []
        /// Set: ack batches wait (a slow outbox delete) and count as awaiting deletion.
        var holdDeletes = false
    }

    /// Makes the outbox delete slow (`true`) or serves what it held back (`false`).
    func holdDeletes(_ hold: Bool) async throws {
        queue.holdDeletes = hold
        if !hold { try await settle() }
    }

    /// The counters the loop keeps (stats, status line).
    let counters = ForwarderCounterState()

    init(replay: ReplaySettings = ReplaySettings(), maxInflight: Int = 10, shutdownGrace: Duration = .seconds(2),
         timeSource: any TimeSource = KernelClock(), sealer: Sealer? = nil, sparkplug: SparkplugEdge? = nil,
         mqtt5: Bool = false) {
        uplink = FakeUplink(mqtt5: mqtt5)
        let clock = clock
        let queue = queue
        loop = ForwardingLoop(
            settings: .init(identity: Self.identity, replay: replay, maxInflight: maxInflight, shutdownGrace: shutdownGrace,
                            sealer: sealer, sparkplug: sparkplug),
            uplink: uplink, outbox: outbox, newestCommitted: 0, pubacks: PubackQueue(),
            counters: counters, pollCounters: PollCounters(), devices: { [] },
            outlets: .init(lease: { queue.leases.append($0) }, delete: { queue.deletes.append($0) },
                           awaitingDelete: { queue.holdDeletes ? queue.deletes.reduce(0) { $0 + $1.count } : 0 }),
            logger: logs.logger, timeSource: timeSource, now: { clock.now })
    }

    var now: ContinuousClock.Instant { clock.now }

    /// Hands `event` to the loop, then serves what it asked for until nothing is left.
    @discardableResult
    func send(_ event: ForwarderEvent) async throws -> ForwardingLoop.Next {
        let next = await loop.handle(event)
        try await settle()
        return next
    }

    /// Serves lease requests and ack batches, feeding answers back, until quiet. A
    /// loop that keeps asking (a retry without backoff) fails the test.
    func settle() async throws {
        for _ in 0..<1000 {
            if !queue.deletes.isEmpty, !queue.holdDeletes {
                try await outbox.acknowledge(queue.deletes.removeFirst())
            } else if !queue.leases.isEmpty {
                let request = queue.leases.removeFirst()
                let result: LeaseResult
                do {
                    result = request.answer(try await outbox.lease(after: request.cursor, max: request.max))
                } catch {
                    result = request.failed(error)
                }
                _ = await loop.handle(.leased(result))
            } else {
                return
            }
        }
        Issue.record("the forwarder keeps asking for reads without pause")
    }

    func connect(session: Int) async throws {
        uplink.connect(session: session)
        try await send(.mqtt(.connected(session: session)))
    }

    func disconnect(session: Int) async throws {
        uplink.disconnect()
        try await send(.mqtt(.disconnected(session: session, reason: "The connection was lost.")))
    }

    func commit(_ count: Int, topic: String = dataTopic) async throws {
        let newest = outbox.commit(count, topic: topic)
        try await send(.outboxCommitted(newestID: newest))
    }

    /// Commits `count` messages and hands them on with the commit event, as the ingest does.
    func commitHandingRows(_ count: Int, topic: String = dataTopic) async throws {
        let newest = outbox.commit(count, topic: topic)
        try await send(.outboxCommitted(newestID: newest, rows: outbox.rows(after: newest - Int64(count))))
    }

    /// The broker acknowledges (up to `limit` of) what is in flight.
    @discardableResult
    func acknowledge(limit: Int = .max, topic: String? = nil) async throws -> ForwardingLoop.Next {
        var woke = false
        for (session, mid) in uplink.acknowledge(limit: limit, topic: topic) {
            woke = loop.pubacks.append(session: session, mid: mid) || woke
        }
        return woke ? try await send(.pubacks) : .go
    }

    /// The outbox writes a gap record and says so (`Outbox.whenGapsRecorded`).
    func recordGap(_ gap: OutboxGap) async throws {
        outbox.record(gap)
        try await send(.gapsRecorded)
    }

    /// How long from now until the loop wants its next tick (`ForwardingLoop.nextWake`).
    var wakeIn: Duration? { loop.nextWake(now: clock.now).map { $0 - clock.now } }

    /// Time passes until the instant the loop asked to be woken at, and the tick comes,
    /// as `ForwarderService`'s alarm does it. Returns how long that was; nil (and no tick)
    /// when the loop asked for no wake-up.
    @discardableResult
    func tickWhenDue() async throws -> Duration? {
        guard let wake = loop.nextWake(now: clock.now) else { return nil }
        let waited = max(.zero, wake - clock.now)
        clock.now += waited
        try await send(.tick)
        return waited
    }

    /// Time passes by `step` and the tick comes.
    @discardableResult
    func tick(_ step: Duration = .milliseconds(250)) async throws -> ForwardingLoop.Next {
        clock.now += step
        return try await send(.tick)
    }

    /// Outbox ids of the data messages published, in order.
    var publishedIDs: [Int64] {
        uplink.sent.filter { $0.message.topic == Self.dataTopic }.compactMap { sent in
            let text = String(decoding: sent.message.payload, as: UTF8.self)
            return Int64(text.dropFirst("{\"seq\":".count).dropLast())
        }
    }

    /// Gateway status messages published, as JSON.
    var statuses: [[String: Any]] {
        uplink.sent.filter { $0.message.topic == Self.identity.statusTopic }.compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.message.payload))) as? [String: Any]
        }
    }
}
