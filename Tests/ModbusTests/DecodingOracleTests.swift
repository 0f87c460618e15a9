// Register decoding against the formatting it replaced: the rounding of scaled
// values (Foundation's `String(format: "%.15g")` read back with `Double(_:)`) and
// float32 through its shortest text, compared bit for bit over edge and random
// registers of every type, byte order, scale and offset. A different Double would
// be a different number in the data message.
import Foundation
import Testing
import TestSupport
@testable import Modbus

/// The decoding steps as they were before (commit a000754), kept as the oracle.
private enum LegacyDecoding {
    static func roundedToSignificantDigits(_ value: Double) -> Double {
        guard value != 0 else { return 0 }
        return Double(String(format: "%.15g", value)) ?? value
    }

    static func float32(_ float: Float) -> Double {
        float.isFinite ? Double("\(float)")! : Double(float)
    }
}


/// Equal as Doubles and as bits (0.0 and -0.0 differ in JSON).
private func identical(_ a: Result<TagValue, TagError>, _ b: Result<TagValue, TagError>) -> Bool {
    switch (a, b) {
    case let (.success(.number(x)), .success(.number(y))): return x.bitPattern == y.bitPattern
    default: return a == b
    }
}

@Suite struct DecodingOracleTests {
    static let edgeValues: [Double] = [
        0.1, 0.3, 71.50000000000001, 1.0000000000000002, 0.9999999999999999, 123456789012345.6, 1234567890123456.7,
        -2.5e-10, 1e-300, 1e300, .greatestFiniteMagnitude, -.greatestFiniteMagnitude, .leastNonzeroMagnitude,
        .leastNormalMagnitude, 2.2250738585072014e-308, 9.999999999999995e22,
        999999999999999.5, 0.000123456789012345678, -0.0, 65535 * 0.01, 32767 * 0.1, -32768 * 0.001,
    ]

    @Test func roundingOfEdgeValuesMatchesFoundationsFormatting() {
        for value in Self.edgeValues {
            let new = RegisterDecoding.roundedToSignificantDigits(value)
            let old = LegacyDecoding.roundedToSignificantDigits(value)
            #expect(new.bitPattern == old.bitPattern, "\(value): \(new) vs \(old)")
        }
    }

    @Test(arguments: 0..<8)
    func roundingOfRandomValuesMatchesFoundationsFormatting(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        for step in 0..<25_000 {
            let value: Double
            switch step % 3 {
            case 0:
                var bits = Double(bitPattern: random.next())
                while !bits.isFinite { bits = Double(bitPattern: random.next()) }
                value = bits
            case 1: value = Double(Int64(bitPattern: random.next()) >> (random.next() % 63)) * [0.1, 0.01, 0.001, 1e-6][step % 4]
            default: value = Double(Int32(truncatingIfNeeded: random.next())) * 0.1 + Double(step % 7) - 3
            }
            let new = RegisterDecoding.roundedToSignificantDigits(value)
            let old = LegacyDecoding.roundedToSignificantDigits(value)
            if new.bitPattern != old.bitPattern {
                Issue.record("\(value) (bits \(value.bitPattern)): \(new) vs \(old)")
                return
            }
        }
    }

    @Test func float32TextOfEveryExponent() {
        var random = SplitMix64(seed: 32)
        for exponent in 0..<256 {
            for _ in 0..<200 {
                let bits = UInt32(exponent) << 23 | UInt32(truncatingIfNeeded: random.next()) & 0x807F_FFFF
                let float = Float(bitPattern: bits)
                let words: [UInt16] = [UInt16(bits >> 16), UInt16(bits & 0xFFFF)]
                let new = RegisterDecoding.decode(words[...], type: .float32, order: .abcd)
                let expected: Result<TagValue, TagError> = float.isFinite
                    ? .success(.number(LegacyDecoding.float32(float)))
                    : .failure(TagError(float.isNaN ? "value is NaN" : "value is infinite"))
                #expect(identical(new, expected), "float32 bits \(bits)")
            }
        }
    }

