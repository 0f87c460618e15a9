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
    /// Poll slots skipped since start because a poll or its bus ran late: not zero
    /// means the gateway does not keep up with the configured poll intervals.
    case pollOverruns = "Gateway/Poll Overruns"
    /// DCMD received, executed, refused, failed since start (only with DCMD writes enabled).
    case commandsReceived = "Gateway/Commands Received"
    case commandsExecuted = "Gateway/Commands Executed"
    case commandsRefused = "Gateway/Commands Refused"
    case commandsFailed = "Gateway/Commands Failed"

    /// One of the command counters, which a node without DCMD writes does not have.
    var countsCommands: Bool {
        switch self {
        case .commandsReceived, .commandsExecuted, .commandsRefused, .commandsFailed: true
        case .bdSeq, .rebirth, .boot, .backlog, .dropped, .pollsFailed, .pollOverruns: false
        }
    }
}

/// The command counters of a node with DCMD writes (the JSON stats' `commands_*`).
public struct SparkplugCommandCounts: Sendable, Equatable {
    public var received: Int64
    public var executed: Int64
    public var refused: Int64
    public var failed: Int64

    public init(received: Int64, executed: Int64, refused: Int64, failed: Int64) {
        self.received = received
        self.executed = executed
        self.refused = refused
        self.failed = failed
    }
}

/// The gateway's health as the node metrics report it.
public struct SparkplugNodeHealth: Sendable, Equatable {
    public var boot: Int64
    public var backlog: Int64
    public var dropped: Int64
    public var pollsFailed: Int64
    public var pollOverruns: Int64
    /// Set on a node with DCMD writes.
    public var commands: SparkplugCommandCounts?

    public init(boot: Int64, backlog: Int64, dropped: Int64, pollsFailed: Int64, pollOverruns: Int64 = 0,
                commands: SparkplugCommandCounts? = nil) {
        self.boot = boot
        self.backlog = backlog
        self.dropped = dropped
        self.pollsFailed = pollsFailed
        self.pollOverruns = pollOverruns
        self.commands = commands
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
        /// Each metric's name as UTF-8, in `metrics` order: polls and stored rows list
        /// tags in configuration order, so the next expected name usually matches
        /// without hashing a string (`OrderedLookup`).
        var utf8Names: [[UInt8]]
    }

    public let topics: SparkplugTopics
    private let nodeAliases: [SparkplugNodeMetric: UInt64]
    let devices: [String: Device]
    /// Device names in configuration order.
    public let deviceNames: [String]

