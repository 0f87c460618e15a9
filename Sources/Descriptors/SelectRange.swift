// File descriptors and libmodbus' select(): glibc's fd_set holds the numbers
// 0...1023 only, and every bus needs one of them for its connection.
#if canImport(Glibc)
import Glibc
#endif

/// The descriptor numbers select() can wait on (below FD_SETSIZE), which the buses'
/// connections need, and the gateway's own descriptors moved out of their way.
public enum SelectRange {
    /// FD_SETSIZE: select() takes descriptors below it only.
    public static let limit: Int32 = 1024

    /// `descriptor` moved to the lowest free number at or above `limit` (close-on-exec,
    /// the low number closed), for a descriptor the gateway owns and never gives to
    /// select(). The same open file description: an flock(2) lock, the offset and the
    /// flags stay (a POSIX fcntl lock would not: closing any descriptor of the file drops
    /// it). `descriptor` itself when the limit of open files leaves no number that high.
    public static func moveAbove(_ descriptor: Int32) -> Int32 {
        guard descriptor >= 0, descriptor < limit else { return descriptor }
        let high = fcntl(descriptor, F_DUPFD_CLOEXEC, limit)
        guard high >= 0 else { return descriptor }
        close(descriptor)
        return high
    }

    /// How many descriptors below `limit` the process has open now (/proc/self/fd).
    public static func openBelowLimit() -> Int? {
        guard let directory = opendir("/proc/self/fd") else { return nil }
        defer { closedir(directory) }
        let own = dirfd(directory)
        var count = 0
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { bytes in
                String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard let number = Int32(name), number != own, number < limit else { continue }
            count += 1
        }
        return count
    }

    /// Raises the soft limit of open files to the hard limit, so the gateway's own
    /// descriptors can move above `limit`. The soft limit after the call, or the errno.
    public static func raiseOpenFileLimit() -> Result<UInt64, RaiseFailure> {
        var limits = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limits) == 0 else { return .failure(RaiseFailure(errno: errno, soft: nil)) }
        guard limits.rlim_cur < limits.rlim_max else { return .success(UInt64(limits.rlim_cur)) }
        let soft = limits.rlim_cur
        limits.rlim_cur = limits.rlim_max
        guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limits) == 0 else {
            return .failure(RaiseFailure(errno: errno, soft: UInt64(soft)))
        }
        return .success(UInt64(limits.rlim_cur))
    }

    /// Why the soft limit of open files could not be raised.
    public struct RaiseFailure: Error, CustomStringConvertible {
        public var errno: Int32
        /// The soft limit that stays, when it could be read.
        public var soft: UInt64?
        public var description: String {
            "cannot raise the soft limit of open files (RLIMIT_NOFILE\(soft.map { ", now \($0)" } ?? "")): "
                + String(cString: strerror(errno))
        }
    }
}
