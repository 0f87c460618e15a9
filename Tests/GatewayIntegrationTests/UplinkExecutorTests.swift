// The uplink's network thread as a task executor (UplinkExecutor.swift), against a real
// mosquitto: a task that prefers it runs on that thread (connected, and while no broker
// answers), publishes from there with its PUBACKs answered on the same thread, and
// still finishes once the thread has ended.
import Foundation
import Logging
import MQTTUplink
import Synchronization
import Testing
import TestSupport

@Suite(.serialized) struct UplinkExecutorTests {
    private static var quiet: Logger {
        var logger = Logger(label: "uplink-executor-test")
        logger.logLevel = .critical
        return logger
    }

    /// A task on the executor runs on the network thread before and after awaiting
    /// something another thread resumes.
    @Test func aTaskPreferringTheExecutorRunsOnTheNetworkThread() async throws {
        let broker = try MosquittoBroker()
        try await broker.start()
        defer { Task { try? await broker.stop() } }
        let events = EventLog()
        let uplink = MQTTUplink(settings: MQTTUplinkSettings(host: "127.0.0.1", port: broker.port, clientID: "executor-thread"),
                                logger: Self.quiet) { events.note($0) }
        uplink.start()
        try await waitUntil("the uplink to connect") { events.connectedSessions.contains(1) }
        #expect(!uplink.executor.isCurrentThread, "the test's own task is not on the network thread")
        let places = await withTaskExecutorPreference(uplink.executor) { () async -> [Bool] in
            let before = uplink.executor.isCurrentThread
            await pauseOnAnotherThread()
            return [before, uplink.executor.isCurrentThread]
        }
        #expect(places == [true, true])
        await uplink.stop()
    }

    /// With no broker listening the thread waits between attempts (backoff): jobs still run.
    @Test func jobsRunWhileNoBrokerAnswers() async throws {
        let events = EventLog()
        var settings = MQTTUplinkSettings(host: "127.0.0.1", port: freeLoopbackPort(), clientID: "executor-offline")
        settings.reconnectMin = .seconds(60)
        settings.reconnectMax = .seconds(60)
        let uplink = MQTTUplink(settings: settings, logger: Self.quiet) { events.note($0) }
        uplink.start()
        try await waitUntil("the first attempt to fail") { events.failures.load(ordering: .acquiring) > 0 }
        // 1: ran on the network thread, 2: ran elsewhere.
        let ran = Atomic<Int>(0)
        let job = Task(executorPreference: uplink.executor) {
            await pauseOnAnotherThread()
            ran.store(uplink.executor.isCurrentThread ? 1 : 2, ordering: .releasing)
        }
        try await waitUntil("a job to run while the uplink backs off") { ran.load(ordering: .acquiring) != 0 }
        #expect(ran.load(ordering: .acquiring) == 1)
        await job.value
        await uplink.stop()
    }

    /// Publishing from the network thread, a window of 10 refilled from the PUBACK
    /// events (the forwarder's pattern): every message is acknowledged and arrives, in order.
    @Test func publishesFromTheNetworkThreadAreWrittenAndAcknowledged() async throws {
        let broker = try MosquittoBroker()
        try await broker.start()
        defer { Task { try? await broker.stop() } }
        let subscriber = RecordingSubscriber(port: broker.port, filter: "executor/#")
        try await subscriber.waitConnected()
        let (acks, sink) = AsyncStream.makeStream(of: Int32.self)
        let connected = Atomic<Bool>(false)
        let uplink = MQTTUplink(settings: MQTTUplinkSettings(host: "127.0.0.1", port: broker.port, clientID: "executor-publish",
                                                             maxInflight: 10),
                                logger: Self.quiet) { event in
            switch event {
            case .connected: connected.store(true, ordering: .releasing)
            case let .published(_, mid): sink.yield(mid)
            default: break
            }
        }
        uplink.start()
        try await waitUntil("the uplink to connect") { connected.load(ordering: .acquiring) }
        let total = 500
        let (acknowledged, allOnThread) = try await withTaskExecutorPreference(uplink.executor) { () async throws -> (Int, Bool) in
            var sent = 0
            var acknowledged = 0
            var allOnThread = true
            func publish() throws {
                _ = try uplink.publish(MQTTMessage(topic: "executor/data", payload: Array("\(sent)".utf8), qos: 1))
                sent += 1
            }
            while sent < 10 { try publish() }
            for await _ in acks {
                allOnThread = allOnThread && uplink.executor.isCurrentThread
                acknowledged += 1
                if sent < total { try publish() }
                if acknowledged == total { break }
            }
            return (acknowledged, allOnThread)
        }
        #expect(acknowledged == total)
        #expect(allOnThread, "each PUBACK was answered on the network thread")
        try await waitUntil("the subscriber to receive every message") {
            subscriber.messages(on: "executor/data").count >= total
        }
        #expect(subscriber.messages(on: "executor/data").map(\.text) == (0..<total).map { "\($0)" })
        await uplink.stop()
    }

    /// `reconnect()` asked from the network thread itself: DISCONNECT goes out, a new session follows.
    @Test func reconnectFromTheNetworkThreadStartsANewSession() async throws {
        let broker = try MosquittoBroker()
        try await broker.start()
        defer { Task { try? await broker.stop() } }
        let events = EventLog()
        var settings = MQTTUplinkSettings(host: "127.0.0.1", port: broker.port, clientID: "executor-reconnect")
        settings.reconnectMin = .milliseconds(100)
        let uplink = MQTTUplink(settings: settings, logger: Self.quiet) { events.note($0) }
        uplink.start()
        try await waitUntil("the uplink to connect") { events.connectedSessions.contains(1) }
        await withTaskExecutorPreference(uplink.executor) { uplink.reconnect() }
        try await waitUntil("a second session") { events.connectedSessions.contains(2) }
        await uplink.stop()
    }

    /// Once `stop` ended the thread, a task that still prefers the executor finishes
    /// (its jobs go to the global executor) instead of hanging.
    @Test func aTaskOutlivingTheThreadStillFinishes() async throws {
        let broker = try MosquittoBroker()
        try await broker.start()
        defer { Task { try? await broker.stop() } }
        let events = EventLog()
        let uplink = MQTTUplink(settings: MQTTUplinkSettings(host: "127.0.0.1", port: broker.port, clientID: "executor-ended"),
                                logger: Self.quiet) { events.note($0) }
        uplink.start()
        try await waitUntil("the uplink to connect") { events.connectedSessions.contains(1) }
        await uplink.stop()
        let onThread = await withTaskExecutorPreference(uplink.executor) { () async -> Bool in
            await pauseOnAnotherThread()
            return uplink.executor.isCurrentThread
        }
        #expect(!onThread)
    }
}

/// What the uplink reported, for waits.
private final class EventLog: Sendable {
    private let sessions = Mutex<[Int]>([])
    let failures = Atomic<Int>(0)

    var connectedSessions: [Int] { sessions.withLock { $0 } }

    func note(_ event: MQTTEvent) {
        switch event {
        case let .connected(session): sessions.withLock { $0.append(session) }
        case .connectFailed: failures.add(1, ordering: .releasing)
        default: break
        }
    }
}

/// Suspends until a Dispatch thread resumes the task.
private func pauseOnAnotherThread() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(5)) { continuation.resume() }
    }
}
