// One Sparkplug B edge node: its metrics (node and device), their aliases, and the
// payloads of every message it sends. Pure: no I/O, no clock of its own.
import Foundation
import GatewayConfig
import Modbus
import SwiftProtobuf

public typealias SparkplugPayload = Org_Eclipse_Tahu_Protobuf_Payload
public typealias SparkplugMetric = Org_Eclipse_Tahu_Protobuf_Payload.Metric

/// The node-level metrics of the gateway (NBIRTH, NDATA, NDEATH).
public enum SparkplugNodeMetric: String, CaseIterable, Sendable {
    /// Birth/death sequence number: the same in the CONNECT's Will (NDEATH) and the NBIRTH.
    case bdSeq = "bdSeq"
    /// Writing true here (NCMD) asks for a new NBIRTH and every DBIRTH.
    case rebirth = "Node Control/Rebirth"
    /// The outbox's boot counter of this run.
    case boot = "Gateway/Boot"
    /// Messages waiting in the outbox.
    case backlog = "Gateway/Backlog"
    /// Messages the outbox had to drop (all time).
    case dropped = "Gateway/Dropped"
    /// Failed polls since start.
    case pollsFailed = "Gateway/Polls Failed"
}

/// The gateway's health as the node metrics report it.
public struct SparkplugNodeHealth: Sendable, Equatable {
    public var boot: Int64
    public var backlog: Int64
    public var dropped: Int64
    public var pollsFailed: Int64

    public init(boot: Int64, backlog: Int64, dropped: Int64, pollsFailed: Int64) {
        self.boot = boot
        self.backlog = backlog
        self.dropped = dropped
        self.pollsFailed = pollsFailed
    }
}

/// A tag's last known reading and when it was polled (a DBIRTH's current value).
public struct SparkplugReading: Sendable, Equatable {
    public var value: Result<TagValue, TagError>
    public var polled: Date

    public init(value: Result<TagValue, TagError>, polled: Date) {
        self.value = value
        self.polled = polled
    }
}

/// The device metrics every Sparkplug device of the gateway has besides its tags: the
/// `(boot, seq)` of the outbox message a DDATA came from, so continuity can be proven
/// as with the JSON scheme.
public enum SparkplugDeviceMetric: String, CaseIterable, Sendable {
    case boot = "Gateway/Boot"
    case seq = "Gateway/Seq"
}

/// Why a stored DDATA cannot be turned into a wire message.
public struct SparkplugRenderError: Error, CustomStringConvertible {
    public var description: String
}

/// The metrics and aliases of one edge node, and the payloads it publishes.
///
/// Aliases are numbered once from the configuration: node metrics first (except
/// `Node Control/Rebirth`, which Sparkplug says must have none), then each device's
/// two gateway metrics and its tags, in configuration order. They are unique across
/// the node (tck-id-payloads-alias-uniqueness).
public struct SparkplugNode: Sendable {
    struct Metric: Sendable {
        var name: String
        var alias: UInt64
        var type: SparkplugDataType
        var unit: String?
    }

    struct Device: Sendable {
        var name: String
        /// Gateway/Boot, Gateway/Seq, then the tags.
        var metrics: [Metric]
        var aliasByName: [String: UInt64]
        var typeByName: [String: SparkplugDataType]
    }

    public let topics: SparkplugTopics
    private let nodeAliases: [SparkplugNodeMetric: UInt64]
    private let devices: [String: Device]
    /// Device names in configuration order.
    public let deviceNames: [String]

    public init(topics: SparkplugTopics, devices configurations: [DeviceConfiguration]) {
        self.topics = topics
        var next: UInt64 = 1
        var nodeAliases: [SparkplugNodeMetric: UInt64] = [:]
        for metric in SparkplugNodeMetric.allCases where metric != .rebirth {
            nodeAliases[metric] = next
            next += 1
        }
        self.nodeAliases = nodeAliases
        var devices: [String: Device] = [:]
        for configuration in configurations {
            var metrics = SparkplugDeviceMetric.allCases.map { Metric(name: $0.rawValue, alias: 0, type: .int64) }
            metrics += configuration.tags.map { Metric(name: $0.name, alias: 0, type: SparkplugDataType(of: $0), unit: $0.unit) }
            for index in metrics.indices {
                metrics[index].alias = next
                next += 1
            }
            devices[configuration.name] = Device(
                name: configuration.name, metrics: metrics,
                aliasByName: Dictionary(metrics.map { ($0.name, $0.alias) }, uniquingKeysWith: { first, _ in first }),
                typeByName: Dictionary(metrics.map { ($0.name, $0.type) }, uniquingKeysWith: { first, _ in first }))
        }
        self.devices = devices
        deviceNames = configurations.map(\.name)
    }

