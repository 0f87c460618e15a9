import Foundation
import Modbus
import Testing
@testable import GatewayConfig

// The Modbus keys of issue 4: tables, types, RTU, planning, poll groups, report by exception.

private func document(_ devices: String) -> String {
    """
    gateway:
      id: gw-01
    mqtt:
      host: broker
    devices:
    \(devices)
    """
}

@Test func everyTableTypeAndSettingLoads() throws {
    let config = try ConfigurationLoader.parse(yaml: document("""
      - name: meter
        rtu: { port: /dev/ttyUSB0, baud: 19200, parity: even, data_bits: 8, stop_bits: 1, rs485: true, rts: up }
        unit_id: 7
        max_gap: 4
        byte_timeout: 50ms
        retries: 2
        publish: on_change
        max_interval: 5m
        byte_order: cdab
        tags:
          - { name: running, table: coils, address: 3 }
          - { name: door, table: discrete_inputs, address: 0, type: bool }
          - { name: alarm, table: holding, address: 10, type: bool, bit: 15 }
          - { name: energy, table: input, address: 20, type: uint64, byte_order: dcba, unit: kWh }
          - { name: total, table: input, address: 24, type: int64 }
          - { name: power, table: input, address: 28, type: float64, unit: kW, deadband: 0.5 }
          - { name: serial, table: holding, address: 40, type: string, length: 8 }
          - { name: temp, table: holding, address: 0, type: int16, scale: 0.1, unit: °C, deadband_percent: 2, poll_interval: 10s }
    """))
    let device = try #require(config.devices.first)
    #expect(device.transport == .rtu(SerialSettings(port: "/dev/ttyUSB0", baud: 19200, parity: .even, dataBits: 8,
                                                    stopBits: 1, rs485: true, rts: .up)))
    #expect(device.transport.busKey == "/dev/ttyUSB0")
    #expect(device.unitID == 7)
    #expect(device.maxGap == 4)
    #expect(device.byteTimeout == .milliseconds(50))
    #expect(device.retries == 2)
    #expect(device.publish == .onChange(maxInterval: .seconds(300)))
    let tags = Dictionary(uniqueKeysWithValues: device.tags.map { ($0.name, $0) })
    #expect(tags["running"]?.table == .coils && tags["running"]?.type == .bool)
    #expect(tags["door"]?.table == .discreteInputs)
    #expect(tags["alarm"]?.bit == 15)
    #expect(tags["energy"]?.type == .uint64 && tags["energy"]?.byteOrder == .dcba && tags["energy"]?.unit == "kWh")
    #expect(tags["energy"]?.width == 4)
    #expect(tags["power"]?.deadband == .absolute(0.5))
    #expect(tags["serial"]?.type == .string && tags["serial"]?.length == 8 && tags["serial"]?.width == 8)
    #expect(tags["temp"]?.deadband == .percent(2) && tags["temp"]?.pollInterval == .seconds(10))
    #expect(device.pollGroups.map(\.interval) == [.seconds(1), .seconds(10)])
    #expect(device.pollGroups.last?.tagIndices == [7])
}

@Test func wrongCombinationsAreEachReportedWithTheirPath() {
    let found = rejectedProblems(document("""
      - name: d
        tcp: { host: 127.0.0.1 }
        max_interval: 10s
        tags:
          - { name: a, table: coils, address: 0, type: int16 }
          - { name: b, table: holding, address: 0, type: bool }
          - { name: c, table: holding, address: 0, type: string }
          - { name: d, table: holding, address: 0, type: uint16, bit: 3 }
          - { name: e, table: holding, address: 0, type: float32, deadband: 1, deadband_percent: 1 }
          - { name: f, table: holding, address: 65534, type: int64 }
          - { name: g, table: coil, address: 0, scale: 2 }
    """))
    let paths = found.map(\.path)
    #expect(paths.contains("devices[0].max_interval"))
    #expect(paths.contains("devices[0].tags[0].type"))
    #expect(paths.contains("devices[0].tags[1].bit"))
    #expect(paths.contains("devices[0].tags[2].length"))
    #expect(paths.contains("devices[0].tags[3].bit"))
    #expect(paths.contains("devices[0].tags[4].deadband_percent"))
    #expect(paths.contains("devices[0].tags[5].address"))
    #expect(paths.contains("devices[0].tags[6].scale"))
    #expect(found.allSatisfy { !$0.hint.isEmpty })
}

@Test func rtuProblems() {
    let found = rejectedProblems(document("""
      - name: a
        rtu: { port: /dev/ttyUSB0, baud: 9600, parity: mark }
        unit_id: 0
        tags: [{ name: t, table: input, address: 0, type: int16 }]
      - name: b
        rtu: { port: /dev/ttyUSB1, baud: 9600 }
        tcp: { host: 127.0.0.1 }
        tags: [{ name: t, table: input, address: 0, type: int16 }]
      - name: c
        rtu: { port: /dev/ttyUSB2, baud: 9600 }
        tags: [{ name: t, table: input, address: 0, type: int16 }]
      - name: d
        rtu: { port: /dev/ttyUSB2, baud: 19200 }
        unit_id: 2
        tags: [{ name: t, table: input, address: 0, type: int16 }]
    """))
    let byPath = Dictionary(found.map { ($0.path, $0) }, uniquingKeysWith: { a, _ in a })
    #expect(byPath["devices[0].rtu.parity"] != nil)
    #expect(byPath["devices[0].unit_id"]?.hint.contains("1...247") == true)
    #expect(byPath["devices[1].rtu"]?.message == "a device has either tcp: or rtu:, not both")
    #expect(byPath["devices[3].rtu"]?.message.contains("different line settings") == true)
}

@Test func moreBusesThanOneGatewayCanPollAreRefusedNamingTheSplit() throws {
    func devices(_ count: Int) -> String {
        (0..<count).map { index in
            "  - { name: d\(index), tcp: { host: 127.0.0.1, port: \(10_000 + index) }, tags: [{ name: t, table: holding, address: 0, type: uint16 }] }"
        }.joined(separator: "\n")
    }
    let found = rejectedProblems(document(devices(ConfigurationLoader.maximumBuses + 1)))
    let problem = try #require(found.first { $0.path == "devices" })
    #expect(problem.message.contains("\(ConfigurationLoader.maximumBuses + 1) buses"))
    #expect(problem.hint.contains("split the devices over two gateways"))
    // As many as one gateway polls load (one endpoint each).
    #expect(throws: Never.self) { try ConfigurationLoader.parse(yaml: document(devices(ConfigurationLoader.maximumBuses))) }
}
