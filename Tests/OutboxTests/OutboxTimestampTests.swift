// Migration "v3-timestamps": each row keeps when it was measured (CLOCK_BOOTTIME,
// kernel boot id, whether the wall clock was synchronised), and a file from before
// it opens with its rows intact.
import Foundation
import Outbox
import Synchronization
import Testing

@Suite struct OutboxTimestampTests {
    @Test func eachRowKeepsItsBoottimeKernelBootAndSyncAcrossReopen() async throws {
        try await withTemporaryDirectory { dir in
            let settings = OutboxSettings(path: dir.file("outbox.sqlite"))
            let measured = [
                MeasuredAt(boottime: 12_345_678_901, kernelBootID: "d726d6d8-19ef-46d6-8098-da2c75f6bdb5", synchronised: false),
                MeasuredAt(boottime: 99_000_000_000, kernelBootID: "other", synchronised: true),
            ]
            var committed: [OutboxMessage] = []
            do {
                let outbox = try Outbox(settings: settings, logger: quietLogger)
                committed = try await outbox.append(measured.map { at in
                    OutboxDraft(topic: "edge/gw-01/a/data", qos: 1, measured: at) { boot, seq in payload(boot: boot, seq: seq) }
                } + [OutboxDraft(topic: "edge/gw-01/a/data", qos: 1) { boot, seq in payload(boot: boot, seq: seq) }])
            }
            #expect(committed.map(\.measured) == measured + [nil])
            let reopened = try Outbox(settings: settings, logger: quietLogger)
            #expect(try await reopened.lease(after: 0, max: 10) == committed)
        }
    }

    /// A file written before the migration (schema "v2"): it opens, its rows lease as
    /// they were (nothing known about their clock), and new rows keep their measurement.
    @Test func aFileFromBeforeTheMigrationKeepsItsRows() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            let (status, output) = try run("/usr/bin/env", ["sqlite3", path, """
                CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY);
                INSERT INTO grdb_migrations VALUES ('v1: message, gap, meta'), ('v2: last seq of the previous boot');
                CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 1), boot INTEGER NOT NULL, next_seq INTEGER NOT NULL,
                    buffered_messages INTEGER NOT NULL, buffered_bytes INTEGER NOT NULL, dropped_total INTEGER NOT NULL,
                    committed_total INTEGER NOT NULL, acknowledged_total INTEGER NOT NULL, dropped_this_boot INTEGER NOT NULL,
                    committed_this_boot INTEGER NOT NULL, acknowledged_this_boot INTEGER NOT NULL,
                    previous_boot INTEGER, previous_boot_last_seq INTEGER);
                INSERT INTO meta VALUES (1, 4, 2, 1, 20, 0, 1, 0, 0, 1, 0, 3, 9);
                CREATE TABLE message (id INTEGER PRIMARY KEY AUTOINCREMENT, boot INTEGER NOT NULL, seq INTEGER NOT NULL,
                    topic TEXT NOT NULL, qos INTEGER NOT NULL, created_at INTEGER NOT NULL, size INTEGER NOT NULL,
                    payload BLOB NOT NULL);
                CREATE TABLE gap (id INTEGER PRIMARY KEY AUTOINCREMENT, boot INTEGER NOT NULL, first_seq INTEGER NOT NULL,
                    last_seq INTEGER NOT NULL, count INTEGER NOT NULL, reason TEXT NOT NULL, recorded_at INTEGER NOT NULL);
                INSERT INTO message (boot, seq, topic, qos, created_at, size, payload)
                    VALUES (4, 1, 'edge/gw-01/a/data', 1, 1800000000000, 20, CAST('{"ts":"old"}' AS BLOB));
                """])
            guard status == 0 else {
                Issue.record("sqlite3 CLI needed to build an outbox from before the migration: \(output)")
                return
            }
            let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
            #expect(outbox.boot == 5)
            let old = try await outbox.lease(after: 0, max: 10)
            #expect(old.count == 1)
            #expect(old.first?.payload == Array(#"{"ts":"old"}"#.utf8))
            #expect(old.first?.measured == nil)
            let at = MeasuredAt(boottime: 1, kernelBootID: "b", synchronised: true)
            let new = try await outbox.append([OutboxDraft(topic: "edge/gw-01/a/data", qos: 1, measured: at) { _, _ in [1] }])
            #expect(try await outbox.lease(after: old[0].id, max: 10).map(\.measured) == new.map(\.measured))
            #expect(new.first?.measured == at)
        }
    }

    /// `max_age` after a cold start: the backlog was committed on a clock 3 h slow, then
    /// NTP stepped it forward. Rows of this kernel boot are aged by boottime (not
    /// dropped); rows of an earlier boot that never saw sync have no knowable age (not
    /// dropped); rows of an earlier boot committed synchronised are aged by wall time.
    @Test func maxAgeAgesByBoottimeNotByAWallClockThatStepped() async throws {
        try await withTemporaryDirectory { dir in
            let wall = ManualClock(Date(timeIntervalSince1970: 1_800_000_000 - 3 * 3600))
            let boottime = Mutex<Int64>(60_000_000_000)
            let outbox = try Outbox(
                settings: OutboxSettings(path: dir.file("outbox.sqlite"), maxAge: .seconds(3600)), logger: quietLogger,
                now: { wall.now },
                measuring: { MeasuredAt(boottime: boottime.withLock { $0 }, kernelBootID: "this", synchronised: false) })
            func draft(_ at: MeasuredAt) -> OutboxDraft {
                OutboxDraft(topic: "edge/gw-01/a/data", qos: 1, measured: at) { boot, seq in payload(boot: boot, seq: seq) }
            }
            let earlierUnsynchronised = MeasuredAt(boottime: 5_000_000_000, kernelBootID: "earlier", synchronised: false)
            let earlierSynchronised = MeasuredAt(boottime: 6_000_000_000, kernelBootID: "earlier", synchronised: true)
            let thisBoot = MeasuredAt(boottime: 60_000_000_000, kernelBootID: "this", synchronised: false)
            _ = try await outbox.append([draft(earlierSynchronised), draft(earlierUnsynchronised), draft(thisBoot)])

            // Ten minutes later NTP answers: the wall clock jumps 3 h forward.
            wall.advance(by: .seconds(3 * 3600 + 600))
            boottime.withLock { $0 += 600_000_000_000 }
            _ = try await outbox.append([draft(MeasuredAt(boottime: 660_000_000_000, kernelBootID: "this", synchronised: true))])
            let kept = try await outbox.lease(after: 0, max: 10).map(\.measured)
            #expect(kept.first == earlierUnsynchronised, "the earlier boot's synchronised row (3 h 10 min old) is dropped: \(kept)")
            #expect(kept.count == 3, "\(kept)")

            // The earlier boot's row goes out; 3100 s of boottime later the row measured
            // at 60 s is over an hour old, the one at 660 s is not.
            try await outbox.acknowledgeNow([#require(try await outbox.lease(after: 0, max: 1).first).id])
            boottime.withLock { $0 += 3_100_000_000_000 }
            wall.advance(by: .seconds(3_100))
            _ = try await outbox.append([draft(MeasuredAt(boottime: 3_760_000_000_000, kernelBootID: "this", synchronised: true))])
            #expect(try await outbox.lease(after: 0, max: 10).map { $0.measured?.boottime } == [660_000_000_000, 3_760_000_000_000])
        }
    }
}
