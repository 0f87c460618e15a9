import Testing
@testable import Modbus

@Suite struct RegisterDecodingTests {
    private func decode(_ words: [UInt16], _ type: ValueType, _ order: ByteOrder = .abcd,
                        scale: Double = 1, offset: Double = 0) -> Result<TagValue, TagError> {
        RegisterDecoding.decode(words[...], type: type, order: order, scale: scale, offset: offset)
    }

    @Test func int16AndUInt16() {
        #expect(decode([0xFFFF], .int16) == .success(.integer(-1)))
        #expect(decode([0x8000], .int16) == .success(.integer(-32768)))
        #expect(decode([0x7FFF], .int16) == .success(.integer(32767)))
        #expect(decode([0xFFFF], .uint16) == .success(.integer(65535)))
        #expect(decode([0x0001], .uint16) == .success(.integer(1)))
    }

    @Test func int32AndUInt32InEveryOrder() {
        // 0x12345678 = 305419896
        #expect(decode([0x1234, 0x5678], .uint32, .abcd) == .success(.integer(0x1234_5678)))
        #expect(decode([0x5678, 0x1234], .uint32, .cdab) == .success(.integer(0x1234_5678)))
        #expect(decode([0x3412, 0x7856], .uint32, .badc) == .success(.integer(0x1234_5678)))
        #expect(decode([0x7856, 0x3412], .uint32, .dcba) == .success(.integer(0x1234_5678)))
        #expect(decode([0xFFFF, 0xFFFE], .int32) == .success(.integer(-2)))
        #expect(decode([0xFFFF, 0xFFFE], .uint32) == .success(.integer(4_294_967_294)))
        #expect(decode([0xFFFE, 0xFFFF], .int32, .cdab) == .success(.integer(-2)))
    }

    @Test func float32InEveryOrder() {
        // 71.5 = 0x428F0000; -1.25 = 0xBFA00000
        #expect(decode([0x428F, 0x0000], .float32, .abcd) == .success(.number(71.5)))
        #expect(decode([0x0000, 0x428F], .float32, .cdab) == .success(.number(71.5)))
        #expect(decode([0x8F42, 0x0000], .float32, .badc) == .success(.number(71.5)))
        #expect(decode([0x0000, 0x8F42], .float32, .dcba) == .success(.number(71.5)))
        #expect(decode([0xBFA0, 0x0000], .float32) == .success(.number(-1.25)))
    }

    @Test func float32KeepsItsOwnPrecision() {
        // 12.9f is 0x414E6666; as a Double it would be 12.899999618530273.
        #expect(decode([0x414E, 0x6666], .float32) == .success(.number(12.9)))
    }

    @Test func scalingLeavesNoBinaryNoise() {
        #expect(decode([715], .int16, scale: 0.1) == .success(.number(71.5)))
        #expect(decode([3], .uint16, scale: 0.1) == .success(.number(0.3)))
        #expect(decode([259], .uint16, scale: 0.01) == .success(.number(2.59)))
    }

    @Test func scaleAndOffset() {
        #expect(decode([715], .int16, scale: 0.1) == .success(.number(71.5)))
        #expect(decode([0xFFF6], .int16, scale: 0.5, offset: 100) == .success(.number(95)))
        #expect(decode([0x428F, 0x0000], .float32, scale: 2, offset: -3) == .success(.number(140)))
        #expect(decode([250], .uint16, offset: -273) == .success(.number(-23)))
    }

    @Test func notANumberIsATagError() {
        #expect(decode([0x7FC0, 0x0000], .float32) == .failure(TagError("value is NaN")))
        #expect(decode([0x7F80, 0x0000], .float32) == .failure(TagError("value is infinite")))
    }

    @Test func wrongRegisterCountIsATagError() {
        guard case .failure = decode([1], .float32) else {
            Issue.record("one register decoded as float32")
            return
        }
    }

    @Test func planMergesTouchingRegistersOfOneTable() {
        let tags = [
            TagConfiguration(name: "a", table: .holding, address: 0, type: .int16),
            TagConfiguration(name: "b", table: .holding, address: 1, type: .float32),
            TagConfiguration(name: "c", table: .input, address: 0, type: .uint16),
            TagConfiguration(name: "d", table: .holding, address: 10, type: .uint16),
            TagConfiguration(name: "e", table: .holding, address: 3, type: .uint16),
        ]
        let plan = RegisterPlan(tags: tags)
        #expect(plan.blocks == [
            RegisterBlock(table: .holding, address: 0, count: 4, tagIndices: [0, 1, 4]),
            RegisterBlock(table: .holding, address: 10, count: 1, tagIndices: [3]),
            RegisterBlock(table: .input, address: 0, count: 1, tagIndices: [2]),
        ])
    }

    @Test func planSplitsAtTheProtocolLimit() {
        let tags = (0..<130).map { TagConfiguration(name: "t\($0)", table: .holding, address: $0, type: .uint16) }
        let plan = RegisterPlan(tags: tags)
        #expect(plan.blocks.map(\.count) == [125, 5])
        #expect(plan.blocks.map(\.address) == [0, 125])
    }
}
