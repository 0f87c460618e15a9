// Stand-ins for what systemd and a hung device look like from the gateway's side:
// the notification socket a service manager listens on, and a TCP endpoint that
// accepts connections but never answers.
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A unix datagram socket that records every sd_notify datagram, as systemd's
/// `$NOTIFY_SOCKET` would receive them. Pass `path` as the child's `NOTIFY_SOCKET`.
public final class NotifySocket: Sendable {
    /// One datagram and when it arrived.
    public struct Datagram: Sendable {
        public var text: String
        public var arrived: ContinuousClock.Instant
        /// The `KEY=value` lines.
        public var assignments: [String] { text.split(separator: "\n").map(String.init) }
        public func has(_ assignment: String) -> Bool { assignments.contains(assignment) }
        public var status: String? {
            assignments.first { $0.hasPrefix("STATUS=") }.map { String($0.dropFirst("STATUS=".count)) }
        }
    }

    /// `@name` for an abstract socket, else a filesystem path.
    public let path: String
    private let descriptor: Int32
    private let received = Mutex<[Datagram]>([])
    private let stopped = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)

    /// - Parameter abstract: bind in the abstract namespace (`@...`) instead of a file in `directory`.
    public init(abstract: Bool, directory: TemporaryDirectory) throws {
        path = abstract ? "@edge-gateway-test-\(UUID().uuidString.prefix(12))" : directory.file("notify.sock")
        descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw MissingTool(description: "cannot create a unix datagram socket") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if abstract { bytes[0] = 0 }
        let length = withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: bytes)
            return MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(length)) }
        }
        guard rc == 0 else {
            close(descriptor)
            throw MissingTool(description: "cannot bind \(path): \(String(cString: strerror(errno)))")
        }
        // Wakes the reading thread now and then so `stop()` is noticed.
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let thread = Thread { [self] in readLoop() }
        thread.name = "notify-socket"
        thread.start()
    }

    deinit {
        stop()
        close(descriptor)
    }

    /// Stops reading (waits for the reading thread).
    public func stop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        finished.wait()
    }

    public var datagrams: [Datagram] { received.withLock { $0 } }

    private func readLoop() {
        defer { finished.signal() }
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !stopped.load(ordering: .acquiring) {
            let count = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { continue }
            let datagram = Datagram(text: String(decoding: buffer[0..<count], as: UTF8.self), arrived: .now)
            received.withLock { $0.append(datagram) }
        }
    }
}

/// A TCP listener on 127.0.0.1 that never calls `accept`: the kernel completes
/// every handshake and queues what is sent, and nothing ever answers. A Modbus
/// client talking to it blocks until its response timeout, like one whose
/// device hung mid-conversation.
public final class SilentTCPListener: Sendable {
    public let port: Int
    private let descriptor: Int32

    public init(port: Int = freeLoopbackPort()) throws {
        self.port = port
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var one: Int32 = 1
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(descriptor, 64) == 0 else {
            close(descriptor)
            throw MissingTool(description: "cannot listen on 127.0.0.1:\(port): \(String(cString: strerror(errno)))")
        }
    }

    deinit { close(descriptor) }
}
