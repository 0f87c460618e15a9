// Reads monitor.yaml (edge-monitor's configuration). The `mqtt:` section and the
// key list are read by the same code as gateway.yaml's, so both sides accept the
// same TLS, credential and key options with the same problems and hints.
import Foundation
import Yams

/// `monitor.yaml`.
public struct MonitorConfiguration: Sendable, Equatable {
    public enum StaleAfterSetting: Sendable, Equatable {
        /// 3 × the stats interval each gateway's birth announces.
        case auto
        case fixed(Duration)
    }

    /// HTTP listen address (`monitor.listen`, default 127.0.0.1:9470).
    public var listenHost: String = "127.0.0.1"
    public var listenPort: Int = 9470
    /// The state file (`monitor.state`).
    public var statePath: String = "/var/lib/edge-monitor/monitor.sqlite"
    /// The fleet's topic prefix (`monitor.topic_prefix`, default `edge`).
    public var topicPrefix: String = "edge"
    public var staleAfter: StaleAfterSetting = .auto
    /// History entries kept per gateway.
    public var historyLimit: Int = 200
    public var mqtt: MQTTSettings
    /// Central sealing keys (`keys:`), same format as the gateway's `payload.keys`.
    public var keys: [PayloadSettings.Key] = []
    public var logLevel: LogLevel = .info

    public init(mqtt: MQTTSettings) {
        self.mqtt = mqtt
    }
}

/// Loads and validates `monitor.yaml`.
public enum MonitorConfigurationLoader {
    public static let defaultClientID = "edge-monitor"

    /// - Throws: `ConfigurationError` listing every problem with its YAML path.
    public static func load(file path: String) throws -> MonitorConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            let exists = FileManager.default.fileExists(atPath: path)
            throw ConfigurationError(file: path, problems: [ConfigProblem(
                path: "", message: exists ? "cannot read configuration file '\(path)'" : "configuration file '\(path)' does not exist",
                hint: exists ? "check that edge-monitor's user may read it (ls -l \(path))"
                    : "check the path, or start from the example monitor.yaml", file: path)])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigurationError(file: path, problems: [ConfigProblem(
                path: "", message: "configuration file '\(path)' is not UTF-8 text", hint: "save it as UTF-8", file: path)])
        }
        return try parse(yaml: text, file: path)
    }

    public static func parse(yaml: String, file: String = "monitor.yaml") throws -> MonitorConfiguration {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            throw ConfigurationError(file: file, problems: [ConfigProblem(
                path: "", message: "malformed YAML: \(error)",
                hint: "check the indentation and quote values that contain ': ', ' #', '[' or '{'", file: file)])
        }
        let log = ProblemLog(file: file)
        guard let root else {
            log.report("", at: nil, "the configuration is empty", hint: "write at least mqtt: { host: ... }")
            throw ConfigurationError(file: file, problems: log.problems)
        }
        let configuration = MonitorSchemaReader(log: log, reader: SchemaReader(log: log))
            .configuration(YAMLValue(node: root, path: "", name: "document", log: log))
        guard let configuration, log.problems.isEmpty else {
            if log.problems.isEmpty {
                log.report("", at: nil, "the configuration could not be read", hint: "report this as a bug")
            }
            throw ConfigurationError(file: file, problems: log.problemsInFileOrder)
        }
        return configuration
    }
}

private struct MonitorSchemaReader {
    let log: ProblemLog
    let reader: SchemaReader

