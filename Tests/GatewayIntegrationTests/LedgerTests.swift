// The at-least-once ledger: across broker outages during replay and repeated
// SIGKILLs of the gateway during ingest and replay, every boot's seq range
// arrives without a gap, up to the last seq each boot committed.
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

        // Where each boot ended, as the gateway committed it: boots 1 and 2 from the next
        // boot's birth (they were killed), boot 3 from the outbox after its clean stop.
        var lastCommitted: [Int: Int] = [3: Int(statistics.seqCommitted)]
        #expect(statistics.boot == 3)
        for boot in [1, 2] {
            let birth = try #require(e2e.subscriber.messages(on: e2e.statusTopic).map(\.json).first {
                $0["state"] as? String == "online" && $0["boot"] as? Int == boot + 1
            }, "the birth of boot \(boot + 1)")
            #expect(birth["previous_boot"] as? Int == boot, "\(birth)")
            lastCommitted[boot] = try #require(birth["previous_boot_last_seq"] as? Int, "\(birth)")
        }

        let ledger = Self.ledger(e2e)
        #expect(Set(ledger.keys) == [1, 2, 3])
        var duplicates = 0
        for boot in [1, 2, 3] {
            let seqs = ledger[boot] ?? [:]
            let last = lastCommitted[boot] ?? 0
            #expect(last > 0, "boot \(boot) committed something")
            // Every committed seq arrived, up to the last one the boot committed: losing
            // the tail of a boot fails here, not only a hole below the highest received.
            let missing = Set(1...max(last, 1)).subtracting(seqs.keys)
            #expect(missing.isEmpty, "boot \(boot): of 1...\(last) committed, missing \(missing.sorted().prefix(20))")
            let beyond = seqs.keys.filter { $0 > last }
            #expect(beyond.isEmpty, "boot \(boot): seqs beyond the last committed \(last): \(beyond.sorted().prefix(20))")
            duplicates += seqs.values.reduce(0) { $0 + $1 - 1 }
            print("ledger: boot \(boot) seq 1...\(last) committed, \(seqs.count) received, \(seqs.values.filter { $0 > 1 }.count) duplicated")
        }
        print("ledger: \(e2e.dataMessages.count) messages received, \(duplicates) duplicates")
    }
}
