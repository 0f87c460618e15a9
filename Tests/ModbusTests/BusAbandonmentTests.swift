import Foundation
import Logging
import Synchronization
import Testing
import TestSupport
@testable import Modbus

/// A bus blocked in a request to a device that accepted the connection and never
/// answers: abandoning it ends the request at once and silences the bus.
@Suite struct BusAbandonmentTests {
    @Test func abandoningABusInsideALongRequestEndsItAtOnceAndSilencesIt() async throws {
        let silent = try SilentTCPListener()
        let device = DeviceConfiguration(
            name: "silent", transport: .tcp(host: "127.0.0.1", port: silent.port), unitID: 1,
            pollInterval: .milliseconds(100), timeout: .seconds(15),
            tags: [TagConfiguration(name: "level", table: .holding, address: 0, type: .int16)])
        let events = Mutex<[PollEvent]>([])
        let deadlines = Mutex<[ContinuousClock.Instant?]>([])
        var poller = BusPoller(devices: [device], counters: PollCounters(), logger: Logger(label: "test")) { event in
            events.withLock { $0.append(event) }
        }
        poller.requestWatch = { deadline in deadlines.withLock { $0.append(deadline) } }
        let executor = BusExecutor(name: "silent bus")
        defer { executor.shutdown() }
        let finished = Mutex(false)
        let started = ContinuousClock.now
        let task = Task(executorPreference: executor) { [poller] in
            await poller.run()
            finished.withLock { $0 = true }
        }
        defer { task.cancel() }

        try await waitUntil("the bus to enter its request") { deadlines.withLock { !$0.isEmpty } }
        let deadline = try #require(deadlines.withLock { $0.first } ?? nil)
        // A TCP connect, the 15 s response timeout, 500 ms per further byte of a 11-byte answer.
        #expect(deadline - started >= .seconds(35), "announced deadline \(deadline - started) from the start")

        poller.abandon()
        task.cancel()
        try await waitUntil("the bus to return after abandon()", timeout: .seconds(5)) { finished.withLock { $0 } }
        #expect(events.withLock { $0.isEmpty }, "nothing reported after abandon(): \(events.withLock { $0 })")
        #expect(deadlines.withLock { $0.last } == .some(nil), "the bus left the request")
        #expect(poller.abandonment.isAbandoned)
    }

    @Test func reportsBeforeAbandonmentGoOutAndNoneAfter() async throws {
        let abandonment = BusAbandonment()
        var ran: [Int] = []
        #expect(abandonment.unlessAbandoned { ran.append(1) })
        abandonment.abandon()
        #expect(!abandonment.unlessAbandoned { ran.append(2) })
        #expect(ran == [1])
    }

    /// The deadline a bus announces before a request covers everything libmodbus may
    /// spend: resolving a host name, the connect, the first byte, every further byte.
    @Test func theAnnouncedDeadlineCoversResolutionConnectAndEveryByte() throws {
        func bound(host: String) throws -> Duration {
            let device = DeviceConfiguration(
                name: "meter", transport: .tcp(host: host, port: 502), unitID: 1, timeout: .seconds(2),
                tags: [TagConfiguration(name: "power", table: .input, address: 0, type: .uint32)],
                byteTimeout: .milliseconds(100))
            let block = try #require(BusPoller.plans(for: device).first?.plan.blocks.first)
            let connection = try ModbusConnection(transport: device.transport)
            return BusPoller.longestAttempt(block, device: device, connection: connection)
        }
        // 2 s connect + 2 s first byte + 12 more bytes (MBAP 7, function, count, 4 data) × 100 ms.
        #expect(try bound(host: "10.0.0.5") == .milliseconds(5200))
        #expect(try bound(host: "fd00::5") == .milliseconds(5200))
        #expect(try bound(host: "plc-5.plant.example") == .milliseconds(5200) + BusPoller.nameResolutionAllowance)
    }
}
