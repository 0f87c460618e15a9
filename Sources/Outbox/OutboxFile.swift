// Opening the outbox file: directory, permissions, pragmas, integrity check, quarantine of a
// corrupt file, migrations, boot counter; and turning SQLite errors into `OutboxError`.

import Foundation
import GRDB

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension Outbox {
    /// The integrity check found problems.
    struct IntegrityProblem: Error, CustomStringConvertible {
        var findings: [String]
        var description: String { "quick_check: " + findings.prefix(5).joined(separator: "; ") }
    }

    static func prepareDirectory(of path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        guard !directory.isEmpty else { return }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else {
                throw OutboxError(
                    .cannotCreateDirectory, path: path, what: "\(directory) exists but is not a directory",
                    remedy: "Remove or rename \(directory), or point buffer.path elsewhere.")
            }
            return
        }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw OutboxError(
                .cannotCreateDirectory, path: path, what: "could not create the directory \(directory)",
                remedy: "Create \(directory) and make it writable by the gateway user "
                    + "(e.g. install -d -o <user> \(directory)), or point buffer.path elsewhere.",
                underlying: "\(error)")
        }
    }

    /// SQLite needs the file readable and writable, and the directory writable for `-wal`/`-shm`.
    static func checkAccess(_ path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        let directoryToCheck = directory.isEmpty ? "." : directory
        if access(directoryToCheck, W_OK | X_OK) != 0 {
            let reason = String(cString: strerror(errno))
            throw OutboxError(
                .permissionDenied, path: path,
                what: "the directory \(directoryToCheck) is not writable (SQLite keeps its -wal and -shm files there)",
                remedy: "Make \(directoryToCheck) writable by the gateway user (chown <user> \(directoryToCheck)), "
                    + "remount it read-write, or point buffer.path elsewhere.",
                underlying: reason)
        }
        if FileManager.default.fileExists(atPath: path), access(path, R_OK | W_OK) != 0 {
            let reason = String(cString: strerror(errno))
            throw OutboxError(
                .permissionDenied, path: path, what: "the file is not readable and writable",
                remedy: "Give the gateway user read and write access (chown <user> \(path); chmod 600 \(path)).",
                underlying: reason)
        }
    }

    /// Opens the queue, checks integrity, migrates, starts a new boot above `bootFloor`.
    /// Returns the queue, the new boot and the file's previous boot.
    /// With `checkingFirst` false the integrity check is left to `BackgroundIntegrityCheck`.
    static func openChecked(_ settings: OutboxSettings, reserve: ReserveFile, walSize: WALSize, bootFloor: Int64,
                            checkingFirst: Bool, busyTimeout: Duration) throws -> (DatabaseQueue, boot: Int64, previous: Int64) {
        var configuration = Configuration()
        configuration.label = "outbox"
        // Past it a write fails with SQLITE_BUSY: the outbox waits on (WriteLockWait.swift).
        configuration.busyMode = .timeout(Double(busyTimeout.components.seconds)
            + Double(busyTimeout.components.attoseconds) / 1e18)
        let synchronous = settings.synchronous == .full ? "FULL" : "NORMAL"
        let walLimit = reserve.walLimitBytes
        configuration.prepareDatabase { db in
            // Set here rather than with `journalMode = .wal`, which forces synchronous=NORMAL.
            let mode = try String.fetchOne(db, sql: "PRAGMA journal_mode = WAL")
            guard mode == "wal" else {
                throw DatabaseError(resultCode: .SQLITE_ERROR, message: "could not switch to WAL (journal_mode is \(mode ?? "?"))")
            }
            // A modest page cache (4 MiB) keeps the process small with a million buffered
            // messages. WAL size limits: see ReserveFile; the auto-checkpoint is `walSize`'s
            // WAL hook (every `reserve.walAutocheckpointPages` frames).
            try db.execute(sql: """
                PRAGMA synchronous = \(synchronous);
                PRAGMA cache_size = -4096;
                PRAGMA journal_size_limit = \(walLimit);
                PRAGMA temp_store = MEMORY;
                """)
            try walSize.install(on: db)
        }
        let queue = try DatabaseQueue(path: settings.path, configuration: configuration)
        do {
            if checkingFirst {
                let findings = try queue.read { db in try String.fetchAll(db, sql: "PRAGMA quick_check") }
                guard findings == ["ok"] else { throw IntegrityProblem(findings: findings) }
            }
            try OutboxSchema.migrator.migrate(queue)
            let (meta, previous) = try queue.write { db in try OutboxStore.startBoot(db, floor: bootFloor) }
            return (queue, meta.boot, previous)
        } catch {
            try? queue.close()
            throw error
        }
    }

    /// Whether the file is small enough to check before opening (or a failed background
    /// check of an earlier run asks for it).
    static func checksBeforeOpening(_ settings: OutboxSettings, marker: FailedCheckMarker) -> Bool {
        if marker.exists { return true }
        var size: Int64 = 0
        for suffix in ["", "-wal"] {
            var info = stat()
            if stat(settings.path + suffix, &info) == 0 { size += Int64(info.st_size) }
        }
        return size <= settings.checkBeforeOpenMaxBytes
    }

    static func isCorruption(_ error: any Error) -> Bool {
        if error is IntegrityProblem { return true }
        guard let error = error as? DatabaseError else { return false }
        return error.resultCode == .SQLITE_CORRUPT || error.resultCode == .SQLITE_NOTADB
    }

    /// Renames the corrupt file (and its `-wal`, `-shm`) to `<path>.corrupt-<UTC timestamp>`.
    /// The `-wal` must go too: SQLite would otherwise replay it into the fresh file.
    static func quarantine(_ path: String, at date: Date) throws -> String {
        let base = "\(path).corrupt-\(utcTimestamp(date))"
        var target = base
        var attempt = 1
        while FileManager.default.fileExists(atPath: target) {
            target = "\(base)-\(attempt)"
            attempt += 1
        }
        for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: path + suffix) {
            if rename(path + suffix, target + suffix) != 0 {
                let reason = String(cString: strerror(errno))
                throw OutboxError(
                    .corrupt, path: path,
                    what: "the file is corrupt and could not be moved aside to \(target + suffix)",
                    remedy: "Move \(path) and its -wal/-shm files away by hand, then restart the gateway.",
                    underlying: reason)
            }
        }
        return target
    }

    /// `20261121T190000Z`
    static func utcTimestamp(_ date: Date) -> String {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(
            format: "%04d%02d%02dT%02d%02d%02dZ",
            Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
            Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec))
    }

    /// An error while opening, as an `OutboxError` with a fix.
    static func openError(_ error: any Error, path: String) -> OutboxError {
        if let error = error as? OutboxError { return error }
        if let error = error as? DatabaseError {
            switch error.resultCode {
            case .SQLITE_CANTOPEN, .SQLITE_PERM, .SQLITE_READONLY, .SQLITE_AUTH:
                return OutboxError(
                    .permissionDenied, path: path, what: "SQLite cannot open the file for writing",
                    remedy: "Make the file and its directory readable and writable by the gateway user "
                        + "(chown <user> \(path)), check the filesystem is mounted read-write, "
                        + "or point buffer.path elsewhere.",
                    underlying: "\(error)")
            case .SQLITE_IOERR, .SQLITE_FULL:
                // A full disk fails the open with an I/O error when not even the 32 KiB `-shm`
                // index fits: say what it is rather than send the operator to the hardware.
                let reserve = ReserveFile(besides: path)
                guard let free = try? reserve.freeBytes().get(), free < Self.roomToOpen else { break }
                return OutboxError(
                    .diskFull, path: path,
                    what: "the disk is full: the filesystem holding the outbox has \(free) bytes free, too little to "
                        + "open it (SQLite needs room for the 32 KiB -shm index and the -wal beside the file)",
                    remedy: "Free space on that filesystem: at least \(2 * reserve.size) bytes, so the outbox can also "
                        + "make its reserve file \(reserve.path); the gateway opens the outbox once there is room.",
                    underlying: "\(error)")
            case .SQLITE_ERROR:
                return OutboxError(
                    .database, path: path,
                    what: "the file is an SQLite database but could not be set up as an outbox",
                    remedy: "Check buffer.path in gateway.yaml points at the gateway's own outbox file, not another database.",
                    underlying: "\(error)")
            default:
                break
            }
        }
        return operationError(error, path: path, doing: "opening the outbox")
    }

    /// Free space below which an open that fails with an I/O error or `SQLITE_FULL` is put
    /// down to the full disk: the `-shm` index (32 KiB) and a few WAL pages.
    static let roomToOpen: Int64 = 64 << 10

    /// An error of a running operation, as an `OutboxError`.
    static func operationError(_ error: any Error, path: String, doing: String) -> OutboxError {
        if let error = error as? OutboxError { return error }
        let resultCode = (error as? DatabaseError)?.resultCode
        switch resultCode {
        case .SQLITE_FULL:
            return OutboxError(
                .diskFull, path: path, what: "the disk is full while \(doing)",
                remedy: "Free space on the filesystem holding the outbox, or lower buffer.max_bytes.",
                underlying: "\(error)")
        case .SQLITE_IOERR:
            return OutboxError(
                .ioError, path: path, what: "I/O error while \(doing)",
                remedy: "Check the storage device (dmesg, SMART) and the filesystem.",
                underlying: "\(error)")
        case .SQLITE_CORRUPT, .SQLITE_NOTADB:
            return OutboxError(
                .corrupt, path: path, what: "the file is corrupt (found while \(doing))",
                remedy: "Restart the gateway: it moves a corrupt outbox aside and starts a fresh one.",
                underlying: "\(error)")
        default:
            return OutboxError(
                .database, path: path, what: "SQLite failed while \(doing)",
                remedy: "See the SQLite error; if it persists, stop the gateway and move the outbox file aside.",
                underlying: "\(error)")
        }
    }
}
