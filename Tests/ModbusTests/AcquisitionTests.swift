import Foundation
import Logging
import Synchronization
import TestSupport
import Testing
@testable import Modbus

/// Records a poller's events; waits on them with a deadline.
final class EventLog: Sendable {
    let events = Mutex<[PollEvent]>([])
    func record(_ event: PollEvent) { events.withLock { $0.append(event) } }

    var polls: [DevicePoll] {
        events.withLock { $0.compactMap { if case let .poll(poll) = $0 { poll } else { nil } } }
    }

    func polls(of device: String) -> [DevicePoll] { polls.filter { $0.device == device } }

    func wait(for what: String, timeout: Duration = .seconds(15), until predicate: ([PollEvent]) -> Bool) async throws {
        try await waitUntil(what, timeout: timeout) { predicate(events.withLock { $0 }) }
    }
}

/// A poller running on its own bus thread until `finish()`.
struct RunningPoller {
    let task: Task<Void, Never>
    let executor: BusExecutor
    let counters: PollCounters

    init(_ devices: [DeviceConfiguration], log: EventLog, maxBackoff: Duration = .seconds(30)) {
        let counters = PollCounters()
        var poller = BusPoller(devices: devices, counters: counters, logger: Logger(label: "test")) { log.record($0) }
        poller.maxBackoff = maxBackoff
        executor = BusExecutor(name: "test bus")
        self.counters = counters
        task = Task(executorPreference: executor) { [poller] in await poller.run() }
    }

    /// Cancels the poller and waits until its loop has returned (no request is in flight after).
    func finish() async {
        task.cancel()
        await task.value
        executor.shutdown()
    }
}

func values(_ poll: DevicePoll) -> [String: Result<TagValue, TagError>] {
    Dictionary(uniqueKeysWithValues: poll.readings.map { ($0.tag, $0.value) })
}

func tcpDevice(_ port: Int, name: String = "dev", unit: Int = 1, interval: Duration = .seconds(3600),
               maxGap: Int = 0, tags: [TagConfiguration]) -> DeviceConfiguration {
    DeviceConfiguration(name: name, transport: .tcp(host: "127.0.0.1", port: port), unitID: unit,
                        pollInterval: interval, timeout: .milliseconds(300), tags: tags, maxGap: maxGap)
}

