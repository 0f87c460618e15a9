// Sparkplug B's birth/death sequence number (bdSeq), kept in the outbox file so it
// survives restarts: every MQTT CONNECT of a Sparkplug edge node carries the next one.
import GRDB

extension Outbox {
    /// Takes the bdSeq for the next MQTT CONNECT and records it before returning:
    /// 0 for the first CONNECT this file ever saw, then the last one + 1, wrapping
    /// from 255 to 0. Synchronous (GRDB's serial queue): call it off Swift's
    /// cooperative pool, e.g. on the MQTT uplink's thread right before CONNECT.
    public func nextSparkplugBdSeq() throws -> UInt8 {
        do {
            return try database.write { db in
                let last = try Int64.fetchOne(db, sql: "SELECT last_bdseq FROM sparkplug WHERE id = 1")
                let next = last.map { ($0 + 1) % 256 } ?? 0
                try db.execute(sql: "UPDATE sparkplug SET last_bdseq = ? WHERE id = 1", arguments: [next])
                return UInt8(next)
            }
        } catch {
            throw Self.operationError(error, path: settings.path, doing: "recording the Sparkplug bdSeq")
        }
    }

    /// The bdSeq of the last CONNECT, nil if this file never saw a Sparkplug CONNECT.
    public func lastSparkplugBdSeq() async throws -> UInt8? {
        do {
            return try await database.read { db in
                try Int64.fetchOne(db, sql: "SELECT last_bdseq FROM sparkplug WHERE id = 1").map { UInt8($0) }
            }
        } catch {
            throw Self.operationError(error, path: settings.path, doing: "reading the Sparkplug bdSeq")
        }
    }
}