    /// - Parameter commands: the node runs DCMD writes, and counts them in node metrics.
    public init(topics: SparkplugTopics, devices configurations: [DeviceConfiguration], commands: Bool = false) {
        self.topics = topics
        var next: UInt64 = 1
        var nodeAliases: [SparkplugNodeMetric: UInt64] = [:]
        for metric in SparkplugNodeMetric.allCases where metric != .rebirth && (commands || !metric.countsCommands) {
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
                typeByName: Dictionary(metrics.map { ($0.name, $0.type) }, uniquingKeysWith: { first, _ in first }),
                utf8Names: metrics.map { Array($0.name.utf8) })
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
    ///
    /// Written field by field (ProtobufWire.swift), once per poll; the bytes are the ones
    /// swift-protobuf writes for the same metrics (SparkplugWireEncodingTests).
    public func storedDData(_ poll: DevicePoll, boot: Int64, seq: Int64) -> [UInt8] {
        let polled = Self.milliseconds(poll.timestamp)
        let device = devices[poll.device]
        var upperBound = 2 * (Self.metricOverhead + 16)
        for reading in poll.readings {
            upperBound += Self.metricOverhead + reading.tag.utf8.count
            if case let .success(.string(text)) = reading.value { upperBound += text.utf8.count }
        }
        return ProtobufWriter.bytes(upperBound: upperBound) { payload in
            var lookup = OrderedLookup(device)
            for (name, value) in [(SparkplugDeviceMetric.boot, boot), (SparkplugDeviceMetric.seq, seq)] {
                _ = lookup.metric(named: name.rawValue)
                let mark = payload.beginNested(Field.payloadMetrics)
                payload.lengthDelimited(Field.metricName, name.rawValue)
                payload.varintField(Field.metricTimestamp, polled)
                payload.varintField(Field.metricDatatype, UInt64(SparkplugDataType.int64.rawValue))
                payload.varintField(Field.metricLongValue, UInt64(bitPattern: value))
                payload.endNested(mark)
            }
            for reading in poll.readings {
                let type = lookup.metric(named: reading.tag)?.type ?? Self.guessedType(reading.value)
                let mark = payload.beginNested(Field.payloadMetrics)
                payload.lengthDelimited(Field.metricName, reading.tag)
                payload.varintField(Field.metricTimestamp, polled)
                payload.varintField(Field.metricDatatype, UInt64(type.rawValue))
                if case let .success(value) = reading.value, let encoded = try? SparkplugMetricValue(value, as: type) {
                    switch encoded {
                    case let .int(v): payload.varintField(Field.metricIntValue, UInt64(v))
                    case let .long(v): payload.varintField(Field.metricLongValue, v)
                    case let .float(v): payload.fixed32Field(Field.metricFloatValue, v.bitPattern)
                    case let .double(v): payload.fixed64Field(Field.metricDoubleValue, v.bitPattern)
                    case let .boolean(v): payload.varintField(Field.metricBooleanValue, v ? 1 : 0)
                    case let .string(v): payload.lengthDelimited(Field.metricStringValue, v)
                    }
                } else {
                    // A failed read, or a value its datatype cannot hold: is_null and Quality BAD.
                    payload.varintField(Field.metricIsNull, 1)
                    payload.lengthDelimited(Field.metricProperties, Self.qualityBad)
                }
                payload.endNested(mark)
            }
        }
    }

    /// Most bytes a stored metric takes besides its name and string value: the metric's
    /// key and length, the name's key and length, timestamp, datatype, and the largest
    /// value field (is_null with the Quality property).
    private static let metricOverhead = 1 + ProtobufWriter.reservedLength + 11 + 11 + 11 + 2 + 11 + qualityBad.count

    /// The published DDATA of a stored one: names replaced by this node's aliases
    /// (a name the configuration no longer has stays a name), `seq`, the payload
    /// timestamp (now: when it is sent) and, for data buffered before the current
    /// births, `is_historical` on every metric. With `corrected` (the true poll time of a
    /// row measured while the wall clock was unsynchronised) every metric timestamp is
    /// replaced by it, as the JSON path corrects `ts`. Copies every other field unchanged.
    public func wireDData(stored: [UInt8], device name: String, seq: UInt8, historical: Bool,
                          at date: Date, pollTime corrected: Date? = nil) throws(SparkplugRenderError) -> [UInt8] {
        let correctedMilliseconds = corrected.map(Self.milliseconds)
        let device = devices[name]
        do {
            return try stored.withUnsafeBytes { input in
                // Every field of the input (2 bytes at least) becomes at most 11 bytes, and each
                // metric gains at most is_historical and 2 bytes of length: 8 × the input bounds it.
                try ProtobufWriter.bytes(upperBound: 8 * input.count + 32) { (payload: inout ProtobufWriter) throws(ProtobufReader.Malformed) in
                    var lookup = OrderedLookup(device)
                    var reader = ProtobufReader(input)
                    while !reader.atEnd {
                        let field = try reader.next()
                        switch (field.number, field.wireType) {
                        case (Field.payloadMetrics, 2):
                            let mark = payload.beginNested(Field.payloadMetrics)
                            var fields = ProtobufReader(input, range: field.content)
                            while !fields.atEnd {
                                let inner = try fields.next()
                                switch (inner.number, inner.wireType) {
                                case (Field.metricName, 2):
                                    if let known = lookup.metric(utf8: fields.slice(inner.content)) {
                                        payload.varintField(Field.metricAlias, known.alias)
                                    } else {
                                        payload.raw(fields.slice(inner.raw))
                                    }
                                case (Field.metricIsHistorical, _):
                                    break  // set below
                                case (Field.metricTimestamp, 0):
                                    if let correctedMilliseconds {
                                        payload.varintField(Field.metricTimestamp, correctedMilliseconds)
                                    } else {
                                        payload.raw(fields.slice(inner.raw))
                                    }
                                default:
                                    payload.raw(fields.slice(inner.raw))
                                }
                            }
                            if historical { payload.varintField(Field.metricIsHistorical, 1) }
                            payload.endNested(mark)
                        case (Field.payloadTimestamp, _), (Field.payloadSeq, _):
                            break  // set below
                        default:
                            payload.raw(reader.slice(field.raw))
                        }
                    }
                    payload.varintField(Field.payloadTimestamp, Self.milliseconds(date))
                    payload.varintField(Field.payloadSeq, UInt64(seq))
                }
            }
        } catch {
            throw SparkplugRenderError(description: "stored DDATA of \(name) is not a Sparkplug payload")
        }
    }

    /// Finds a device's metrics by name, trying the one after the last match first.
    struct OrderedLookup {
        /// The device's metrics (none for a device the configuration does not have).
        private let metrics: [Metric]
        private let utf8Names: [[UInt8]]
        private let aliasByName: [String: UInt64]
        private var next = 0

        init(_ device: Device?) {
            metrics = device?.metrics ?? []
            utf8Names = device?.utf8Names ?? []
            aliasByName = device?.aliasByName ?? [:]
        }

        /// What the hot path needs of a metric (no strings: nothing to retain per lookup).
        struct Found {
            var alias: UInt64
            var type: SparkplugDataType
        }

        mutating func metric(named name: String) -> Found? {
            if next < metrics.count, metrics[next].name == name { return found(next) }
            guard let alias = aliasByName[name], let index = metrics.firstIndex(where: { $0.alias == alias }) else {
                return nil
            }
            return found(index)
        }

        mutating func metric(utf8 name: UnsafeRawBufferPointer) -> Found? {
            if next < utf8Names.count, utf8Names[next].withUnsafeBytes({ $0.elementsEqual(name) }) {
                return found(next)
            }
            return metric(named: String(decoding: name, as: UTF8.self))
        }

        private mutating func found(_ index: Int) -> Found {
            next = index + 1
            return Found(alias: metrics[index].alias, type: metrics[index].type)
        }
    }

    /// Field numbers of sparkplug_b.proto used by the hand-written DDATA path.
    private enum Field {
        static let payloadTimestamp: UInt64 = 1
        static let payloadMetrics: UInt64 = 2
        static let payloadSeq: UInt64 = 3
        static let metricName: UInt64 = 1
        static let metricAlias: UInt64 = 2
        static let metricTimestamp: UInt64 = 3
        static let metricDatatype: UInt64 = 4
        static let metricIsHistorical: UInt64 = 5
        static let metricIsNull: UInt64 = 7
        static let metricProperties: UInt64 = 9
        static let metricIntValue: UInt64 = 10
        static let metricLongValue: UInt64 = 11
        static let metricFloatValue: UInt64 = 12
        static let metricDoubleValue: UInt64 = 13
        static let metricBooleanValue: UInt64 = 14
        static let metricStringValue: UInt64 = 15
    }

    /// The PropertySet `{Quality: 0 (BAD)}`, serialized once.
    private static let qualityBad: [UInt8] = (try? SparkplugPayload.PropertySet.quality(.bad).serializedBytes()) ?? []

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
        var values: [(SparkplugNodeMetric, Int64, SparkplugDataType)] = [
            (.boot, health.boot, .int64), (.backlog, health.backlog, .uint64),
            (.dropped, health.dropped, .uint64), (.pollsFailed, health.pollsFailed, .uint64),
            (.pollOverruns, health.pollOverruns, .uint64),
        ]
        if let commands = health.commands, nodeAliases[.commandsReceived] != nil {
            values += [(.commandsReceived, commands.received, .uint64), (.commandsExecuted, commands.executed, .uint64),
                       (.commandsRefused, commands.refused, .uint64), (.commandsFailed, commands.failed, .uint64)]
        }
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