    // MARK: - Node messages

    /// The NDEATH: only the `bdSeq` metric, no `seq` (tck-id-topics-ndeath-payload, -seq).
    /// Used as the Will of the CONNECT that carries `bdSeq` and for a clean stop.
    public func ndeath(bdSeq: UInt8, at date: Date) -> [UInt8] {
        var payload = SparkplugPayload()
        payload.timestamp = Self.milliseconds(date)
        payload.metrics = [bdSeqMetric(bdSeq, at: date)]
        return Self.serialize(payload)
    }

    /// The NBIRTH of a session: `seq` 0, `bdSeq` of the session's CONNECT,
    /// `Node Control/Rebirth` false (without alias), and the health metrics.
    public func nbirth(bdSeq: UInt8, health: SparkplugNodeHealth, at date: Date) -> [UInt8] {
        var payload = SparkplugPayload()
        payload.timestamp = Self.milliseconds(date)
        payload.seq = 0
        var rebirth = SparkplugMetric()
        rebirth.name = SparkplugNodeMetric.rebirth.rawValue
        rebirth.timestamp = Self.milliseconds(date)
        rebirth.datatype = SparkplugDataType.boolean.rawValue
        rebirth.booleanValue = false
        var bdSeqWithAlias = bdSeqMetric(bdSeq, at: date)  // a birth names and aliases every metric but Rebirth
        bdSeqWithAlias.alias = nodeAliases[.bdSeq]!  // every node metric but Rebirth has one (init)
        payload.metrics = [bdSeqWithAlias, rebirth] + healthMetrics(health, named: true, at: date)
        return Self.serialize(payload)
    }

    /// An NDATA with the health metrics (aliases only).
    public func ndata(health: SparkplugNodeHealth, seq: UInt8, at date: Date) -> [UInt8] {
        var payload = SparkplugPayload()
        payload.timestamp = Self.milliseconds(date)
        payload.seq = UInt64(seq)
        payload.metrics = healthMetrics(health, named: false, at: date)
        return Self.serialize(payload)
    }

    /// True when an NCMD payload asks for a rebirth (`Node Control/Rebirth` = true).
    public static func isRebirthRequest(_ ncmd: [UInt8]) -> Bool {
        guard let payload = try? SparkplugPayload(serializedBytes: ncmd) else { return false }
        return payload.metrics.contains {
            $0.name == SparkplugNodeMetric.rebirth.rawValue && $0.booleanValue == true
        }
    }

    // MARK: - Device messages

    /// The DBIRTH of `device`: every metric with name, alias, datatype, `engUnit`
    /// and its current value (`latest` by tag name), `is_null` where none is known.
    public func dbirth(device name: String, latest: [String: SparkplugReading], boot: Int64, seq: UInt8,
                       at date: Date) -> [UInt8]? {
        guard let device = devices[name] else { return nil }
        var payload = SparkplugPayload()
        payload.timestamp = Self.milliseconds(date)
        payload.seq = UInt64(seq)
        payload.metrics = device.metrics.map { definition in
            var metric = SparkplugMetric()
            metric.name = definition.name
            metric.alias = definition.alias
            metric.datatype = definition.type.rawValue
            metric.timestamp = Self.milliseconds(date)
            switch definition.name {
            case SparkplugDeviceMetric.boot.rawValue:
                metric.longValue = UInt64(bitPattern: boot)
            case SparkplugDeviceMetric.seq.rawValue:
                metric.isNull = true  // each DDATA carries the seq of its outbox message
            default:
                if let reading = latest[definition.name] {
                    metric.timestamp = Self.milliseconds(reading.polled)
                    Self.fill(&metric, reading.value, as: definition.type)
                } else {
                    metric.isNull = true  // not polled yet
                }
            }
            if let unit = definition.unit { metric.properties.add("engUnit", .string(unit)) }
            return metric
        }
        return Self.serialize(payload)
    }

    /// The DDEATH of `device` (only `seq` and the timestamp).
    public func ddeath(seq: UInt8, at date: Date) -> [UInt8] {
        var payload = SparkplugPayload()
        payload.timestamp = Self.milliseconds(date)
        payload.seq = UInt64(seq)
        return Self.serialize(payload)
    }

