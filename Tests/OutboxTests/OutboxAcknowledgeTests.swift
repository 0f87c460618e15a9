import Foundation
import Testing
@testable import Outbox

@Suite("acknowledging: deletes without their own fsync")
struct OutboxAcknowledgeTests {
    /// The delete runs with `synchronous = NORMAL`; every append after it must sync again.
    @Test func synchronousIsFullAgainAfterADelete() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite"), synchronous: .full), logger: quietLogger)
            let committed = try await outbox.append(drafts(10))
            await outbox.acknowledgeNow(committed.prefix(4).map(\.id))
            let level = try await outbox.synchronousLevel()
            #expect(level == 2, "synchronous is FULL (2) again, not \(String(describing: level))")
            let statistics = try await outbox.statistics()
            #expect(statistics.bufferedMessages == 6)
            #expect(statistics.acknowledgedThisBoot == 4)
            #expect(try await outbox.lease(after: 0, max: 100).map(\.seq) == Array(5...10))
        }
    }

    @Test func withSyncNormalItStaysNormal() async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite"), synchronous: .normal), logger: quietLogger)
            await outbox.acknowledgeNow(try await outbox.append(drafts(3)).map(\.id))
            let level = try await outbox.synchronousLevel()
            #expect(level == 1)
            #expect(try await outbox.statistics().bufferedMessages == 0)
        }
    }
}
