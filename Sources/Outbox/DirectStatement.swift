// The hot path's cached statements stepped straight through SQLite's C API: GRDB's `Row`
// builds a dictionary of the statement's column names for every fetch, and its
// `StatementArguments` box every value (and `Data` copies every payload) for every
// execution. With one meta read, one insert per message and one meta write in every
// append, that was several per cent of the gateway's CPU at 100 polls/s.
import GRDB
import GRDBSQLite

extension Statement {
    /// On the outbox's connection, inside the caller's transaction, or as a statement of its
    /// own in autocommit (a read such as `Meta.fetch` through `unsafeRead`): resets the
    /// statement, lets `bind` bind its parameters (the `bindValue` functions below, which
    /// throw a bind SQLite refuses, with memory that lives until `read` returns), steps it
    /// once and hands `read` the result (`SQLITE_ROW`, with the row's columns readable, or
    /// `SQLITE_DONE`). Any other result throws, as GRDB's execution does. Bindings are
    /// cleared before it returns.
    ///
    /// GRDB does not see the statement run: use it only for statements that start or end
    /// no transaction, with no transaction observer on the connection (the outbox
    /// registers none).
    func stepDirectly<T>(_ db: Database, bind: (OpaquePointer) throws -> Void = { _ in },
                         read: (OpaquePointer, Int32) throws -> T) throws -> T {
        let statement = sqliteStatement
        sqlite3_reset(statement)
        defer {
            sqlite3_reset(statement)
            sqlite3_clear_bindings(statement)
        }
        try bind(statement)
        let code = sqlite3_step(statement)
        guard code == SQLITE_ROW || code == SQLITE_DONE else {
            throw DatabaseError(resultCode: ResultCode(rawValue: code), message: db.lastErrorMessage, sql: sql)
        }
        return try read(statement, code)
    }
}

/// Binds `value` (NULL for nil) to parameter `index` (from 1).
func bindValue(_ statement: OpaquePointer, _ value: Int64?, at index: Int32) throws {
    let code = if let value { sqlite3_bind_int64(statement, index, value) } else { sqlite3_bind_null(statement, index) }
    try checkBind(code, statement)
}

/// Binds `text` (NULL for nil) to parameter `index` (from 1), copied by SQLite.
func bindValue(_ statement: OpaquePointer, _ text: String?, at index: Int32) throws {
    guard var text else {
        try checkBind(sqlite3_bind_null(statement, index), statement)
        return
    }
    let code = text.withUTF8 { utf8 -> Int32 in
        guard let base = utf8.baseAddress, !utf8.isEmpty else {
            return sqlite3_bind_text(statement, index, "", 0, sqliteTransient)
        }
        return base.withMemoryRebound(to: CChar.self, capacity: utf8.count) { chars in
            sqlite3_bind_text(statement, index, chars, Int32(utf8.count), sqliteTransient)
        }
    }
    try checkBind(code, statement)
}

/// Binds `bytes` as a blob (an empty one for no bytes, never NULL) to parameter `index`
/// (from 1), not copied: `bytes` must stay valid until the statement was stepped.
func bindValue(_ statement: OpaquePointer, blob bytes: UnsafeRawBufferPointer, at index: Int32) throws {
    let code = if let base = bytes.baseAddress, !bytes.isEmpty {
        sqlite3_bind_blob(statement, index, base, Int32(bytes.count), nil)  // SQLITE_STATIC
    } else {
        sqlite3_bind_zeroblob(statement, index, 0)
    }
    try checkBind(code, statement)
}

/// Throws the result of a `sqlite3_bind_*` call that failed, with the connection's message,
/// taken right after the call.
private func checkBind(_ code: Int32, _ statement: OpaquePointer) throws {
    guard code != SQLITE_OK else { return }
    let message = sqlite3_db_handle(statement).map { String(cString: sqlite3_errmsg($0)) }
    throw DatabaseError(resultCode: ResultCode(rawValue: code), message: message,
                        sql: sqlite3_sql(statement).map { String(cString: $0) })
}

/// SQLite's `SQLITE_TRANSIENT` (a C macro Swift does not import): SQLite copies the value.
private let sqliteTransient = unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)
