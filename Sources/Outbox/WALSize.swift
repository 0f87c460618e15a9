// How big the outbox's WAL is, as SQLite reports it after each commit, so that an append
// does not `stat` the `-wal` file to find out (the WAL limit: see ReserveFile.swift).
import Foundation
import GRDB
import GRDBSQLite
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The WAL's size in bytes, from the frame count SQLite hands its WAL hook after every
/// commit of the writing connection (the WAL holds `32 + frames × (page size + 24)` bytes),
/// or from the `-wal` file's size while that count is not known: after the outbox opened
/// and after a write failed (a failed transaction may have written frames past the last
/// commit), until the next commit reports it again.
///
/// The hook takes over `wal_autocheckpoint` (a connection has one WAL hook, and SQLite's
/// auto-checkpoint is that hook): it runs the same passive checkpoint SQLite's default hook
/// runs, once the WAL holds `autocheckpointPages` frames.
final class WALSize: Sendable {
    private let walPath: String
    private let autocheckpointPages: Int32
    /// Frames in the WAL after the last commit; -1 while not known (the file's size counts).
    private let frames = Atomic<Int>(-1)
    /// Bytes one frame takes in the WAL: the page size and a 24-byte frame header.
    private let frameBytes = Atomic<Int>(4096 + 24)

    init(outboxPath: String, autocheckpointPages: Int) {
        walPath = outboxPath + "-wal"
        self.autocheckpointPages = Int32(clamping: autocheckpointPages)
    }

    /// In `prepareDatabase` of the writing connection, after its pragmas: installs the hook.
    /// The hook's context is this object unretained: the caller keeps it alive as long as
    /// the connection (the configuration's closure holds it).
    func install(on db: Database) throws {
        let pageSize = try Int.fetchOne(db, sql: "PRAGMA page_size") ?? 4096
        frameBytes.store(pageSize + 24, ordering: .relaxed)
        _ = sqlite3_wal_hook(db.sqliteConnection, walSizeHook, Unmanaged.passUnretained(self).toOpaque())
    }

    /// The WAL's size now, as well as the outbox knows it.
    var bytes: Int64 { reportedBytes ?? fileSize() }

    /// The WAL's size after the last commit as SQLite reported it; nil while not known.
    var reportedBytes: Int64? {
        let frames = frames.load(ordering: .relaxed)
        guard frames >= 0 else { return nil }
        return frames == 0 ? 0 : 32 + Int64(frames) * Int64(frameBytes.load(ordering: .relaxed))
    }

    /// A write of the connection failed: the file's size counts until the next commit.
    func writeFailed() {
        frames.store(-1, ordering: .relaxed)
    }

    /// A truncating checkpoint succeeded: the WAL is empty.
    func truncated() {
        frames.store(0, ordering: .relaxed)
    }

    fileprivate func committed(frames count: Int32, db: OpaquePointer?, name: UnsafePointer<CChar>?) {
        frames.store(Int(count), ordering: .relaxed)
        if count >= autocheckpointPages {
            // What SQLite's default hook does; its result is SQLite's to handle (as there).
            _ = sqlite3_wal_checkpoint(db, name)
        }
    }

    private func fileSize() -> Int64 {
        var info = stat()
        return stat(walPath, &info) == 0 ? Int64(info.st_size) : 0
    }
}

/// SQLite's WAL hook: called on the committing thread, inside the writer's queue.
private func walSizeHook(_ context: UnsafeMutableRawPointer?, _ db: OpaquePointer?,
                         _ name: UnsafePointer<CChar>?, _ frames: Int32) -> Int32 {
    guard let context else { return SQLITE_OK }
    Unmanaged<WALSize>.fromOpaque(context).takeUnretainedValue().committed(frames: frames, db: db, name: name)
    return SQLITE_OK
}
