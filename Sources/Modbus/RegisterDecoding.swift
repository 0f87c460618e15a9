// Turning raw Modbus register words into tag values: types, byte orders, scale and offset.
import CModbus
import Foundation

/// A decoded tag value as it appears in a data message.
public enum TagValue: Sendable, Equatable {
    case integer(Int64)
    case number(Double)
    case bool(Bool)
    case string(String)
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

    /// The bytes of `bigEndianBytes(words, order:)` as one number, first byte
    /// highest, without building them (a poll decodes thousands of values a second).
    /// At most four registers fit.
    static func bigEndianBits(_ words: ArraySlice<UInt16>, order: ByteOrder) -> UInt64 {
        let swapBytes = order == .badc || order == .dcba
        var bits: UInt64 = 0
        switch order {
        case .abcd, .badc:
            for word in words { bits = bits << 16 | UInt64(swapBytes ? word.byteSwapped : word) }
        case .cdab, .dcba:
            for word in words.reversed() { bits = bits << 16 | UInt64(swapBytes ? word.byteSwapped : word) }
        }
        return bits
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
        guard type == .string || words.count == type.registerCount else {
            return .failure(TagError("expected \(type.registerCount) registers for \(type.rawValue), got \(words.count)"))
        }
        if type == .string { return .success(.string(text(words, order: order))) }
        if type == .bool { return .success(.bool(words.first! != 0)) }
        let bits = bigEndianBits(words, order: order)
        let raw: TagValue
        switch type {
        case .bool, .string: preconditionFailure("handled above")
        case .int64: raw = .integer(Int64(bitPattern: bits))
        case .uint64:
            guard bits <= UInt64(Int64.max) || scale != 1 || offset != 0 else {
                return .failure(TagError("value \(bits) is out of range (above \(Int64.max))"))
            }
            raw = bits <= UInt64(Int64.max) ? .integer(Int64(bits)) : .number(Double(bits))
        case .float64: raw = .number(Double(bitPattern: bits))
        case .int16: raw = .integer(Int64(Int16(bitPattern: UInt16(truncatingIfNeeded: bits))))
        case .uint16: raw = .integer(Int64(UInt16(truncatingIfNeeded: bits)))
        case .int32: raw = .integer(Int64(Int32(bitPattern: UInt32(truncatingIfNeeded: bits))))
        case .uint32: raw = .integer(Int64(UInt32(truncatingIfNeeded: bits)))
        case .float32:
            // Through the float's shortest decimal form, so 12.9f reads 12.9, not 12.899999618530273.
            let float = Float(bitPattern: UInt32(truncatingIfNeeded: bits))
            raw = .number(float.isFinite ? Double(float.description)! : Double(float))
        }
        return scaled(raw, scale: scale, offset: offset)
    }

    /// One bit of a register (`bit` 0 = least significant).
    public static func bit(_ bit: Int, of word: UInt16) -> TagValue {
        .bool((word >> UInt16(bit)) & 1 == 1)
    }

    /// Decodes the tag's registers (or its bit) as configured.
    public static func decode(_ words: ArraySlice<UInt16>, tag: TagConfiguration,
                              deviceOrder: ByteOrder) -> Result<TagValue, TagError> {
        if tag.type == .bool, let bit = tag.bit, let word = words.first {
            return .success(Self.bit(bit, of: word))
        }
        return decode(words, type: tag.type, order: tag.byteOrder ?? deviceOrder, scale: tag.scale, offset: tag.offset)
    }

    /// Decodes the tags at `indices` of `tags` from `words`, the registers of one read
    /// starting at `address`, into `results[index]` (as `decode(_:tag:deviceOrder:)`
    /// would, tag by tag). Each tag's fields are read in place: no tag is copied.
    public static func decode(block words: [UInt16], startingAt address: Int, tags: [TagConfiguration],
                              indices: [Int], deviceOrder: ByteOrder,
                              into results: inout [Result<TagValue, TagError>]) {
        tags.withUnsafeBufferPointer { tags in
            for index in indices {
                // Stored fields one by one: a computed property (`width`) would copy the tag, names and all.
                let tag = tags.baseAddress! + index
                let type = tag.pointee.type
                let width = tag.pointee.table.holdsBits ? 1 : type == .string ? tag.pointee.length : type.registerCount
                let first = tag.pointee.address - address
                let registers = words[first..<first + width]
                if type == .bool, let bit = tag.pointee.bit, let word = registers.first {
                    results[index] = .success(Self.bit(bit, of: word))
                    continue
                }
                results[index] = decode(registers, type: type, order: tag.pointee.byteOrder ?? deviceOrder,
                                        scale: tag.pointee.scale, offset: tag.pointee.offset)
            }
        }
    }

    /// ASCII text, two characters per register, high byte first (`badc`/`dcba`:
    /// low byte first). Ends at the first NUL; trailing spaces are dropped;
    /// bytes outside printable ASCII read as `?`.
    static func text(_ words: ArraySlice<UInt16>, order: ByteOrder) -> String {
        let swap = order == .badc || order == .dcba
        var characters: [UInt8] = []
        characters.reserveCapacity(words.count * 2)
        loop: for word in words {
            for byte in swap ? [UInt8(word & 0xFF), UInt8(word >> 8)] : [UInt8(word >> 8), UInt8(word & 0xFF)] {
                if byte == 0 { break loop }
                characters.append((0x20..<0x7F).contains(byte) ? byte : UInt8(ascii: "?"))
            }
        }
        while characters.last == UInt8(ascii: " ") { characters.removeLast() }
        return String(decoding: characters, as: UTF8.self)
    }

    /// Drops binary noise of scaling (715 × 0.1 = 71.50000000000001) by keeping
    /// 15 significant digits, more than any register carries: the value printed
    /// with C's `%.15g` and read back with `strtod`, both correctly rounded
    /// (`cmodbus_round_to_15_digits`). The gateway never changes the C locale, so
    /// the decimal point is `.`.
    static func roundedToSignificantDigits(_ value: Double) -> Double {
        guard value != 0 else { return 0 }
        var rounded = value
        return cmodbus_round_to_15_digits(value, &rounded) == 1 ? rounded : value
    }

    static func scaled(_ raw: TagValue, scale: Double, offset: Double) -> Result<TagValue, TagError> {
        let value: Double
        switch raw {
        case .bool, .string: return .success(raw)
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
