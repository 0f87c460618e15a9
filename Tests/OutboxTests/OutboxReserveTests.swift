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

    /// A full disk while the reserve cannot be made (read-only): once space returns, the
    /// outbox lifts its disk-full ceiling by itself, as it does when it can make the reserve
    /// again, instead of dropping every new message as `disk_full` until a restart.
    @Test(.enabled(if: isRoot || isCI, "needs root to mount a tmpfs"))
    func withAReserveThatCannotBeMadeTheOutboxRecoversWhenSpaceReturns() async throws {
        guard isRoot else {
            Issue.record("CI=true but not running as root: this test needs root to mount a tmpfs")
            return
        }
        try await withTemporaryDirectory { dir in
            let readOnly = try Tmpfs(at: dir.file("readonly"), size: "1m")
            defer { readOnly.unmount() }
            try readOnly.remount(options: "remount,ro")
            let small = try Tmpfs(at: dir.file("small"), size: "2m")
            defer { small.unmount() }
            let filler = small.path + "/filler"
            let logs = LogRecorder()
            let outbox = try Outbox(settings: .init(path: small.path + "/outbox.sqlite", dropPolicy: .dropNewest),
                                    logger: logs.logger, now: { Date() }, measuring: nil,
                                    reserveBesides: readOnly.path + "/outbox.sqlite")
            #expect(outbox.reserveProblem?.contains("Read-only file system") == true)
            #expect(try await outbox.append(drafts(50)).count == 50)

            try OutboxDiskFullTests().fill(filler)
            for _ in 0..<10 { _ = try? await outbox.append(drafts(50)) }
            let duringOutage = try await outbox.statistics().droppedThisBoot
            #expect(duringOutage > 0, "the disk was full")
            #expect(logs.entries.contains { $0.message.contains("the disk is full") })

            // Space returns: new messages are committed again, by both appends.
            try FileManager.default.removeItem(atPath: filler)
            let afterwards = try await outbox.append(drafts(50))
            #expect(afterwards.count == 50, "new messages committed, not dropped as disk_full")
            #expect(logs.entries.contains { $0.message.contains("room again") })
            let synchronous = await onDedicatedThread { outbox.appendOnCallingThread(drafts(5)) }
            #expect(committedRows(synchronous)?.count == 5, "the bus threads' synchronous append works again")
            #expect(try await outbox.statistics().droppedThisBoot == duringOutage, "nothing dropped since")
        }
    }

    /// While the reserve cannot be made, an append does not try to make it (a `statvfs` and
    /// an `open` on Swift's cooperative pool at every append): only the stats interval does.
    /// Seen from outside: a reserve that could be made again is made by `statistics()`,
    /// not by the appends before it.
    @Test(.enabled(if: isRoot || isCI, "needs root to mount a tmpfs"))
    func anAppendDoesNotTryToMakeAReserveThatCannotBeMade() async throws {
        guard isRoot else {
            Issue.record("CI=true but not running as root: this test needs root to mount a tmpfs")
            return
        }
        try await withTemporaryDirectory { dir in
            let mount = try Tmpfs(at: dir.file("readonly"), size: "1m")
            defer { mount.unmount() }
            try mount.remount(options: "remount,ro")
            let besides = mount.path + "/outbox.sqlite"
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite")), logger: quietLogger,
                                    now: { Date() }, measuring: nil, reserveBesides: besides)
            #expect(outbox.reserveProblem != nil)
            try mount.remount(options: "remount,rw")
            #expect(try await outbox.append(drafts(10)).count == 10)
            #expect(!FileManager.default.fileExists(atPath: besides + "-reserve"), "the append left the reserve alone")
            _ = try await outbox.statistics()
            #expect(FileManager.default.fileExists(atPath: besides + "-reserve"), "the stats interval made it")
            #expect(outbox.reserveProblem == nil)
        }
    }

    /// The cause of a reserve that could not be made is fixed (the filesystem is writable
    /// again), but the disk is now short of space: the status line no longer shows the old
    /// cause and its fix (remount, permissions); the outbox handles it as a start on a
    /// nearly full disk, and makes the reserve once there is room.
    @Test(.enabled(if: isRoot || isCI, "needs root to mount a tmpfs"))
    func aFixedCauseFollowedByAShortDiskLeavesNoStaleCauseOnTheStatusLine() async throws {
        guard isRoot else {
            Issue.record("CI=true but not running as root: this test needs root to mount a tmpfs")
            return
        }
        try await withTemporaryDirectory { dir in
            let mount = try Tmpfs(at: dir.file("readonly"), size: "1m")
            defer { mount.unmount() }
            try mount.remount(options: "remount,ro")
            let besides = mount.path + "/outbox.sqlite"
            let logs = LogRecorder()
            let outbox = try Outbox(settings: .init(path: dir.file("outbox.sqlite")), logger: logs.logger,
                                    now: { Date() }, measuring: nil, reserveBesides: besides)
            #expect(outbox.reserveProblem?.contains("remount") == true)
            try mount.remount(options: "remount,rw")
            let filler = mount.path + "/filler"
            try OutboxDiskFullTests().fill(filler)
            _ = try await outbox.statistics()  // the stats interval tries again: no room now
            #expect(outbox.reserveProblem == nil, "stale cause on the status line: \(outbox.reserveProblem ?? "nil")")
            let warning = logs.entries.last { $0.level == .warning && $0.message.contains("reserve") }
            #expect(warning?.message.contains("free at least") == true, "says the fix now: \(String(describing: warning))")

            try FileManager.default.removeItem(atPath: filler)
            #expect(try await outbox.append(drafts(10)).count == 10)
            #expect(FileManager.default.fileExists(atPath: besides + "-reserve"), "made once there is room")
        }
    }
}
