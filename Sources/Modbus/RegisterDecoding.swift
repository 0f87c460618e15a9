// Turning raw Modbus register words into tag values: types, byte orders, scale and offset.
import Foundation
import GatewayConfig

/// A decoded tag value as it appears in a data message.
public enum TagValue: Sendable, Equatable {
    case integer(Int64)
    case number(Double)
    case bool(Bool)
}

/// Why one tag has no value in this poll.
public struct TagError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public enum RegisterDecoding {
    /// Reorders `words` (as received, register order) into the big-endian
    /// byte sequence `A B C D …` that `order` describes.
    public static func bigEndianBytes(_ words: ArraySlice<UInt16>, order: ByteOrder) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(words.count * 2)
        let orderedWords: [UInt16]
        switch order {
        case .abcd, .badc: orderedWords = Array(words)
        case .cdab, .dcba: orderedWords = words.reversed()
        }
        let swapBytes = order == .badc || order == .dcba
        for word in orderedWords {
            let high = UInt8(word >> 8), low = UInt8(word & 0xFF)
            if swapBytes {
                bytes.append(low); bytes.append(high)
            } else {
                bytes.append(high); bytes.append(low)
            }
        }
        return bytes
    }

    /// Decodes one value of `type` from its registers and applies `raw × scale + offset`.
    /// Integer types with scale 1 and offset 0 stay integers; NaN and infinities are errors.
    public static func decode(
        _ words: ArraySlice<UInt16>,
        type: ValueType,
        order: ByteOrder,
        scale: Double = 1,
        offset: Double = 0
    ) -> Result<TagValue, TagError> {
        guard words.count == type.registerCount else {
            return .failure(TagError("expected \(type.registerCount) registers for \(type.rawValue), got \(words.count)"))
        }
        let bytes = bigEndianBytes(words, order: order)
        let bits = bytes.reduce(UInt64(0)) { ($0 << 8) | UInt64($1) }
        let raw: TagValue
        switch type {
        case .int16: raw = .integer(Int64(Int16(bitPattern: UInt16(truncatingIfNeeded: bits))))
        case .uint16: raw = .integer(Int64(UInt16(truncatingIfNeeded: bits)))
        case .int32: raw = .integer(Int64(Int32(bitPattern: UInt32(truncatingIfNeeded: bits))))
        case .uint32: raw = .integer(Int64(UInt32(truncatingIfNeeded: bits)))
        case .float32:
            // Through the float's shortest decimal form, so 12.9f reads 12.9, not 12.899999618530273.
            let float = Float(bitPattern: UInt32(truncatingIfNeeded: bits))
            raw = .number(float.isFinite ? Double("\(float)")! : Double(float))
        }
        return scaled(raw, scale: scale, offset: offset)
    }

    /// Drops binary noise of scaling (715 × 0.1 = 71.50000000000001) by keeping
    /// 15 significant digits, more than any register carries.
    static func roundedToSignificantDigits(_ value: Double) -> Double {
        guard value != 0 else { return 0 }
        return Double(String(format: "%.15g", value)) ?? value
    }

    static func scaled(_ raw: TagValue, scale: Double, offset: Double) -> Result<TagValue, TagError> {
        let value: Double
        switch raw {
        case .bool: return .success(raw)
        case let .integer(integer):
            if scale == 1 && offset == 0 { return .success(raw) }
            value = Double(integer) * scale + offset
        case let .number(number):
            value = number * scale + offset
        }
        guard value.isFinite else {
            return .failure(TagError(value.isNaN ? "value is NaN" : "value is infinite"))
        }
        return .success(.number(roundedToSignificantDigits(value)))
    }
}
