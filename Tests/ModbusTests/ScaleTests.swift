import Foundation
import Logging
import Synchronization
import Testing
import TestSupport
@testable import Modbus

/// What many devices on one box need from the bus side: a bus thread that waits for
/// its next poll by itself, and decoding without arrays per value. (The simulator
/// serving many ports: SimulatorDevicesTests, as a process.)
@Suite struct ScaleTests {
    @Test func aBusSleepReturnsAtItsDeadlineOnTheBusThread() async throws {
        let executor = BusExecutor(name: "sleeping bus")
        defer { executor.shutdown() }
        let deadline = ContinuousClock.now + .milliseconds(50)
        let woke = try await Task(executorPreference: executor) {
            try await executor.sleep(until: deadline)
            return ContinuousClock.now
        }.value
        #expect(woke >= deadline, "never early")
    }

    @Test func cancellingABusSleepEndsItAtOnce() async throws {
        let executor = BusExecutor(name: "sleeping bus")
        defer { executor.shutdown() }
        let entered = Atomic<Bool>(false)
        let outcome = Mutex<Result<Void, CancellationError>?>(nil)
        let task = Task(executorPreference: executor) {
            entered.store(true, ordering: .releasing)
            do throws(CancellationError) {
                try await executor.sleep(until: .now + .seconds(3_600))
                outcome.withLock { $0 = .success(()) }
            } catch {
                outcome.withLock { $0 = .failure(error) }
            }
        }
        try await waitUntil("the bus to start sleeping") { entered.load(ordering: .acquiring) }
        task.cancel()
        try await waitUntil("the cancelled sleep to end", timeout: .seconds(5)) { outcome.withLock { $0 != nil } }
        let ended = try #require(outcome.withLock { $0 })
        if case .success = ended { Issue.record("a cancelled sleep returned as if its deadline had come") }
    }

    @Test func bitsAreTheBigEndianBytesInEveryByteOrder() {
        let words: [UInt16] = [0x0102, 0x0304, 0x0506, 0x0708]
        for order in [ByteOrder.abcd, .badc, .cdab, .dcba] {
            for count in 1...4 {
                let slice = words[..<count]
                let bytes = RegisterDecoding.bigEndianBytes(slice, order: order)
                let expected = bytes.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                #expect(RegisterDecoding.bigEndianBits(slice, order: order) == expected, "\(order), \(count) registers")
            }
        }
    }
}
