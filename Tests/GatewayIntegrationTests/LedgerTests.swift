// The at-least-once ledger: across broker outages during replay and repeated
// SIGKILLs of the gateway during ingest and replay, every boot's seq range
// arrives without a gap.
import Foundation
import Outbox
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct LedgerTests {
    /// (boot, seq) → how many times it arrived.
    static func ledger(_ e2e: EndToEnd) -> [Int: [Int: Int]] {
        var ledger: [Int: [Int: Int]] = [:]
        for message in e2e.dataMessages {
            guard let boot = message["boot"] as? Int, let seq = message["seq"] as? Int else { continue }
            ledger[boot, default: [:]][seq, default: 0] += 1
        }
        return ledger
    }

    func buffered(_ e2e: EndToEnd) -> Int {
        (try? Outbox.readStatistics(path: e2e.directory.file("outbox.sqlite")).bufferedMessages) ?? 0
    }

    func received(_ e2e: EndToEnd, boot: Int) -> Int {
        Self.ledger(e2e)[boot]?.count ?? 0
    }

    @Test func nothingCommittedIsLostAcrossKillsAndBrokerOutages() async throws {
        let e2e = try await EndToEnd(pollInterval: "20ms")

        // Boot 1: killed while ingesting.
        try e2e.startGateway()
        try await waitUntil("boot 1 data") { received(e2e, boot: 1) >= 30 }
        e2e.gateway!.signal(SIGKILL)
        _ = try await e2e.gateway!.waitForExit()

        // Boot 2: the broker goes away, a backlog builds, the broker returns and the
        // gateway is killed in the middle of the replay.
        try e2e.startGateway()
        try await waitUntil("boot 2 data") { received(e2e, boot: 2) >= 10 }
        try await e2e.broker.stop(graceful: true)
        try await waitUntil("a backlog of 150 messages", timeout: .seconds(30)) { buffered(e2e) >= 150 }
        let boot2BeforeOutage = received(e2e, boot: 2)
        try await e2e.broker.start()
        try await waitUntil("the replay to start") { received(e2e, boot: 2) > boot2BeforeOutage + 20 }
        e2e.gateway!.signal(SIGKILL)
        _ = try await e2e.gateway!.waitForExit()

        // Boot 3: replays the rest of boot 2; the broker restarts during that replay too.
        try await e2e.broker.stop(graceful: true)
        try e2e.startGateway()
        try await waitUntil("a backlog while the broker is down", timeout: .seconds(30)) { buffered(e2e) >= 200 }
        try await e2e.broker.start()
        try await waitUntil("boot 3 data after the backlog") { received(e2e, boot: 3) >= 20 }
        try await e2e.broker.stop(graceful: true)
        try await e2e.broker.start()
        let boot3BeforeRestart = received(e2e, boot: 3)
        try await waitUntil("data after the last broker restart") { received(e2e, boot: 3) > boot3BeforeRestart + 20 }

        // Boot 3 ends cleanly: everything committed must be acknowledged by then.
        try await waitUntil("the outbox to drain", timeout: .seconds(30)) { buffered(e2e) < 5 }
        e2e.gateway!.signal(SIGTERM)
        #expect(try await e2e.gateway!.waitForExit() == 0, "\(e2e.diagnostics)")
        try await e2e.subscriber.roundTrip()

        let statistics = try Outbox.readStatistics(path: e2e.directory.file("outbox.sqlite"))
        #expect(statistics.bufferedMessages == 0, "all committed messages acknowledged: \(e2e.diagnostics)")
        #expect(statistics.dropped == 0)

        let ledger = Self.ledger(e2e)
        #expect(Set(ledger.keys) == [1, 2, 3])
        var duplicates = 0
        for (boot, seqs) in ledger.sorted(by: { $0.key < $1.key }) {
            let highest = seqs.keys.max() ?? 0
            let missing = Set(1...highest).subtracting(seqs.keys)
            #expect(missing.isEmpty, "boot \(boot): seq missing \(missing.sorted().prefix(20))")
            duplicates += seqs.values.reduce(0) { $0 + $1 - 1 }
            print("ledger: boot \(boot) seq 1...\(highest), \(seqs.values.filter { $0 > 1 }.count) duplicated")
        }
        print("ledger: \(e2e.dataMessages.count) messages received, \(duplicates) duplicates")
    }
}
