import Foundation
import Logging
import Testing
@testable import Outbox

/// Disk full for real: the outbox lives on a small tmpfs. Needs root to mount it; skipped
/// with that reason otherwise, except in CI (`CI=true`), where the test runs and fails.
@Suite(
    "disk full on a tmpfs",
    .enabled(if: isRoot || isCI, "needs root to mount a tmpfs (mount -t tmpfs -o size=512k)"))
struct OutboxDiskFullTests {
    func requireRoot() -> Bool {
        if !isRoot {
            Issue.record("CI=true but not running as root: the disk-full tests need root to mount a tmpfs")
        }
        return isRoot
    }

    /// Fills the filesystem holding `path` with a file until the kernel says ENOSPC.
    func fill(_ path: String) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard descriptor >= 0 else { throw Tmpfs.MountFailed(description: "cannot create \(path)") }
        defer { close(descriptor) }
        let chunk = [UInt8](repeating: 0x5A, count: 4096)
        while chunk.withUnsafeBytes({ write(descriptor, $0.baseAddress, $0.count) }) > 0 {}
        // Then single bytes, so not even a partial page is left.
        var byte: UInt8 = 0
        while write(descriptor, &byte, 1) > 0 {}
    }

    /// Gives `bytes` back to the filesystem from the end of the file `fill` made.
    func shrink(_ path: String, by bytes: Int) throws {
        var info = stat()
        guard stat(path, &info) == 0, truncate(path, max(0, info.st_size - off_t(bytes))) == 0 else {
            throw Tmpfs.MountFailed(description: "cannot shrink \(path)")
        }
    }

    /// Every seq of the boot from 1 to the highest is either buffered or in exactly one gap.
    func expectEverySeqAccountedFor(_ outbox: Outbox, upTo lastSeq: Int64) async throws {
        let buffered = try await outbox.lease(after: 0, max: 1_000_000).filter { $0.boot == outbox.boot }.map(\.seq)
        var seen = Set(buffered)
        #expect(seen.count == buffered.count, "no seq buffered twice")
        for gap in try await outbox.pendingGaps() where gap.boot == outbox.boot {
            #expect(gap.count == gap.lastSeq - gap.firstSeq + 1)
            for seq in gap.firstSeq...gap.lastSeq {
                #expect(seen.insert(seq).inserted, "seq \(seq) both buffered and in a gap, or in two gaps")
            }
        }
        let missing = Set(1...lastSeq).subtracting(seen)
        #expect(missing.isEmpty, "seqs neither buffered nor reported as a gap: \(missing.sorted().prefix(20))")
        #expect(seen.allSatisfy { $0 <= lastSeq })
    }

    @Test func dropOldestKeepsCommittingOnAFullDisk() async throws {
        guard requireRoot() else { return }
        try await withTemporaryDirectory { dir in
            let mount = try Tmpfs(at: dir.file("small"), size: "512k")
            defer { mount.unmount() }
            do {
                let outbox = try Outbox(settings: .init(path: mount.path + "/outbox.sqlite"), logger: quietLogger)
                var lastSeq: Int64 = 0
                var failures = 0
                // 600 KB of payload into 512 KB: the disk fills up long before the end.
                for _ in 0..<60 {
                    do {
                        let committed = try await outbox.append(drafts(50))
                        lastSeq = max(lastSeq, committed.last?.seq ?? lastSeq)
                    } catch let error as OutboxError {
                        #expect(error.kind == .diskFull)
                        failures += 1
                    }
                }
                let stats = try await outbox.statistics()
                #expect(failures == 0, "drop_oldest makes room instead of failing")
                #expect(stats.dropped > 0)
                #expect(try await outbox.pendingGaps().contains { $0.reason == .diskFull })
                #expect(Int64(stats.bufferedMessages) + stats.droppedThisBoot == 3000)
                try await expectEverySeqAccountedFor(outbox, upTo: 3000)
                #expect(lastSeq == 3000)
            }
        }
    }

    /// The live path: a bus thread commits synchronously and hands a batch back to `append`
    /// when the outbox needs its recovery; on a full disk nothing is lost, no seq skipped.
    @Test func theSynchronousAppendHandsOverOnAFullDiskAndEverySeqIsAccountedFor() async throws {
        guard requireRoot() else { return }
        try await withTemporaryDirectory { dir in
            let mount = try Tmpfs(at: dir.file("small"), size: "512k")
            defer { mount.unmount() }
            do {
                let outbox = try Outbox(settings: .init(path: mount.path + "/outbox.sqlite"), logger: quietLogger)
                var lastSeq: Int64 = 0
                var handedBack = 0
                // 600 KB of payload into 512 KB, as above, through the synchronous path.
                for _ in 0..<60 {
                    let batch = drafts(50)
                    let result = await onDedicatedThread { outbox.appendOnCallingThread(batch) }
                    var committed = committedRows(result)
                    if committed == nil {
                        handedBack += 1
                        committed = try await outbox.append(batch)
                    }
                    lastSeq = max(lastSeq, committed?.last?.seq ?? lastSeq)
                }
                #expect(handedBack > 0, "the full disk sent batches to append's recovery")
                let stats = try await outbox.statistics()
                #expect(stats.dropped > 0)
                #expect(Int64(stats.bufferedMessages) + stats.droppedThisBoot == 3000)
                try await expectEverySeqAccountedFor(outbox, upTo: 3000)
                #expect(lastSeq == 3000)
            }
        }
    }

    @Test(arguments: [OutboxSettings.DropPolicy.dropNewest, .dropOldest])
    func theOutboxRecoversWhenSpaceReturns(policy: OutboxSettings.DropPolicy) async throws {
        guard requireRoot() else { return }
        try await withTemporaryDirectory { dir in
            let mount = try Tmpfs(at: dir.file("small"), size: "512k")
            defer { mount.unmount() }
            do {
                let path = mount.path + "/outbox.sqlite"
                let filler = mount.path + "/filler"
                let outbox = try Outbox(settings: .init(path: path, dropPolicy: policy), logger: quietLogger)
                var drafted: Int64 = 0
                _ = try await outbox.append(drafts(100))
                drafted += 100
                try fill(filler)

                // Keep polling into the full disk.
                var failures = 0
                for _ in 0..<40 {
                    do {
                        _ = try await outbox.append(drafts(50))
                    } catch let error as OutboxError {
                        #expect(error.kind == .diskFull)
                        #expect(error.description.contains(path))
                        failures += 1
                    }
                    drafted += 50
                }
                let duringOutage = try await outbox.statistics()
                #expect(duringOutage.droppedThisBoot > 0, "a full disk loses messages, counted")
                if policy == .dropNewest {
                    #expect(failures > 0, "drop_newest rejects batches it cannot store")
                }

                // Space returns: the outbox works again by itself.
                try FileManager.default.removeItem(atPath: filler)
                let afterwards = try await outbox.append(drafts(50))
                drafted += 50
                #expect(afterwards.count == 50)
                #expect(afterwards.last?.seq == drafted)
                #expect(try await outbox.append(drafts(50)).count == 50)
                drafted += 50

                let stats = try await outbox.statistics()
                #expect(Int64(stats.bufferedMessages) + stats.droppedThisBoot == drafted)
                #expect(try await outbox.pendingGaps().contains { $0.reason == .diskFull })
                try await expectEverySeqAccountedFor(outbox, upTo: drafted)

                // Draining works too.
                let leased = try await outbox.lease(after: 0, max: 100_000)
                await outbox.acknowledgeNow(leased.map(\.id))
                #expect(try await outbox.statistics().bufferedMessages == 0)
            }
            // And the file is sound after all that.
            let reopened = try Outbox(settings: .init(path: mount.path + "/outbox.sqlite"), logger: quietLogger)
            #expect(reopened.quarantinedPath == nil)
            #expect(reopened.boot == 2)
        }
    }

    /// Takes the previous run's reserve away, fills the disk, then gives space back page by
    /// page until the outbox at `path` just opens: room for little more than that.
    func openOnANearlyFullDisk(_ path: String, filler: String, logger: Logger) throws -> Outbox? {
        unlink(path + "-reserve")
        try fill(filler)
        for _ in 0..<64 {
            if let outbox = try? Outbox(settings: .init(path: path), logger: logger) { return outbox }
            try shrink(filler, by: 4096)
        }
        return nil
    }

    /// Once space returns, the gap records of those losses follow: every seq of the boot
    /// is buffered or in a gap.
    @Test func gapRecordsOfAStartOnAFullDiskFollowWhenSpaceReturns() async throws {
        guard requireRoot() else { return }
        try await withTemporaryDirectory { dir in
            let mount = try Tmpfs(at: dir.file("small"), size: "512k")
            defer { mount.unmount() }
            let path = mount.path + "/outbox.sqlite"
            let filler = mount.path + "/filler"
            do {
                let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
                _ = try await outbox.append(drafts(100))
            }
            let outbox = try #require(try openOnANearlyFullDisk(path, filler: filler, logger: quietLogger),
                                      "the outbox never opened on the nearly full disk")
            for _ in 0..<10 { _ = try? await outbox.append(drafts(50)) }
            let lost = try await outbox.statistics().droppedThisBoot
            #expect(lost > 0)
            try FileManager.default.removeItem(atPath: filler)
            #expect(try await outbox.append(drafts(50)).count == 50)
            let gaps = try await outbox.pendingGaps().filter { $0.boot == outbox.boot }
            #expect(gaps.reduce(0) { $0 + $1.count } == lost, "\(gaps)")
            #expect(gaps.allSatisfy { $0.reason == .diskFull }, "\(gaps)")
            try await expectEverySeqAccountedFor(outbox, upTo: 550)
        }
    }

    /// A gateway that starts on a disk with room for little more than opening the outbox
    /// (no reserve file: the disk filled while it was stopped, after a run gave its reserve
    /// back): every append fails. Its losses must be in the file, not only in memory, so a
    /// restart before the disk has room again does not lose them: counted as dropped, and
    /// their seqs consumed (the next boot's `previousBoot` covers them), so the loss shows.
    @Test func lossesOfAStartOnAFullDiskSurviveARestartWhileStillFull() async throws {
        guard requireRoot() else { return }
        try await withTemporaryDirectory { dir in
            let mount = try Tmpfs(at: dir.file("small"), size: "512k")
            defer { mount.unmount() }
            let path = mount.path + "/outbox.sqlite"
            let filler = mount.path + "/filler"
            do {
                let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
                _ = try await outbox.append(drafts(100))
            }
            let logs = LogRecorder()
            var opened = try openOnANearlyFullDisk(path, filler: filler, logger: logs.logger)
            var committed: Int64 = 0
            var lostThisRun: Int64 = 0
            do {
                let outbox = try #require(opened, "the outbox never opened on the nearly full disk")
                opened = nil
                #expect(outbox.boot == 2)
                #expect(!FileManager.default.fileExists(atPath: path + "-reserve"), "no room for a reserve")
                let warning = logs.entries.first { $0.level == .warning && $0.message.contains("reserve") }
                #expect(warning?.message.contains(path + "-reserve") == true, "names the reserve: \(String(describing: warning))")
                #expect(warning?.message.contains("Fix: free at least") == true, "says the fix: \(String(describing: warning))")
                for _ in 0..<10 {
                    committed += Int64((try? await outbox.append(drafts(50)))?.count ?? 0)
                }
                lostThisRun = try await outbox.statistics().droppedThisBoot
                #expect(lostThisRun > 0, "a full disk loses messages")
                #expect(committed + lostThisRun == 500, "every message committed or counted")
            }
            // Stopped and started again before the disk has room: the loss is still known.
            var restartedWhileFull = false
            if let again = try? Outbox(settings: .init(path: path), logger: quietLogger) {
                restartedWhileFull = true
                #expect(try await again.statistics().dropped == lostThisRun, "restarted on the full disk")
                #expect(again.previousBoot == OutboxBootEnd(boot: 2, lastSeq: 500),
                        "every seq of boot 2 consumed: its loss shows as missing seqs")
            }
            try FileManager.default.removeItem(atPath: filler)
            let afterwards = try Outbox(settings: .init(path: path), logger: quietLogger)
            let statistics = try await afterwards.statistics()
            #expect(statistics.dropped == lostThisRun, "the loss of boot 2 is counted in the file")
            if !restartedWhileFull {
                #expect(afterwards.previousBoot == OutboxBootEnd(boot: 2, lastSeq: 500),
                        "every seq of boot 2 consumed: its loss shows as missing seqs")
            }
            let boot2Seqs = try await afterwards.lease(after: 0, max: 10_000).filter { $0.boot == 2 }.count
            #expect(Int64(boot2Seqs) == committed)
        }
    }

    /// A start on a disk with no room at all: the open fails, and says the disk is full
    /// (not an I/O error that sends the operator to the hardware), with the free space and
    /// the room to make.
    @Test func aStartOnADiskWithNoRoomAtAllSaysTheDiskIsFull() async throws {
        guard requireRoot() else { return }
        try await withTemporaryDirectory { dir in
            let mount = try Tmpfs(at: dir.file("small"), size: "512k")
            defer { mount.unmount() }
            let path = mount.path + "/outbox.sqlite"
            do {
                let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
                _ = try await outbox.append(drafts(100))
            }
            unlink(path + "-reserve")
            try fill(mount.path + "/filler")
            do {
                _ = try Outbox(settings: .init(path: path), logger: quietLogger)
                Issue.record("the outbox opened on a filesystem with no byte free")
            } catch let error as OutboxError {
                #expect(error.kind == .diskFull, "\(error)")
                #expect(error.description.contains("0 bytes free"), "\(error)")
                #expect(error.description.contains(path + "-reserve"), "names the room to make: \(error)")
                #expect(!error.description.contains("SMART"), "\(error)")
            }
        }
    }

    /// A loss counted on the calling thread (a bus thread's batch at shutdown, after the
    /// ingest task ended) on a disk with room for the meta row but not for its gap record: the
    /// count and the seqs go into the meta row alone, as `append` does, so the loss survives
    /// the exit that follows. With no room at all, the caller learns it is in memory only.
    @Test func aLossRecordedOnTheCallingThreadWithoutRoomForItsGapRecordSurvivesARestart() async throws {
        guard requireRoot() else { return }
        try await withTemporaryDirectory { dir in
            let mount = try Tmpfs(at: dir.file("small"), size: "512k")
            defer { mount.unmount() }
            let path = mount.path + "/outbox.sqlite"
            let filler = mount.path + "/filler"
            do {
                let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
                _ = try await outbox.append(drafts(100))
            }
            do {
                // Opened anew: its WAL holds little more than the boot's write, with no
                // spare room inside the file.
                let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
                #expect(unlink(path + "-reserve") == 0)
                // The synchronous append finds the reserve gone (and lets go of its blocks).
                let handedBack = await onDedicatedThread { outbox.appendOnCallingThread(drafts(1)) }
                #expect(committedRows(handedBack) == nil)
                try fill(filler)
                let nothingWritten = await onDedicatedThread {
                    outbox.recordLossOnCallingThread(3, reason: .shuttingDown)
                }
                #expect(nothingWritten == .inMemoryOnly, "no room at all: the caller must say it is in memory only")
                // Two pages free: room for the meta row's frame in the WAL (4 KiB and a little),
                // not for the gap record's three (the gap table, sqlite_sequence, the meta row).
                try shrink(filler, by: 8192)
                let counted = await onDedicatedThread { outbox.recordLossOnCallingThread(4, reason: .shuttingDown) }
                #expect(counted == .countedWithoutGapRecord)
            }
            // The process ended (its memory is gone); started again: the loss is in the file.
            try FileManager.default.removeItem(atPath: filler)
            let again = try Outbox(settings: .init(path: path), logger: quietLogger)
            #expect(try await again.statistics().dropped == 7, "both losses counted in the file")
            #expect(again.previousBoot == OutboxBootEnd(boot: 2, lastSeq: 7), "their seqs consumed")
        }
    }
}
