// Whether the reserve file (ReserveFile.swift) is still there, asked before every append
// without a path lookup: one `fstat` of the file the outbox made or found, held open.
import Descriptors
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The reserve file as the outbox last made or found it, held by an `O_PATH` descriptor
/// (which reads and writes nothing): the reserve is present while that file still has a
/// name (`st_nlink > 0`). Deleted by anyone, or replaced, it counts as gone until
/// ``ensure()`` (the recovery path) finds or makes a reserve again.
///
/// The descriptor keeps a deleted reserve's blocks allocated: ``isPresent`` closes it as
/// soon as it sees the file deleted (at the next append), and ``release()`` closes it
/// before it deletes the file, so the room goes back to the filesystem.
final class ReservePresence: Sendable {
    let file: ReserveFile
    /// The open descriptor of the reserve, or -1 when the outbox knows of none.
    private let descriptor = Mutex<Int32>(-1)

    /// Held while the file is made or deleted (``ensure()``, ``release()``): two makers at
    /// once would see each other's file half made (`O_EXCL` fails). `isPresent` never takes it.
    private let making = Mutex(())
    private let logger: Logger
    /// Whether the failed open of the held descriptor was logged (once, until an open succeeds).
    private let openFailureLogged = Atomic<Bool>(false)

    init(_ file: ReserveFile, logger: Logger) {
        self.file = file
        self.logger = logger
    }

    /// `O_PATH` (Glibc exports it as `__O_PATH`; `O_PATH` needs `_GNU_SOURCE`): the file
    /// needs no read permission to be held.
    #if canImport(Glibc)
    private static let openFlags = __O_PATH | O_CLOEXEC
    #else
    private static let openFlags = O_RDONLY | O_CLOEXEC
    #endif

    deinit {
        descriptor.withLock { descriptor in
            if descriptor >= 0 { close(descriptor) }
        }
    }

    /// Whether the reserve is there: one `fstat`, no path lookup. Closes the descriptor of a
    /// reserve found deleted.
    var isPresent: Bool {
        descriptor.withLock { descriptor in
            guard descriptor >= 0 else { return false }
            var info = stat()
            if fstat(descriptor, &info) == 0, info.st_nlink > 0 { return true }
            close(descriptor)
            descriptor = -1
            return false
        }
    }

    /// Makes the reserve if it is missing (``ReserveFile/ensure()``) and holds the file
    /// that is there now. A reserve that is there but cannot be held open (no descriptor
    /// left, ...) is a `.failed` reserve problem with the open's errno, logged once: the
    /// outbox then runs as without a reserve instead of taking it for present.
    ///
    /// The file is made (a `posix_fallocate` of up to 8 MiB) under a lock of its own, shared
    /// with ``release()`` only, not the descriptor's: a bus thread asking ``isPresent``
    /// meanwhile does not wait for it (it finds no reserve); the descriptor is published after.
    @discardableResult
    func ensure() -> ReserveFile.Outcome {
        making.withLock { _ in ensureMaking() }
    }

    /// ``ensure()`` under `making`.
    private func ensureMaking() -> ReserveFile.Outcome {
        let previous = descriptor.withLock { descriptor in
            defer { descriptor = -1 }
            return descriptor
        }
        if previous >= 0 { close(previous) }
        let outcome = file.ensure()
        guard outcome == .present else { return outcome }
        let opened = open(file.path, Self.openFlags)
        guard opened >= 0 else {
            let failure = ReserveFile.Failure(path: file.path, call: .open, code: errno)
            if !openFailureLogged.exchange(true, ordering: .relaxed) {
                logger.error("""
                    outbox: the reserve file \(file.path) is there but cannot be held open (\(failure)); the outbox \
                    runs as without a reserve until it can. Fix: \(failure.code == EMFILE || failure.code == ENFILE
                        ? "raise the gateway's limit of open files (LimitNOFILE= in its systemd unit)" : failure.remedy)
                    """)
            }
            return .failed(failure)
        }
        openFailureLogged.store(false, ordering: .relaxed)
        // Above the descriptors libmodbus's select() can take, leaving those to the buses.
        let held = SelectRange.moveAbove(opened)
        descriptor.withLock { descriptor in
            if descriptor >= 0 { close(descriptor) }  // none under `making`: closed rather than leaked
            descriptor = held
        }
        return .present
    }

    /// Gives the reserve's room back to the filesystem (``ReserveFile/release()``); true if
    /// there was a reserve.
    @discardableResult
    func release() -> Bool {
        making.withLock { _ in
            let held = descriptor.withLock { descriptor in
                defer { descriptor = -1 }
                return descriptor
            }
            if held >= 0 { close(held) }
            return file.release()
        }
    }
}
