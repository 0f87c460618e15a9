// Waiting for events with a deadline (never sleeping as synchronisation), and loopback ports.
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public struct TimedOut: Error, CustomStringConvertible {
    public var what: String
    public init(what: String) { self.what = what }
    public var description: String { "timed out waiting for \(what)" }
}

/// Checks `condition` every 20 ms until it holds; throws `TimedOut` naming `what` after `timeout`.
public func waitUntil(_ what: String, timeout: Duration = .seconds(15),
                      _ condition: () throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while try !condition() {
        guard ContinuousClock.now < deadline else { throw TimedOut(what: what) }
        try await Task.sleep(for: .milliseconds(20))
    }
}

/// Ports already handed out in this process: two tests never get the same one.
private let handedOutPorts = Mutex<Set<Int>>([])

/// A TCP port on 127.0.0.1 that nothing listens on right now.
///
/// Chosen below the kernel's ephemeral range, so the source port of some outgoing
/// connection (tests make many) cannot take it between this call and the caller's
/// bind, and never handed out twice in one test run.
public func freeLoopbackPort() -> Int {
    let ephemeralStart = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))
        .flatMap { $0.split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) } } ?? 32768
    let range = 10_000..<max(ephemeralStart, 10_001)
    while true {
        let port = Int.random(in: range)
        guard handedOutPorts.withLock({ $0.insert(port).inserted }) else { continue }
        if canBindLoopback(port: port) { return port }
    }
}

/// Runs `call` (bind or connect) on a new TCP socket with 127.0.0.1:`port`; true when it returns 0.
private func withLoopbackSocket(port: Int,
                                _ call: (Int32, UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            call(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
}

private func canBindLoopback(port: Int) -> Bool {
    withLoopbackSocket(port: port) { bind($0, $1, $2) }
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
public func isListening(port: Int) -> Bool {
    withLoopbackSocket(port: port) { connect($0, $1, $2) }
}

/// A fresh temporary directory, removed by `remove()`.
public struct TemporaryDirectory: Sendable {
    public let path: String

    public init(_ prefix: String = "edge-gateway-test") throws {
        let template = NSTemporaryDirectory() + "\(prefix)-XXXXXX"
        var bytes = Array(template.utf8CString)
        guard let created = mkdtemp(&bytes) else {
            throw TimedOut(what: "a temporary directory (mkdtemp failed: \(String(cString: strerror(errno))))")
        }
        path = String(cString: created)
    }

    public func file(_ name: String) -> String { path + "/" + name }

    public func remove() { try? FileManager.default.removeItem(atPath: path) }
}
