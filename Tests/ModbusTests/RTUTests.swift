import Foundation
import TestSupport
import Testing
@testable import Modbus

/// Two ptys joined by socat: a serial line with the simulator on one end and the poller on the other.
final class PtyPair {
    let directory: TemporaryDirectory
    let socat: ChildProcess
    /// The simulator's end and the gateway's end.
    let deviceEnd: String
    let gatewayEnd: String

    init() async throws {
        let socatPath = try requireTool("socat", package: "socat")
        directory = try TemporaryDirectory("edge-gateway-rtu")
        deviceEnd = directory.file("device")
        gatewayEnd = directory.file("gateway")
        socat = try ChildProcess(socatPath, ["-d", "-d", "pty,raw,echo=0,link=\(deviceEnd)",
                                             "pty,raw,echo=0,link=\(gatewayEnd)"],
                                 log: directory.file("socat.log"))
        try await waitUntil("socat's pty links") { [deviceEnd, gatewayEnd] in
            FileManager.default.fileExists(atPath: deviceEnd) && FileManager.default.fileExists(atPath: gatewayEnd)
        }
    }

    func close() async {
        socat.signal(SIGTERM)
        _ = try? await socat.waitForExit()
        directory.remove()
    }

    func device(_ name: String, unit: Int, interval: Duration, tags: [TagConfiguration]) -> DeviceConfiguration {
        DeviceConfiguration(name: name, transport: .rtu(SerialSettings(port: gatewayEnd, baud: 19200)), unitID: unit,
                            pollInterval: interval, timeout: .milliseconds(100), tags: tags,
                            byteTimeout: .milliseconds(50))
    }
}

@Suite(.serialized) struct RTUTests {
    @Test func aDeadUnitOnTheLineDoesNotSlowTheLiveOne() async throws {
        let pty = try await PtyPair()
        let simulator = try ModbusSimulator(rtuPath: pty.deviceEnd, unit: 1)
        simulator.setHoldingRegisters(0, [0x428F, 0x0000])
        simulator.setCoils(3, [true])
        try simulator.start()
        let tags = [
            TagConfiguration(name: "flow", table: .holding, address: 0, type: .float32),
            TagConfiguration(name: "pump", table: .coils, address: 3, type: .bool),
        ]
        let live = pty.device("live", unit: 1, interval: .milliseconds(50), tags: tags)
        let dead = pty.device("dead", unit: 2, interval: .milliseconds(50), tags: tags)
        #expect(live.transport.busKey == dead.transport.busKey)

        let log = EventLog()
        let poller = RunningPoller([live, dead], log: log, maxBackoff: .seconds(2))
        try await log.wait(for: "the dead unit to go offline") { events in
            events.contains { if case .deviceOffline("dead", _) = $0 { true } else { false } }
        }
        // A window measured in events: from here until the live unit has been polled 40 more times.
        let failedBefore = poller.counters.snapshot.pollsFailed
        let livePollsBefore = log.polls(of: "live").count
        try await log.wait(for: "40 more polls of the live unit") { _ in
            log.polls(of: "live").count >= livePollsBefore + 40
        }
        let deadAttempts = poller.counters.snapshot.pollsFailed - failedBefore
        let livePolls = log.polls(of: "live").count - livePollsBefore
        await poller.finish()
        await pty.close()
        simulator.stop()

        #expect(log.polls(of: "dead").isEmpty)
        // Polled at its own interval, the dead unit would cost one attempt per live poll;
        // with backoff it is tried a few times while the live unit keeps its schedule.
        // (The backoff is wall time and the window is counted in live polls, which a loaded
        // machine slows down: the margin keeps the check about backoff, not about load.)
        #expect(deadAttempts * 3 <= livePolls, "dead attempts \(deadAttempts), live polls \(livePolls)")
        let read = values(try #require(log.polls(of: "live").last))
        #expect(read == ["flow": .success(.number(71.5)), "pump": .success(.bool(true))])
        let error = log.events.withLock { events in
            events.compactMap { if case let .deviceOffline("dead", error) = $0 { error } else { nil } }.first
        }
        #expect(error?.contains("timed out") == true, "\(error ?? "-")")
    }

    @Test(arguments: [ModbusSimulator.Behaviour.garbage, .wrongUnit])
    func malformedAnswersBecomeTagErrorsAndTheLineRecovers(_ behaviour: ModbusSimulator.Behaviour) async throws {
        let pty = try await PtyPair()
        let simulator = try ModbusSimulator(rtuPath: pty.deviceEnd, unit: 5)
        simulator.setInputRegisters(7, [1234])
        simulator.setBehaviour(behaviour)
        try simulator.start()
        let device = pty.device("meter", unit: 5, interval: .milliseconds(20), tags: [
            TagConfiguration(name: "value", table: .input, address: 7, type: .uint16),
        ])
        let log = EventLog()
        let poller = RunningPoller([device], log: log, maxBackoff: .milliseconds(100))
        try await log.wait(for: "polls with errors") { _ in
            log.polls.count { if case .failure = $0.readings[0].value { true } else { false } } >= 3
        }
        simulator.setBehaviour(.normal)
        try await log.wait(for: "the value") { _ in
            log.polls.contains { $0.readings[0].value == .success(.integer(1234)) }
        }
        await poller.finish()
        await pty.close()
        simulator.stop()
        let firstError = log.polls.compactMap { poll -> String? in
            if case let .failure(error) = poll.readings[0].value { error.message } else { nil }
        }.first
        #expect(firstError?.contains("invalid response") == true, "\(firstError ?? "-")")
    }
}
