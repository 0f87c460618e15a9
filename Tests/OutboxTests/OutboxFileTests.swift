import Foundation
import Testing
@testable import Outbox

@Suite("opening: corruption, directories, permissions")
struct OutboxFileTests {
    /// Creates an outbox with `count` messages and closes it (the WAL is checkpointed into the file).
    func makeOutbox(at path: String, count: Int) async throws {
        let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
        for _ in 0..<(count / 500) {
            _ = try await outbox.append(drafts(500))
        }
    }

    /// - Parameter boot: 1 for a file that never was an outbox; the next boot after a
    ///   corrupt one (boot never goes backwards).
    func expectQuarantined(_ outbox: Outbox, from path: String, originalBytes: Data, boot: Int64) throws {
        let aside = try #require(outbox.quarantinedPath)
        #expect(aside.hasPrefix(path + ".corrupt-"))
        let stamp = aside.dropFirst((path + ".corrupt-").count)
        #expect(stamp.wholeMatch(of: /\d{8}T\d{6}Z(-\d+)?/) != nil, "timestamp \(stamp)")
        #expect(FileManager.default.contents(atPath: aside) == originalBytes)
        #expect(outbox.boot == boot)
    }

    @Test func aGarbageFileIsQuarantinedAndAFreshOutboxStarts() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            var generator = SystemRandomNumberGenerator()
            let garbage = Data((0..<65_536).map { _ in UInt8.random(in: 0...255, using: &generator) })
            _ = FileManager.default.createFile(atPath: path, contents: garbage)
            // (SQLite itself deletes a -wal beside a file that is not a WAL database.)
            _ = FileManager.default.createFile(atPath: path + "-wal", contents: Data("not a wal".utf8))

            let logs = LogRecorder()
            let outbox = try Outbox(settings: .init(path: path), logger: logs.logger)
            try expectQuarantined(outbox, from: path, originalBytes: garbage, boot: 1)
            let aside = try #require(outbox.quarantinedPath)
            #expect(logs.entries.contains { $0.level == .error && $0.metadata["moved_to"] == "\(aside)" })

            #expect(try await outbox.append(drafts(2)).map(\.seq) == [1, 2])
            #expect(try await outbox.statistics().bufferedMessages == 2)
        }
    }

    @Test func aTruncatedFileIsQuarantined() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            try await makeOutbox(at: path, count: 2000)
            #expect(!FileManager.default.fileExists(atPath: path + "-wal"), "closed cleanly, WAL checkpointed")
            let whole = try #require(FileManager.default.contents(atPath: path))
            let truncated = whole.prefix(whole.count * 2 / 5)
            try truncated.write(to: URL(fileURLWithPath: path))

            let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
            try expectQuarantined(outbox, from: path, originalBytes: Data(truncated), boot: 2)
            #expect(try await outbox.statistics().bufferedMessages == 0)
            #expect(try await outbox.append(drafts(1)).map(\.seq) == [1])
        }
    }

    @Test func overwrittenPagesAreFoundByQuickCheck() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            try await makeOutbox(at: path, count: 2000)
            var bytes = try #require(FileManager.default.contents(atPath: path))
            // Pages 3…10 (4 KiB pages) become 0xA5 noise; page 1 (header, schema) stays intact.
            bytes.replaceSubrange(8192..<(10 * 4096), with: Data(repeating: 0xA5, count: 8 * 4096))
            try bytes.write(to: URL(fileURLWithPath: path))

            let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
            try expectQuarantined(outbox, from: path, originalBytes: bytes, boot: 2)
        }
    }

    @Test func aHealthyFileIsNotQuarantined() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            try await makeOutbox(at: path, count: 500)
            let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
            #expect(outbox.quarantinedPath == nil)
            #expect(try await outbox.statistics().bufferedMessages == 500)
        }
    }

    @Test func missingDirectoriesAreCreated() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("var/lib/edge-gateway/outbox.sqlite")
            let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
            _ = try await outbox.append(drafts(1))
            #expect(FileManager.default.fileExists(atPath: path))
        }
    }

    @Test func aFileWhereTheDirectoryShouldBeGivesAClearError() async throws {
        try await withTemporaryDirectory { dir in
            _ = FileManager.default.createFile(atPath: dir.file("state"), contents: Data())
            let path = dir.file("state/outbox.sqlite")
            let error = #expect(throws: OutboxError.self) {
                try Outbox(settings: .init(path: path), logger: quietLogger)
            }
            #expect(error?.kind == .cannotCreateDirectory)
            #expect(error?.description.contains(path) == true)
            #expect(error?.description.contains("not a directory") == true)
        }
    }

    @Test func anotherDatabaseAtThePathIsNotDestroyed() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("other.sqlite")
            let (status, output) = try run("/usr/bin/env", [
                "sqlite3", path, "CREATE TABLE message (x); INSERT INTO message VALUES (42);",
            ])
            guard status == 0 else {
                Issue.record("sqlite3 CLI needed to build a foreign database: \(output)")
                return
            }
            let error = #expect(throws: OutboxError.self) {
                try Outbox(settings: .init(path: path), logger: quietLogger)
            }
            #expect(error?.description.contains("not an outbox") == true || error?.description.contains("buffer.path") == true)
            #expect(FileManager.default.fileExists(atPath: path), "the foreign database stays where it is")
        }
    }

    /// A file the gateway cannot write: as root, a read-only mount (root ignores file modes);
    /// otherwise a file without permissions.
    @Test func anUnwritableFileGivesAnErrorNamingThePathAndTheFix() async throws {
        try await withTemporaryDirectory { dir in
            if isRoot {
                let mount = try Tmpfs(at: dir.file("ro"), size: "1m")
                defer { mount.unmount() }
                let path = mount.path + "/outbox.sqlite"
                try await makeOutbox(at: path, count: 500)
                try mount.remount(options: "remount,ro")
                let error = #expect(throws: OutboxError.self) {
                    try Outbox(settings: .init(path: path), logger: quietLogger)
                }
                #expect(error?.kind == .permissionDenied)
                #expect(error?.description.contains(mount.path) == true)
                #expect(error?.description.contains("read-write") == true)
                // The status command still reads it.
                #expect(try Outbox.readStatistics(path: path).bufferedMessages == 500)
            } else {
                let path = dir.file("outbox.sqlite")
                try await makeOutbox(at: path, count: 500)
                try FileManager.default.setAttributes([.posixPermissions: 0o000], ofItemAtPath: path)
                let error = #expect(throws: OutboxError.self) {
                    try Outbox(settings: .init(path: path), logger: quietLogger)
                }
                #expect(error?.kind == .permissionDenied)
                #expect(error?.description.contains(path) == true)
                #expect(error?.description.contains("chown") == true)
            }
        }
    }
}
