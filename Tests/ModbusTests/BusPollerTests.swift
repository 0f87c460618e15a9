import Foundation
import Logging
import Synchronization
import Testing
import TestSupport
@testable import Modbus

/// A poller against a real libmodbus TCP server on loopback.
@Suite struct BusPollerTests {
    final class Recorder: Sendable {
        let events = Mutex<[PollEvent]>([])
        func record(_ event: PollEvent) { events.withLock { $0.append(event) } }

        /// Waits until `predicate` holds for the recorded events, at most `timeout`.
        func wait(for what: String, timeout: Duration = .seconds(10),
                  until predicate: ([PollEvent]) -> Bool) async throws {
            try await waitUntil(what, timeout: timeout) { events.withLock { predicate($0) } }
        }
    }

    func device(port: Int, name: String = "boiler", interval: Duration = .milliseconds(50),
                timeout: Duration = .milliseconds(200)) -> DeviceConfiguration {
        DeviceConfiguration(
            name: name, transport: .tcp(host: "127.0.0.1", port: port), unitID: 1,
            pollInterval: interval, timeout: timeout,
            tags: [
                TagConfiguration(name: "temperature", table: .holding, address: 0, type: .int16, scale: 0.1),
                TagConfiguration(name: "flow", table: .holding, address: 2, type: .float32, byteOrder: .cdab),
                TagConfiguration(name: "energy", table: .input, address: 5, type: .uint32),
                TagConfiguration(name: "missing", table: .input, address: 20_000, type: .uint16),
            ])
    }

    @Test func pollsDecodesAndReportsOutagesAndReturns() async throws {
        let port = freeLoopbackPort()
        let simulator = try ModbusSimulator(port: port)
        simulator.setHoldingRegisters(0, [UInt16(bitPattern: -123), 0, 0x0000, 0x428F])
        simulator.setInputRegisters(5, [0x0001, 0x0002])
        try simulator.start()

        let recorder = Recorder()
        let counters = PollCounters()
        // The stop is seen at once (reset, then refused), never as a timeout; a 200 ms
        // response timeout let a loaded machine's slow answer read as an outage of the
        // running server (online, offline, online before the stop).
        var poller = BusPoller(devices: [device(port: port, timeout: .seconds(5))], counters: counters,
                               logger: Logger(label: "test")) { recorder.record($0) }
        poller.maxBackoff = .milliseconds(200)
        let executor = BusExecutor(name: "test bus")
        defer { executor.shutdown() }
        let task = Task(executorPreference: executor) { [poller] in await poller.run() }
        defer { task.cancel() }

        try await recorder.wait(for: "a poll") { $0.contains { if case .poll = $0 { true } else { false } } }
        let first = recorder.events.withLock { events in
            events.compactMap { if case let .poll(poll) = $0 { poll } else { nil } }.first!
        }
        let values = Dictionary(uniqueKeysWithValues: first.readings.map { ($0.tag, $0.value) })
        #expect(values["temperature"] == .success(.number(-12.3)))
        #expect(values["flow"] == .success(.number(71.5)))
        #expect(values["energy"] == .success(.integer(0x0001_0002)))
        #expect(values["missing"] == .failure(TagError("modbus exception 2: illegal data address")))
        #expect(recorder.events.withLock { events in
            if case .deviceOnline("boiler") = events.first { true } else { false }
        })

        // The device goes away: offline with the reason, once per reason, not once per
        // failed poll (the poller retries every `maxBackoff` while it is gone).
        simulator.stop()
        try await recorder.wait(for: "offline") { events in
            events.contains { if case .deviceOffline("boiler", _) = $0 { true } else { false } }
        }
        let failedWhenOffline = counters.snapshot.pollsFailed
        try await waitUntil("three more failed polls of the stopped device") {
            counters.snapshot.pollsFailed >= failedWhenOffline + 3
        }
        let offlineErrors = recorder.events.withLock { events in
            events.compactMap { if case let .deviceOffline("boiler", error) = $0 { error } else { nil } }
        }
        #expect(Set(offlineErrors).count == offlineErrors.count, "each reason reported once: \(offlineErrors)")
        #expect(offlineErrors.count < counters.snapshot.pollsFailed,
                "\(offlineErrors.count) offline reports for \(counters.snapshot.pollsFailed) failed polls")
        // It comes back on the same port: online again and polls resume.
        let revived = try ModbusSimulator(port: port)
        revived.setHoldingRegisters(0, [200])
        try revived.start()
        defer { revived.stop() }
        try await recorder.wait(for: "online again") { events in
            guard let offline = events.firstIndex(where: { if case .deviceOffline = $0 { true } else { false } }) else { return false }
            return events[offline...].contains { if case let .poll(poll) = $0 {
                poll.readings[0].value == .success(.number(20)) } else { false } }
        }
        let statusChanges = recorder.events.withLock { events in
            events.compactMap { event -> String? in
                switch event {
                case .deviceOnline: return "online"
                case .deviceOffline: return "offline"
                case .poll: return nil
                }
            }
        }
        // An offline device is reported again when its error changes (reset, then
        // refused): the states, taken in order, go online → offline → online.
        let states = statusChanges.reduce(into: [String]()) { if $0.last != $1 { $0.append($1) } }
        #expect(states == ["online", "offline", "online"], "\(statusChanges)")
    }

    @Test func aDeadUnitDoesNotStopTheOtherUnitOnItsBus() async throws {
        let port = freeLoopbackPort()
        let simulator = try ModbusSimulator(port: port)
        simulator.silence(units: [2])
        try simulator.start()
        defer { simulator.stop() }
        var live = device(port: port, name: "live")
        live.tags.removeLast()
        var dead = device(port: port, name: "dead")
        dead.unitID = 2
        let recorder = Recorder()
        let poller = BusPoller(devices: [live, dead], counters: PollCounters(), logger: Logger(label: "test")) {
            recorder.record($0)
        }
        #expect(poller.busKey == "tcp://127.0.0.1:\(port)")
        let executor = BusExecutor(name: "test bus")
        defer { executor.shutdown() }
        let task = Task(executorPreference: executor) { [poller] in await poller.run() }
        defer { task.cancel() }
        try await recorder.wait(for: "the dead unit to go offline, then 20 polls of the live one") { events in
            guard let offline = events.firstIndex(where: { if case .deviceOffline("dead", _) = $0 { true } else { false } })
            else { return false }
            return events[offline...].count { if case .poll(let poll) = $0 { poll.device == "live" } else { false } } >= 20
        }
        let deadPolls = recorder.events.withLock { events in
            events.count { if case .poll(let poll) = $0 { poll.device == "dead" } else { false } }
        }
        #expect(deadPolls == 0)
        let error = recorder.events.withLock { events in
            events.compactMap { if case let .deviceOffline("dead", error) = $0 { error } else { nil } }.first
        }
        #expect(error?.contains("timed out") == true, "\(error ?? "-")")
    }
}
