// The SQL work of the outbox, one function per transaction step. Everything here runs
// inside a write transaction opened by `Outbox`; nothing here commits or logs.

import Foundation
import GRDB
import GRDBSQLite

/// Collects dropped (boot, seq) pairs, in the order they were dropped, as runs of
/// consecutive seqs with one reason: the gap records to be written.
struct DropLedger: Sendable {
    struct Run: Sendable, Equatable {
        var boot: Int64
        var firstSeq: Int64
        var lastSeq: Int64
        var reason: DropReason
        var count: Int64 { lastSeq - firstSeq + 1 }
    }

    private(set) var runs: [Run] = []
    private(set) var total: Int64 = 0

    mutating func add(boot: Int64, seq: Int64, reason: DropReason) {
        add(boot: boot, firstSeq: seq, lastSeq: seq, reason: reason)
    }

    mutating func add(boot: Int64, firstSeq: Int64, lastSeq: Int64, reason: DropReason) {
        total += lastSeq - firstSeq + 1
        if var last = runs.last, last.boot == boot, last.reason == reason, last.lastSeq + 1 == firstSeq {
            last.lastSeq = lastSeq
            runs[runs.count - 1] = last
        } else {
            runs.append(Run(boot: boot, firstSeq: firstSeq, lastSeq: lastSeq, reason: reason))
        }
    }

    /// Adds `later`'s runs after these.
    mutating func append(_ later: DropLedger) {
        for run in later.runs { add(boot: run.boot, firstSeq: run.firstSeq, lastSeq: run.lastSeq, reason: run.reason) }
    }

    var reasons: [DropReason] {
        var seen: [DropReason] = []
        for run in runs where !seen.contains(run.reason) { seen.append(run.reason) }
        return seen
    }
}

enum OutboxStore {
    /// Sets up a fresh boot: boot + 1, seq restarts at 1, per-boot counters at zero.
    /// The new boot is above both the file's last boot and `floor` (a boot known to
    /// have been used, e.g. from the boot file). Returns the new meta and the file's last boot.
    /// Records where the ending boot stopped (`previous_boot`, `previous_boot_last_seq`)
    /// when the file has had one.
    static func startBoot(_ db: Database, floor: Int64 = 0) throws -> (meta: Meta, previous: Int64) {
        try db.execute(sql: """
            UPDATE meta SET previous_boot = boot, previous_boot_last_seq = next_seq - 1 WHERE id = 1 AND boot > 0
            """)
        var meta = try Meta.fetch(db)
        let previous = meta.boot
        meta.boot = max(meta.boot, floor) + 1
        meta.nextSeq = 1
        meta.droppedThisBoot = 0
        meta.committedThisBoot = 0
        meta.acknowledgedThisBoot = 0
        try meta.save(db)
        return (meta, previous)
    }

    /// Inserts one message and returns its id.
    static func insert(
        _ db: Database, boot: Int64, seq: Int64, topic: String, qos: UInt8,
        createdAt: Int64, size: Int64, payload: [UInt8], measured: MeasuredAt? = nil
    ) throws -> Int64 {
        let statement = try db.cachedStatement(sql: """
            INSERT INTO message (boot, seq, topic, qos, created_at, size, payload,
                                 boottime_ns, kernel_boot_id, clock_synchronised) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """)
        // Bound directly (DirectStatement.swift): the payload is not copied before SQLite writes it.
        return try payload.withUnsafeBytes { bytes in
            try statement.stepDirectly(db, bind: { statement in
                try bindValue(statement, boot, at: 1)
                try bindValue(statement, seq, at: 2)
                try bindValue(statement, topic, at: 3)
                try bindValue(statement, Int64(qos), at: 4)
                try bindValue(statement, createdAt, at: 5)
                try bindValue(statement, size, at: 6)
                try bindValue(statement, blob: bytes, at: 7)
                try bindValue(statement, measured?.boottime, at: 8)
                try bindValue(statement, measured?.kernelBootID, at: 9)
                try bindValue(statement, measured.map { $0.synchronised ? 1 : 0 }, at: 10)
            }) { _, _ in db.lastInsertedRowID }
        }
    }

