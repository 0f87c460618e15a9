// Sparkplug B datatypes of the gateway's tags and how a value is put into a metric.
import GatewayConfig
import Modbus

/// The Sparkplug B datatypes the gateway uses (their enum values in sparkplug_b.proto).
public enum SparkplugDataType: UInt32, Sendable, Equatable {
    case int8 = 1, int16 = 2, int32 = 3, int64 = 4
    case uint8 = 5, uint16 = 6, uint32 = 7, uint64 = 8
    case float = 9, double = 10, boolean = 11, string = 12

    /// The datatype of a tag: its Modbus type one to one (int16 → Int16, …, float32 →
    /// Float, float64 → Double, bool → Boolean, string → String), except that an integer
    /// tag with a scale or an offset publishes a real number and becomes Double.
    public init(of tag: TagConfiguration) {
        let scaled = tag.scale != 1 || tag.offset != 0
        switch tag.type {
        case .int16: self = scaled ? .double : .int16
        case .uint16: self = scaled ? .double : .uint16
        case .int32: self = scaled ? .double : .int32
        case .uint32: self = scaled ? .double : .uint32
        case .int64: self = scaled ? .double : .int64
        case .uint64: self = scaled ? .double : .uint64
        case .float32: self = .float
        case .float64: self = .double
        case .bool: self = .boolean
        case .string: self = .string
        }
    }
}

/// Why a value cannot be written as a metric of its datatype.
public struct SparkplugValueError: Error, Equatable, CustomStringConvertible {
    public var description: String
}

/// A metric's value in the field sparkplug_b.proto gives its datatype.
enum SparkplugMetricValue: Equatable {
    case int(UInt32)
    case long(UInt64)
    case float(Float)
    case double(Double)
    case boolean(Bool)
    case string(String)

    /// The value field for `value` as a metric of `type`.
    ///
    /// Signed integers narrower than 64 bits go into the uint32 `int_value` as their
    /// two's complement at their own width (Int16 −1 → 65535, Int32 −1 → 4294967295),
    /// as Eclipse Tahu's Python core writes them; Tahu Java's decoder reads that back
    /// by a narrowing cast. Int64 goes into `long_value` as its 64-bit two's complement.
    init(_ value: TagValue, as type: SparkplugDataType) throws(SparkplugValueError) {
        switch (type, value) {
        case let (.int8, .integer(v)): self = .int(UInt32(UInt8(bitPattern: try Self.exact(v, Int8.self))))
        case let (.int16, .integer(v)): self = .int(UInt32(UInt16(bitPattern: try Self.exact(v, Int16.self))))
        case let (.int32, .integer(v)): self = .int(UInt32(bitPattern: try Self.exact(v, Int32.self)))
        case let (.int64, .integer(v)): self = .long(UInt64(bitPattern: v))
        case let (.uint8, .integer(v)): self = .int(UInt32(try Self.exact(v, UInt8.self)))
        case let (.uint16, .integer(v)): self = .int(UInt32(try Self.exact(v, UInt16.self)))
        case let (.uint32, .integer(v)): self = .int(try Self.exact(v, UInt32.self))
        case let (.uint64, .integer(v)): self = .long(try Self.exact(v, UInt64.self))
        case let (.uint64, .number(v)):  // above Int64.max the decoder hands a Double
            guard let exact = UInt64(exactly: v) else { throw SparkplugValueError(description: "\(v) is no UInt64") }
            self = .long(exact)
        case let (.float, .number(v)): self = .float(Float(v))
        case let (.float, .integer(v)): self = .float(Float(v))
        case let (.double, .number(v)): self = .double(v)
        case let (.double, .integer(v)): self = .double(Double(v))
        case let (.boolean, .bool(v)): self = .boolean(v)
        case let (.string, .string(v)): self = .string(v)
        default:
            throw SparkplugValueError(description: "a \(value) cannot be a \(type) metric")
        }
    }

    private static func exact<T: FixedWidthInteger>(_ value: Int64, _: T.Type) throws(SparkplugValueError) -> T {
        guard let exact = T(exactly: value) else {
            throw SparkplugValueError(description: "\(value) is out of range for \(T.self)")
        }
        return exact
    }
}

extension Org_Eclipse_Tahu_Protobuf_Payload.Metric {
    /// Sets `datatype` and the value field for `value` (see `SparkplugMetricValue`).
    mutating func set(_ value: TagValue, as type: SparkplugDataType) throws(SparkplugValueError) {
        let encoded = try SparkplugMetricValue(value, as: type)
        datatype = type.rawValue
        switch encoded {
        case let .int(v): intValue = v
        case let .long(v): longValue = v
        case let .float(v): floatValue = v
        case let .double(v): doubleValue = v
        case let .boolean(v): booleanValue = v
        case let .string(v): stringValue = v
        }
    }

    /// No value, `is_null` set, and the `Quality` property BAD (0), for a tag whose
    /// read failed: the metric stays in the message, its value is unknown.
    mutating func setBad(as type: SparkplugDataType) {
        datatype = type.rawValue
        value = nil
        isNull = true
        properties = .quality(.bad)
    }
}

/// Sparkplug's quality codes (the `Quality` property, an Int32).
public enum SparkplugQuality: UInt32, Sendable {
    case bad = 0
    case good = 192
    case stale = 500
}

extension Org_Eclipse_Tahu_Protobuf_Payload.PropertySet {
    enum Value {
        case int32(UInt32)
        case string(String)
    }

    static func quality(_ quality: SparkplugQuality) -> Self {
        var set = Self()
        set.add("Quality", .int32(quality.rawValue))
        return set
    }

    /// Appends property `key` (a Sparkplug PropertyValue with its datatype).
    mutating func add(_ key: String, _ value: Value) {
        var property = Org_Eclipse_Tahu_Protobuf_Payload.PropertyValue()
        switch value {
        case let .int32(number):
            property.type = SparkplugDataType.int32.rawValue
            property.intValue = number
        case let .string(text):
            property.type = SparkplugDataType.string.rawValue
            property.stringValue = text
        }
        keys.append(key)
        values.append(property)
    }
}
