// The outbox's limits and damage, seen from the wire: drops reported as gap
// records, a corrupt file quarantined and announced, stats published.
import Foundation
import Outbox
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct OutboxLimitsTests {
    @Test func dropsBeyondMaxMessagesArriveAsGapRecordsAndEverythingElseReplays() async throws {
        let e2e = try await EndToEnd(pollInterval: "20ms", buffer: "max_messages: 40")
        try await e2e.broker.stop(graceful: true)
        try e2e.startGateway()
        let outbox = e2e.directory.file("outbox.sqlite")
        try await waitUntil("drops while the broker is down", timeout: .seconds(30)) {
            ((try? Outbox.readStatistics(path: outbox))?.dropped ?? 0) >= 60
        }
        try await e2e.broker.start()
        let gapsTopic = "edge/\(e2e.gatewayID)/gaps"
        // Drained (so no more drops) and every drop reported.
        try await waitUntil("the backlog drained and gap records for every drop", timeout: .seconds(20)) {
            let reported = e2e.subscriber.messages(on: gapsTopic).reduce(0) { $0 + ($1.json["count"] as? Int ?? 0) }
            guard let statistics = try? Outbox.readStatistics(path: outbox) else { return false }
            return statistics.bufferedMessages < 10 && Int64(reported) == statistics.dropped
                && e2e.dataMessages.count >= 40
        }
        e2e.gateway!.signal(SIGTERM)
        #expect(try await e2e.gateway!.waitForExit() == 0)
        try await e2e.subscriber.roundTrip()

        // Every seq of the boot is either delivered or inside a reported gap.
        var explained = Set(e2e.dataMessages.compactMap { $0["seq"] as? Int })
        let gaps = e2e.subscriber.messages(on: gapsTopic).map(\.json)
        for gap in gaps {
            #expect(gap["boot"] as? Int == 1)
            #expect(gap["reason"] as? String == "max_messages", "\(gap)")
            let first = try #require(gap["first_seq"] as? Int), last = try #require(gap["last_seq"] as? Int)
            #expect(gap["count"] as? Int == last - first + 1)
            explained.formUnion(first...last)
        }
        let highest = explained.max() ?? 0
        #expect(Set(1...highest) == explained, "seqs neither delivered nor in a gap record")
        // drop_oldest: the oldest went, the newest polls were kept and delivered.
        #expect(gaps.contains { ($0["first_seq"] as? Int) == 1 }, "the first polls were the ones dropped: \(gaps)")
        let statistics = try Outbox.readStatistics(path: outbox)
        let inGaps = gaps.reduce(0) { $0 + ($1["count"] as? Int ?? 0) }
        #expect(statistics.dropped == Int64(inGaps), "every drop is counted once and reported")
        #expect(statistics.bufferedMessages == 0)
    }

    @Test func aCorruptOutboxIsQuarantinedAnnouncedAndTheGatewayRuns() async throws {
        let e2e = try await EndToEnd()
        let outbox = e2e.directory.file("outbox.sqlite")
        try Data((0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 31) }).write(to: URL(fileURLWithPath: outbox))
        // The boot file beside it remembers boot 13: the fresh outbox must not start over at 1.
        try "13\n".write(toFile: outbox + ".boot", atomically: true, encoding: .utf8)
        try e2e.startGateway()
        try await waitUntil("birth and data") {
            e2e.statuses(e2e.statusTopic).contains("online") && e2e.dataMessages.count >= 2
        }
        let birth = try #require(e2e.subscriber.messages(on: e2e.statusTopic).first)
        let quarantined = try #require(birth.json["outbox_quarantined"] as? String, "birth announces it: \(birth.text)")
        #expect(quarantined.hasPrefix(outbox + ".corrupt-"))
        #expect(birth.json["boot"] as? Int == 14, "boot continues above the recorded one: \(birth.text)")
        #expect(birth.json["boot_recovered_above"] as? Int == 13, "\(birth.text)")
        #expect(birth.json["boot_recovered_from"] as? String == "state_file", "\(birth.text)")
        #expect(FileManager.default.fileExists(atPath: quarantined), "the damaged file is kept for inspection")
        #expect(e2e.gateway!.output.contains("corrupt"), "and logged")
        #expect(e2e.dataMessages.first?["seq"] as? Int == 1)
        #expect(e2e.dataMessages.first?["boot"] as? Int == 14)
    }

    @Test func statsArePublishedWithTheOutboxCounters() async throws {
        let e2e = try await EndToEnd()
        try e2e.startGateway()
        let statsTopic = "edge/\(e2e.gatewayID)/stats"
        try await waitUntil("a stats message after some polls") {
            e2e.subscriber.messages(on: statsTopic).contains { ($0.json["polls_ok"] as? Int ?? 0) > 0 }
        }
        let stats = try #require(e2e.subscriber.messages(on: statsTopic).last?.json)
        for key in ["buffered_messages", "buffered_bytes", "dropped", "published", "inflight", "polls_ok",
                    "polls_failed", "poll_overruns", "boot"] {
            #expect(stats[key] is Int, "stats has \(key): \(stats)")
        }
        #expect(stats["dropped"] as? Int == 0)
    }
}