    func configuration(_ document: YAMLValue) -> MonitorConfiguration? {
        guard var root = MappingReader(document, hint: "the file must be a mapping with monitor:, mqtt: and optionally keys:")
        else { return nil }
        let monitorValue = root.optional("monitor")
        let mqttValue = root.required(
            "mqtt", message: "missing broker: there is no mqtt section",
            hint: "add mqtt: with at least host: <central broker address>")
        var mqtt = mqttValue.flatMap { reader.mqttSettings($0, gatewayID: MonitorConfigurationLoader.defaultClientID) }
        if let mqttValue, mqtt?.protocolVersion == .v5 {
            refuseMQTT5(in: mqttValue)
            mqtt = nil
        }
        let keys = root.optional("keys").map(keyList) ?? []
        let logLevel = root.optional("log_level").map { $0.choice(LogLevel.self) } ?? .info
        root.finish()
        // The monitor section is read even when mqtt failed, so every problem is reported.
        var configuration = MonitorConfiguration(mqtt: mqtt ?? MQTTSettings(host: "", clientID: ""))
        let monitorOK = monitorValue.map { monitor($0, into: &configuration) } ?? true
        guard let mqtt, monitorOK, let keys, let logLevel else { return nil }
        configuration.mqtt = mqtt
        configuration.keys = keys
        configuration.logLevel = logLevel
        return configuration
    }

    /// `mqtt.protocol: 5`: the monitor's session must outlive its restarts, which under
    /// MQTT 5 takes a session expiry interval that the shared MQTT client does not send
    /// (the gateway does not want one: its outbox is its queue).
    private func refuseMQTT5(in mqtt: YAMLValue) {
        let entry = mqtt.node.mapping?.first { $0.key.string == "protocol" }
        log.report(mqtt.path.isEmpty ? "protocol" : mqtt.path + ".protocol", at: entry?.value.mark ?? mqtt.mark,
                   "edge-monitor connects with MQTT 3.1.1 only; protocol: 5 is a gateway setting",
                   hint: "remove protocol: from monitor.yaml (or write protocol: 3.1.1): the monitor keeps a persistent "
                       + "3.1.1 session so the broker holds the fleet's QoS 1 messages while it restarts; gateways may "
                       + "use MQTT 5 on the same broker")
    }

    private func monitor(_ value: YAMLValue, into configuration: inout MonitorConfiguration) -> Bool {
        guard var section = MappingReader(value, hint: "write monitor: as a mapping with listen:, state:, topic_prefix:, ...")
        else { return false }
        var ok = true
        if let listen = section.optional("listen") {
            if let text = listen.string(hint: "write host:port, e.g. 127.0.0.1:9470"),
               let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
               (1...65535).contains(port), colon != text.startIndex {
                var host = String(text[..<colon])
                if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
                configuration.listenHost = host
                configuration.listenPort = port
            } else {
                listen.report("listen must be host:port", hint: "e.g. listen: 127.0.0.1:9470 (keep it on loopback or a management network)")
                ok = false
            }
        }
        if let state = section.optional("state") {
            if let path = state.string(hint: "write the path of the state file"), !path.isEmpty {
                configuration.statePath = path
            } else { ok = false }
        }
        if let prefix = section.optional("topic_prefix") {
            if let text = prefix.string(), TopicSyntax.prefixProblem(text) == nil {
                configuration.topicPrefix = text
            } else {
                prefix.report("topic_prefix is not a valid topic prefix", hint: "write the gateways' gateway.topic_prefix, e.g. edge")
                ok = false
            }
        }
        if let stale = section.optional("stale_after") {
            if stale.node.scalar?.string == "auto" {
                configuration.staleAfter = .auto
            } else if let duration = stale.duration(in: .seconds(1) ... .seconds(86_400 * 7),
                                                    rangeHint: "write auto, or a duration like 3m") {
                configuration.staleAfter = .fixed(duration)
            } else { ok = false }
        }
        if let history = section.optional("history") {
            if let count = history.integer(in: 1...100_000) { configuration.historyLimit = count } else { ok = false }
        }
        section.finish()
        return ok
    }

    private func keyList(_ value: YAMLValue) -> [PayloadSettings.Key]? {
        guard let items = value.list(itemName: "key", hint: "write each key as - { id: k1, file: /etc/edge-monitor/k1.key }")
        else { return nil }
        var keys: [PayloadSettings.Key] = []
        var failed = false
        for item in items {
            guard let key = reader.payloadKey(item)?.setting else { failed = true; continue }
            if keys.contains(where: { $0.id == key.id }) {
                item.report("key id '\(key.id)' is listed twice", hint: "give each key its own id")
                failed = true
            }
            keys.append(key)
        }
        return failed ? nil : keys
    }
}
