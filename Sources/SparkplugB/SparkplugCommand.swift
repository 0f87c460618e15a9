// A DCMD as the values a host asks to write (metrics named or aliased as in the
// device's DBIRTH, of the datatype the DBIRTH gave them), and the DDATA that reports
// the values read back after a write. Pure: no I/O.
import Foundation
import Modbus
import SwiftProtobuf

/// Why a DCMD's metrics cannot be turned into values to write.
public struct SparkplugCommandProblem: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Not a Sparkplug payload, no metrics, too many, or a metric without name and alias.
        case malformed
        /// No metric of the device has that name or alias.
        case unknownMetric
        /// A metric of the gateway's own (`Gateway/Boot`, `Gateway/Seq`), not a tag.
        case gatewayMetric
        /// The DCMD's datatype differs from the DBIRTH's, or the value is of another kind.
        case wrongType
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}

extension SparkplugNode {
    /// Most metrics one DCMD may set (as a JSON command's tags).
    public static let maxCommandMetrics = 64

    /// The DCMD payload, or why it is not one.
    public static func parseCommand(_ bytes: [UInt8]) -> Result<SparkplugPayload, SparkplugCommandProblem> {
        guard let payload = try? SparkplugPayload(serializedBytes: bytes) else {
            return .failure(SparkplugCommandProblem(.malformed, "the DCMD payload is not a Sparkplug B protobuf payload"))
        }
        guard !payload.metrics.isEmpty, payload.metrics.count <= maxCommandMetrics else {
            return .failure(SparkplugCommandProblem(
                .malformed, "the DCMD has \(payload.metrics.count) metrics; a command sets 1...\(maxCommandMetrics)"))
        }
        return .success(payload)
    }

    /// True when this node has a device named `name`.
    public func hasDevice(_ name: String) -> Bool { devices[name] != nil }

    /// Each metric of a DCMD for `device` as a tag name and a value, in the DCMD's
    /// order. A metric is found by name, else by alias (the DBIRTH's); a metric that
    /// names both must name the same one. Its `datatype`, when given, must be the
    /// DBIRTH's, and its value field the one that datatype uses. Signed integers
    /// narrower than 64 bits are read from `int_value` as written at their own width
    /// (Int16 −1 as 65535, as Tahu's Python core writes) or sign-extended to 32 bits
    /// (as Tahu Java writes). Whether the tag is writable and the value fits its
    /// register is for the caller.
    public func commandValues(_ payload: SparkplugPayload, device name: String)
        -> Result<[(tag: String, value: TagValue)], SparkplugCommandProblem> {
        guard let device = devices[name] else {
            return .failure(SparkplugCommandProblem(.unknownMetric, "edge node \(topics.node) has no device '\(name)'"))
        }
        var values: [(tag: String, value: TagValue)] = []
        for (index, metric) in payload.metrics.enumerated() {
            let definition: Metric
            switch resolve(metric, in: device, index: index) {
            case let .success(found): definition = found
            case let .failure(problem): return .failure(problem)
            }
            if SparkplugDeviceMetric(rawValue: definition.name) != nil {
                return .failure(SparkplugCommandProblem(
                    .gatewayMetric, "metric '\(definition.name)' of device '\(name)' is the gateway's own, not a tag, and is never written"))
            }
            if metric.hasDatatype, metric.datatype != definition.type.rawValue {
                return .failure(SparkplugCommandProblem(
                    .wrongType, "metric '\(definition.name)' is \(definition.type) (datatype \(definition.type.rawValue)) in the DBIRTH, "
                        + "but the DCMD says datatype \(metric.datatype)"))
            }
            switch Self.value(of: metric, as: definition.type) {
            case let .some(value): values.append((definition.name, value))
            case .none:
                return .failure(SparkplugCommandProblem(
                    .wrongType, "metric '\(definition.name)' is \(definition.type): the DCMD carries "
                        + "\(metric.isNull ? "a null value" : Self.describe(metric.value)) instead of its \(definition.type) value"))
            }
        }
        return .success(values)
    }