    /// What the outbox stores for one poll: a DDATA payload with metric names (no
    /// aliases), each metric's own poll time, its datatype and value (or `is_null` and
    /// Quality BAD for a failed tag), plus `Gateway/Boot` and `Gateway/Seq`; no payload
    /// `seq` or timestamp. `wireDData` turns it into what is published.
    public func storedDData(_ poll: DevicePoll, boot: Int64, seq: Int64) -> [UInt8] {
        var payload = SparkplugPayload()
        let polled = Self.milliseconds(poll.timestamp)
        let types = devices[poll.device]?.typeByName ?? [:]
        var metrics: [SparkplugMetric] = []
        metrics.reserveCapacity(poll.readings.count + 2)
        for (name, value) in [(SparkplugDeviceMetric.boot, boot), (.seq, seq)] {
            var metric = SparkplugMetric()
            metric.name = name.rawValue
            metric.timestamp = polled
            metric.datatype = SparkplugDataType.int64.rawValue
            metric.longValue = UInt64(bitPattern: value)
            metrics.append(metric)
        }
        for reading in poll.readings {
            var metric = SparkplugMetric()
            metric.name = reading.tag
            metric.timestamp = polled
            Self.fill(&metric, reading.value, as: types[reading.tag] ?? Self.guessedType(reading.value))
            metrics.append(metric)
        }
        payload.metrics = metrics
        return Self.serialize(payload)
    }

    /// The published DDATA of a stored one: names replaced by this node's aliases
    /// (a name the configuration no longer has stays a name), `seq`, the payload
    /// timestamp (now: when it is sent) and, for data buffered before the current
    /// births, `is_historical` on every metric.
    public func wireDData(stored: [UInt8], device name: String, seq: UInt8, historical: Bool,
                          at date: Date) throws(SparkplugRenderError) -> [UInt8] {
        var payload: SparkplugPayload
        do {
            payload = try SparkplugPayload(serializedBytes: stored)
        } catch {
            throw SparkplugRenderError(description: "stored DDATA of \(name) is not a Sparkplug payload: \(error)")
        }
        let aliases = devices[name]?.aliasByName ?? [:]
        for index in payload.metrics.indices {
            if let alias = aliases[payload.metrics[index].name] {
                payload.metrics[index].alias = alias
                payload.metrics[index].clearName()
            }
            if historical { payload.metrics[index].isHistorical = true }
        }
        payload.seq = UInt64(seq)
        payload.timestamp = Self.milliseconds(date)
        return Self.serialize(payload)
    }

    // MARK: - Pieces

    private func bdSeqMetric(_ bdSeq: UInt8, at date: Date) -> SparkplugMetric {
        var metric = SparkplugMetric()
        metric.name = SparkplugNodeMetric.bdSeq.rawValue
        metric.timestamp = Self.milliseconds(date)
        metric.datatype = SparkplugDataType.int64.rawValue
        metric.longValue = UInt64(bdSeq)
        return metric
    }

    private func healthMetrics(_ health: SparkplugNodeHealth, named: Bool, at date: Date) -> [SparkplugMetric] {
        let values: [(SparkplugNodeMetric, Int64, SparkplugDataType)] = [
            (.boot, health.boot, .int64), (.backlog, health.backlog, .uint64),
            (.dropped, health.dropped, .uint64), (.pollsFailed, health.pollsFailed, .uint64),
        ]
        return values.map { name, value, type in
            var metric = SparkplugMetric()
            if named { metric.name = name.rawValue }
            metric.alias = nodeAliases[name]!  // every node metric but Rebirth has one (init)
            metric.timestamp = Self.milliseconds(date)
            metric.datatype = type.rawValue
            metric.longValue = UInt64(bitPattern: max(value, type == .uint64 ? 0 : Int64.min))
            return metric
        }
    }

    static func fill(_ metric: inout SparkplugMetric, _ value: Result<TagValue, TagError>, as type: SparkplugDataType) {
        switch value {
        case let .success(value):
            do {
                try metric.set(value, as: type)
            } catch {
                metric.setBad(as: type)
            }
        case .failure:
            metric.setBad(as: type)
        }
    }

    /// The datatype of a value of a tag the configuration does not know (never for
    /// polls of configured devices).
    private static func guessedType(_ value: Result<TagValue, TagError>) -> SparkplugDataType {
        switch value {
        case .success(.integer): .int64
        case .success(.number), .failure: .double
        case .success(.bool): .boolean
        case .success(.string): .string
        }
    }

    /// Milliseconds since 1970 (UTC), Sparkplug's timestamps.
    public static func milliseconds(_ date: Date) -> UInt64 {
        UInt64(max(0, (date.timeIntervalSince1970 * 1000).rounded(.down)))
    }

    private static func serialize(_ payload: SparkplugPayload) -> [UInt8] {
        // Serializing a message with only known fields and no required ones cannot fail.
        (try? payload.serializedBytes()) ?? []
    }
}
