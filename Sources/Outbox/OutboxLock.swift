// One process per outbox: an advisory lock on `<outbox>.lock`, held while the
// outbox is open. Two gateways on one file would interleave boots and seqs.

import Descriptors
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An exclusive `flock(2)` on the lock file beside the outbox, taken before the
/// outbox file is touched and released when this object goes (or the process ends:
/// the kernel drops the lock with the last descriptor, so a crash leaves none behind).
///
/// The lock file is named after the outbox's real path (symlinks, `..` resolved), so
/// every spelling of one file meets the same lock. The holder writes its pid into
/// it, for the message the next process gives. `edge-gateway status` does not
/// take it: it only reads.
final class OutboxLock: Sendable {
    /// The lock file.
    let path: String
    /// The outbox's path with symlinks and `..` resolved.
    let resolvedOutboxPath: String
    private let descriptor: Int32

    /// Takes the lock for the outbox at `outboxPath` (its directory must exist).
    ///
    /// - Throws: `OutboxError` `.inUse` naming the file and the holder's pid when
    ///   another process still holds it after `patience`; `.permissionDenied` when the
    ///   lock file cannot be made or locked.
    init(outboxPath: String) throws {
        resolvedOutboxPath = Self.resolve(outboxPath)
        path = resolvedOutboxPath + ".lock"
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard descriptor >= 0 else {
            let reason = String(cString: strerror(errno))
            throw OutboxError(
                .permissionDenied, path: outboxPath, what: "cannot open the lock file \(path)",
                remedy: "Make the outbox's directory writable by the gateway user, or point buffer.path elsewhere.",
                underlying: reason)
        }
        if let code = Self.lock(descriptor) {
            let holder = Self.holder(descriptor)
            close(descriptor)
            guard code == EWOULDBLOCK else {
                throw OutboxError(
                    .permissionDenied, path: outboxPath, what: "cannot lock \(path)",
                    remedy: "Put the outbox on a local filesystem that supports locks, or point buffer.path elsewhere.",
                    underlying: String(cString: strerror(code)))
            }
            let who = holder.map { "pid \($0)" } ?? "a process that has not written its pid yet"
            throw OutboxError(
                .inUse, path: outboxPath,
                what: "another edge-gateway (\(who)) is using this outbox (lock \(path), file \(resolvedOutboxPath))",
                remedy: "Stop the other gateway (\(who)), or give this one its own buffer.path: "
                    + "two gateways on one outbox would mix their boots and seqs.")
        }
        // flock(2) belongs to the open file description: the lock moves with it.
        let held = SelectRange.moveAbove(descriptor)
        self.descriptor = held
        let text = Array("\(getpid())\n".utf8)
        // Best effort: the lock holds whether or not the pid could be written.
        if ftruncate(held, 0) == 0 {
            _ = text.withUnsafeBytes { pwrite(held, $0.baseAddress, $0.count, 0) }
        }
    }

    /// How long a held lock is waited for: a holder that is just going away (a process
    /// exiting, an `Outbox` being released on another thread) lets go within it.
    static let patience = Duration.seconds(1)

    /// Takes the lock, retrying while it is held for at most `patience`; nil on
    /// success, else the errno of the last attempt.
    private static func lock(_ descriptor: Int32) -> Int32? {
        let deadline = ContinuousClock.now + patience
        while true {
            if flock(descriptor, LOCK_EX | LOCK_NB) == 0 { return nil }
            let code = errno
            guard code == EWOULDBLOCK || code == EINTR, ContinuousClock.now < deadline else { return code }
            usleep(10_000)
        }
    }

    deinit {
        // Closing the only descriptor of the open file description releases the lock.
        close(descriptor)
    }

    /// Whether a process holds the lock of the outbox at `outboxPath` now, without taking
    /// it: a shared lock tried and dropped at once (a gateway starting in that instant waits
    /// for it, within `patience`).
    static func use(ofOutboxAt outboxPath: String) -> OutboxUse {
        let path = resolve(outboxPath) + ".lock"
        let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard descriptor >= 0 else {
            let code = errno
            // No lock file: no gateway has opened this outbox (it makes the file first).
            return code == ENOENT ? .notOpen : .unknown("cannot open \(path): \(String(cString: strerror(code)))")
        }
        defer { close(descriptor) }
        if flock(descriptor, LOCK_SH | LOCK_NB) == 0 {
            flock(descriptor, LOCK_UN)
            return .notOpen
        }
        let code = errno
        guard code == EWOULDBLOCK else { return .unknown("cannot lock \(path): \(String(cString: strerror(code)))") }
        return .open(pid: holder(descriptor))
    }

    /// The pid written into the lock file by its holder.
    private static func holder(_ descriptor: Int32) -> Int32? {
        var bytes = [UInt8](repeating: 0, count: 32)
        let count = bytes.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return nil }
        return Int32(String(decoding: bytes[..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// `path` with symlinks and `..` resolved; for a file that does not exist yet,
    /// its directory resolved and its name kept.
    static func resolve(_ path: String) -> String {
        if let real = realPath(path) { return real }
        let directory = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        let base = realPath(directory.isEmpty ? "." : directory) ?? directory
        return (base as NSString).appendingPathComponent(name)
    }

    private static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}

/// Whether a process has an outbox open now (holds its lock), as another process sees it.
public enum OutboxUse: Sendable, Equatable {
    /// No process has it open.
    case notOpen
    /// A process (a running gateway) has it open; its pid once it has written it.
    case open(pid: Int32?)
    /// The lock file could not be asked (the reason): not known.
    case unknown(String)
}
