// Whether the reserve file (ReserveFile.swift) is still there, asked before every append
// without a path lookup: one `fstat` of the file the outbox made or found, held open.
import Descriptors
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

    init(_ file: ReserveFile) {
        self.file = file
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
    /// that is there now.
    @discardableResult
    func ensure() -> ReserveFile.Outcome {
        descriptor.withLock { descriptor in
            if descriptor >= 0 { close(descriptor) }
            descriptor = -1
            let outcome = file.ensure()
            if outcome == .present {
                descriptor = SelectRange.moveAbove(open(file.path, Self.openFlags))
            }
            return outcome
        }
    }

    /// Gives the reserve's room back to the filesystem (``ReserveFile/release()``); true if
    /// there was a reserve.
    @discardableResult
    func release() -> Bool {
        descriptor.withLock { descriptor in
            if descriptor >= 0 { close(descriptor) }
            descriptor = -1
            return file.release()
        }
    }
}
