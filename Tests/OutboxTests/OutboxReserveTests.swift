import Foundation
import Logging
import Testing
@testable import Outbox

/// A reserve file that cannot be made for a reason other than space (a read-only
/// filesystem, a path that is not a directory): not a full disk. The outbox must say so,
/// with the file, the real cause and its fix, and keep buffering at its configured limits
/// instead of holding itself at its current size as on a full disk.
@Suite("reserve file that cannot be made")
struct OutboxReserveTests {
    /// What a start without its reserve must show: an error naming the file, the cause and
    /// the fix; no disk-full ceiling (every message committed, nothing dropped), the bus
    /// threads' synchronous append still working, and the problem on the status line.
    func expectRunsWithoutReserve(_ outbox: Outbox, logs: LogRecorder, reserve: String, cause: String,
                                  fix: String) async throws {
        let entry = logs.entries.first { $0.message.contains("reserve") && $0.level >= .warning }
        let message = entry?.message ?? ""
        #expect(entry?.level == .error, "logged as an error: \(String(describing: entry))")
        #expect(message.contains(reserve), "names the file: \(message)")
        #expect(message.contains(cause), "names the cause: \(message)")
        #expect(message.contains(fix), "says the fix: \(message)")
        #expect(!message.contains("free at least"), "not sent to free space: \(message)")
        #expect(!logs.entries.contains { $0.message.contains("holding the outbox") }, "no disk-full ceiling")
        #expect(outbox.reserveProblem?.contains(reserve) == true, "on the status line: \(outbox.reserveProblem ?? "nil")")
        #expect(outbox.reserveProblem?.contains(cause) == true)

        // A fresh outbox (0 bytes) held at its size would drop every message as disk_full.
        let committed = try await outbox.append(drafts(20))
        #expect(committed.count == 20)
        guard case let .committed(rows) = outbox.appendOnCallingThread(drafts(5)) else {
            Issue.record("the synchronous append handed over although only the reserve is missing")
            return
        }
        #expect(rows.count == 5)
        let statistics = try await outbox.statistics()
        #expect(statistics.droppedThisBoot == 0, "nothing dropped: the disk is not full")
        #expect(statistics.bufferedMessages == 25)
        #expect(try await outbox.pendingGaps().isEmpty)
    }

    /// ENOTDIR: the reserve's directory is a regular file (no root needed).
    @Test func aReserveWhoseDirectoryIsAFileIsNamedWithItsCauseAndTheOutboxKeepsBuffering() async throws {
        try await withTemporaryDirectory { dir in
            let notADirectory = dir.file("plain-file")
            #expect(FileManager.default.createFile(atPath: notADirectory, contents: Data("x".utf8)))
            let logs = LogRecorder()
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite")), logger: logs.logger,
                                    now: { Date() }, measuring: nil,
                                    reserveBesides: notADirectory + "/outbox.sqlite")
            try await expectRunsWithoutReserve(outbox, logs: logs, reserve: notADirectory + "/outbox.sqlite-reserve",
                                               cause: "Not a directory", fix: "not a directory")
        }
    }

    /// EROFS: the reserve's filesystem is a tmpfs remounted read-only (root only). Once it
    /// is read-write again the outbox makes the reserve by itself and says so.
    @Test(.enabled(if: isRoot || isCI, "needs root to mount a tmpfs"))
    func aReserveOnAReadOnlyFilesystemIsNamedWithItsCauseAndMadeOnceWritable() async throws {
        guard isRoot else {
            Issue.record("CI=true but not running as root: this test needs root to mount a tmpfs")
            return
        }
        try await withTemporaryDirectory { dir in
            let mount = try Tmpfs(at: dir.file("readonly"), size: "1m")
            defer { mount.unmount() }
            try mount.remount(options: "remount,ro")
            let besides = mount.path + "/outbox.sqlite"
            let reserve = ReserveFile(besides: besides)
            guard case let .failed(failure) = reserve.ensure() else {
                Issue.record("a reserve on a read-only filesystem was made, or reported as no room")
                return
            }
            #expect(failure.code == EROFS)
            #expect(!failure.isLackOfSpace)

            let logs = LogRecorder()
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite")), logger: logs.logger,
                                    now: { Date() }, measuring: nil, reserveBesides: besides)
            try await expectRunsWithoutReserve(outbox, logs: logs, reserve: besides + "-reserve",
                                               cause: "Read-only file system", fix: "mount -o remount,rw")

            try mount.remount(options: "remount,rw")
            _ = try await outbox.statistics()  // the stats interval tries again
            #expect(FileManager.default.fileExists(atPath: besides + "-reserve"), "made once the filesystem is writable")
            #expect(outbox.reserveProblem == nil)
            #expect(logs.entries.contains { $0.level == .info && $0.message.contains("made the reserve file") })
        }
    }
}
