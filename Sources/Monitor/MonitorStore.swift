// The monitor's state file (SQLite through GRDB): gateways, continuity ledgers
// (as ranges), history and ignored-input counters. Written in batches, off the
// event path; read once at start.
import Foundation
import GRDB

/// Why the state file could not be opened, read or written; says which file and what to do.
public struct MonitorStoreError: Error, CustomStringConvertible {
    public var description: String
}

/// The restart-safe state of edge-monitor.
public final class MonitorStore: Sendable {
    public let path: String
    private let database: DatabaseQueue

    /// Opens (creating when missing) the state file and migrates it.
    public init(path: String) throws {
        self.path = path
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            } catch {
                throw MonitorStoreError(description: "cannot create the directory of the state file \(path): \(error); "
                                        + "create it writable by edge-monitor's user, or set monitor.state elsewhere")
            }
        }
        var configuration = Configuration()
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA journal_mode = WAL")
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
        }
        do {
            database = try DatabaseQueue(path: path, configuration: configuration)
            try Self.migrator.migrate(database)
        } catch {
            throw MonitorStoreError(description: "cannot open the state file \(path): \(error); "
                                    + "check that it is writable by edge-monitor's user, or move it aside to start afresh")
        }
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: gateway, ledger, history, ignored") { db in
            try db.create(table: "gateway") { t in
                t.primaryKey("id", .text)
                t.column("record", .text).notNull()  // GatewayRecord as JSON
            }
            try db.create(table: "ledger") { t in
                t.column("gateway", .text).notNull()
                t.column("boot", .integer).notNull()
                t.column("ledger", .text).notNull()  // ContinuityLedger as JSON (ranges)
                t.primaryKey(["gateway", "boot"])
            }
            try db.create(table: "history") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("gateway", .text).notNull().indexed()
                t.column("at", .double).notNull()
                t.column("kind", .text).notNull()
                t.column("detail", .text).notNull()
            }
            try db.create(table: "ignored") { t in
                t.primaryKey("reason", .text)
                t.column("count", .integer).notNull()
            }
        }
        return migrator
    }

    struct GatewayRow: Codable, FetchableRecord, PersistableRecord, Sendable {
        static let databaseTableName = "gateway"
        var id: String
        var record: String
    }

    struct LedgerRow: Codable, FetchableRecord, PersistableRecord, Sendable {
        static let databaseTableName = "ledger"
        var gateway: String
        var boot: Int64
        var ledger: String
    }

    struct HistoryRow: Codable, FetchableRecord, PersistableRecord, Sendable {
        static let databaseTableName = "history"
        var id: Int64?
        var gateway: String
        var at: Double
        var kind: String
        var detail: String
    }

    struct IgnoredRow: Codable, FetchableRecord, PersistableRecord, Sendable {
        static let databaseTableName = "ignored"
        var reason: String
        var count: Int64
    }

    /// Everything stored, to rebuild the model at start.
    public struct Contents: Sendable {
        public var gateways: [GatewayRecord] = []
        public var ledgers: [(gateway: String, ledger: ContinuityLedger)] = []
        public var history: [HistoryEntry] = []
        public var ignored: [IgnoredReason: Int64] = [:]
    }

    public func load(historyLimit: Int) throws -> Contents {
        let decoder = JSONDecoder()
        do {
            return try database.read { db in
                var contents = Contents()
                for row in try GatewayRow.fetchAll(db) {
                    contents.gateways.append(try decoder.decode(GatewayRecord.self, from: Data(row.record.utf8)))
                }
                for row in try LedgerRow.fetchAll(db) {
                    contents.ledgers.append((row.gateway, try decoder.decode(ContinuityLedger.self, from: Data(row.ledger.utf8))))
                }
                let history = try HistoryRow.fetchAll(db, sql: """
                    SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY gateway ORDER BY id DESC) AS n FROM history)
                    WHERE n <= ? ORDER BY id
                    """, arguments: [historyLimit])
                contents.history = history.compactMap { row in
                    HistoryEntry.Kind(rawValue: row.kind).map {
                        HistoryEntry(gateway: row.gateway, at: Date(timeIntervalSince1970: row.at), kind: $0, detail: row.detail)
                    }
                }
                for row in try IgnoredRow.fetchAll(db) {
                    if let reason = IgnoredReason(rawValue: row.reason) { contents.ignored[reason] = row.count }
                }
                return contents
            }
        } catch {
            throw MonitorStoreError(description: "cannot read the state file \(path): \(error); "
                                    + "move it aside to start afresh (the fleet rebuilds from retained topics, the ledgers do not)")
        }
    }

    /// Writes one batch of changes in one transaction (GRDB's own queue: never on the caller's thread).
    public func write(_ changes: ModelChanges, historyLimit: Int) async throws {
        let encoder = JSONEncoder()
        let gateways = try changes.gateways.map { GatewayRow(id: $0.id, record: String(decoding: try encoder.encode($0), as: UTF8.self)) }
        let ledgers = try changes.ledgers.map {
            LedgerRow(gateway: $0.gateway, boot: $0.ledger.boot, ledger: String(decoding: try encoder.encode($0.ledger), as: UTF8.self))
        }
        let history = changes.history.map {
            HistoryRow(id: nil, gateway: $0.gateway, at: $0.at.timeIntervalSince1970, kind: $0.kind.rawValue, detail: $0.detail)
        }
        let ignored = changes.ignored.map { IgnoredRow(reason: $0.key.rawValue, count: $0.value) }
        let touched = Set(changes.history.map(\.gateway))
        try await database.write { db in
            for gateway in changes.removedLedgers {
                try db.execute(sql: "DELETE FROM ledger WHERE gateway = ?", arguments: [gateway])
            }
            for row in gateways { try row.save(db) }
            for row in ledgers { try row.save(db) }
            for row in history { try row.insert(db) }
            for row in ignored { try row.save(db) }
            for gateway in touched {
                try db.execute(sql: """
                    DELETE FROM history WHERE gateway = ? AND id NOT IN
                    (SELECT id FROM history WHERE gateway = ? ORDER BY id DESC LIMIT ?)
                    """, arguments: [gateway, gateway, historyLimit])
            }
        }
    }
}
