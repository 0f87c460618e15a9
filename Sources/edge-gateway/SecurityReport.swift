// What `run` and `check-config` say about TLS, credentials and sealing.
import ArgumentParser
import Foundation
import Gateway
import GatewayConfig
import Logging
import Sealing

/// Logs what the loader accepted with a warning (e.g. a password in gateway.yaml).
func logConfigurationWarnings(_ configuration: GatewayConfiguration, logger: Logger) {
    for warning in configuration.warnings {
        logger.warning("configuration: \(warning.message)", metadata: [
            "path": "\(warning.path)", "hint": "\(warning.hint)",
        ])
    }
}

/// Prints the security settings and warnings (the loader has checked every file they name).
func printSecurity(_ configuration: GatewayConfiguration) {
    let mqtt = configuration.mqtt
    if let tls = mqtt.tls {
        let trust = switch tls.trust {
        case .systemStore: "the system store"
        case let .caFile(path): path
        case let .caDirectory(path): path + "/"
        }
        var line = "  TLS \(tls.minimumVersion.rawValue)+, trusting \(trust)"
        if let cert = tls.certFile { line += ", client certificate \(cert)" }
        if tls.insecureSkipVerify { line += ", NOT VERIFYING the broker (insecure_skip_verify)" }
        print(line)
    } else {
        print("  no TLS (plain MQTT)")
    }
    if let username = mqtt.username {
        print("  user \(username), password from \(mqtt.passwordSource.map { "\($0)" } ?? "nowhere (none sent)")")
    }
    switch configuration.payload.seal {
    case let .sealed(algorithm, key):
        print("  data payloads sealed with \(algorithm.rawValue), key \(key.id) "
              + "(\(configuration.payload.keys.count) key(s) listed)")
    case .none:
        print("  data payloads not sealed")
    }
    let commands = configuration.commands
    let writable = configuration.devices.reduce(0) { $0 + $1.tags.filter(\.writable).count }
    if commands.enabled, let sparkplug = configuration.sparkplug {
        print("  commands on: Sparkplug DCMD on spBv1.0/\(sparkplug.groupID)/DCMD/\(configuration.gateway.id)/<device>, UNSIGNED "
              + "(sparkplug_unsigned: only the broker's ACLs say who may write), rate \(commands.rate), \(writable) writable tag(s)")
    } else if commands.enabled {
        print("  commands on: key(s) \(commands.keys.map(\.id).joined(separator: ", ")), max_age \(commands.maxAge), "
              + "rate \(commands.rate), \(writable) writable tag(s)")
    } else {
        print("  commands off: no command topic subscribed" + (writable > 0 ? " (\(writable) tag(s) marked writable)" : ""))
    }
    for warning in configuration.warnings {
        print("  warning: \(warning)")
    }
}
