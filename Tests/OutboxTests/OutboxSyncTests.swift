import Foundation
import Testing
@testable import Outbox

#if canImport(Glibc)
import Glibc
#endif

/// The `fdatasync`/`fsync` calls this test process makes on one file, as the kernel sees
/// them: strace attached to the process (all its threads) for as long as the trace runs.
private final class SyncTrace {
    struct Unavailable: Error, CustomStringConvertible {
        var description: String
    }

    private let process = Process()
    private let file: String
    private let log: String
    private let errors: String

    /// Starts tracing and returns once strace has attached.
    init(syncsOf file: String, logsIn directory: TemporaryDirectory) async throws {
        let strace = "/usr/bin/strace"
        guard FileManager.default.isExecutableFile(atPath: strace) else {
            throw Unavailable(description: "strace is not installed: run `make deps` (Debian package strace)")
        }
        self.file = file
        log = directory.file("strace.log")
        errors = directory.file("strace.err")
        guard FileManager.default.createFile(atPath: errors, contents: nil) else {
            throw Unavailable(description: "cannot create \(errors) for strace's messages")
        }
        process.executableURL = URL(fileURLWithPath: strace)
        // -f: every thread (GRDB's writer is a dispatch worker); -y: file paths for descriptors.
        process.arguments = ["-f", "-ff", "-y", "-e", "trace=fdatasync,fsync", "-o", log, "-p", "\(getpid())"]
        process.standardError = FileHandle(forWritingAtPath: errors)
        try process.run()
        let deadline = ContinuousClock.now + .seconds(30)
        while !((try? String(contentsOfFile: errors, encoding: .utf8))?.contains("attached") ?? false) {
            guard process.isRunning else {
                throw Unavailable(description: "strace could not attach to the test process (ptrace not allowed?): "
                    + ((try? String(contentsOfFile: errors, encoding: .utf8)) ?? ""))
            }
            guard ContinuousClock.now < deadline else {
                process.terminate()
                throw Unavailable(description: "strace did not attach within 30 s")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Stops tracing; returns how many completed syncs of the file it saw.
    ///
    /// strace writes each call's line when the call returns, before the thread goes on, so
    /// the logs are complete once the traced work returned. It is stopped with SIGKILL:
    /// Foundation starts it with the spawning thread's signals blocked (SIGTERM and SIGINT
    /// among them), and the kernel detaches every traced thread when the tracer dies.
    func stop() async throws -> Int {
        kill(process.processIdentifier, SIGKILL)
        let deadline = ContinuousClock.now + .seconds(30)
        while process.isRunning {
            guard ContinuousClock.now < deadline else {
                throw Unavailable(description: "strace did not stop within 30 s")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        // -ff: one log per thread (`strace.log.<tid>`), so no call is split around another's.
        let directory = (log as NSString).deletingLastPathComponent
        var syncs = 0
        for name in try FileManager.default.contentsOfDirectory(atPath: directory) where name.hasPrefix("strace.log.") {
            let text = try String(contentsOfFile: directory + "/" + name, encoding: .utf8)
            // `fdatasync(7</path/outbox.sqlite-wal>) = 0`
            syncs += text.split(separator: "\n").filter { $0.contains("<\(file)>") && $0.hasSuffix("= 0") }.count
        }
        return syncs
    }
}

/// `sync: full` promises a message is on stable storage when `append` returned it: the
/// commit syncs the WAL. Acknowledged rows deleted in a transaction of their own commit
/// without a sync (see `Outbox.deleteAcknowledgedRelaxed`), so the append after such a
/// delete is the one that must switch back. Watched with strace: the real calls.
@Suite("sync full: the append's commit syncs the WAL", .serialized)
struct OutboxSyncTests {
    @Test func anAppendAfterADeleteSyncsTheWAL() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            let outbox = try Outbox(settings: .init(path: path, synchronous: .full), logger: quietLogger)
            await outbox.acknowledgeNow(try await outbox.append(drafts(3)).map(\.id))
            let trace = try await SyncTrace(syncsOf: path + "-wal", logsIn: dir)
            let committed = try await outbox.append(drafts(1))
            let syncs = try await trace.stop()
            #expect(committed.count == 1)
            #expect(syncs >= 1, "the append returned without the WAL having been synced")
        }
    }

    /// The same watch sees no sync with `sync: normal`: the check above can fail.
    @Test func withSyncNormalTheAppendDoesNotSync() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            let outbox = try Outbox(settings: .init(path: path, synchronous: .normal), logger: quietLogger)
            await outbox.acknowledgeNow(try await outbox.append(drafts(3)).map(\.id))
            let trace = try await SyncTrace(syncsOf: path + "-wal", logsIn: dir)
            let committed = try await outbox.append(drafts(1))
            let syncs = try await trace.stop()
            #expect(committed.count == 1)
            #expect(syncs == 0)
        }
    }
}
