import Testing
@testable import Modbus

@Suite struct RegisterPlanTests {
    @Test func protocolLimitsSplitLongRuns() {
        let registers = (0..<130).map { TagConfiguration(name: "r\($0)", table: .holding, address: $0, type: .uint16) }
        #expect(RegisterPlan(tags: registers).blocks.map(\.count) == [125, 5])
        let bits = (0..<2001).map { TagConfiguration(name: "c\($0)", table: .coils, address: $0, type: .bool) }
        #expect(RegisterPlan(tags: bits).blocks.map(\.count) == [2000, 1])
        // A value is never cut in two: a float32 at 124 starts the next read.
        let straddling = [
            TagConfiguration(name: "a", table: .input, address: 0, type: .uint16),
            TagConfiguration(name: "b", table: .input, address: 124, type: .float32),
        ]
        #expect(RegisterPlan(tags: straddling, maxGap: 200).blocks.map { [$0.address, $0.count] } == [[0, 1], [124, 2]])
    }

    @Test func gapsAreReadThroughUpToMaxGapOnly() {
        let tags = [
            TagConfiguration(name: "a", table: .holding, address: 0, type: .uint32),
            TagConfiguration(name: "b", table: .holding, address: 5, type: .uint16),  // gap of 3
            TagConfiguration(name: "c", table: .holding, address: 5, type: .bool, bit: 4),  // same register
            TagConfiguration(name: "d", table: .discreteInputs, address: 7, type: .bool),
            TagConfiguration(name: "e", table: .discreteInputs, address: 9, type: .bool),
        ]
        #expect(RegisterPlan(tags: tags, maxGap: 2).blocks.map { [$0.address, $0.count] } == [[0, 2], [5, 1], [7, 3]])
        #expect(RegisterPlan(tags: tags, maxGap: 3).blocks.map { [$0.address, $0.count] } == [[0, 6], [7, 3]])
        #expect(RegisterPlan(tags: tags, maxGap: 0).blocks.count == 4)
    }

    @Test func splittingGoesToTouchingRunsThenSingleTags() {
        let tags = [
            TagConfiguration(name: "a", table: .holding, address: 0, type: .uint16),
            TagConfiguration(name: "b", table: .holding, address: 1, type: .uint16),
            TagConfiguration(name: "c", table: .holding, address: 9, type: .uint16),
        ]
        let merged = RegisterPlan(tags: tags, maxGap: 10).blocks[0]
        let runs = RegisterPlan.split(merged, tags: tags)
        #expect(runs.map { [$0.address, $0.count] } == [[0, 2], [9, 1]])
        #expect(RegisterPlan.split(runs[0], tags: tags).map { [$0.address, $0.count] } == [[0, 1], [1, 1]])
        #expect(RegisterPlan.split(runs[1], tags: tags).isEmpty)
    }

    @Test func sixtyFourBitValuesStringsAndBitsDecode() {
        // 0x0102030405060708 in each order.
        let abcd: [UInt16] = [0x0102, 0x0304, 0x0506, 0x0708]
        #expect(RegisterDecoding.decode(abcd[...], type: .uint64, order: .abcd) == .success(.integer(0x0102_0304_0506_0708)))
        #expect(RegisterDecoding.decode([0x0708, 0x0506, 0x0304, 0x0102][...], type: .uint64, order: .cdab)
            == .success(.integer(0x0102_0304_0506_0708)))
        #expect(RegisterDecoding.decode([0x0201, 0x0403, 0x0605, 0x0807][...], type: .uint64, order: .badc)
            == .success(.integer(0x0102_0304_0506_0708)))
        #expect(RegisterDecoding.decode([0x0807, 0x0605, 0x0403, 0x0201][...], type: .uint64, order: .dcba)
            == .success(.integer(0x0102_0304_0506_0708)))
        #expect(RegisterDecoding.decode([0x7FF8, 0, 0, 0][...], type: .float64, order: .abcd) == .failure(TagError("value is NaN")))
        #expect(RegisterDecoding.decode([0x4048, 0xC000, 0, 0][...], type: .float64, order: .abcd, scale: 2) == .success(.number(99)))  // 49.5 × 2
        #expect(RegisterDecoding.decode([0x4142, 0x4320, 0x2000][...], type: .string, order: .abcd) == .success(.string("ABC")))
        #expect(RegisterDecoding.decode([0x41FF][...], type: .string, order: .abcd) == .success(.string("A?")))
        #expect(RegisterDecoding.bit(3, of: 0b1000) == .bool(true))
        #expect(RegisterDecoding.bit(2, of: 0b1000) == .bool(false))
    }
}
