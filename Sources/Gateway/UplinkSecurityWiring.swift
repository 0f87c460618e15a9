// mqtt.tls and the credentials of gateway.yaml, handed to the uplink.
import GatewayConfig
import MQTTUplink

extension MQTTUplinkSettings {
    /// These settings with the TLS and credentials of `mqtt`.
    public func secured(by mqtt: MQTTSettings) -> MQTTUplinkSettings {
        var settings = self
        if let tls = mqtt.tls {
            let trust: MQTTTLSOptions.Trust = switch tls.trust {
            case .systemStore: .systemStore
            case let .caFile(path): .caFile(path)
            case let .caDirectory(path): .caDirectory(path)
            }
            let minimumVersion: MQTTTLSOptions.Version = switch tls.minimumVersion {
            case .tls12: .tls12
            case .tls13: .tls13
            }
            settings.tls = MQTTTLSOptions(
                trust: trust, certFile: tls.certFile, keyFile: tls.keyFile, keyPassphrase: tls.keyPassword?.value,
                minimumVersion: minimumVersion, ciphers: tls.ciphers,
                alpn: tls.alpn, insecureSkipVerify: tls.insecureSkipVerify)
        }
        if let username = mqtt.username {
            settings.credentials = MQTTCredentials(username: username, password: mqtt.password?.value)
        }
        return settings
    }
}