    /// Whole decodes: every type and byte order, scaled and not, against the old steps.
    @Test(arguments: ValueType.allCases.filter { $0 != .string && $0 != .bool })
    func scaledDecodesMatch(type: ValueType) {
        var random = SplitMix64(seed: UInt64(type.registerCount) * 7919 + UInt64(type.rawValue.utf8.count))
        let scales: [(Double, Double)] = [(1, 0), (0.1, 0), (0.01, -40), (1000, 0), (-1, 0.5), (1e-300, 0), (3.3, 1e15)]
        for order in ByteOrder.allCases {
            for (scale, offset) in scales {
                for _ in 0..<300 {
                    let words = (0..<type.registerCount).map { _ in UInt16(truncatingIfNeeded: random.next()) }
                    let new = RegisterDecoding.decode(words[...], type: type, order: order, scale: scale, offset: offset)
                    // The same decode with the old steps: the raw value from the bits, then
                    // scale + offset, then the old rounding.
                    let bits = RegisterDecoding.bigEndianBits(words[...], order: order)
                    let raw: TagValue
                    switch type {
                    case .float32: raw = .number(LegacyDecoding.float32(Float(bitPattern: UInt32(truncatingIfNeeded: bits))))
                    case .float64: raw = .number(Double(bitPattern: bits))
                    case .uint64 where bits > UInt64(Int64.max):
                        if scale == 1 && offset == 0 { continue }  // out of range: an error either way
                        raw = .number(Double(bits))
                    default:
                        guard case let .success(integer) = RegisterDecoding.decode(words[...], type: type, order: order) else {
                            Issue.record("\(type) \(words) did not decode")
                            return
                        }
                        raw = integer
                    }
                    let expected = legacyScaled(raw, scale: scale, offset: offset)
                    #expect(identical(new, expected), "\(type) \(order) \(words) × \(scale) + \(offset)")
                }
            }
        }
    }

    /// A block decoded at once gives each tag what decoding it alone gives: every type,
    /// own and device byte orders, bits of registers, strings, scales, tags in any order.
    @Test func blockDecodeMatchesTagByTag() {
        var random = SplitMix64(seed: 99)
        var tags: [TagConfiguration] = []
        var address = 3  // the read starts at 3
        for index in 0..<200 {
            let type = ValueType.allCases[index % ValueType.allCases.count]
            let tag = TagConfiguration(name: "t\(index)", table: .holding, address: address, type: type,
                                       byteOrder: index % 3 == 0 ? nil : ByteOrder.allCases[index % 4],
                                       scale: index % 5 == 0 ? 0.1 : 1, offset: index % 7 == 0 ? -40 : 0,
                                       bit: type == .bool && index % 2 == 0 ? index % 16 : nil, length: 1 + index % 4)
            tags.append(tag)
            address += tag.width
        }
        let words = (3..<address).map { _ in UInt16(truncatingIfNeeded: random.next()) }
        let indices = Array(tags.indices).shuffled(using: &random)
        var results = [Result<TagValue, TagError>](repeating: .failure(TagError("unset")), count: tags.count)
        RegisterDecoding.decode(block: words, startingAt: 3, tags: tags, indices: indices, deviceOrder: .cdab, into: &results)
        for (index, tag) in tags.enumerated() {
            let first = tag.address - 3
            let alone = RegisterDecoding.decode(words[first..<first + tag.width], tag: tag, deviceOrder: .cdab)
            #expect(identical(results[index], alone), "\(tag.name) \(tag.type)")
        }
    }

    private func legacyScaled(_ raw: TagValue, scale: Double, offset: Double) -> Result<TagValue, TagError> {
        let value: Double
        switch raw {
        case .bool, .string: return .success(raw)
        case let .integer(integer):
            if scale == 1 && offset == 0 { return .success(raw) }
            value = Double(integer) * scale + offset
        case let .number(number): value = number * scale + offset
        }
        guard value.isFinite else { return .failure(TagError(value.isNaN ? "value is NaN" : "value is infinite")) }
        return .success(.number(LegacyDecoding.roundedToSignificantDigits(value)))
    }
}
