import Foundation
import Testing
@testable import Outbox

/// Opens and closes the outbox at `path` until its boot is `boot`; returns the last one's boot.
@discardableResult
private func open(_ path: String, until boot: Int64, messages: Int = 0) async throws -> Int64 {
    var current: Int64 = 0
    while current < boot {
        let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
        current = outbox.boot
        if current == boot, messages > 0 { _ = try await outbox.append(drafts(messages)) }
    }
    return current
}

/// Overwrites eight pages with noise: pages 3…10 (the meta row among them), or the
/// last eight (message pages; the header, schema and meta row stay readable).
private func corrupt(_ path: String, lastPages: Bool = false) throws {
    var bytes = try #require(FileManager.default.contents(atPath: path))
    let start = lastPages ? bytes.count - 8 * 4096 : 8192
    bytes.replaceSubrange(start..<(start + 8 * 4096), with: Data(repeating: 0xA5, count: 8 * 4096))
    try bytes.write(to: URL(fileURLWithPath: path))
}

@Suite("boot never goes backwards")
struct OutboxBootTests {
    @Test func aQuarantinedOutboxContinuesAboveItsLastBoot() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            #expect(try await open(path, until: 13, messages: 2000) == 13)
            try corrupt(path)

            let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
            #expect(outbox.quarantinedPath != nil, "the file was found corrupt")
            #expect(outbox.boot >= 14, "boot \(outbox.boot) after 13")
            #expect(outbox.bootRecovery == BootRecovery(previousBoot: 13, source: .stateFile))
            #expect(try await outbox.append(drafts(1)).map(\.boot) == [outbox.boot])
        }
    }

    /// An outbox from before the boot file (or one whose boot file was lost): the
    /// quarantined file's own last boot is the floor.
    @Test func withoutTheBootFileTheQuarantinedFileGivesTheFloor() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            try await open(path, until: 13, messages: 2000)
            try corrupt(path, lastPages: true)
            try FileManager.default.removeItem(atPath: path + ".boot")

            let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
            #expect(outbox.quarantinedPath != nil)
            #expect(outbox.boot == 14, "boot \(outbox.boot) after 13")
            #expect(outbox.bootRecovery == BootRecovery(previousBoot: 13, source: .quarantinedOutbox))
        }
    }

    @Test func aDeletedOutboxContinuesFromTheBootFile() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            try await open(path, until: 5)
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
            let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
            #expect(outbox.boot == 6)
            #expect(outbox.bootRecovery?.source == .stateFile)
        }
    }

    @Test func aHealthyOutboxNeedsNoRecoveryAndRecordsItsBoot() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            try await open(path, until: 3)
            let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
            #expect(outbox.boot == 4)
            #expect(outbox.bootRecovery == nil)
            #expect(try String(contentsOfFile: path + ".boot", encoding: .utf8) == "4\n")
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".tmp-") }
            #expect(leftovers.isEmpty, "\(leftovers)")
        }
    }
}

@Suite("one process per outbox")
struct OutboxLockTests {
    @Test func aSecondOpenIsRefusedNamingTheFileAndThePid() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            try FileManager.default.createDirectory(atPath: dir.file("sub"), withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(atPath: dir.file("link.sqlite"), withDestinationPath: path)
            let holder = try Outbox(settings: .init(path: path), logger: quietLogger)
            for spelling in [path, dir.file("sub/../outbox.sqlite"), dir.file("link.sqlite")] {
                let error = #expect(throws: OutboxError.self, "\(spelling)") {
                    try Outbox(settings: .init(path: spelling), logger: quietLogger)
                }
                #expect(error?.kind == .inUse, "\(spelling): \(String(describing: error))")
                #expect(error?.description.contains("pid \(getpid())") == true, "\(String(describing: error))")
                #expect(error?.description.contains(OutboxLock.resolve(path)) == true, "\(String(describing: error))")
            }
            // The refused opens changed nothing.
            #expect(try await holder.statistics().boot == 1)
            #expect(try Outbox.readStatistics(path: path).boot == 1, "status reads beside the holder")
        }
    }

    @Test func theLockGoesWithTheOutbox() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            do {
                let first = try Outbox(settings: .init(path: path), logger: quietLogger)
                #expect(first.boot == 1)
            }
            let second = try Outbox(settings: .init(path: path), logger: quietLogger)
            #expect(second.boot == 2)
        }
    }
}