    /// The measurement columns of a row (all NULL in rows from before "v3-timestamps").
    static func measured(boottime: Int64?, kernelBootID: String?, synchronised: Int64?) -> MeasuredAt? {
        guard let boottime, let kernelBootID, let synchronised else { return nil }
        return MeasuredAt(boottime: boottime, kernelBootID: kernelBootID, synchronised: synchronised != 0)
    }

    /// The oldest rows as seen by the drop logic (no payload).
    struct OldRow {
        var id: Int64
        var boot: Int64
        var seq: Int64
        var size: Int64
        var createdAt: Int64
        var measured: MeasuredAt?
    }

    /// Deletes the oldest messages, oldest first, as long as `reason` names a reason to drop
    /// the next one; updates the meta counts and records each drop in `ledger`.
    /// Returns the highest deleted id, or nil if nothing was deleted.
    static func dropOldest(
        _ db: Database, meta: inout Meta, ledger: inout DropLedger,
        reason: (Meta, OldRow) -> DropReason?
    ) throws -> Int64? {
        // Start small: usually nothing or only a few rows are due (an age check on
        // every append), then grow so a large trim does few round trips.
        var chunkSize = 16
        let select = try db.cachedStatement(sql: """
            SELECT id, boot, seq, size, created_at, boottime_ns, kernel_boot_id, clock_synchronised
            FROM message WHERE id > ? ORDER BY id LIMIT ?
            """)
        var lastDeleted: Int64?
        var cursorID: Int64 = 0
        scan: while true {
            let rows = try Row.fetchAll(select, arguments: [cursorID, chunkSize])
            for row in rows {
                let old = OldRow(id: row[0], boot: row[1], seq: row[2], size: row[3], createdAt: row[4],
                                 measured: measured(boottime: row[5], kernelBootID: row[6], synchronised: row[7]))
                guard let why = reason(meta, old) else { break scan }
                ledger.add(boot: old.boot, seq: old.seq, reason: why)
                meta.bufferedMessages -= 1
                meta.bufferedBytes -= old.size
                meta.countDropped(1)
                lastDeleted = old.id
                cursorID = old.id
            }
            if rows.count < chunkSize { break }
            chunkSize = min(chunkSize * 4, 4096)
        }
        if let lastDeleted {
            let delete = try db.cachedStatement(sql: "DELETE FROM message WHERE id <= ?")
            try delete.execute(arguments: [lastDeleted])
        }
        if meta.bufferedMessages <= 0 {
            // The table is empty now or was already: keep the meta row honest.
            let any = try db.cachedStatement(sql: "SELECT 1 FROM message LIMIT 1")
            if try Int64.fetchOne(any) == nil {
                meta.bufferedMessages = 0
                meta.bufferedBytes = 0
            }
        }
        return lastDeleted
    }

    /// Deletes the messages with these ids (ascending) as drops for `reason`: counted
    /// in `meta` and recorded in `ledger`. Ids not in the table are skipped.
    static func delete(
        _ db: Database, ids: [Int64], meta: inout Meta, ledger: inout DropLedger, reason: DropReason
    ) throws {
        let delete = try db.cachedStatement(sql: "DELETE FROM message WHERE id = ? RETURNING boot, seq, size")
        for id in ids {
            guard let row = try Row.fetchOne(delete, arguments: [id]) else { continue }
            ledger.add(boot: row[0], seq: row[1], reason: reason)
            meta.bufferedMessages -= 1
            meta.bufferedBytes -= row[2] as Int64
            meta.countDropped(1)
        }
    }

    /// Writes the runs of `ledger` as gap records, extending the newest unreported gap when
    /// a run continues it (same boot and reason, next seq), so a long drop episode stays one record.
    static func recordGaps(_ db: Database, ledger: DropLedger, now: Int64) throws {
        guard !ledger.runs.isEmpty else { return }
        let newest = try db.cachedStatement(sql: """
            SELECT id, boot, last_seq, reason FROM gap ORDER BY id DESC LIMIT 1
            """)
        let extend = try db.cachedStatement(sql: """
            UPDATE gap SET last_seq = ?, count = count + ?, recorded_at = ? WHERE id = ?
            """)
        let insert = try db.cachedStatement(sql: """
            INSERT INTO gap (boot, first_seq, last_seq, count, reason, recorded_at) VALUES (?, ?, ?, ?, ?, ?)
            """)
        for run in ledger.runs {
            if let row = try Row.fetchOne(newest),
               row[1] as Int64 == run.boot, row[2] as Int64 + 1 == run.firstSeq,
               row[3] as String == run.reason.rawValue
            {
                try extend.execute(arguments: [run.lastSeq, run.count, now, row[0] as Int64])
            } else {
                try insert.execute(arguments: [run.boot, run.firstSeq, run.lastSeq, run.count, run.reason.rawValue, now])
            }
        }
    }