@Suite(.serialized) struct ReplayOrderTests {
    /// With `live_first` and a rate limit, fresh polls overtake a backlog that drains behind them.
    @Test func liveFirstSendsFreshPollsBeforeTheBacklogHasDrained() async throws {
        let e2e = try await EndToEnd(pollInterval: "20ms", replay: "replay: { order: live_first, max_rate: 100 }")
        try await e2e.broker.stop(graceful: true)
        try e2e.startGateway()
        let outbox = e2e.directory.file("outbox.sqlite")
        try await waitUntil("a backlog of 300", timeout: .seconds(30)) {
            ((try? Outbox.readStatistics(path: outbox))?.bufferedMessages ?? 0) >= 300
        }
        let backlogEnd = Int(try Outbox.readStatistics(path: outbox).committedThisBoot)
        try await e2e.broker.start()
        try await waitUntil("the backlog to drain", timeout: .seconds(30)) {
            e2e.dataMessages.contains { $0["seq"] as? Int == backlogEnd }
        }
        let seqs = e2e.dataMessages.compactMap { $0["seq"] as? Int }
        let lastOfBacklog = try #require(seqs.firstIndex(of: backlogEnd))
        let firstLive = try #require(seqs.firstIndex { $0 > backlogEnd + 50 }, "live polls arrived")
        #expect(firstLive < lastOfBacklog, "live polls came before the end of the backlog")
        // Everything still arrives.
        try await waitUntil("no seq missing") {
            let all = Set(e2e.dataMessages.compactMap { $0["seq"] as? Int })
            return all.count == all.max()
        }
    }
}

@Suite(.serialized) struct DiskFullTests {
    /// Mounts a tmpfs of `size` at `path` (needs root); `unmount()` removes it.
    struct Tmpfs {
        let path: String

        init(at path: String, size: String) async throws {
            self.path = path
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            let mount = try ChildProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=\(size)", "tmpfs", path],
                                         log: path + ".mount.log")
            guard try await mount.waitForExit() == 0 else {
                throw MissingTool(description: "mount -t tmpfs failed (the test needs root): \(mount.output)")
            }
        }

        var freeBytes: Int {
            var stats = statvfs()
            statvfs(path, &stats)
            return Int(stats.f_bavail) * Int(stats.f_frsize)
        }

