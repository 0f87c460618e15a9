// The ingest service with bus threads committing for real: several BusExecutor threads
// hand polls over at once, into a real outbox file, beside the ingest task.
import Foundation
@testable import Gateway
import GatewayClock
import GatewayConfig
import Logging
import Modbus
import Outbox
import Synchronization
import Testing

@Suite("ingest: bus threads commit their polls themselves")
struct IngestBusCommitTests {
    /// What `onCommit` saw: rows in call order, and whether each call came from a bus thread.
    final class Commits: Sendable {
        private let state = Mutex<(rows: [OutboxMessage], onBusThread: [Bool])>(([], []))

        func record(_ rows: [OutboxMessage]) {
            let bus = BusExecutor.isCurrentThreadABus
            state.withLock {
                $0.rows.append(contentsOf: rows)
                $0.onBusThread.append(bus)
            }
        }

        var rows: [OutboxMessage] { state.withLock { $0.rows } }
        var callsOnBusThreads: Int { state.withLock { $0.onBusThread.filter { $0 }.count } }
        var callsElsewhere: Int { state.withLock { $0.onBusThread.filter { !$0 }.count } }
    }

    /// A number several threads count up.
    final class Count: Sendable {
        private let count = Mutex(0)
        func add() { count.withLock { $0 += 1 } }
        var value: Int { count.withLock { $0 } }
    }

    static let identity = GatewayIdentity(id: "gw-test", statsInterval: .seconds(3600))
    static let logger = Logger(label: "ingest-test") { _ in SwiftLogNoOpLogHandler() }

    /// Poll `index` of `device`; the index travels in the row's boottime.
    static func poll(_ device: String, _ index: Int) -> DevicePoll {
        DevicePoll(device: device,
                   clock: ClockReading(wall: Date(timeIntervalSince1970: 1_000), boottime: Int64(index), bootID: "b",
                                       sync: .unsynchronised),
                   readings: [.init(tag: "t", value: .success(.integer(Int64(index))))])
    }

    static func withOutbox<T>(_ body: (Outbox) async throws -> T) async throws -> T {
        let directory = NSTemporaryDirectory() + "ingest-tests-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // `sync: normal`: the test is about who commits, not about fsync.
        let outbox = try Outbox(settings: .init(path: directory + "/outbox.sqlite", synchronous: .normal), logger: logger)
        return try await body(outbox)
    }

