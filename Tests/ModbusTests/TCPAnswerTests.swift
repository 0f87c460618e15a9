import Foundation
import TestSupport
import Testing
@testable import Modbus

/// Modbus TCP answers that do not belong to the request, from the real simulator,
/// and connections that cannot be made: each says what happened.
@Suite struct TCPAnswerTests {
    static let wrongAnswers: [(ModbusSimulator.Behaviour, String)] = [
        (.garbage, "invalid response: 4 data bytes in the answer, expected 2"),
        (.wrongUnit, "invalid response: answer from unit id 2, expected unit id 1"),
        (.wrongTransaction, "invalid response: transaction id "),
        (.wrongProtocol, "invalid response: protocol id 1 in the MBAP header, expected 0 (Modbus)"),
        (.wrongLength, "invalid response: the MBAP header announces 7 bytes, 5 follow"),
        (.wrongFunction, "invalid response: function code 4 in the answer to a function 3 request"),
    ]

    @Test(arguments: wrongAnswers)
    func aWrongAnswerIsRejectedWithItsReasonCountedAsFailedAndThePollerRecovers(
        _ behaviour: ModbusSimulator.Behaviour, _ expected: String
    ) async throws {
        let port = freeLoopbackPort()
        let simulator = try ModbusSimulator(port: port)
        simulator.setHoldingRegisters(0, [42])
        simulator.setBehaviour(behaviour)
        try simulator.start()
        defer { simulator.stop() }
        let device = tcpDevice(port, interval: .milliseconds(20), tags: [
            TagConfiguration(name: "value", table: .holding, address: 0, type: .uint16),
        ])
        let log = EventLog()
        let poller = RunningPoller([device], log: log, maxBackoff: .milliseconds(100))
        try await log.wait(for: "three polls with the wrong answer rejected") { _ in
            log.polls.count { if case .failure = $0.readings[0].value { true } else { false } } >= 3
        }
        let failedWhileWrong = poller.counters.snapshot
        simulator.setBehaviour(.normal)
        try await log.wait(for: "the right value again") { _ in
            log.polls.contains { $0.readings[0].value == .success(.integer(42)) }
        }
        await poller.finish()

        let errors = log.polls.compactMap { poll -> String? in
            if case let .failure(error) = poll.readings[0].value { error.message } else { nil }
        }
        let context = "read holding 0+1 from unit 1 at 127.0.0.1:\(port): "
        for error in errors {
            #expect(error.hasPrefix(context + expected), "\(error)")
        }
        // Never taken as data: every poll before the fix is an error, none a value but 42.
        #expect(log.polls.allSatisfy { (try? $0.readings[0].value.get()) == nil || $0.readings[0].value == .success(.integer(42)) })
        #expect(failedWhileWrong.pollsFailed >= 3)
        #expect(failedWhileWrong.pollsOK == 0)
        let counters = poller.counters.snapshot
        #expect(counters.pollsOK >= 1)
        #expect(counters.pollsFailed == Int64(errors.count))
        // The answer was malformed, the device did answer: it stays online.
        #expect(log.events.withLock { $0.contains { if case .deviceOffline = $0 { true } else { false } } } == false)
        // One request per read, no extra traffic for the checks.
        #expect(simulator.requestCount(functionCode: 3) == Int(counters.pollsOK + counters.pollsFailed))
    }