        func unmount() {
            (try? ChildProcess("/bin/umount", ["-l", path], log: path + ".umount.log"))?.waitBlocking()
        }
    }

    @Test func aFullDiskCostsCountedDropsNotTheProcessAndItRecovers() async throws {
        let scratch = try TemporaryDirectory("diskfull")
        defer { scratch.remove() }
        let disk = try await Tmpfs(at: scratch.file("disk"), size: "4m")
        defer { disk.unmount() }
        let outbox = disk.path + "/outbox.sqlite"
        let e2e = try await EndToEnd(pollInterval: "10ms", buffer: "max_messages: none\n  max_bytes: none",
                                     outboxPath: outbox)
        try await e2e.broker.stop(graceful: true)
        try e2e.startGateway()
        // Opened, not just created: the file exists before the gateway sets its reserve aside
        // (the way out of a full disk); a filler that came in between left the gateway no
        // room to record a single drop in the file (dropped stayed 0 for 60 s under load).
        try await waitUntil("the outbox to be open") { e2e.gateway!.output.contains("outbox open") }
        #expect(FileManager.default.fileExists(atPath: outbox + "-reserve"), "the reserve is set aside: \(e2e.diagnostics)")

        // Leave the outbox some 100 KB, then let it run into the wall.
        let filler = disk.path + "/filler"
        guard FileManager.default.createFile(atPath: filler, contents: nil),
              let handle = FileHandle(forWritingAtPath: filler) else {
            throw MissingTool(description: "cannot create \(filler)")
        }
        let chunk = Data(count: 64 * 1024)
        // The outbox grows meanwhile; a chunk that no longer fits just ends the filling.
        while disk.freeBytes > 100_000 + chunk.count, (try? handle.write(contentsOf: chunk)) != nil {}
        try handle.close()
        do {
            try await waitUntil("drops on the full disk", timeout: .seconds(60)) {
                ((try? Outbox.readStatistics(path: outbox))?.dropped ?? 0) > 0
            }
        } catch {
            // What the outbox and the disk looked like when the wait gave up: the gateway's
            // log, the file's counters and the room left.
            let files = (try? FileManager.default.contentsOfDirectory(atPath: disk.path)) ?? []
            let sizes = files.map { name in
                "\(name) \(((try? FileManager.default.attributesOfItem(atPath: disk.path + "/" + name))?[.size] as? Int) ?? -1)"
            }
            Issue.record("""
                no drops counted in the file; free \(disk.freeBytes) B; files: \(sizes); \
                statistics: \(String(describing: try? Outbox.readStatistics(path: outbox))); \(e2e.diagnostics)
                """)
            throw error
        }
        #expect(e2e.gateway!.isRunning, "the gateway survives a full disk: \(e2e.diagnostics)")

        // Space returns: the gateway carries on by itself, drops stop.
        try FileManager.default.removeItem(atPath: filler)
        try await e2e.broker.start()
        let gapsTopic = "edge/\(e2e.gatewayID)/gaps"
        try await waitUntil("a disk_full gap record and the replay", timeout: .seconds(30)) {
            e2e.subscriber.messages(on: gapsTopic).contains { $0.json["reason"] as? String == "disk_full" }
                && e2e.dataMessages.count > 100
        }
        let droppedAfterRecovery = try Outbox.readStatistics(path: outbox).dropped
        let deliveredBefore = e2e.dataMessages.count
        try await waitUntil("200 more messages delivered", timeout: .seconds(30)) {
            e2e.dataMessages.count > deliveredBefore + 200
        }
        #expect(try Outbox.readStatistics(path: outbox).dropped == droppedAfterRecovery, "no drops once space returned")

        e2e.gateway!.signal(SIGTERM)
        #expect(try await e2e.gateway!.waitForExit() == 0)
        try await e2e.subscriber.roundTrip()
        // Every seq is delivered or inside a reported gap.
        try await waitUntil("all gap records") {
            let gaps = e2e.subscriber.messages(on: gapsTopic).map(\.json)
            let inGaps = gaps.reduce(0) { $0 + ($1["count"] as? Int ?? 0) }
            return Int64(inGaps) == droppedAfterRecovery
        }
        var explained = Set(e2e.dataMessages.compactMap { $0["seq"] as? Int })
        for gap in e2e.subscriber.messages(on: gapsTopic).map(\.json) {
            if let first = gap["first_seq"] as? Int, let last = gap["last_seq"] as? Int { explained.formUnion(first...last) }
        }
        #expect(Set(1...(explained.max() ?? 0)) == explained)
    }
}