    /// Waits (at most `timeout`) until `condition` holds; records an issue naming `what` if it never does.
    static func waitFor(_ what: String, timeout: Duration = .seconds(30), _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while !condition() {
            guard ContinuousClock.now < deadline else {
                Issue.record("timed out waiting for \(what)")
                return
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Every poll committed once, seqs consecutive from 1, each device's polls in order.
    static func expectAllCommittedInOrder(_ rows: [OutboxMessage], devices: [String], polls: Int) {
        #expect(rows.count == devices.count * polls)
        #expect(rows.map(\.seq) == Array(1...Int64(rows.count)), "seqs consecutive, none skipped or reused")
        #expect(rows.map(\.id) == rows.map(\.id).sorted(), "onCommit calls came in commit order")
        for device in devices {
            let topic = identity.dataTopic(device: device)
            let indices = rows.filter { $0.topic == topic }.map { $0.measured?.boottime ?? -1 }
            #expect(indices == Array(0..<Int64(polls)), "polls of \(device) committed once each, in order")
        }
    }

    @Test func busThreadsHandingPollsOverAtOnceLoseNothingAndKeepEachDevicesOrder() async throws {
        try await Self.withOutbox { outbox in
            let commits = Commits()
            let ingest = IngestService(identity: Self.identity, qos: 1, outbox: outbox, logger: Self.logger,
                                       onCommit: commits.record)
            let running = Task { await ingest.run() }
            let devices = (1...4).map { "dev-\($0)" }
            let polls = 300
            let executors = devices.map { BusExecutor(name: "bus \($0)") }
            defer { executors.forEach { $0.shutdown() } }
            // Four real threads hand polls over as fast as they can, each one device.
            let onBusThreads = Count()
            await withTaskGroup(of: Void.self) { group in
                for (device, executor) in zip(devices, executors) {
                    group.addTask(executorPreference: executor) {
                        if BusExecutor.isCurrentThreadABus { onBusThreads.add() }
                        for index in 0..<polls {
                            ingest.queue(Self.poll(device, index))
                            ingest.commitOnBusThread()
                        }
                    }
                }
            }
            #expect(onBusThreads.value == devices.count, "the submitters ran on their bus threads")
            try await Self.waitFor("every poll committed") { commits.rows.count >= devices.count * polls }
            Self.expectAllCommittedInOrder(commits.rows, devices: devices, polls: polls)
            #expect(commits.callsOnBusThreads > 0, "bus threads committed themselves")
            #expect(try await outbox.statistics().committedThisBoot == Int64(devices.count * polls))
            ingest.beginShutdown()
            await running.value
        }
    }

    @Test func aPollHandedOverOffABusThreadIsCommittedByTheIngestTask() async throws {
        try await Self.withOutbox { outbox in
            let commits = Commits()
            let ingest = IngestService(identity: Self.identity, qos: 1, outbox: outbox, logger: Self.logger,
                                       onCommit: commits.record)
            let running = Task { await ingest.run() }
            // This task runs on Swift's cooperative pool: it must not commit (block) here.
            #expect(!BusExecutor.isCurrentThreadABus)
            ingest.queue(Self.poll("dev-1", 0))
            ingest.commitOnBusThread()
            try await Self.waitFor("the poll committed") { commits.rows.count == 1 }
            #expect(commits.callsOnBusThreads == 0)
            #expect(commits.callsElsewhere == 1)
            ingest.beginShutdown()
            await running.value
        }
    }

    @Test func shutdownWhileABusThreadCommitsLetsItFinishThenTheIngestTaskCommitsTheRest() async throws {
        try await Self.withOutbox { outbox in
            let commits = Commits()
            // The first commit's `onCommit` holds its bus thread inside its turn as committer
            // until the test opens the gate: shutdown begins while a bus thread commits.
            let gate = DispatchSemaphore(value: 0)
            let entered = Count()
            let ingest = IngestService(identity: Self.identity, qos: 1, outbox: outbox, logger: Self.logger,
                                       onCommit: { rows in
                                           commits.record(rows)
                                           entered.add()
                                           if entered.value == 1 { gate.wait() }
                                       })
            let running = Task { await ingest.run() }
            let busA = BusExecutor(name: "bus a")
            let busB = BusExecutor(name: "bus b")
            defer {
                busA.shutdown()
                busB.shutdown()
            }
            let committing = Task(executorPreference: busA) {
                ingest.queue(Self.poll("dev-a", 0))
                ingest.commitOnBusThread()
            }
            try await Self.waitFor("bus a inside its commit") { entered.value > 0 }
            // Bus b hands polls over meanwhile: they wait for the committer.
            await Task(executorPreference: busB) {
                for index in 0..<10 {
                    ingest.queue(Self.poll("dev-b", index))
                    ingest.commitOnBusThread()
                }
            }.value
            #expect(commits.rows.count == 1, "bus b's polls wait while bus a commits")
            ingest.beginShutdown()
            gate.signal()
            await committing.value
            // The ingest service ends only after it committed what bus a handed over.
            await running.value
            let rows = commits.rows
            #expect(rows.map(\.topic) == [Self.identity.dataTopic(device: "dev-a")]
                + Array(repeating: Self.identity.dataTopic(device: "dev-b"), count: 10))
            #expect(rows.map(\.seq) == Array(1...11))
            #expect(rows.dropFirst().map { $0.measured?.boottime ?? -1 } == Array(0..<10))
            #expect(commits.callsOnBusThreads == 1, "only bus a's own commit ran on a bus thread")
            #expect(commits.callsElsewhere >= 1, "the ingest task committed bus b's polls")
        }
    }

    /// Cancelled (not stopped gracefully) while a bus thread commits: the polls another bus
    /// hands over meanwhile and afterwards are committed, by the bus threads themselves, not
    /// left for an ingest task that is gone.
    @Test func cancelledWhileABusThreadCommitsLosesNothingHandedOverMeanwhileOrAfter() async throws {
        try await Self.withOutbox { outbox in
            let commits = Commits()
            let gate = DispatchSemaphore(value: 0)
            let entered = Count()
            let ingest = IngestService(identity: Self.identity, qos: 1, outbox: outbox, logger: Self.logger,
                                       onCommit: { rows in
                                           commits.record(rows)
                                           entered.add()
                                           if entered.value == 1 { gate.wait() }
                                       })
            let running = Task { await ingest.run() }
            let busA = BusExecutor(name: "bus a")
            let busB = BusExecutor(name: "bus b")
            defer {
                busA.shutdown()
                busB.shutdown()
            }
            let committing = Task(executorPreference: busA) {
                ingest.queue(Self.poll("dev-a", 0))
                ingest.commitOnBusThread()
            }
            try await Self.waitFor("bus a inside its commit") { entered.value > 0 }
            await Task(executorPreference: busB) {
                for index in 0..<10 {
                    ingest.queue(Self.poll("dev-b", index))
                    ingest.commitOnBusThread()
                }
            }.value
            #expect(commits.rows.count == 1, "bus b's polls wait while bus a commits")
            running.cancel()
            await running.value  // the cancelled ingest task ends without waiting for bus a
            gate.signal()
            await committing.value
            // A bus hands polls over after the ingest task ended (pollers stop after it).
            await Task(executorPreference: busB) {
                for index in 10..<15 {
                    ingest.queue(Self.poll("dev-b", index))
                    ingest.commitOnBusThread()
                }
            }.value
            let rows = commits.rows
            #expect(rows.map(\.seq) == Array(1...16), "every poll handed over committed, seqs consecutive")
            #expect(rows.dropFirst().map { $0.measured?.boottime ?? -1 } == Array(0..<15), "bus b's polls in order")
            #expect(commits.callsElsewhere == 0, "committed on the bus threads: the ingest task had ended")
            let statistics = try await outbox.statistics()
            #expect(statistics.committedThisBoot == 16)
            #expect(statistics.droppedThisBoot == 0)
        }
    }

    /// Cancelled with a poll in hand, before it could commit it: GRDB's async write fails at
    /// once in a cancelled task, yet the poll is committed before `run()` returns.
    @Test func anIngestTaskCancelledWithAPollInHandCommitsItBeforeItEnds() async throws {
        try await Self.withOutbox { outbox in
            let commits = Commits()
            let ingest = IngestService(identity: Self.identity, qos: 1, outbox: outbox, logger: Self.logger,
                                       onCommit: commits.record)
            // Off a bus thread: the poll waits for the ingest task, which wakes cancelled.
            ingest.queue(Self.poll("dev-1", 0))
            ingest.commitOnBusThread()
            await Task {
                withUnsafeCurrentTask { $0?.cancel() }
                await ingest.run()
            }.value
            #expect(commits.rows.map(\.seq) == [1], "the poll in hand committed")
            let statistics = try await outbox.statistics()
            #expect(statistics.committedThisBoot == 1)
            #expect(statistics.droppedThisBoot == 0)
        }
    }

    /// After the ingest task ended (graceful stop), a poll handed over from a thread that
    /// must not block cannot be committed by anyone: it is counted as dropped, with a gap
    /// record `shutting_down`, not lost without a trace. A bus thread commits its own.
    @Test func aPollHandedOverAfterTheIngestTaskEndedIsCommittedOrCounted() async throws {
        try await Self.withOutbox { outbox in
            let commits = Commits()
            let logs = LogRecorder()
            let ingest = IngestService(identity: Self.identity, qos: 1, outbox: outbox, logger: logs.logger,
                                       onCommit: commits.record)
            let running = Task { await ingest.run() }
            ingest.beginShutdown()
            await running.value
            let bus = BusExecutor(name: "bus late")
            defer { bus.shutdown() }
            await Task(executorPreference: bus) {
                ingest.queue(Self.poll("dev-1", 0))
                ingest.commitOnBusThread()
            }.value
            #expect(commits.rows.map(\.seq) == [1], "the bus thread committed its own poll")
            #expect(commits.callsOnBusThreads == 1)
            // On Swift's cooperative pool: must not block, and nobody else commits.
            ingest.queue(Self.poll("dev-1", 1))
            ingest.commitOnBusThread()
            #expect(commits.rows.count == 1)
            let inMemory = logs.lines(containing: "could not be committed")
            #expect(inMemory.count == 1)
            #expect(inMemory.first?.message.contains("1 polls of dev-1") == true, "names the device: \(inMemory)")
            #expect(inMemory.first?.message.contains("in memory") == true, "says where the loss is: \(inMemory)")
            let statistics = try await outbox.statistics()
            #expect(statistics.committedThisBoot == 1)
            #expect(statistics.droppedThisBoot == 1, "the poll nobody could commit is counted")
            // Written (seq and gap record) with the next commit, a bus thread's.
            await Task(executorPreference: bus) {
                ingest.queue(Self.poll("dev-1", 2))
                ingest.commitOnBusThread()
            }.value
            #expect(commits.rows.map(\.seq) == [1, 3])
            let gaps = try await outbox.pendingGaps()
            #expect(gaps.map(\.reason) == [.shuttingDown])
            #expect(gaps.map(\.firstSeq) == [2], "its seq is consumed: consumers see the gap")
            #expect(try await outbox.statistics().droppedThisBoot == 1, "counted once")
            // A batch the outbox cannot take on the calling thread (its reserve file is gone,
            // as on a full disk) has nobody left to recover it: counted, and written at once.
            #expect(unlink(outbox.settings.path + "-reserve") == 0)
            await Task(executorPreference: bus) {
                ingest.queue(Self.poll("dev-2", 3))
                ingest.commitOnBusThread()
            }.value
            #expect(commits.rows.count == 2)
            let recorded = logs.lines(containing: "could not be committed").last?.message ?? ""
            #expect(recorded.contains("1 polls of dev-2"), "names the device: \(recorded)")
            #expect(recorded.contains("a gap record shutting_down"), "says where the loss is: \(recorded)")
            #expect(recorded.contains("Fix: free space on the filesystem holding buffer.path"), "says the fix: \(recorded)")
            let gapsAfter = try await outbox.pendingGaps()
            #expect(gapsAfter.map(\.reason) == [.shuttingDown, .shuttingDown])
            #expect(gapsAfter.map(\.firstSeq) == [2, 4])
            #expect(try await outbox.statistics().droppedThisBoot == 2)
        }
    }
}