    private func resolve(_ metric: SparkplugMetric, in device: Device, index: Int) -> Result<Metric, SparkplugCommandProblem> {
        let byAlias = metric.hasAlias ? device.metrics.first { $0.alias == metric.alias } : nil
        if metric.hasName, !metric.name.isEmpty {
            guard let named = device.metrics.first(where: { $0.name == metric.name }) else {
                return .failure(SparkplugCommandProblem(.unknownMetric, "device '\(device.name)' has no metric '\(Self.excerpt(metric.name))' "
                    + "(writable metrics are the tags the DBIRTH lists)"))
            }
            if metric.hasAlias, byAlias?.name != named.name {
                return .failure(SparkplugCommandProblem(
                    .malformed, "metric '\(named.name)' is sent with alias \(metric.alias), which is "
                        + (byAlias.map { "'\($0.name)'" } ?? "no metric of device '\(device.name)'") + " (its alias is \(named.alias))"))
            }
            return .success(named)
        }
        guard metric.hasAlias else {
            return .failure(SparkplugCommandProblem(.malformed, "DCMD metric \(index) has neither a name nor an alias"))
        }
        guard let byAlias else {
            return .failure(SparkplugCommandProblem(.unknownMetric, "device '\(device.name)' has no metric with alias \(metric.alias) "
                + "(aliases are the DBIRTH's)"))
        }
        return .success(byAlias)
    }

    /// The value of `metric` as a metric of `type`; nil when it carries no value of that type.
    static func value(of metric: SparkplugMetric, as type: SparkplugDataType) -> TagValue? {
        guard !metric.isNull else { return nil }
        func signed(_ bits: Int) -> TagValue? {
            let raw: UInt64
            switch metric.value {
            case let .intValue(v): raw = UInt64(v)
            case let .longValue(v): raw = v
            default: return nil
            }
            let low = raw & ((1 << UInt64(bits)) - 1)
            let atWidth = Int64(low) - (low >> UInt64(bits - 1) == 1 ? 1 << Int64(bits) : 0)
            // Written at its own width, or sign-extended to 32 or 64 bits.
            if raw == low || raw == UInt64(UInt32(truncatingIfNeeded: atWidth)) || raw == UInt64(bitPattern: atWidth) {
                return .integer(atWidth)
            }
            return nil
        }
        func unsigned(_ bits: Int) -> TagValue? {
            let raw: UInt64
            switch metric.value {
            case let .intValue(v): raw = UInt64(v)
            case let .longValue(v): raw = v
            default: return nil
            }
            guard bits == 64 || raw >> UInt64(bits) == 0 else { return nil }
            return raw > UInt64(Int64.max) ? .number(Double(raw)) : .integer(Int64(raw))
        }
        switch type {
        case .int8: return signed(8)
        case .int16: return signed(16)
        case .int32: return signed(32)
        case .int64:
            guard case let .longValue(v) = metric.value else { return nil }
            return .integer(Int64(bitPattern: v))
        case .uint8: return unsigned(8)
        case .uint16: return unsigned(16)
        case .uint32: return unsigned(32)
        case .uint64:
            guard case .longValue = metric.value else { return nil }
            return unsigned(64)
        case .float:
            guard case let .floatValue(v) = metric.value else { return nil }
            return .number(Double(v))
        case .double:
            guard case let .doubleValue(v) = metric.value else { return nil }
            return .number(v)
        case .boolean:
            guard case let .booleanValue(v) = metric.value else { return nil }
            return .bool(v)
        case .string:
            guard case let .stringValue(v) = metric.value else { return nil }
            return .string(v)
        }
    }

    private static func describe(_ value: SparkplugMetric.OneOf_Value?) -> String {
        switch value {
        case .none: return "no value"
        case .intValue: return "an int_value"
        case .longValue: return "a long_value"
        case .floatValue: return "a float_value"
        case .doubleValue: return "a double_value"
        case .booleanValue: return "a boolean_value"
        case .stringValue: return "a string_value"
        default: return "another kind of value"
        }
    }

    private static func excerpt(_ text: String) -> String {
        text.count > 64 ? String(text.prefix(64)) + "…" : text
    }

    /// The DDATA that reports values read back from `device` after a write: each
    /// metric by alias with its datatype, the read-back value (`is_null` and Quality
    /// BAD when it could not be read) and the time it was read.
    public func readBackDData(device name: String, values: [(tag: String, value: Result<TagValue, TagError>)],
                              seq: UInt8, at date: Date) -> [UInt8]? {
        guard let device = devices[name] else { return nil }
        var payload = SparkplugPayload()
        payload.timestamp = Self.milliseconds(date)
        payload.seq = UInt64(seq)
        payload.metrics = values.compactMap { tag, value in
            guard let definition = device.metrics.first(where: { $0.name == tag }) else { return nil }
            var metric = SparkplugMetric()
            metric.alias = definition.alias
            metric.timestamp = Self.milliseconds(date)
            Self.fill(&metric, value, as: definition.type)
            return metric
        }
        guard !payload.metrics.isEmpty else { return nil }
        return (try? payload.serializedBytes()) ?? nil
    }
}