    @Test func wrongAnswersToBitReadsAreRejectedToo() async throws {
        let port = freeLoopbackPort()
        let simulator = try ModbusSimulator(port: port)
        simulator.setCoils(0, [true])
        simulator.setBehaviour(.wrongUnit)
        try simulator.start()
        defer { simulator.stop() }
        let device = tcpDevice(port, unit: 7, interval: .milliseconds(20), tags: [
            TagConfiguration(name: "flag", table: .coils, address: 0, type: .bool),
        ])
        let log = EventLog()
        let poller = RunningPoller([device], log: log, maxBackoff: .milliseconds(100))
        try await log.wait(for: "a rejected answer") { _ in !log.polls.isEmpty }
        simulator.setBehaviour(.wrongFunction)
        try await log.wait(for: "a rejected answer with another function") { _ in
            log.polls.contains { $0.readings[0].value == .failure(TagError(
                "read coils 0+1 from unit 7 at 127.0.0.1:\(port): invalid response: function code 2 in the answer to a function 1 request")) }
        }
        simulator.setBehaviour(.normal)
        try await log.wait(for: "the coil") { _ in log.polls.contains { $0.readings[0].value == .success(.bool(true)) } }
        await poller.finish()
        #expect(log.polls.first?.readings[0].value == .failure(TagError(
            "read coils 0+1 from unit 7 at 127.0.0.1:\(port): invalid response: answer from unit id 8, expected unit id 7")))
    }

    @Test func aHostNameThatDoesNotResolveIsNamedAsSuch() async throws {
        let device = DeviceConfiguration(
            name: "remote", transport: .tcp(host: "plc-7.edge-gateway-test.invalid", port: 502), unitID: 1,
            pollInterval: .seconds(3600), timeout: .milliseconds(300),
            tags: [TagConfiguration(name: "value", table: .holding, address: 0, type: .uint16)])
        let error = try await offlineError(of: device)
        #expect(error.hasPrefix("connect to plc-7.edge-gateway-test.invalid:502: the host name "
            + "\"plc-7.edge-gateway-test.invalid\" does not resolve ("), "\(error)")
        #expect(!error.contains("refused"), "\(error)")
    }

    @Test func aRefusedConnectionStillSaysRefused() async throws {
        let port = freeLoopbackPort()
        let device = tcpDevice(port, tags: [TagConfiguration(name: "value", table: .holding, address: 0, type: .uint16)])
        let error = try await offlineError(of: device)
        #expect(error == "connect to 127.0.0.1:\(port): connection refused", "\(error)")
    }

    @Test func aConnectThatIsNeverAnsweredSaysItTimedOut() async throws {
        // A listener whose accept queue is full: the kernel drops the next SYN, so
        // the gateway's connect is never answered, as behind a black-holing firewall.
        // (With tcp_abort_on_overflow set, Linux would reset it instead.)
        let abortOnOverflow = try? String(contentsOfFile: "/proc/sys/net/ipv4/tcp_abort_on_overflow", encoding: .utf8)
        try #require(abortOnOverflow?.hasPrefix("1") != true,
                     "net.ipv4.tcp_abort_on_overflow is 1: a full accept queue resets connects instead of dropping them")
        let listener = try FullBacklogListener()
        let device = tcpDevice(listener.port, tags: [TagConfiguration(name: "value", table: .holding, address: 0, type: .uint16)])
        let error = try await offlineError(of: device)
        #expect(error == "connect to 127.0.0.1:\(listener.port): timed out after 0.3 seconds "
            + "(no answer to the connection request: check the host, the port and firewalls on the way)", "\(error)")
    }

    /// Polls `device` until it is reported offline; returns the reason.
    private func offlineError(of device: DeviceConfiguration) async throws -> String {
        let log = EventLog()
        let poller = RunningPoller([device], log: log)
        try await log.wait(for: "\(device.name) offline") { events in
            events.contains { if case .deviceOffline = $0 { true } else { false } }
        }
        await poller.finish()
        return try #require(log.events.withLock { events in
            events.compactMap { if case let .deviceOffline(_, error) = $0 { error } else { nil } }.first
        })
    }
}

/// A TCP listener on 127.0.0.1 with a backlog of 0 and one connection queued
/// that is never accepted: Linux then drops every further SYN, so a connect to
/// it is never answered.
final class FullBacklogListener {
    let port: Int
    private let listener: Int32
    private let queued: Int32

    init() throws {
        port = freeLoopbackPort()
        listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        queued = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        let size = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, size) } }
        let bindErrno = errno
        guard bound == 0 else { throw MissingTool(description: "bind 127.0.0.1:\(port): \(String(cString: strerror(bindErrno)))") }
        let listening = listen(listener, 0)
        let listenErrno = errno
        guard listening == 0 else { throw MissingTool(description: "listen: \(String(cString: strerror(listenErrno)))") }
        // Completes at once (the queue has room for one) and fills it.
        let connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(queued, $0, size) } }
        let connectErrno = errno
        guard connected == 0 else { throw MissingTool(description: "connect: \(String(cString: strerror(connectErrno)))") }
    }

    deinit {
        close(queued)
        close(listener)
    }
}