@Suite struct TCPAcquisitionTests {
    /// Registers holding the big-endian value ABCDEFGH in `order`.
    static func words(_ value: UInt64, registers: Int, _ order: ByteOrder) -> [UInt16] {
        var bytes: [UInt8] = (0..<(registers * 2)).reversed().map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
        if order == .badc || order == .dcba {
            for index in stride(from: 0, to: bytes.count, by: 2) { bytes.swapAt(index, index + 1) }
        }
        var words = stride(from: 0, to: bytes.count, by: 2).map { UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]) }
        if order == .cdab || order == .dcba { words.reverse() }
        return words
    }

    @Test func everyTableTypeAndByteOrderWithKnownValues() async throws {
        let port = freeLoopbackPort()
        let simulator = try ModbusSimulator(port: port)
        var tags: [TagConfiguration] = []
        var expected: [String: TagValue] = [:]
        var address = 0
        // Every multi-register type in every byte order, in holding registers.
        let cases: [(ValueType, UInt64, TagValue)] = [
            (.int16, 0xFF85, .integer(-123)),
            (.uint16, 0xFF85, .integer(65413)),
            (.int32, 0xFFFF_FFFE, .integer(-2)),
            (.uint32, 0x1234_5678, .integer(0x1234_5678)),
            (.float32, 0x428F_0000, .number(71.5)),
            (.int64, 0xFFFF_FFFF_FFFF_FF00, .integer(-256)),
            (.uint64, 0x0102_0304_0506_0708, .integer(0x0102_0304_0506_0708)),
            (.float64, Double(-1234.5).bitPattern, .number(-1234.5)),
        ]
        for (type, raw, value) in cases {
            for order in ByteOrder.allCases {
                let name = "\(type.rawValue)_\(order.rawValue)"
                tags.append(TagConfiguration(name: name, table: .holding, address: address, type: type, byteOrder: order))
                simulator.setHoldingRegisters(address, Self.words(raw, registers: type.registerCount, order))
                expected[name] = value
                address += type.registerCount
            }
        }
        // Input registers, strings, bits of registers, coils, discrete inputs, scale.
        simulator.setInputRegisters(100, [0x4547, 0x2D53, 0x494D, 0x2D30, 0x3100, 0x0000])  // "EG-SIM-01"
        tags.append(TagConfiguration(name: "name", table: .input, address: 100, type: .string, length: 6))
        simulator.setInputRegisters(110, [0x4745, 0x532D])  // "EG-S" with bytes swapped
        tags.append(TagConfiguration(name: "name_badc", table: .input, address: 110, type: .string, byteOrder: .badc, length: 2))
        simulator.setInputRegisters(120, [715, 0b1000_0000_0000_0100])
        tags.append(TagConfiguration(name: "scaled", table: .input, address: 120, type: .int16, scale: 0.1, offset: 1))
        tags.append(TagConfiguration(name: "bit2", table: .input, address: 121, type: .bool, bit: 2))
        tags.append(TagConfiguration(name: "bit15", table: .input, address: 121, type: .bool, bit: 15))
        tags.append(TagConfiguration(name: "bit0", table: .input, address: 121, type: .bool, bit: 0))
        simulator.setCoils(10, [true, false, true])
        tags += (10...12).map { TagConfiguration(name: "coil\($0)", table: .coils, address: $0, type: .bool) }
        simulator.setDiscreteInputs(1990, [false, true])
        tags.append(TagConfiguration(name: "di1990", table: .discreteInputs, address: 1990, type: .bool))
        tags.append(TagConfiguration(name: "di1991", table: .discreteInputs, address: 1991, type: .bool))
        expected.merge([
            "name": .string("EG-SIM-01"), "name_badc": .string("EG-S"), "scaled": .number(72.5),
            "bit2": .bool(true), "bit15": .bool(true), "bit0": .bool(false),
            "coil10": .bool(true), "coil11": .bool(false), "coil12": .bool(true),
            "di1990": .bool(false), "di1991": .bool(true),
        ]) { a, _ in a }
        try simulator.start()
        defer { simulator.stop() }

        let device = tcpDevice(port, tags: tags)
        let plan = RegisterPlan(tags: device.tags, maxGap: 0)
        // 8 types × 4 orders touch each other: 80 registers in one read; then strings
        // (100+6 and 110+2), input 120+2, coils 10+3, discrete inputs 1990+2.
        #expect(plan.blocks.map { "\($0.table.rawValue) \($0.address)+\($0.count)" }
            == ["holding 0+80", "input 100+6", "input 110+2", "input 120+2", "coils 10+3", "discrete_inputs 1990+2"])

        let log = EventLog()
        let poller = RunningPoller([device], log: log)
        try await log.wait(for: "one poll") { $0.contains { if case .poll = $0 { true } else { false } } }
        await poller.finish()

        let poll = try #require(log.polls.first)
        let read = values(poll)
        for (name, value) in expected {
            #expect(read[name] == .success(value), "\(name)")
        }
        #expect(poll.readings.map(\.tag) == tags.map(\.name))
        // Coalescing, counted on the server: one request per block of the plan.
        #expect(log.polls.count == 1)
        #expect(simulator.requestCount(functionCode: 1) == 1)
        #expect(simulator.requestCount(functionCode: 2) == 1)
        #expect(simulator.requestCount(functionCode: 3) == 1)
        #expect(simulator.requestCount(functionCode: 4) == 3)
        #expect(simulator.requestCount == plan.blocks.count)
    }

    @Test func maxGapMergesAndARejectedMergedReadIsSplitAndRemembered() async throws {
        let port = freeLoopbackPort()
        let simulator = try ModbusSimulator(port: port)
        simulator.setHoldingRegisters(0, [11])
        simulator.setHoldingRegisters(10, [22])
        simulator.setHoldingRegisters(12, [33])
        simulator.reject(functionCode: 3, addresses: 5..<6)  // an unmapped hole inside the merged read
        try simulator.start()
        defer { simulator.stop() }
        let tags = [
            TagConfiguration(name: "a", table: .holding, address: 0, type: .uint16),
            TagConfiguration(name: "b", table: .holding, address: 10, type: .uint16),
            TagConfiguration(name: "c", table: .holding, address: 12, type: .uint16),
        ]
        let device = tcpDevice(port, interval: .milliseconds(20), maxGap: 10, tags: tags)
        #expect(RegisterPlan(tags: tags, maxGap: 10).blocks.count == 1)
        #expect(RegisterPlan(tags: tags, maxGap: 1).blocks.count == 2)
        #expect(RegisterPlan(tags: tags, maxGap: 0).blocks.count == 3)

        let log = EventLog()
        let poller = RunningPoller([device], log: log)
        try await log.wait(for: "five polls") { $0.count { if case .poll = $0 { true } else { false } } >= 5 }
        await poller.finish()
        for poll in log.polls {
            #expect(values(poll) == ["a": .success(.integer(11)), "b": .success(.integer(22)), "c": .success(.integer(33))])
        }
        // The merged read once (rejected), then three single reads per poll: the split
        // of 0+13 is first into touching runs (all three), remembered for later polls.
        // A poll that `finish()` cut short sent at most two of its three reads and is not logged.
        let reads = simulator.requestCount(functionCode: 3)
        #expect((1 + 3 * log.polls.count...3 + 3 * log.polls.count).contains(reads),
                "\(reads) reads for \(log.polls.count) polls")
    }

    @Test func exceptionResponsesBecomeTagErrorsWithTheirMeaning() async throws {
        let port = freeLoopbackPort()
        let simulator = try ModbusSimulator(port: port)
        simulator.reject(functionCode: 4, addresses: 50..<51, exception: 4)
        simulator.reject(functionCode: 1, addresses: 7..<8, exception: 1)
        simulator.setInputRegisters(60, [5])
        try simulator.start()
        defer { simulator.stop() }
        let device = tcpDevice(port, tags: [
            TagConfiguration(name: "failing", table: .input, address: 50, type: .uint16),
            TagConfiguration(name: "unsupported", table: .coils, address: 7, type: .bool),
            TagConfiguration(name: "unmapped", table: .holding, address: 60_000, type: .uint16),
            TagConfiguration(name: "fine", table: .input, address: 60, type: .uint16),
            TagConfiguration(name: "nan", table: .input, address: 70, type: .float32),
            TagConfiguration(name: "huge", table: .input, address: 80, type: .uint64),
        ])
        simulator.setInputRegisters(70, [0x7FC0, 0])
        simulator.setInputRegisters(80, [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF])
        let log = EventLog()
        let poller = RunningPoller([device], log: log)
        try await log.wait(for: "one poll") { $0.contains { if case .poll = $0 { true } else { false } } }
        await poller.finish()
        let read = values(try #require(log.polls.first))
        #expect(read["failing"] == .failure(TagError("modbus exception 4: slave device or server failure")))
        #expect(read["unsupported"] == .failure(TagError("modbus exception 1: illegal function")))
        #expect(read["unmapped"] == .failure(TagError("modbus exception 2: illegal data address")))
        #expect(read["fine"] == .success(.integer(5)))
        #expect(read["nan"] == .failure(TagError("value is NaN")))
        #expect(read["huge"] == .failure(TagError("value 18446744073709551615 is out of range (above 9223372036854775807)")))
        // Exceptions are answers: the device stays online.
        #expect(log.events.withLock { $0.contains { if case .deviceOffline = $0 { true } else { false } } } == false)
    }

    // Answers with a wrong byte count, for both a register and a bit read; every
    // other wrong field of a TCP answer is in TCPAnswerTests.
    @Test func aServerSendingGarbageNeverStopsThePoller() async throws {
        let behaviour = ModbusSimulator.Behaviour.garbage
        let port = freeLoopbackPort()
        let simulator = try ModbusSimulator(port: port)
        simulator.setHoldingRegisters(0, [42])
        simulator.setCoils(0, [true])
        simulator.setBehaviour(behaviour)
        try simulator.start()
        defer { simulator.stop() }
        let device = tcpDevice(port, interval: .milliseconds(20), tags: [
            TagConfiguration(name: "value", table: .holding, address: 0, type: .uint16),
            TagConfiguration(name: "flag", table: .coils, address: 0, type: .bool),
        ])
        let log = EventLog()
        let poller = RunningPoller([device], log: log, maxBackoff: .milliseconds(100))
        try await log.wait(for: "three polls of garbage") { events in
            events.count { if case let .poll(poll) = $0 { poll.readings.allSatisfy { (try? $0.value.get()) == nil } } else { false } } >= 3
        }
        let garbled = try #require(log.polls.first)
        for reading in garbled.readings {
            guard case let .failure(error) = reading.value else { Issue.record("\(reading.tag) decoded garbage"); continue }
            #expect(error.message.contains("invalid response"), "\(error.message)")
        }
        simulator.setBehaviour(.normal)
        try await log.wait(for: "good values again") { events in
            events.contains { if case let .poll(poll) = $0 { values(poll)["value"] == .success(.integer(42)) } else { false } }
        }
        await poller.finish()
        let last = try #require(log.polls.last)
        #expect(values(last) == ["value": .success(.integer(42)), "flag": .success(.bool(true))])
    }

    @Test func aServerThatStopsMidPollAndComesBackIsReadAgain() async throws {
        let port = freeLoopbackPort()
        let simulator = try ModbusSimulator(port: port)
        simulator.setHoldingRegisters(0, [1])
        try simulator.start()
        // Several requests per poll and no pause between polls: the stop lands inside a poll.
        let tags = (0..<8).map { TagConfiguration(name: "r\($0)", table: .holding, address: $0 * 10, type: .uint16) }
        let device = tcpDevice(port, interval: .milliseconds(10), tags: tags)
        let log = EventLog()
        let poller = RunningPoller([device], log: log, maxBackoff: .milliseconds(200))
        try await log.wait(for: "ten polls") { $0.count { if case .poll = $0 { true } else { false } } >= 10 }
        simulator.stop()
        try await log.wait(for: "offline") { $0.contains { if case .deviceOffline("dev", _) = $0 { true } else { false } } }

        let revived = try ModbusSimulator(port: port)
        revived.setHoldingRegisters(0, [2])
        try revived.start()
        defer { revived.stop() }
        try await log.wait(for: "polls from the revived server") { events in
            guard let offline = events.lastIndex(where: { if case .deviceOffline = $0 { true } else { false } }) else { return false }
            return events[offline...].count { if case let .poll(poll) = $0 { values(poll)["r0"] == .success(.integer(2)) } else { false } } >= 3
        }
        await poller.finish()
        // No poll ever carried a half-read device: each is complete or absent.
        for poll in log.polls {
            #expect(poll.readings.allSatisfy { (try? $0.value.get()) != nil }, "\(poll.readings)")
        }
    }

    @Test func reportByExceptionPublishesChangesBeyondTheDeadbandAndHeartbeats() {
        var filter = ChangeFilter(policy: .onChange(maxInterval: .seconds(60)),
                                  deadbands: [.absolute(0.5), .percent(10), .none])
        func readings(_ a: Double, _ b: Int64, _ c: Result<TagValue, TagError>) -> [DevicePoll.Reading] {
            [.init(tag: "a", value: .success(.number(a))), .init(tag: "b", value: .success(.integer(b))),
             .init(tag: "c", value: c)]
        }
        let start = ContinuousClock.now
        let sequence: [(Double, Int64, Result<TagValue, TagError>, Duration)] = [
            (10, 100, .success(.bool(true)), .zero),  // first poll: published
            (10.5, 109, .success(.bool(true)), .seconds(1)),  // within both deadbands
            (10.6, 100, .success(.bool(true)), .seconds(2)),  // a moved 0.6 > 0.5
            (10.2, 100, .success(.bool(true)), .seconds(3)),  // the reference is now 10.6
            (10.6, 111, .success(.bool(true)), .seconds(4)),  // b moved 11 % of 100
            (10.6, 111, .success(.bool(false)), .seconds(5)),  // any bool change
            (10.6, 111, .failure(TagError("x")), .seconds(6)),  // an error appears
            (10.6, 111, .failure(TagError("x")), .seconds(7)),  // the same error
            (10.6, 111, .failure(TagError("x")), .seconds(66)),  // heartbeat after max_interval
        ]
        var published: [Bool] = []
        for (a, b, c, offset) in sequence {
            published.append(filter.admit(readings(a, b, c), at: start + offset))
        }
        #expect(published == [true, false, true, false, true, true, true, false, true])
        var always = ChangeFilter(policy: .always, deadbands: [.none])
        let same = [DevicePoll.Reading(tag: "a", value: .success(.integer(1)))]
        let first = always.admit(same, at: start)
        let second = always.admit(same, at: start)
        #expect(first && second)
    }

    @Test func pollGroupsAreReadAtTheirOwnIntervals() async throws {
        let port = freeLoopbackPort()
        let simulator = try ModbusSimulator(port: port)
        try simulator.start()
        defer { simulator.stop() }
        let device = tcpDevice(port, interval: .milliseconds(20), tags: [
            TagConfiguration(name: "fast", table: .holding, address: 0, type: .uint16),
            TagConfiguration(name: "slow", table: .holding, address: 1, type: .uint16, pollInterval: .seconds(3600)),
        ])
        let log = EventLog()
        let poller = RunningPoller([device], log: log)
        try await log.wait(for: "ten polls of the fast group") { events in
            events.count { if case let .poll(poll) = $0 { poll.readings.map(\.tag) == ["fast"] } else { false } } >= 10
        }
        await poller.finish()
        #expect(log.polls.filter { $0.readings.map(\.tag) == ["slow"] }.count == 1)
        // Separate groups are separate requests even though the registers touch.
        #expect(simulator.requestCount(functionCode: 3) == log.polls.count)
    }
}
