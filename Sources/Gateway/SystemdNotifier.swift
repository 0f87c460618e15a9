// sd_notify spoken directly: one datagram per state change to the AF_UNIX socket
// systemd names in $NOTIFY_SOCKET. No libsystemd needed.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Sends readiness, status lines, watchdog keep-alives and the stopping notice to
/// the service manager (`sd_notify(3)`'s protocol, without libsystemd).
///
/// Created from the environment systemd sets for a `Type=notify` unit. Without
/// `NOTIFY_SOCKET` (a shell, a test, a container without systemd) it is `nil`;
/// without `WATCHDOG_USEC` (or with a `WATCHDOG_PID` naming another process)
/// `watchdogInterval` is `nil`.
public final class SystemdNotifier: Sendable {
    /// The socket path; a leading `@` names an abstract socket.
    public let socketPath: String
    /// `WatchdogSec=` as systemd passed it: the manager restarts the service when
    /// no `WATCHDOG=1` arrives within this long.
    public let watchdogInterval: Duration?
    private let descriptor: Int32

    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`; nil without a socket
    /// or when the socket cannot be opened.
    public convenience init?(environment: [String: String] = ProcessInfo.processInfo.environment) {
        guard let path = environment["NOTIFY_SOCKET"], !path.isEmpty else { return nil }
        var watchdog: Duration?
        if let text = environment["WATCHDOG_USEC"], let usec = Int64(text), usec > 0 {
            let forUs = environment["WATCHDOG_PID"].flatMap { Int32($0) }.map { $0 == getpid() } ?? true
            if forUs { watchdog = .microseconds(usec) }
        }
        try? self.init(socketPath: path, watchdogInterval: watchdog)
    }

    /// Opens a datagram socket for `socketPath`. Throws `SystemdNotifierError` when the
    /// path is too long or no socket can be made.
    public init(socketPath: String, watchdogInterval: Duration?) throws(SystemdNotifierError) {
        guard socketPath.hasPrefix("/") || socketPath.hasPrefix("@") else {
            throw SystemdNotifierError("NOTIFY_SOCKET '\(socketPath)' is neither a path nor an abstract name (@...)")
        }
        guard socketPath.utf8.count < MemoryLayout.size(ofValue: sockaddr_un().sun_path) else {
            throw SystemdNotifierError("NOTIFY_SOCKET '\(socketPath)' is longer than a unix socket address allows")
        }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            throw SystemdNotifierError("cannot create a notification socket: \(String(cString: strerror(errno)))")
        }
        self.socketPath = socketPath
        self.watchdogInterval = watchdogInterval
        self.descriptor = fd
    }

    deinit { close(descriptor) }

    /// Sends one notification (`KEY=value` lines joined by newlines). Returns false
    /// when the manager could not be reached; a notification is never worth failing for.
    @discardableResult
    public func notify(_ assignments: String...) -> Bool {
        send(assignments.joined(separator: "\n"))
    }

    /// `READY=1` with a status line.
    @discardableResult
    public func ready(status: String) -> Bool { notify("READY=1", "STATUS=\(Self.oneLine(status))") }

    /// `STATUS=`: the line `systemctl status` shows.
    @discardableResult
    public func status(_ text: String) -> Bool { notify("STATUS=\(Self.oneLine(text))") }

    /// `WATCHDOG=1`: the service is healthy.
    @discardableResult
    public func watchdog() -> Bool { notify("WATCHDOG=1") }

    /// `STATUS=` and then `WATCHDOG=1` in one datagram: a changed status line costs the
    /// manager no wake-up of its own.
    @discardableResult
    public func watchdog(status: String) -> Bool { notify("STATUS=\(Self.oneLine(status))", "WATCHDOG=1") }

    /// `STOPPING=1` with a status line.
    @discardableResult
    public func stopping(status: String) -> Bool { notify("STOPPING=1", "STATUS=\(Self.oneLine(status))") }

    private static func oneLine(_ text: String) -> String {
        text.replacingOccurrences(of: "\n", with: " ")
    }

    private func send(_ text: String) -> Bool {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var path = Array(socketPath.utf8)
        if path.first == UInt8(ascii: "@") { path[0] = 0 }  // abstract namespace
        let length = withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: path)
            return MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + path.count
        }
        let bytes = Array(text.utf8)
        let sent = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bytes.withUnsafeBytes { sendto(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), pointer,
                                               socklen_t(length)) }
            }
        }
        return sent == bytes.count
    }
}

/// Why the notification socket could not be set up.
public struct SystemdNotifierError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
