import Modbus
import Testing
@testable import GatewayConfig

// Devices of one type share one tag list in memory (1,000 devices of 100 tags: one
// 17 KB list instead of 17 MB); different lists stay apart and intact.

private func storage(_ tags: [TagConfiguration]) -> UnsafeRawPointer? {
    tags.withUnsafeBufferPointer { UnsafeRawPointer($0.baseAddress) }
}

@Test func devicesWithEqualTagsShareOneList() throws {
    let config = try ConfigurationLoader.parse(yaml: """
    gateway: { id: gw-01 }
    mqtt: { host: broker }
    devices:
      - { name: a, tcp: { host: 10.0.0.1 }, tags: &meter [{ name: v, table: holding, address: 0, type: uint16 }, { name: i, table: input, address: 4, type: float32, unit: A }] }
      - { name: b, tcp: { host: 10.0.0.2 }, tags: *meter }
      - { name: c, tcp: { host: 10.0.0.3 }, tags: [{ name: v, table: holding, address: 0, type: uint16 }, { name: i, table: input, address: 4, type: float32, unit: A }] }
      - { name: d, tcp: { host: 10.0.0.4 }, tags: [{ name: v, table: holding, address: 1, type: uint16 }] }
    """)
    let tags = config.devices.map(\.tags)
    #expect(tags[0].map(\.name) == ["v", "i"] && tags[0][1].unit == "A" && tags[0][1].type == .float32)
    // The alias and the list written out again: the first device's array, not a copy.
    #expect(tags[1] == tags[0] && storage(tags[1]) == storage(tags[0]))
    #expect(tags[2] == tags[0] && storage(tags[2]) == storage(tags[0]))
    // Another list stays its own, with its own values.
    #expect(tags[3].count == 1 && tags[3][0].address == 1)
    #expect(storage(tags[3]) != storage(tags[0]))
}

@Test func aTagListIsNoLongerThanItsTags() throws {
    let tagList = (0..<100).map { "{ name: r\($0), table: holding, address: \($0), type: uint16 }" }.joined(separator: ", ")
    let config = try ConfigurationLoader.parse(yaml: """
    gateway: { id: gw-01 }
    mqtt: { host: broker }
    devices:
      - { name: a, tcp: { host: 10.0.0.1 }, tags: [\(tagList)] }
    """)
    let tags = try #require(config.devices.first?.tags)
    #expect(tags.count == 100)
    // Grown by appending one at a time it would hold room for 128.
    #expect(tags.capacity == 100)
}

// A tag list is read once per distinct list (1,000 devices naming one anchor: 100 tags
// read once, not 100,000 times); what each device gets, and each problem, stay the same.

@Test func aListReadOnceStillGivesEachDeviceItsTagsAndSettings() throws {
    let config = try ConfigurationLoader.parse(yaml: """
    gateway: { id: gw-01 }
    mqtt: { host: broker }
    devices:
      - { name: a, tcp: { host: 10.0.0.1 }, byte_order: cdab, tags: &meter [{ name: p, table: input, address: 2, type: float32, scale: 0.5, deadband: 1 }] }
      - { name: b, tcp: { host: 10.0.0.2 }, poll_interval: 5s, tags: *meter }
    """)
    let (a, b) = (config.devices[0], config.devices[1])
    #expect(a.byteOrder == .cdab && b.byteOrder == .abcd)
    #expect(a.pollInterval == .seconds(1) && b.pollInterval == .seconds(5))
    for device in [a, b] {
        #expect(device.tags == [TagConfiguration(name: "p", table: .input, address: 2, type: .float32, scale: 0.5,
                                                 deadband: .absolute(1))])
    }
}

@Test func aWrongListIsReportedUnderEveryDeviceThatUsesIt() {
    let problems = rejectedProblems("""
    gateway: { id: gw-01 }
    mqtt: { host: broker }
    devices:
      - { name: a, tcp: { host: 10.0.0.1 }, tags: &meter [{ name: p, table: input, address: 2, type: float33 }] }
      - { name: b, tcp: { host: 10.0.0.2 }, tags: *meter }
      - { name: c, tcp: { host: 10.0.0.3 }, tags: [{ name: p, table: input, address: 2, type: float33 }] }
    """)
    #expect(problems.map(\.path).sorted() == ["devices[0].tags[0].type", "devices[1].tags[0].type", "devices[2].tags[0].type"])
}
