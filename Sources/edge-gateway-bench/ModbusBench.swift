// `make bench modbus`: the poller against a local libmodbus TCP server.
//
//   requests/s   the gateway's BusPoller (plan, read, decode, emit) vs a plain
//                libmodbus read loop against the same server in the same run
//   decode       CPU time per 1,000 tag values decoded and encoded into data messages
//   plan         requests per poll for a 300-tag map in scattered blocks vs one per tag
import CModbus
import Foundation
import Gateway
import GatewayConfig
import LocalPeers
import Modbus
import Synchronization

/// CPU time of this process (all threads).
func processCPUTime() -> Double {
    var spec = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &spec)
    return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
}

struct ModbusBenchFailure: Error, CustomStringConvertible {
    var description: String
}

/// Requests per second of a plain libmodbus loop reading one register at a time.
func modbusBaseline(port: Int, requests: Int) throws -> Double {
    guard let context = modbus_new_tcp("127.0.0.1", Int32(port)) else { throw ModbusBenchFailure(description: "modbus_new_tcp failed") }
    defer { modbus_free(context) }
    guard modbus_connect(context) == 0 else { throw ModbusBenchFailure(description: "cannot connect to the simulator") }
    defer { modbus_close(context) }
    modbus_set_slave(context, 1)
    var word: UInt16 = 0
    let clock = ContinuousClock()
    let elapsed = clock.measure {
        for index in 0..<requests {
            _ = modbus_read_registers(context, Int32((index % 500) * 2), 1, &word)
        }
    }
    return Double(requests) / seconds(elapsed)
}

/// Requests per second of a `BusPoller` polling back to back: 2,000 tags that do
/// not touch, so one poll is 2,000 requests, each decoded and emitted. The 1 ms
/// interval is always overrun; the drift-free schedule then waits for the next
/// slot (under 1 ms), which is part of the figure.
func pollerRate(port: Int, simulator: ModbusSimulator, requests: Int) async throws -> Double {
    let tags = (0..<2000).map { TagConfiguration(name: "t\($0)", table: .holding, address: $0 * 2, type: .uint16) }
    let device = DeviceConfiguration(name: "bench", transport: .tcp(host: "127.0.0.1", port: port),
                                     pollInterval: .milliseconds(1), timeout: .seconds(1), tags: tags)
    let polls = Atomic<Int>(0)
    let poller = BusPoller(devices: [device], counters: PollCounters(), logger: quiet) { event in
        if case .poll = event { polls.add(1, ordering: .relaxed) }
    }
    let executor = BusExecutor(name: "bench bus")
    let task = Task(executorPreference: executor) { await poller.run() }
    try await waitUntil("the poller's first polls") { polls.load(ordering: .relaxed) >= 2 }
    let clock = ContinuousClock()
    let startCount = simulator.requestCount
    let start = clock.now
    try await waitUntil("\(requests) requests", timeout: .seconds(120)) {
        simulator.requestCount >= startCount + requests
    }
    let rate = Double(simulator.requestCount - startCount) / seconds(clock.now - start)
    task.cancel()
    await task.value
    executor.shutdown()
    return rate
}

/// A plant-like map: 300 tags in 30 scattered blocks of mixed types and tables.
func realisticMap() -> [TagConfiguration] {
    var tags: [TagConfiguration] = []
    let types: [ValueType] = [.uint16, .int16, .float32, .uint32, .int16, .float32, .uint16, .int32, .float64, .uint16]
    for block in 0..<30 {
        let table: RegisterTable = [.holding, .holding, .input, .coils, .holding, .input][block % 6]
        var address = 100 + block * 997 % 9000
        for index in 0..<10 {
            let type: ValueType = table.holdsBits ? .bool : types[(block + index) % types.count]
            tags.append(TagConfiguration(name: "b\(block)_\(index)", table: table, address: address, type: type))
            // Mostly packed, with the odd reserved register between values (as device maps have).
            address += (table.holdsBits ? 1 : type.registerCount) + (index % 4 == 3 ? 2 : 0)
        }
    }
    return tags
}

func benchModbus() async throws {
    print("modbus: BusPoller vs a plain libmodbus loop, against one local libmodbus TCP server")
    let port = freeLoopbackPort()
    let simulator = try ModbusSimulator(port: port)
    try simulator.start()
    defer { simulator.stop() }

    // Alternated, twice each, so both see the same machine (other builds share these cores).
    let requests = 50_000
    var baselines: [Double] = []
    var pollers: [Double] = []
    for _ in 0..<2 {
        baselines.append(try modbusBaseline(port: port, requests: requests))
        pollers.append(try await pollerRate(port: port, simulator: simulator, requests: requests))
    }
    let baseline = baselines.max()!
    let poller = pollers.max()!
    figure("poller requests/s (2,000 single-register reads per poll)", poller, "req/s")
    figure("baseline: plain modbus_read_registers loop (best of 2)", baseline, "req/s")
    print(String(format: "  ratio poller / plain libmodbus (target >= 0.9): %.2f", poller / baseline))

    // Decoding and encoding: 100 tags of mixed types per poll, 10,000 polls.
    let types: [ValueType] = [.int16, .uint16, .int32, .uint32, .float32, .int64, .uint64, .float64]
    var tags: [TagConfiguration] = []
    var address = 0
    for index in 0..<100 {
        let type = types[index % types.count]
        tags.append(TagConfiguration(name: "tag_\(index)", table: .holding, address: address, type: type,
                                     scale: index % 3 == 0 ? 0.1 : 1))
        address += type.registerCount
    }
    let words = (0..<address).map { UInt16(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) & 0x3FFF }
    let polls = 10_000
    var bytes = 0
    let cpuStart = processCPUTime()
    for pollIndex in 0..<polls {
        var readings: [DevicePoll.Reading] = []
        readings.reserveCapacity(tags.count)
        var offset = 0
        for tag in tags {
            let value = RegisterDecoding.decode(words[offset..<offset + tag.width], tag: tag, deviceOrder: .abcd)
            readings.append(DevicePoll.Reading(tag: tag.name, value: value))
            offset += tag.width
        }
        let poll = DevicePoll(device: "bench", timestamp: Date(), readings: readings)
        bytes += MessageEncoding.dataMessage(gateway: "gw-01", poll: poll, boot: 1, seq: Int64(pollIndex)).count
    }
    let cpu = processCPUTime() - cpuStart
    let values = Double(polls * tags.count)
    figure("CPU per 1,000 tag values decoded + JSON-encoded", cpu / values * 1000 * 1e6, "µs")
    figure("  (payload bytes per 100-tag message)", Double(bytes / polls), "B")

    // Planning a realistic map.
    let map = realisticMap()
    for gap in [0, 4, 16] {
        figure("requests per poll, 300 tags in 30 blocks, max_gap \(gap)",
               Double(RegisterPlan(tags: map, maxGap: gap).blocks.count), "req")
    }
    figure("baseline: one request per tag", Double(map.count), "req")
}
