// The WAL's size and limit with the second connection (`AcknowledgementConnection`) deleting
// acknowledged rows on the handing thread: its commits are seen, and deletes alone (a replay
// with no appends) get the WAL checkpointed before it passes its limit.
import Foundation
import Synchronization
import Testing
@testable import Outbox

#if canImport(Glibc)
import Glibc
#endif

@Suite("outbox: the second connection's deletes keep the WAL within its limit", .serialized)
struct OutboxSecondConnectionWALTests {
    private static func walFileSize(_ path: String) -> Int64 {
        var info = stat()
        return stat(path + "-wal", &info) == 0 ? Int64(info.st_size) : 0
    }

    /// What the deleting thread saw after each delete.
    private struct Seen: Sendable {
        var firstReported: Int64?
        var firstFile: Int64 = 0
        var maxFile: Int64 = 0
        var maxReported: Int64 = 0
    }

    /// Every delete touches many leaf pages (one id of every `stride`, rows a few to a page),
    /// so each commit writes dozens of frames: more than the WAL limit long before as many
    /// commits as a count-based estimate (a few frames per delete) would wait for.
    @Test func deletesAloneOnTheSecondConnectionKeepTheWALBelowItsLimit() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            let outbox = try Outbox(settings: .init(path: path, synchronous: .normal), logger: quietLogger)
            let limit = ReserveFile(besides: path).walLimitBytes
            let stride = 8, perDelete = 64, deletes = 40
            var ids: [Int64] = []
            for _ in 0..<(stride * perDelete * deletes / 1024) {
                ids += try await outbox.append(drafts(1024, size: 500)).map(\.id)
            }
            // An empty WAL to start from; the outbox's record of it is stale until a commit.
            try await outbox.database.writeWithoutTransaction { db in _ = try db.checkpoint(.truncate) }
            #expect(Self.walFileSize(path) == 0)
            let written = Mutex<(count: Int, threads: Set<UInt>)>((0, []))
            outbox.whenAcknowledgementsWritten { count in
                written.withLock { $0.count += count; $0.threads.insert(UInt(pthread_self())) }
            }
            let deleting = Mutex<UInt>(0)
            let everyStride = Swift.stride(from: 0, to: ids.count, by: stride).map { ids[$0] }
            let seen = await onDedicatedThread { () -> Seen in
                deleting.withLock { $0 = UInt(pthread_self()) }
                var seen = Seen()
                for start in Swift.stride(from: 0, to: everyStride.count, by: perDelete) {
                    let batch = Array(everyStride[start..<Swift.min(start + perDelete, everyStride.count)])
                    outbox.acknowledgeWithNextWrite(batch, flushAt: batch.count, delay: .seconds(600))
                    // A checkpoint the delete asked for runs on the writer's queue: wait for it
                    // (a read runs after what that serial queue holds), as an idle writer would.
                    _ = try? outbox.database.read { _ in () }
                    let file = Self.walFileSize(path)
                    let reported = outbox.walSize.reportedBytes ?? .max
                    if seen.firstReported == nil { (seen.firstReported, seen.firstFile) = (reported, file) }
                    seen.maxFile = Swift.max(seen.maxFile, file)
                    seen.maxReported = Swift.max(seen.maxReported, reported)
                }
                return seen
            }
            let (count, threads) = written.withLock { ($0.count, $0.threads) }
            #expect(count == everyStride.count)
            #expect(threads == [deleting.withLock { $0 }], "every delete ran on the second connection, on the deleting thread")
            #expect(seen.firstReported == seen.firstFile, "the first delete's commit is what the outbox reports")
            #expect(seen.maxFile <= limit, "the WAL file grew past its limit \(limit)")
            #expect(seen.maxReported <= limit, "the reported WAL size passed its limit \(limit)")
            #expect(seen.maxFile > limit / 4, "the deletes wrote enough WAL to need checkpoints")
            #expect(try Outbox.readStatistics(path: path).bufferedMessages == ids.count - everyStride.count)
        }
    }
}
