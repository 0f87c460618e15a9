// The transactions of the outbox's hot path (append, acknowledge), run with statements
// prepared once per connection.
//
// GRDB's `inTransaction` (and `write`, which uses it) compiles `BEGIN IMMEDIATE
// TRANSACTION` and `COMMIT TRANSACTION` anew for every transaction, and each compile runs
// GRDB's statement authorizer and region bookkeeping: with a few small transactions per
// poll that was about a tenth of the gateway's CPU. Here both come from the connection's
// statement cache.

import GRDB

extension Database {
    /// Runs `body` inside `BEGIN IMMEDIATE` … `COMMIT` and returns its result; rolls back
    /// and rethrows when `body` or the commit throws. Not reentrant: call it outside any
    /// transaction, on the writer (`writeWithoutTransaction`).
    ///
    /// The commit is SQLite's: with `synchronous = FULL` it returns only after the WAL
    /// was synced, exactly as with GRDB's `inTransaction`.
    func inCachedTransaction<T>(_ body: () throws -> T) throws -> T {
        try cachedStatement(sql: "BEGIN IMMEDIATE TRANSACTION").execute()
        do {
            let result = try body()
            try cachedStatement(sql: "COMMIT TRANSACTION").execute()
            return result
        } catch {
            // SQLite may have rolled back by itself (SQLITE_FULL, SQLITE_IOERR): GRDB's
            // `rollback()` only issues ROLLBACK while a transaction is still open.
            try? rollback()
            throw error
        }
    }
}
