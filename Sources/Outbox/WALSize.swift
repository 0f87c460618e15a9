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
/// commit of either connection to the file (the writer's and the `AcknowledgementConnection`
/// that deletes acknowledged rows on the network thread; the count is the whole WAL's, not one
/// connection's share; the WAL holds `32 + frames × (page size + 24)` bytes), or from the
/// `-wal` file's size while that count is not known: after the outbox opened and after a
/// write failed (a failed transaction may have written frames past the last commit), until
/// the next commit reports it again.
///
/// The hooks take over `wal_autocheckpoint` (a connection has one WAL hook, and SQLite's
/// auto-checkpoint is that hook). The writer's hook runs the same passive checkpoint SQLite's
/// default hook runs, once the WAL holds `autocheckpointPages` frames. The second
/// connection's hook never checkpoints (a checkpoint syncs the file, and it runs on the
/// network thread): at that size it marks a checkpoint wanted, which its caller hands to the
/// writer's queue (``takeCheckpointRequest()``).
final class WALSize: Sendable {
    private let walPath: String
    private let autocheckpointPages: Int32
    /// Frames in the WAL after the last commit; -1 while not known (the file's size counts).
    private let frames = Atomic<Int>(-1)
    /// Bytes one frame takes in the WAL: the page size and a 24-byte frame header.
    private let frameBytes = Atomic<Int>(4096 + 24)
    /// Set by the second connection's hook when its commit left `autocheckpointPages` frames
    /// or more; taken by ``takeCheckpointRequest()``.
    private let checkpointWanted = Atomic<Bool>(false)

    init(outboxPath: String, autocheckpointPages: Int) {
        walPath = outboxPath + "-wal"
        self.autocheckpointPages = Int32(clamping: autocheckpointPages)
    }

    /// In `prepareDatabase` of the writer's connection (the outbox's `database`), after its
    /// pragmas: installs the hook that records the size and checkpoints.
    /// The hook's context is this object unretained: the caller keeps it alive as long as
    /// the connection (the configuration's closure holds it).
    func install(on db: Database) throws {
        try install(walSizeHook, on: db)
    }

    /// In `prepareDatabase` of the `AcknowledgementConnection`: installs the hook that records
    /// the size and, instead of checkpointing, marks a checkpoint wanted. Same lifetime rule
    /// as ``install(on:)``.
    func installWithoutCheckpoint(on db: Database) throws {
        try install(walSizeHookWithoutCheckpoint, on: db)
    }

    /// Reads the connection's page size (a frame's size) and installs `hook` with this
    /// object, unretained, as its context.
    private func install(
        _ hook: @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<CChar>?, Int32) -> Int32,
        on db: Database
    ) throws {
        let pageSize = try Int.fetchOne(db, sql: "PRAGMA page_size") ?? 4096
        frameBytes.store(pageSize + 24, ordering: .relaxed)
        _ = sqlite3_wal_hook(db.sqliteConnection, hook, Unmanaged.passUnretained(self).toOpaque())
    }

    /// True once after a commit of the second connection left the WAL at
    /// `autocheckpointPages` frames or more: the caller asks the writer's queue to checkpoint.
    /// While the WAL stays that big, each further such commit asks again (as SQLite's default
    /// hook checkpoints at each commit past the size).
    func takeCheckpointRequest() -> Bool {
        checkpointWanted.exchange(false, ordering: .relaxed)
    }

    /// The WAL's size now, as well as the outbox knows it.
    var bytes: Int64 { reportedBytes ?? fileSize() }

    /// The WAL's size after the last commit as SQLite reported it; nil while not known.
    var reportedBytes: Int64? {
        let frames = frames.load(ordering: .relaxed)
        guard frames >= 0 else { return nil }
        return frames == 0 ? 0 : 32 + Int64(frames) * Int64(frameBytes.load(ordering: .relaxed))
    }

    /// A write of the writer's connection failed: the file's size counts until the next commit.
    func writeFailed() {
        frames.store(-1, ordering: .relaxed)
    }

    /// A truncating checkpoint succeeded: the WAL is empty.
    func truncated() {
        frames.store(0, ordering: .relaxed)
    }

    fileprivate func committedWithoutCheckpoint(frames count: Int32) {
        frames.store(Int(count), ordering: .relaxed)
        if count >= autocheckpointPages {
            checkpointWanted.store(true, ordering: .relaxed)
        }
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

/// The writer's WAL hook: called on the committing thread, inside the writer's queue (or on
/// the thread that holds it, `Outbox.appendOnCallingThread`).
private func walSizeHook(_ context: UnsafeMutableRawPointer?, _ db: OpaquePointer?,
                         _ name: UnsafePointer<CChar>?, _ frames: Int32) -> Int32 {
    guard let context else { return SQLITE_OK }
    Unmanaged<WALSize>.fromOpaque(context).takeUnretainedValue().committed(frames: frames, db: db, name: name)
    return SQLITE_OK
}

/// The `AcknowledgementConnection`'s WAL hook: called on the thread that deletes (the MQTT
/// network thread), inside that connection's commit. Records the size only.
private func walSizeHookWithoutCheckpoint(_ context: UnsafeMutableRawPointer?, _ db: OpaquePointer?,
                                          _ name: UnsafePointer<CChar>?, _ frames: Int32) -> Int32 {
    guard let context else { return SQLITE_OK }
    Unmanaged<WALSize>.fromOpaque(context).takeUnretainedValue().committedWithoutCheckpoint(frames: frames)
    return SQLITE_OK
}
