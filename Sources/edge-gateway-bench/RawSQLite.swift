// The append baseline: plain sqlite3 C calls, one prepared INSERT, the same WAL
// and synchronous=FULL, the same rows and transaction sizes as the outbox.
import Foundation
import GRDBSQLite

enum RawSQLite {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// `PRAGMA quick_check` of `path`, read-only, as the outbox ran it before opening.
    static func quickCheck(path: String) throws -> [String] {
        var db: OpaquePointer?
        guard sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, nil) == SQLITE_OK, let db else {
            throw Failure(description: "sqlite3_open_v2 \(path) failed")
        }
        defer { sqlite3_close(db) }
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &statement, nil) == SQLITE_OK else {
            throw Failure(description: String(cString: sqlite3_errmsg(db)))
        }
        defer { sqlite3_finalize(statement) }
        var findings: [String] = []
        while sqlite3_step(statement) == SQLITE_ROW {
            findings.append(String(cString: sqlite3_column_text(statement, 0)))
        }
        return findings
    }

    static func insertBenchmark(path: String, total: Int, batch: Int, payload: [UInt8]) throws -> Duration {
        var db: OpaquePointer?
        guard sqlite3_open(path, &db) == SQLITE_OK, let db else {
            throw Failure(description: "sqlite3_open \(path) failed")
        }
        defer { sqlite3_close(db) }
        func exec(_ sql: String) throws {
            guard sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK else {
                throw Failure(description: "\(sql): \(String(cString: sqlite3_errmsg(db)))")
            }
        }
        try exec("PRAGMA journal_mode=WAL")
        try exec("PRAGMA synchronous=FULL")
        try exec("""
            CREATE TABLE message (id INTEGER PRIMARY KEY AUTOINCREMENT, boot INTEGER NOT NULL, seq INTEGER NOT NULL,
            topic TEXT NOT NULL, qos INTEGER NOT NULL, created_at INTEGER NOT NULL, payload BLOB NOT NULL)
            """)
        var insert: OpaquePointer?
        guard sqlite3_prepare_v2(db, "INSERT INTO message (boot, seq, topic, qos, created_at, payload) VALUES (1, ?, ?, 1, ?, ?)",
                                 -1, &insert, nil) == SQLITE_OK else {
            throw Failure(description: String(cString: sqlite3_errmsg(db)))
        }
        defer { sqlite3_finalize(insert) }
        let topic = "edge/bench/device/data"
        let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
        let clock = ContinuousClock()
        return try clock.measure {
            var seq: Int64 = 0
            for _ in 0..<(total / batch) {
                try exec("BEGIN IMMEDIATE")
                for _ in 0..<batch {
                    seq += 1
                    sqlite3_bind_int64(insert, 1, seq)
                    sqlite3_bind_text(insert, 2, topic, -1, transient)
                    sqlite3_bind_int64(insert, 3, Int64(Date().timeIntervalSince1970 * 1000))
                    _ = payload.withUnsafeBytes { sqlite3_bind_blob(insert, 4, $0.baseAddress, Int32($0.count), transient) }
                    guard sqlite3_step(insert) == SQLITE_DONE else {
                        throw Failure(description: String(cString: sqlite3_errmsg(db)))
                    }
                    sqlite3_reset(insert)
                }
                try exec("COMMIT")
            }
        }
    }
}
