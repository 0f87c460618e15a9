// The reserve file: a little disk space the outbox sets aside so it can get out of a full
// disk on its own.
//
// In WAL mode a full disk is a trap: deleting rows needs WAL space, and a checkpoint (which
// lets the WAL be reused) needs the database file to grow. When the disk is full the outbox
// deletes `<path>-reserve`, which gives the checkpoint room, and then drops what its policy
// says. The WAL is kept below half the reserve, so the reserve always covers a checkpoint:
// SQLite checkpoints every quarter reserve (`wal_autocheckpoint`), and when those
// checkpoints fail (the disk is filling up) the outbox notices the WAL growing past half the
// reserve after an append and truncates it then. The reserve is recreated once the
// filesystem has room again.

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

struct ReserveFile: Sendable {
    let path: String
    let size: Int64

    /// A reserve beside `outboxPath`: 1/8 of the filesystem, between 64 KiB and 8 MiB.
    init(besides outboxPath: String) {
        path = outboxPath + "-reserve"
        var size: Int64 = 8 << 20
        if case let .success(stats) = Self.filesystem(holding: outboxPath) {
            let total = Int64(stats.f_blocks) * Int64(stats.f_frsize)
            size = min(max(total / 8, 64 << 10), 8 << 20)
        }
        self.size = size / 4096 * 4096
    }

    /// WAL pages after which SQLite checkpoints: a quarter of the reserve, at most SQLite's default 1000.
    var walAutocheckpointPages: Int { Int(max(4, min(1000, size / 4096 / 4))) }

    /// Largest WAL the outbox lets stand after an append (also `journal_size_limit`).
    var walLimitBytes: Int64 { size / 2 }

    /// What `ensure()` found or did.
    enum Outcome: Equatable {
        /// The reserve is there (it was, or it was made now).
        case present
        /// The filesystem has less than twice the reserve free (or ran out while the reserve
        /// was allocated): not made.
        case noRoom(freeBytes: Int64)
        /// The filesystem could not be asked, or the file could not be made, for `Failure`.
        case failed(Failure)
    }

    /// Why the reserve could not be made: the call that failed and its errno, taken right
    /// after the call.
    struct Failure: Error, Equatable, CustomStringConvertible {
        enum Call: String {
            case statvfs
            case open
            case posixFallocate = "posix_fallocate"
        }

        /// The reserve file (or, for `statvfs`, the directory asked).
        let path: String
        let call: Call
        let code: Int32

        /// The filesystem has no room for this user (the disk quota): a full disk, not a fault.
        var isLackOfSpace: Bool { code == ENOSPC || code == EDQUOT }

        /// The failing call with its path and errno's text.
        var description: String {
            "\(call.rawValue)(\(path)): \(String(cString: strerror(code))) (errno \(code))"
        }

        /// What to do about it, for the operator.
        var remedy: String {
            let directory = (path as NSString).deletingLastPathComponent
            switch code {
            case EACCES, EPERM:
                return "give the gateway's user write access to \(directory) (chown or chmod it), or allow it in "
                    + "SELinux/AppArmor if a policy denies it (journalctl -k, ausearch -m avc)"
            case EROFS:
                return "\(directory) is on a read-only filesystem: remount it read-write (mount -o remount,rw); "
                    + "if the kernel made it read-only after I/O errors (dmesg), check the disk and run fsck first"
            case ENOENT, ENOTDIR:
                return "a part of \(directory) is missing or is not a directory: point buffer.path at a directory"
            case EDQUOT:
                return "the gateway's user is over its disk quota on that filesystem: raise the quota or free space"
            case ENOSPC:
                return "free space on the filesystem holding \(directory)"
            default:
                return "check the filesystem holding \(directory) (dmesg, mount options)"
            }
        }
    }

    /// Creates the reserve if it is missing and the filesystem has room for it twice over.
    @discardableResult
    func ensure() -> Outcome {
        guard !FileManager.default.fileExists(atPath: path) else { return .present }
        let free: Int64
        switch freeBytes() {
        case let .success(bytes): free = bytes
        case let .failure(failure):
            let directory = (path as NSString).deletingLastPathComponent
            return .failed(Failure(path: directory, call: .statvfs, code: failure.code))
        }
        guard free >= 2 * size else { return .noRoom(freeBytes: free) }
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard descriptor >= 0 else { return outcome(of: Failure(path: path, call: .open, code: errno), free: free) }
        let allocation = posix_fallocate(descriptor, 0, off_t(size))  // returns the error, not errno
        close(descriptor)
        guard allocation == 0 else {
            unlink(path)
            return outcome(of: Failure(path: path, call: .posixFallocate, code: allocation), free: free)
        }
        return .present
    }

    /// A failure to make the file: no room if the filesystem ran out meanwhile.
    private func outcome(of failure: Failure, free: Int64) -> Outcome {
        guard failure.code == ENOSPC else { return .failed(failure) }
        return .noRoom(freeBytes: (try? freeBytes().get()) ?? free)
    }

    /// Bytes free for the gateway on the filesystem holding the reserve (and the outbox),
    /// or why it cannot be asked.
    func freeBytes() -> Result<Int64, StatvfsFailure> {
        Self.freeBytes(onFilesystemHolding: path)
    }

    /// Bytes free for the gateway on the filesystem holding `file`, or why it cannot be asked.
    static func freeBytes(onFilesystemHolding file: String) -> Result<Int64, StatvfsFailure> {
        filesystem(holding: file).map { Int64($0.f_bavail) * Int64($0.f_frsize) }
    }

    /// `statvfs` failed; `code` is its errno, taken right after the call.
    struct StatvfsFailure: Error {
        let code: Int32
    }

    /// `statvfs` of the directory holding `file`.
    private static func filesystem(holding file: String) -> Result<statvfs, StatvfsFailure> {
        let directory = (file as NSString).deletingLastPathComponent
        var stats = statvfs()
        guard statvfs(directory.isEmpty ? "." : directory, &stats) == 0 else {
            return .failure(StatvfsFailure(code: errno))
        }
        return .success(stats)
    }

    /// Gives the reserved space back to the filesystem; true if there was a reserve.
    @discardableResult
    func release() -> Bool {
        unlink(path) == 0
    }
}
