import GRDB
import Testing
@testable import Outbox

/// Statements stepped straight through SQLite's C API (DirectStatement.swift).
@Suite("direct statements")
struct DirectStatementTests {
    /// A bind SQLite refuses (here an index past the statement's parameters) throws with
    /// its result code instead of stepping the statement with the value missing.
    @Test func aFailedBindThrowsWithItsResultCode() throws {
        let queue = try DatabaseQueue()
        try queue.write { db in
            try db.execute(sql: "CREATE TABLE t (a INTEGER, b TEXT)")
            let insert = try db.cachedStatement(sql: "INSERT INTO t (a, b) VALUES (?, ?)")
            do {
                try insert.stepDirectly(db, bind: { statement in
                    try bindValue(statement, Int64(1), at: 1)
                    try bindValue(statement, "x", at: 2)
                    try bindValue(statement, Int64(3), at: 3)  // there is no third parameter
                }) { _, _ in }
                Issue.record("a bind past the parameters did not throw")
            } catch let error as DatabaseError {
                #expect(error.resultCode == .SQLITE_RANGE)
            }
            #expect(try Int.fetchOne(db, sql: "SELECT count(*) FROM t") == 0, "not stepped")

            // An empty text is bound as an empty text, not NULL.
            try insert.stepDirectly(db, bind: { statement in
                try bindValue(statement, Int64(2), at: 1)
                try bindValue(statement, "", at: 2)
            }) { _, _ in }
            #expect(try String.fetchOne(db, sql: "SELECT b FROM t WHERE a = 2") == "")
        }
    }
}
