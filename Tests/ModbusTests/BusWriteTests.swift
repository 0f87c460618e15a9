// Writes on a bus: a write does not wait for the next poll, and a stopped bus
// never runs one.
import Foundation
import Logging
import Synchronization
import Testing
import TestSupport
@testable import Modbus

@Suite struct BusWriteTests {
    static let setpoint = TagConfiguration(name: "setpoint", table: .holding, address: 40, type: .uint16)

    final class Outcomes: Sendable {
        let results = Mutex<[Result<[TagWriteResult], BusWriteSkip>]>([])
        func record(_ result: Result<[TagWriteResult], BusWriteSkip>) { results.withLock { $0.append(result) } }
        var count: Int { results.withLock { $0.count } }
    }

    /// Polls once a minute: the write runs at once, between polls, not at the next poll.
    @Test func aWriteCutsTheWaitForTheNextPollShort() async throws {
        let port = freeLoopbackPort()
        let simulator = try ModbusSimulator(port: port)
        try simulator.start()
        defer { simulator.stop() }
        let online = Mutex(false)
        var poller = BusPoller(
            devices: [DeviceConfiguration(name: "boiler", transport: .tcp(host: "127.0.0.1", port: port),
                                          pollInterval: .seconds(60), timeout: .milliseconds(300), tags: [Self.setpoint])],
            counters: PollCounters(), logger: Logger(label: "test")) { event in
            if case .deviceOnline = event { online.withLock { $0 = true } }
        }
        let queue = BusWriteQueue()
        poller.writes = queue
        let executor = BusExecutor(name: "test bus")
        let task = Task(executorPreference: executor) { [poller] in await poller.run() }
        try await waitUntil("the first poll") { online.withLock { $0 } }
        let outcomes = Outcomes()
        queue.submit(BusWriteRequest(device: "boiler", writes: [TagWrite(tag: Self.setpoint, payload: .registers([4242]))],
                                     preflight: { nil }, complete: outcomes.record))
        try await waitUntil("the write, long before the next poll at 60 s", timeout: .seconds(10)) { outcomes.count == 1 }
        let result = try #require(outcomes.results.withLock { $0.first })
        let written = try result.get()
        guard case let .written(readBack) = written.first?.outcome else {
            Issue.record("not written: \(written)")
            return
        }
        #expect(readBack == .success(.integer(4242)))
        #expect(simulator.holdingRegisters(40, count: 1) == [4242])
        // One poll read (FC3) before the write, one read back after it: no poll in between.
        #expect(simulator.requestCount(functionCode: 3) == 2)
        task.cancel()
        await task.value
        executor.shutdown()
        // The bus is gone: a later request is refused at once and nothing is written.
        queue.submit(BusWriteRequest(device: "boiler", writes: [TagWrite(tag: Self.setpoint, payload: .registers([1]))],
                                     preflight: { nil }, complete: outcomes.record))
        #expect(outcomes.count == 2)
        if case .failure(.busStopped) = outcomes.results.withLock({ $0[1] }) {} else {
            Issue.record("a stopped bus must refuse: \(outcomes.results.withLock { $0[1] })")
        }
        #expect(simulator.holdingRegisters(40, count: 1) == [4242])
    }

    /// The preflight is asked on the bus right before writing; its veto writes nothing.
    @Test func aVetoAtTheLastMomentWritesNothing() async throws {
        let port = freeLoopbackPort()
        let simulator = try ModbusSimulator(port: port)
        try simulator.start()
        defer { simulator.stop() }
        let online = Mutex(false)
        var poller = BusPoller(
            devices: [DeviceConfiguration(name: "boiler", transport: .tcp(host: "127.0.0.1", port: port),
                                          pollInterval: .seconds(60), timeout: .milliseconds(300), tags: [Self.setpoint])],
            counters: PollCounters(), logger: Logger(label: "test")) { event in
            if case .deviceOnline = event { online.withLock { $0 = true } }
        }
        let queue = BusWriteQueue()
        poller.writes = queue
        let executor = BusExecutor(name: "test bus")
        let task = Task(executorPreference: executor) { [poller] in await poller.run() }
        try await waitUntil("the first poll") { online.withLock { $0 } }
        struct Veto: Error {}
        let outcomes = Outcomes()
        queue.submit(BusWriteRequest(device: "boiler", writes: [TagWrite(tag: Self.setpoint, payload: .registers([7]))],
                                     preflight: { Veto() }, complete: outcomes.record))
        try await waitUntil("the vetoed request's completion") { outcomes.count == 1 }
        if case .failure(.vetoed) = outcomes.results.withLock({ $0[0] }) {} else {
            Issue.record("expected a veto: \(outcomes.results.withLock { $0[0] })")
        }
        #expect(simulator.requestCount(functionCode: 6) == 0)
        task.cancel()
        await task.value
        executor.shutdown()
    }
}
