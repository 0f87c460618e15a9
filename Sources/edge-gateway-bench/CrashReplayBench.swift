// `edge-gateway-bench duplicates`: how many messages a SIGKILL during full-speed replay
// makes the gateway send twice.
//
// A 200,000-message backlog drains through the gateway process to a local mosquitto; a
// subscriber records every (boot, seq). After 60,000 have arrived the gateway is killed
// (SIGKILL), started again, and left to drain the rest. Everything acknowledged but not
// yet deleted when it died, and whatever was in flight, is sent again: those are the
// duplicates, printed next to the inflight window (the figure the issue bounds them by).
import Foundation
import Gateway
import LocalPeers
import MQTTUplink
import Outbox
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// (boot, seq) pairs seen by the subscriber.
final class SeqLedger: Sendable {
    private struct Counts {
        var total = 0
        var seen = Set<Int64>()
    }
    private let counts = Mutex(Counts())

    /// Records the `"seq":N` of a bench payload (all of one boot).
    func record(_ payload: [UInt8]) {
        guard let seq = Self.seq(in: payload) else { return }
        counts.withLock { counts in
            counts.total += 1
            counts.seen.insert(seq)
        }
    }

    var received: (total: Int, distinct: Int) { counts.withLock { ($0.total, $0.seen.count) } }

    /// The number after `"seq":` (the bench's own payloads put it first).
    static func seq(in payload: [UInt8]) -> Int64? {
        let key = Array("\"seq\":".utf8)
        guard payload.count > key.count, Array(payload[1..<(1 + key.count)]) == key else { return nil }
        var value: Int64 = 0
        for byte in payload[(1 + key.count)...] {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { break }
            value = value * 10 + Int64(byte - UInt8(ascii: "0"))
        }
        return value
    }
}

func benchDuplicates(directory: TemporaryDirectory) async throws {
    let total = 200_000
    let killAfter = 60_000
    let window = 100
    let rounds = 3
    print("duplicates: SIGKILL of the gateway after \(killAfter) of \(total) replayed messages (QoS 1, window \(window)),")
    print("            restart, drain; (boot, seq) counted at a subscriber; \(rounds) rounds")
    // No queue limits: the subscriber must see everything the gateway sends, also when it lags.
    let brokerPort = freeLoopbackPort()
    let broker = try MosquittoBroker(port: brokerPort, configuration: """
        listener \(brokerPort) 127.0.0.1
        allow_anonymous true
        persistence false
        max_queued_messages 0
        max_inflight_messages 0
        """)
    try await broker.start()
    defer { Task { try? await broker.stop() } }
    let binary = try builtProduct("edge-gateway")
    var worst = 0
    for round in 1...rounds {
        let outboxPath = directory.file("crash-\(round).sqlite")
        do {
            let outbox = try Outbox(settings: OutboxSettings(path: outboxPath, synchronous: .normal), logger: quiet)
            let filler = [UInt8](repeating: UInt8(ascii: "x"), count: 180)
            let batch = (0..<1000).map { _ in
                OutboxDraft(topic: "edge/bench/device/data", qos: 1) { boot, seq in
                    Array("{\"seq\":\(seq),\"boot\":\(boot),\"x\":\"".utf8) + filler + Array("\"}".utf8)
                }
            }
            for _ in 0..<(total / 1000) { _ = try await outbox.append(batch) }
        }
        let ledger = SeqLedger()
        let subscribed = Atomic<Bool>(false)
        let probed = Atomic<Bool>(false)
        let subscriber = MQTTUplink(
            settings: MQTTUplinkSettings(host: "127.0.0.1", port: brokerPort, clientID: "bench-sub-\(round)"),
            logger: quiet,
            onEvent: { event in
                switch event {
                case .connected: subscribed.store(true, ordering: .releasing)
                case let .message(message) where message.topic == "edge/bench/probe":
                    probed.store(true, ordering: .releasing)
                case let .message(message): ledger.record(message.payload)
                default: break
                }
            })
        subscriber.start()
        try await waitUntil("the subscriber to connect") { subscribed.load(ordering: .acquiring) }
        try subscriber.subscribe("edge/bench/#", qos: 1)
        // The subscription is in place once the subscriber's own probe comes back.
        try await waitUntil("the subscription to take effect") {
            _ = try? subscriber.publish(MQTTMessage(topic: "edge/bench/probe", payload: [1], qos: 0))
            return probed.load(ordering: .acquiring)
        }

        let config = directory.file("crash-\(round).yaml")
        try """
        gateway: { id: bench, stats_interval: 1h }
        mqtt: { host: 127.0.0.1, port: \(brokerPort), client_id: bench-gw, max_inflight: \(window) }
        buffer: { path: \(outboxPath), sync: full }
        log_level: error
        devices:
          - name: silent
            tcp: { host: 127.0.0.1, port: \(freeLoopbackPort()) }
            tags: [{ name: t, table: holding, address: 0, type: int16 }]
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let first = try ChildProcess(binary, ["run", "--config", config], log: directory.file("crash-\(round)-a.log"))
        try await waitUntil("\(killAfter) messages at the subscriber", timeout: .seconds(120)) {
            ledger.received.distinct >= killAfter || !first.isRunning
        }
        first.signal(SIGKILL)
        _ = try await first.waitForExit()
        let atKill = ledger.received

        let second = try ChildProcess(binary, ["run", "--config", config], log: directory.file("crash-\(round)-b.log"))
        try await waitUntil("all \(total) messages at the subscriber", timeout: .seconds(300)) {
            ledger.received.distinct >= total || !second.isRunning
        }
        // Let late copies arrive: the outbox must be empty and nothing more come in.
        try await waitUntil("the outbox to drain", timeout: .seconds(60)) {
            (try? Outbox.readStatistics(path: outboxPath).bufferedMessages) == 0
        }
        second.signal(SIGTERM)
        _ = try await second.waitForExit()
        await subscriber.stop()
        let (received, distinct) = ledger.received
        let duplicates = received - distinct
        worst = max(worst, duplicates)
        print(String(format: "  round %d: killed at %d received; duplicates %d, missing %d",
                     round, atKill.distinct, duplicates, total - distinct))
    }
    figure("duplicates after SIGKILL (worst of \(rounds))", Double(worst), "msgs")
    figure("baseline: the inflight window", Double(window), "msgs")
    print(String(format: "  ratio duplicates / window (target <= 1): %.2f", Double(worst) / Double(window)))
}
