// Gap records the outbox writes while the forwarder is connected reach the gaps topic
// with no periodic check and no reconnect: the outbox says it wrote them
// (Outbox.whenGapsRecorded) and the forwarder reads them then.
import Foundation
import Outbox
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct GapsWhileConnectedTests {
    /// The broker stops answering for a moment (SIGSTOP: the connection stays up, no
    /// PUBACKs), the outbox (`max_messages: 5`, drop_newest) drops polls meanwhile; the
    /// gap record goes out on the same connection once the broker answers again.
    @Test func dropsWhileConnectedArriveAsGapRecordsOnTheSameConnection() async throws {
        let e2e = try await EndToEnd(pollInterval: "10ms", buffer: "max_messages: 5\n  drop_policy: drop_newest")
        try e2e.startGateway()
        let gapsTopic = "edge/\(e2e.gatewayID)/gaps"
        try await waitUntil("data flowing", timeout: .seconds(30)) { e2e.dataMessages.count > 10 }
        let outbox = e2e.directory.file("outbox.sqlite")
        e2e.broker.signal(SIGSTOP)
        do {
            // Well inside the keepalive (5 s): libmosquitto keeps the connection.
            try await waitUntil("drops while the broker is silent", timeout: .seconds(3)) {
                ((try? Outbox.readStatistics(path: outbox))?.dropped ?? 0) > 0
            }
        } catch {
            e2e.broker.signal(SIGCONT)
            throw error
        }
        e2e.broker.signal(SIGCONT)
        try await waitUntil("a gap record on the same connection", timeout: .seconds(10)) {
            !e2e.subscriber.messages(on: gapsTopic).isEmpty
        }
        #expect(e2e.statuses(e2e.statusTopic).filter { $0 == "online" }.count == 1,
                "one connection, so the record was not read at a reconnect: \(e2e.diagnostics)")
        e2e.gateway!.signal(SIGTERM)
        #expect(try await e2e.gateway!.waitForExit() == 0)
        try await e2e.subscriber.roundTrip()
        let gaps = e2e.subscriber.messages(on: gapsTopic).map(\.json)
        var explained = Set(e2e.dataMessages.compactMap { $0["seq"] as? Int })
        var lastReported = 0
        for gap in gaps {
            #expect(gap["reason"] as? String == "max_messages", "\(gap)")
            let first = try #require(gap["first_seq"] as? Int), last = try #require(gap["last_seq"] as? Int)
            explained.formUnion(first...last)
            lastReported = max(lastReported, last)
        }
        #expect(Set(1...lastReported).isSubset(of: explained), "seqs up to the last reported gap neither delivered nor in a gap record")
    }
}
