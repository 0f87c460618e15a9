// The gateway as a Sparkplug B edge node (`mqtt.format: sparkplug`): the parts shared
// between threads (bdSeq of each CONNECT, each tag's latest reading) and the
// forwarding loop's per-session state (seq, births, the primary host's STATE).
import Foundation
import GatewayConfig
import Logging
import Modbus
import MQTTUplink
import Outbox
import SparkplugB
import Synchronization

/// What the uplink thread, the bus threads and the forwarding loop share about the
/// Sparkplug edge node.
public final class SparkplugEdge: Sendable {
    public let node: SparkplugNode
    public let settings: SparkplugSettings
    private let nextBdSeq: @Sendable () throws -> UInt8
    private let logger: Logger
    /// bdSeq of each session's CONNECT (the last few sessions).
    private let bdSeqs = Mutex<[Int: UInt8]>([:])
    /// Device → tag → latest reading (DBIRTH's current values).
    private let latest = Mutex<[String: [String: SparkplugReading]]>([:])

    /// - Parameter commands: DCMD writes are enabled (the node metrics count them).
    /// - Parameter nextBdSeq: takes and records the bdSeq of the next CONNECT (the outbox's).
    public init(settings: SparkplugSettings, identity: GatewayIdentity, devices: [DeviceConfiguration],
                logger: Logger, commands: Bool = false, nextBdSeq: @escaping @Sendable () throws -> UInt8) {
        self.settings = settings
        node = SparkplugNode(topics: SparkplugTopics(group: settings.groupID, node: identity.id), devices: devices,
                             commands: commands)
        self.nextBdSeq = nextBdSeq
        self.logger = logger
    }

    /// The Will of `session`'s CONNECT: NDEATH with the next bdSeq, QoS 1, not retained
    /// (tck-id-message-flow-edge-node-birth-publish-will-message-*). Called on the
    /// uplink's thread right before CONNECT; the bdSeq is recorded in the outbox first,
    /// so a restart never reuses it. If the outbox cannot record it, the one after the
    /// previous session's is used anyway (the node must still connect).
    func will(session: Int) -> MQTTMessage {
        let bdSeq: UInt8
        do {
            bdSeq = try nextBdSeq()
        } catch {
            let previous = bdSeqs.withLock { $0[session - 1] }
            bdSeq = previous.map { $0 &+ 1 } ?? 0
            logger.error("cannot record the Sparkplug bdSeq in the outbox; a restart may repeat it", metadata: [
                "bdSeq": "\(bdSeq)", "error": "\(error)",
            ])
        }
        bdSeqs.withLock { table in
            table[session] = bdSeq
            table = table.filter { $0.key > session - 8 }
        }
        return MQTTMessage(topic: node.topics.ndeath, payload: node.ndeath(bdSeq: bdSeq, at: Date()), qos: 1, retain: false)
    }

    /// The bdSeq sent in `session`'s Will.
    func bdSeq(session: Int) -> UInt8? { bdSeqs.withLock { $0[session] } }

    /// Remembers a poll's readings as the tags' current values. Called from bus threads.
    public func note(_ poll: DevicePoll) {
        latest.withLock { devices in
            for reading in poll.readings {
                devices[poll.device, default: [:]][reading.tag] = SparkplugReading(value: reading.value, polled: poll.timestamp)
            }
        }
    }

    /// Remembers values read back after a write as the tags' current values.
    func note(device: String, values: [(tag: String, value: Result<TagValue, TagError>)], at date: Date) {
        latest.withLock { devices in
            for (tag, value) in values {
                devices[device, default: [:]][tag] = SparkplugReading(value: value, polled: date)
            }
        }
    }

    func latestReadings(device: String) -> [String: SparkplugReading] {
        latest.withLock { $0[device] ?? [:] }
    }
}

/// A primary host application's state, from its retained `spBv1.0/STATE/<host>`
/// (Sparkplug 3.0: `{"online":true|false,"timestamp":<ms>}`).
struct PrimaryHostState: Equatable {
    var online: Bool
    var timestamp: UInt64

    init(online: Bool, timestamp: UInt64) {
        self.online = online
        self.timestamp = timestamp
    }

    /// nil when the payload is not a 3.0 STATE message.
    init?(payload: [UInt8]) {
        struct Wire: Decodable {
            var online: Bool
            var timestamp: UInt64
        }
        guard let wire = try? JSONDecoder().decode(Wire.self, from: Data(payload)) else { return nil }
        self.init(online: wire.online, timestamp: wire.timestamp)
    }
}

/// The forwarding loop's Sparkplug state for the current MQTT session.
struct SparkplugSession {
    enum Births: Equatable {
        /// Not sent on this connection: no data goes out.
        case pending
        /// The primary host went offline: NDEATH (message `ndeath` of this session) is
        /// out and no data goes out; the DISCONNECT waits for its PUBACK (or `deadline`),
        /// since libmosquitto closes the socket right after writing DISCONNECT and an
        /// unread PUBACK would make that close a reset, which the broker takes for a
        /// lost connection and answers with the Will: a second NDEATH.
        case closing(ndeath: Int32, deadline: ContinuousClock.Instant)

        /// Data may go out only after the births of this connection.
        var allowsData: Bool {
            if case .sent = self { return true }
            return false
        }
        /// NBIRTH and every DBIRTH went out; rows up to `historicalUpTo` were committed
        /// before them and go out as historical data.
        case sent(historicalUpTo: Int64)
    }

    let edge: SparkplugEdge
    var sequence = SparkplugSequence()
    var births = Births.pending
    /// The newest STATE of the primary host (kept across sessions: its timestamps only grow).
    var host: PrimaryHostState?
    /// Highest outbox id known to be committed.
    var newestCommitted: Int64

    init(edge: SparkplugEdge, newestCommitted: Int64) {
        self.edge = edge
        self.newestCommitted = newestCommitted
    }

    var node: SparkplugNode { edge.node }

    /// Births may go out: no primary host is configured, or it said online.
    var hostAllowsBirth: Bool {
        edge.settings.primaryHostID == nil || host?.online == true
    }

    /// The topic filters to subscribe to after every connect, at QoS 1
    /// (tck-id-message-flow-edge-node-ncmd-subscribe).
    var subscriptions: [String] {
        [node.topics.ncmd, node.topics.dcmdFilter]
            + (edge.settings.primaryHostID.map { [SparkplugTopics.state(host: $0)] } ?? [])
    }

    /// Applies a STATE message. Returns the new state when it counts: an online STATE
    /// whose timestamp is not older than the last one seen
    /// (tck-id-message-flow-edge-node-birth-publish-phid-wait-timestamp), or an
    /// offline one not older than the last online
    /// (tck-id-operational-behavior-edge-node-termination-host-offline-timestamp).
    mutating func apply(_ state: PrimaryHostState) -> PrimaryHostState? {
        if let host, state.timestamp < host.timestamp { return nil }
        host = state
        return state
    }
}
