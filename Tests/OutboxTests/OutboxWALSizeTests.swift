// The WAL's size as the outbox tracks it from SQLite's WAL hook (no `stat` per append), and
// the auto-checkpoint that hook runs in place of SQLite's own.
import Foundation
import Testing
@testable import Outbox

#if canImport(Glibc)
import Glibc
#endif

@Suite("outbox: the WAL's size from SQLite, without a stat per append")
struct OutboxWALSizeTests {
    private func walFileSize(_ path: String) -> Int64? {
        var info = stat()
        return stat(path + "-wal", &info) == 0 ? Int64(info.st_size) : nil
    }

    @Test func theSizeReportedAfterEachCommitIsTheWALFilesSize() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
            // A fresh WAL that was never checkpointed: its file ends at its last frame.
            for count in [1, 5, 40] {
                _ = await onDedicatedThread { committedRows(outbox.appendOnCallingThread(drafts(count, size: 900))) }
                let reported = outbox.walSize.reportedBytes
                #expect(reported != nil, "SQLite's WAL hook reported the commit")
                #expect(reported == walFileSize(path), "after \(count) messages")
            }
            _ = try await outbox.append(drafts(3))
            #expect(outbox.walSize.reportedBytes == walFileSize(path), "after an async append")
        }
    }

    /// The hook replaces SQLite's auto-checkpoint: without its checkpoints the WAL would pass
    /// its limit, and the synchronous append would hand every batch back from then on.
    @Test func theWALStaysBelowItsLimitWhileTheSynchronousAppendCommitsOnAndOn() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            let outbox = try Outbox(settings: .init(path: path, synchronous: .normal), logger: quietLogger)
            let limit = ReserveFile(besides: path).walLimitBytes
            let batch = 20
            let payloadSize = 16_000
            let appends = Int(3 * limit / Int64(batch * payloadSize)) + 1  // three times the limit in all
            let handedBack = await onDedicatedThread { () -> Int in
                var handedBack = 0
                for _ in 0..<appends where committedRows(outbox.appendOnCallingThread(drafts(batch, size: payloadSize))) == nil {
                    handedBack += 1
                }
                return handedBack
            }
            #expect(handedBack == 0, "every batch committed on the calling thread")
            #expect((walFileSize(path) ?? 0) <= limit, "checkpointed as it went, limit \(limit)")
            #expect((outbox.walSize.reportedBytes ?? .max) <= limit)
            #expect(try await outbox.statistics().committedThisBoot == Int64(appends * batch))
        }
    }

    @Test func afterATruncatingCheckpointTheReportedSizeFollowsTheNewWAL() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
            _ = try await outbox.append(drafts(10))
            #expect((outbox.walSize.reportedBytes ?? 0) > 0)
            try await outbox.database.writeWithoutTransaction { db in _ = try db.checkpoint(.truncate) }
            // A checkpoint of its own (not the outbox's) is not seen until the next commit.
            _ = try await outbox.append(drafts(1))
            #expect(outbox.walSize.reportedBytes == walFileSize(path))
        }
    }
}
