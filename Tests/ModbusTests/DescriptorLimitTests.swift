import Foundation
import TestSupport
import Testing
@testable import Modbus

/// Every descriptor number below 1024 taken (duplicates of /dev/null) until `release()`,
/// so the next file this process opens gets a number above 1023.
///
/// It takes the numbers of the whole test process: other tests running at the same
/// time would get high descriptors too, hence the serialized suite, kept short.
private final class LowDescriptorsTaken {
    private var held: [Int32] = []

    init() throws {
        var limit = rlimit()
        #expect(getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0)
        if limit.rlim_cur < 1100 {
            limit.rlim_cur = min(limit.rlim_max, 4096)
            #expect(setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, "raising the soft RLIMIT_NOFILE: errno \(errno)")
        }
        try #require(limit.rlim_cur > 1024, "the test needs RLIMIT_NOFILE above 1024 (hard limit \(limit.rlim_max))")
        let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        try #require(null >= 0)
        held.append(null)
        while true {
            let copy = fcntl(null, F_DUPFD_CLOEXEC, 0)
            try #require(copy >= 0, "dup of /dev/null: errno \(errno)")
            if copy >= 1024 {
                close(copy)
                break
            }
            held.append(copy)
        }
    }

    func release() {
        for descriptor in held { close(descriptor) }
        held = []
    }

    deinit { release() }
}

/// The descriptor number a `descriptorTooHigh` error names.
private func namedDescriptor(_ error: ModbusError) -> Int32? {
    guard let range = error.message.range(of: "file descriptor ") else { return nil }
    return Int32(error.message[range.upperBound...].prefix { $0.isNumber })
}

/// libmodbus waits with select(), whose fd_set cannot hold a descriptor above 1023:
/// glibc aborts the process ("bit out of range 0 - FD_SETSIZE on fd_set"). A bus whose
/// connection gets such a descriptor fails to connect instead, and connects once it can.
@Suite(.serialized) struct DescriptorLimitTests {
    @Test func aTCPConnectionOnADescriptorAbove1023FailsInsteadOfAborting() throws {
        let simulator = try ModbusSimulator(ports: [0])
        try simulator.start()
        defer { simulator.stop() }
        simulator.setHoldingRegisters(0, [42])
        let port = simulator.listeningPorts[0]
        let connection = try ModbusConnection(transport: .tcp(host: "127.0.0.1", port: port))
        connection.setResponseTimeout(.seconds(2))

        let taken = try LowDescriptorsTaken()
        var failure: ModbusError?
        do throws(ModbusError) {
            try connection.connect()
            _ = try connection.readRegisters(unit: 1, table: .holding, address: 0, count: 1)
        } catch {
            failure = error
        }
        taken.release()

        let error = try #require(failure, "a connection above descriptor 1023 was used")
        #expect(error.kind == .connection)
        #expect(error.message.contains("127.0.0.1:\(port)"), "names the bus: \(error.message)")
        #expect(namedDescriptor(error) ?? 0 >= 1024, "names the descriptor: \(error.message)")
        #expect(error.message.contains("select()"), "names the cause: \(error.message)")
        #expect(error.message.contains("split"), "names the fix: \(error.message)")
        #expect(!connection.isConnected)
        // Logged once per outage: a retry that gets another high number is the same episode.
        #expect(ModbusConnection.descriptorTooHigh(1031, endpoint: "connect to 127.0.0.1:\(port)").episodeKey == error.episodeKey)

        // The next attempt (the bus's retry) connects on a low descriptor and reads.
        try connection.connect()
        #expect(try connection.readRegisters(unit: 1, table: .holding, address: 0, count: 1) == [42])
        connection.close()
    }

    @Test func aSerialLineOnADescriptorAbove1023FailsInsteadOfAborting() async throws {
        let line = try await PtyPair()
        let simulator = try ModbusSimulator(rtuPath: line.deviceEnd, unit: 1)
        try simulator.start()
        simulator.setHoldingRegisters(0, [7])
        let connection = try ModbusConnection(transport: .rtu(SerialSettings(port: line.gatewayEnd, baud: 9600)))
        connection.setResponseTimeout(.seconds(2))

        let taken = try LowDescriptorsTaken()
        var failure: ModbusError?
        do throws(ModbusError) {
            try connection.connect()
            _ = try connection.readRegisters(unit: 1, table: .holding, address: 0, count: 1)
        } catch {
            failure = error
        }
        taken.release()

        let error = try #require(failure, "a serial line above descriptor 1023 was used")
        #expect(error.kind == .connection)
        #expect(error.message.contains(line.gatewayEnd), "names the bus: \(error.message)")
        #expect(namedDescriptor(error) ?? 0 >= 1024, "names the descriptor: \(error.message)")

        try connection.connect()
        #expect(try connection.readRegisters(unit: 1, table: .holding, address: 0, count: 1) == [7])
        connection.close()
        simulator.stop()
        await line.close()
    }
}
