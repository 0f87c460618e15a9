// Fail-closed routing of the MQTT connection: bind it to one local address or to
// one interface (the VPN's), and refuse to connect while that is not there.
import CMosquitto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where the uplink's TCP connection must come from.
public enum MQTTSourceBinding: Sendable, Equatable {
    /// Any route the kernel picks.
    case any
    /// The source address; connecting fails while no interface holds it.
    case address(String)
    /// An interface, e.g. the WireGuard tunnel `wg0`: its current IPv4 address is
    /// looked up at every connect attempt, and the connection is pinned to the
    /// device. While the interface is missing, down or without an IPv4 address the
    /// uplink does not connect at all.
    case interface(String)
}

extension MQTTSourceBinding {
    /// The source address for this attempt, or why there is none (the attempt is refused).
    func sourceAddress() -> Result<String?, MQTTError> {
        switch self {
        case .any:
            return .success(nil)
        case let .address(address):
            return .success(address)
        case let .interface(name):
            return Self.ipv4Address(of: name).map { Optional($0) }
        }
    }

    /// The first IPv4 address of interface `name`, if it exists and is up.
    static func ipv4Address(of name: String) -> Result<String, MQTTError> {
        var list: UnsafeMutablePointer<ifaddrs>?
        let listed = getifaddrs(&list)
        let code = errno
        guard listed == 0, let first = list else {
            return .failure(MQTTError("cannot list network interfaces: \(String(cString: strerror(code)))"))
        }
        defer { freeifaddrs(list) }
        var exists = false
        var up = false
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard String(cString: entry.pointee.ifa_name) == name else { continue }
            exists = true
            up = up || entry.pointee.ifa_flags & UInt32(IFF_UP) != 0
            guard entry.pointee.ifa_flags & UInt32(IFF_UP) != 0,
                  let address = entry.pointee.ifa_addr, address.pointee.sa_family == sa_family_t(AF_INET)
            else { continue }
            var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            let converted = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { inet in
                var raw = inet.pointee.sin_addr
                return text.withUnsafeMutableBufferPointer { inet_ntop(AF_INET, &raw, $0.baseAddress, socklen_t(INET_ADDRSTRLEN)) }
            }
            guard let converted else { continue }
            return .success(String(cString: converted))
        }
        let why = !exists ? "does not exist" : !up ? "is down" : "has no IPv4 address"
        return .failure(MQTTError("interface \(name) \(why): not connecting (mqtt.bind_interface allows no other route)"))
    }

    /// Pins the connected socket to the interface, so that if the interface goes
    /// down its traffic is dropped instead of following another route.
    /// Linux lets an unprivileged process do this once per socket (5.7 and later).
    func pin(socket fd: Int32) -> MQTTError? {
        guard case let .interface(name) = self, fd >= 0 else { return nil }
        let (rc, code) = name.withCString { (setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, $0, socklen_t(strlen($0) + 1)), errno) }
        return rc == 0 ? nil : MQTTError("cannot pin the connection to \(name): \(String(cString: strerror(code)))")
    }
}