    /// Where the boot before the current one ended, if the file knows.
    static func previousBoot(_ db: Database) throws -> OutboxBootEnd? {
        let row = try Row.fetchOne(db, sql: "SELECT previous_boot, previous_boot_last_seq FROM meta WHERE id = 1")
        guard let row, let boot: Int64 = row["previous_boot"], let lastSeq: Int64 = row["previous_boot_last_seq"] else {
            return nil
        }
        return OutboxBootEnd(boot: boot, lastSeq: lastSeq)
    }

    /// The oldest message's commit time, or nil when empty.
    static func oldestCreatedAt(_ db: Database) throws -> Int64? {
        let statement = try db.cachedStatement(sql: "SELECT created_at FROM message ORDER BY id LIMIT 1")
        return try Int64.fetchOne(statement)
    }

    /// The counters and the oldest row's age; call it inside a read transaction (both from
    /// one snapshot of the file).
    static func statistics(_ db: Database, now: Int64) throws -> OutboxStatistics {
        let meta = try Meta.fetch(db)
        let oldest = try oldestCreatedAt(db)
        return OutboxStatistics(
            bufferedMessages: Int(meta.bufferedMessages),
            bufferedBytes: meta.bufferedBytes,
            oldestAge: oldest.map { .milliseconds(max(0, now - $0)) },
            dropped: meta.droppedTotal,
            droppedThisBoot: meta.droppedThisBoot,
            committedThisBoot: meta.committedThisBoot,
            acknowledgedThisBoot: meta.acknowledgedThisBoot,
            acknowledged: meta.acknowledgedTotal,
            boot: meta.boot,
            seqCommitted: meta.nextSeq - 1)
    }
}

/// How old a row is, for `max_age`, when the wall clock may have stepped since it was
/// committed (a cold start without NTP, then a 3 h jump, must not age the backlog by 3 h).
struct MessageAge {
    var maxAge: Int64
    /// Wall clock now, milliseconds since 1970.
    var wallNow: Int64
    /// Boottime and kernel boot now, when the caller knows them.
    var measuredNow: MeasuredAt?

    /// A row of the current kernel boot is aged by boottime (never set, never steps).
    /// A row committed unsynchronised in another kernel boot has no knowable age (its
    /// wall time may be 1970): it is never dropped for age, only for the other limits.
    /// Other rows (synchronised in another boot, or from before boottimes were kept)
    /// are aged by their commit time on the wall clock.
    func expired(_ row: OutboxStore.OldRow) -> Bool {
        if let measured = row.measured, let now = measuredNow {
            if measured.kernelBootID == now.kernelBootID {
                return (now.boottime - measured.boottime) / 1_000_000 > maxAge
            }
            if !measured.synchronised { return false }
        }
        return row.createdAt < wallNow - maxAge
    }
}

extension Date {
    /// Milliseconds since 1970, the unit the outbox stores times in.
    var outboxMilliseconds: Int64 { Int64((timeIntervalSince1970 * 1000).rounded(.down)) }

    init(outboxMilliseconds ms: Int64) {
        self.init(timeIntervalSince1970: Double(ms) / 1000)
    }
}

/// The last text read from a column, kept as a String: a text that repeats row after
/// row (a topic, the kernel boot id) is compared as bytes and shared, not built again.
struct RepeatedText {
    private var bytes: [UInt8] = []
    private var text: String?

    /// The text at `index` of `row`; nil when it is NULL.
    mutating func text(of row: Row, at index: Int) throws -> String? {
        try row.withUnsafeData(atIndex: index) { data -> String? in
            guard let data else { return nil }
            let same = data.withUnsafeBytes { new in
                bytes.withUnsafeBytes { old in new.count == old.count && (old.count == 0 || memcmp(new.baseAddress!, old.baseAddress!, old.count) == 0) }
            }
            if let text, same { return text }
            bytes = [UInt8](data)
            let fresh = String(decoding: bytes, as: UTF8.self)
            text = fresh
            return fresh
        }
    }
}
