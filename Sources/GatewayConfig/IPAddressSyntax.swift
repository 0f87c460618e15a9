// Numeric IP addresses in gateway.yaml (`mqtt.bind_address`).
#if canImport(Glibc)
import Glibc
#endif

/// IPv4 and IPv6 addresses in their numeric forms (`10.8.0.2`, `fd00::2`).
enum IPAddressSyntax {
    static func isValid(_ text: String) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 16)
        return inet_pton(AF_INET, text, &buffer) == 1 || inet_pton(AF_INET6, text, &buffer) == 1
    }
}
