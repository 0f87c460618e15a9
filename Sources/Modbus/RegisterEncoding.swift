// The reverse of RegisterDecoding: a commanded value (in published units) to the
// raw registers or coil of its tag, so that writing a published value round-trips.
import Foundation

/// What goes on the wire for one tag.
public enum WritePayload: Sendable, Equatable {
    case coil(Bool)
    case registers([UInt16])
}

/// Why a value cannot be written to a tag.
public struct WriteValueProblem: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// A bool for a number, a number for a coil, text for either.
        case wrongType
        /// Outside the tag's `min`/`max`.
        case outOfRange
        /// The register type cannot hold it (too large, a fraction for an integer, NaN).
        case notRepresentable
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}

public enum RegisterEncoding {
    /// The raw payload for `value` on `tag`: `raw = (value − offset) / scale`,
    /// checked against the tag's bounds and its register type, in the tag's byte order.
    public static func encode(_ value: TagValue, tag: TagConfiguration,
                              deviceOrder: ByteOrder) -> Result<WritePayload, WriteValueProblem> {
        if tag.table.holdsBits || tag.type == .bool {
            guard case let .bool(bit) = value else {
                return .failure(WriteValueProblem(.wrongType, "tag '\(tag.name)' is a coil: write true or false, not \(describe(value))"))
            }
            guard tag.table == .coils else {
                return .failure(WriteValueProblem(.notRepresentable, "tag '\(tag.name)' is a bit of a register, which is not writable"))
            }
            return .success(.coil(bit))
        }
        let number: Double
        switch value {
        case let .integer(integer): number = Double(integer)
        case let .number(double): number = double
        case .bool, .string:
            return .failure(WriteValueProblem(.wrongType, "tag '\(tag.name)' is a \(tag.type.rawValue): write a number, not \(describe(value))"))
        }
        guard number.isFinite else {
            return .failure(WriteValueProblem(.notRepresentable, "tag '\(tag.name)': \(number) is not a finite number"))
        }
        if let low = tag.minimum, number < low {
            return .failure(WriteValueProblem(.outOfRange, "tag '\(tag.name)': \(format(number)) is below min \(format(low))"))
        }
        if let high = tag.maximum, number > high {
            return .failure(WriteValueProblem(.outOfRange, "tag '\(tag.name)': \(format(number)) is above max \(format(high))"))
        }
        let bits: Result<UInt64, WriteValueProblem>
        if tag.scale == 1, tag.offset == 0, case let .integer(integer) = value {
            bits = integerBits(exact: integer, tag: tag)
        } else {
            bits = rawBits((number - tag.offset) / tag.scale, tag: tag, published: number)
        }
        return bits.map { .registers(words(bits: $0, type: tag.type, order: tag.byteOrder ?? deviceOrder)) }
    }

    /// The registers of a `registerCount`-word value whose big-endian bits are `bits`, in `order`.
    public static func words(bits: UInt64, type: ValueType, order: ByteOrder) -> [UInt16] {
        let count = type.registerCount
        var bytes: [UInt8] = (0..<count * 2).map { UInt8(truncatingIfNeeded: bits >> UInt64(8 * (count * 2 - 1 - $0))) }
        if order == .badc || order == .dcba {
            for index in stride(from: 0, to: bytes.count, by: 2) { bytes.swapAt(index, index + 1) }
        }
        var words = (0..<count).map { UInt16(bytes[2 * $0]) << 8 | UInt16(bytes[2 * $0 + 1]) }
        if order == .cdab || order == .dcba { words.reverse() }
        return words
    }

    private static func integerBits(exact integer: Int64, tag: TagConfiguration) -> Result<UInt64, WriteValueProblem> {
        let range: ClosedRange<Int64>
        switch tag.type {
        case .int16: range = Int64(Int16.min)...Int64(Int16.max)
        case .uint16: range = 0...Int64(UInt16.max)
        case .int32: range = Int64(Int32.min)...Int64(Int32.max)
        case .uint32: range = 0...Int64(UInt32.max)
        case .int64: range = Int64.min...Int64.max
        case .uint64: range = 0...Int64.max
        case .float32, .float64: return rawBits(Double(integer), tag: tag, published: Double(integer))
        case .bool, .string: preconditionFailure("handled by the caller")
        }
        guard range.contains(integer) else {
            return .failure(WriteValueProblem(.notRepresentable,
                                              "tag '\(tag.name)': \(integer) does not fit a \(tag.type.rawValue) (\(range.lowerBound)...\(range.upperBound))"))
        }
        return .success(UInt64(bitPattern: integer))
    }

    private static func rawBits(_ raw: Double, tag: TagConfiguration, published: Double) -> Result<UInt64, WriteValueProblem> {
        let name = "tag '\(tag.name)'"
        switch tag.type {
        case .float32:
            let float = Float(raw)
            guard float.isFinite else {
                return .failure(WriteValueProblem(.notRepresentable, "\(name): \(format(published)) is beyond the range of a float32"))
            }
            return .success(UInt64(float.bitPattern))
        case .float64:
            return .success(raw.bitPattern)
        case .int16, .uint16, .int32, .uint32, .int64, .uint64:
            let rounded = raw.rounded()
            // Scaling is binary floating point (72.5 / 0.1 = 724.999…): a raw value within
            // a billionth of an integer is that integer; anything else needs a fraction.
            guard abs(raw - rounded) <= 1e-9 * max(1, abs(raw)) else {
                let step = abs(tag.scale)
                return .failure(WriteValueProblem(.notRepresentable,
                                                  "\(name): \(format(published)) is not a multiple of the tag's scale \(format(step))"
                                                  + (tag.offset == 0 ? "" : " from its offset \(format(tag.offset))")
                                                  + " (raw \(format(raw)) is not an integer)"))
            }
            // Doubles beyond ±2^63 cannot convert; the integer check gives the message.
            guard rounded >= -9.223372036854775808e18, rounded < 9.223372036854775808e18 else {
                return .failure(WriteValueProblem(.notRepresentable, "\(name): raw value \(format(rounded)) does not fit a \(tag.type.rawValue)"))
            }
            return integerBits(exact: Int64(rounded), tag: TagConfiguration(
                name: tag.name, table: tag.table, address: tag.address, type: tag.type))
        case .bool, .string:
            preconditionFailure("handled by the caller")
        }
    }

    private static func describe(_ value: TagValue) -> String {
        switch value {
        case let .bool(bit): return "\(bit)"
        case let .integer(integer): return "the number \(integer)"
        case let .number(number): return "the number \(format(number))"
        case let .string(text): return "the text \"\(text.prefix(40))\""
        }
    }

    static func format(_ number: Double) -> String {
        number == number.rounded() && abs(number) < 1e15 ? String(Int64(number)) : "\(number)"
    }
}
