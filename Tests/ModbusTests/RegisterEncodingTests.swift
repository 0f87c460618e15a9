// Writing a published value gives the same published value back: encoding is
// decoding reversed, for every type, byte order, scale and offset.
import Testing
@testable import Modbus

@Suite struct RegisterEncodingTests {
    static let values: [(ValueType, TagValue)] = [
        (.int16, .integer(-1234)), (.uint16, .integer(65535)), (.int32, .integer(-2_000_000_000)),
        (.uint32, .integer(4_000_000_000)), (.int64, .integer(Int64.min + 1)), (.uint64, .integer(Int64.max)),
        (.float32, .number(12.9)), (.float64, .number(-0.000123456789)),
    ]

    @Test(arguments: ByteOrder.allCases)
    func roundTripsEveryTypeInEveryOrder(_ order: ByteOrder) throws {
        for (type, value) in Self.values {
            let tag = TagConfiguration(name: "t", table: .holding, address: 0, type: type, byteOrder: order)
            guard case let .registers(words) = try RegisterEncoding.encode(value, tag: tag, deviceOrder: .abcd).get() else {
                Issue.record("\(type): not registers"); continue
            }
            #expect(words.count == type.registerCount)
            #expect(RegisterDecoding.decode(words[...], tag: tag, deviceOrder: .abcd) == .success(value), "\(type) \(order)")
        }
    }

    @Test func scaleAndOffsetAreReversed() throws {
        let tag = TagConfiguration(name: "t", table: .holding, address: 0, type: int16Type, scale: 0.1, offset: -40)
        let encoded = try RegisterEncoding.encode(.number(31.5), tag: tag, deviceOrder: .abcd).get()
        #expect(encoded == .registers([715]))  // 715 × 0.1 − 40 = 31.5
        #expect(RegisterDecoding.decode([715][...], tag: tag, deviceOrder: .abcd) == .success(.number(31.5)))
    }

    private var int16Type: ValueType { .int16 }

    @Test func refusals() {
        let holding = TagConfiguration(name: "t", table: .holding, address: 0, type: .int16, scale: 0.5)
        func kind(_ value: TagValue, _ tag: TagConfiguration) -> WriteValueProblem.Kind? {
            if case let .failure(problem) = RegisterEncoding.encode(value, tag: tag, deviceOrder: .abcd) { return problem.kind }
            return nil
        }
        #expect(kind(.bool(true), holding) == .wrongType)
        #expect(kind(.string("1"), holding) == .wrongType)
        #expect(kind(.number(0.25), holding) == .notRepresentable, "not a multiple of the scale")
        #expect(kind(.number(20_000), holding) == .notRepresentable, "raw 40000 beyond int16")
        #expect(kind(.number(16_383.5), holding) == nil, "raw 32767 fits")
        var bounded = holding
        bounded.minimum = 0
        bounded.maximum = 10
        #expect(kind(.number(10.5), bounded) == .outOfRange)
        #expect(kind(.number(-0.5), bounded) == .outOfRange)
        let coil = TagConfiguration(name: "c", table: .coils, address: 0, type: .bool)
        #expect(kind(.integer(1), coil) == .wrongType)
        #expect(RegisterEncoding.encode(.bool(true), tag: coil, deviceOrder: .abcd) == .success(.coil(true)))
        let float = TagConfiguration(name: "f", table: .holding, address: 0, type: .float32)
        #expect(kind(.number(1e39), float) == .notRepresentable)
        let unsigned = TagConfiguration(name: "u", table: .holding, address: 0, type: .uint16)
        #expect(kind(.integer(-1), unsigned) == .notRepresentable)
    }
}
