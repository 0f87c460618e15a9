// The outbox file format: named migrations and the meta row that carries counters.
//
// Migrations are never edited once landed; a schema change is a new named migration.

import GRDB
import GRDBSQLite

enum OutboxSchema {
    /// All migrations of the outbox file, in order.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: message, gap, meta") { db in
            // One row holding the boot counter, the next seq of this boot and every
            // counter. Updated in the same transaction as the change it counts, so
            // capacity checks never need COUNT(*) or SUM() over the message table.
            try db.execute(sql: """
                CREATE TABLE meta (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    boot INTEGER NOT NULL,
                    next_seq INTEGER NOT NULL,
                    buffered_messages INTEGER NOT NULL,
                    buffered_bytes INTEGER NOT NULL,
                    dropped_total INTEGER NOT NULL,
                    committed_total INTEGER NOT NULL,
                    acknowledged_total INTEGER NOT NULL,
                    dropped_this_boot INTEGER NOT NULL,
                    committed_this_boot INTEGER NOT NULL,
                    acknowledged_this_boot INTEGER NOT NULL
                );
                INSERT INTO meta VALUES (1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0);
                """)
            // AUTOINCREMENT: an id is never reused, even after the newest rows were
            // deleted, so a forwarder leasing "after id" never skips a new message.
            // `size` is payload + topic bytes, kept so deletes can update the meta row.
            // No secondary index: rows are appended and consumed in id order.
            try db.execute(sql: """
                CREATE TABLE message (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    boot INTEGER NOT NULL,
                    seq INTEGER NOT NULL,
                    topic TEXT NOT NULL,
                    qos INTEGER NOT NULL,
                    created_at INTEGER NOT NULL, -- milliseconds since 1970, UTC
                    size INTEGER NOT NULL,
                    payload BLOB NOT NULL
                );
                CREATE TABLE gap (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    boot INTEGER NOT NULL,
                    first_seq INTEGER NOT NULL,
                    last_seq INTEGER NOT NULL,
                    count INTEGER NOT NULL,
                    reason TEXT NOT NULL,
                    recorded_at INTEGER NOT NULL -- milliseconds since 1970, UTC
                );
                """)
        }
        migrator.registerMigration("v2: last seq of the previous boot") { db in
            // Where the previous boot ended: copied from `boot` and `next_seq - 1` by
            // `OutboxStore.startBoot`, in the transaction that starts the next boot.
            // `next_seq` itself is saved in every transaction that assigns seqs, so the
            // pair names the last seq that boot committed, even after a SIGKILL.
            // NULL while unknown (a new file, or a file from before this migration
            // that has not started a boot since).
            try db.execute(sql: """
                ALTER TABLE meta ADD COLUMN previous_boot INTEGER;
                ALTER TABLE meta ADD COLUMN previous_boot_last_seq INTEGER;
                """)
        }
        migrator.registerMigration("v3-timestamps") { db in
            // When each message was measured, on a clock that is never set: the
            // kernel's CLOCK_BOOTTIME (nanoseconds) and the kernel boot it belongs to,
            // and whether the wall clock was synchronised then (1) or not (0). A row
            // committed unsynchronised gets its `ts` corrected at publish time once a
            // synchronised clock of the same kernel boot tells the wall time of that
            // boottime. NULL in rows committed before this migration (sent as they are).
            try db.execute(sql: """
                ALTER TABLE message ADD COLUMN boottime_ns INTEGER;
                ALTER TABLE message ADD COLUMN kernel_boot_id TEXT;
                ALTER TABLE message ADD COLUMN clock_synchronised INTEGER;
                """)
        }
        migrator.registerMigration("v4-sparkplug") { db in
            // Sparkplug B's bdSeq: the value sent in the last MQTT CONNECT's Will (NDEATH)
            // and the NBIRTH of that session. NULL before the first Sparkplug CONNECT;
            // the next CONNECT uses this + 1, modulo 256 (`Outbox.nextSparkplugBdSeq`).
            try db.execute(sql: """
                CREATE TABLE sparkplug (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    last_bdseq INTEGER CHECK (last_bdseq BETWEEN 0 AND 255)
                );
                INSERT INTO sparkplug VALUES (1, NULL);
                """)
        }
        return migrator
    }
}

/// The meta row: boot, next seq and all counters.
struct Meta: Sendable {
    var boot: Int64
    var nextSeq: Int64
    var bufferedMessages: Int64
    var bufferedBytes: Int64
    var droppedTotal: Int64
    var committedTotal: Int64
    var acknowledgedTotal: Int64
    var droppedThisBoot: Int64
    var committedThisBoot: Int64
    var acknowledgedThisBoot: Int64

    static func fetch(_ db: Database) throws -> Meta {
        let statement = try db.cachedStatement(sql: """
            SELECT boot, next_seq, buffered_messages, buffered_bytes, dropped_total, committed_total,
                   acknowledged_total, dropped_this_boot, committed_this_boot, acknowledged_this_boot
            FROM meta WHERE id = 1
            """)
        // Read straight from SQLite (DirectStatement.swift): every column is NOT NULL.
        return try statement.stepDirectly(db) { row, result in
            guard result == SQLITE_ROW else {
                throw DatabaseError(resultCode: .SQLITE_CORRUPT, message: "outbox meta row is missing")
            }
            func column(_ index: Int32) -> Int64 { sqlite3_column_int64(row, index) }
            return Meta(
                boot: column(0), nextSeq: column(1), bufferedMessages: column(2), bufferedBytes: column(3),
                droppedTotal: column(4), committedTotal: column(5), acknowledgedTotal: column(6),
                droppedThisBoot: column(7), committedThisBoot: column(8), acknowledgedThisBoot: column(9))
        }
    }

    func save(_ db: Database) throws {
        let statement = try db.cachedStatement(sql: """
            UPDATE meta SET boot = ?, next_seq = ?, buffered_messages = ?, buffered_bytes = ?,
                dropped_total = ?, committed_total = ?, acknowledged_total = ?,
                dropped_this_boot = ?, committed_this_boot = ?, acknowledged_this_boot = ?
            WHERE id = 1
            """)
        // Bound one by one: no array built per save.
        try statement.stepDirectly(db, bind: { statement in
            try bindValue(statement, boot, at: 1)
            try bindValue(statement, nextSeq, at: 2)
            try bindValue(statement, bufferedMessages, at: 3)
            try bindValue(statement, bufferedBytes, at: 4)
            try bindValue(statement, droppedTotal, at: 5)
            try bindValue(statement, committedTotal, at: 6)
            try bindValue(statement, acknowledgedTotal, at: 7)
            try bindValue(statement, droppedThisBoot, at: 8)
            try bindValue(statement, committedThisBoot, at: 9)
            try bindValue(statement, acknowledgedThisBoot, at: 10)
        }) { _, _ in }
    }

    /// Counts `count` dropped messages.
    mutating func countDropped(_ count: Int64) {
        droppedTotal += count
        droppedThisBoot += count
    }
}
