// The boot counter outside the outbox: `(gateway, boot, seq)` must never repeat,
// so boot may never go backwards, not even when a corrupt outbox is moved aside
// or the file is deleted.

import Foundation
import GRDB

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where the highest boot before this one was found, when the outbox itself did
/// not hold it (the gateway says so in its birth).
public enum BootSource: String, Sendable, Equatable {
    /// `<outbox>.boot`, the copy kept beside the outbox: the outbox was quarantined,
    /// deleted or replaced by an older one.
    case stateFile = "state_file"
    /// The quarantined (corrupt) outbox, read as far as it could be read.
    case quarantinedOutbox = "quarantined_outbox"
}

/// How this run's boot was chosen when the outbox did not hold the last one.
public struct BootRecovery: Sendable, Equatable {
    /// The highest boot found before this one.
    public var previousBoot: Int64
    /// Where it was found.
    public var source: BootSource
}

/// `<outbox>.boot`: the last boot number, one decimal line, replaced atomically
/// (temporary file, fsync, rename, fsync of the directory) at every start.
struct BootFile: Sendable {
    let path: String

    /// The file beside the outbox at `resolvedOutboxPath` (symlinks resolved).
    init(besides resolvedOutboxPath: String) {
        path = resolvedOutboxPath + ".boot"
    }

    /// The boot recorded, nil when there is no (readable) file.
    func read() -> Int64? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return Int64(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Records `boot`; the old record stays whole if anything fails.
    ///
    /// - Throws: `OutboxError` naming the step and the errno.
    func record(_ boot: Int64) throws {
        let temporary = "\(path).tmp-\(getpid())"
        func failure(_ step: String) -> OutboxError {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            return OutboxError(
                .permissionDenied, path: path, what: "cannot record the boot counter (\(step))",
                remedy: "Make the outbox's directory writable by the gateway user and check the disk has room.",
                underlying: reason)
        }
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard descriptor >= 0 else { throw failure("creating \(temporary)") }
        let bytes = Array("\(boot)\n".utf8)
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        guard written == bytes.count, fsync(descriptor) == 0 else {
            close(descriptor)
            throw failure("writing \(temporary)")
        }
        close(descriptor)
        guard rename(temporary, path) == 0 else { throw failure("renaming \(temporary) to \(path)") }
        // The rename itself is durable once the directory is.
        let directory = open((path as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard directory >= 0 else { throw failure("opening the directory of \(path)") }
        defer { close(directory) }
        guard fsync(directory) == 0 else { throw failure("syncing the directory of \(path)") }
    }

    /// The highest boot a quarantined outbox still shows (its meta row, its
    /// messages and gap records), read without changing it (`immutable`: its
    /// `-wal` is ignored); nil when nothing of it can be read.
    static func lastBoot(inQuarantined path: String) -> Int64? {
        var configuration = Configuration()
        configuration.readonly = true
        configuration.label = "outbox-quarantined"
        let encoded = path.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? path
        guard let queue = try? DatabaseQueue(path: "file:\(encoded)?immutable=1", configuration: configuration)
        else { return nil }
        defer { try? queue.close() }
        let found = ["SELECT boot FROM meta", "SELECT MAX(boot) FROM message", "SELECT MAX(boot) FROM gap"]
            .compactMap { sql in try? queue.read { db in try Int64.fetchOne(db, sql: sql) } }
        return found.max()
    }
}
