// Reads gateway.yaml into a GatewayConfiguration, reporting every problem with
// its YAML path, line and column. The schema lives here, in one place.

import Foundation
import Modbus
import Yams

/// Loads and validates `gateway.yaml`.
public enum ConfigurationLoader {
    /// The most buses (TCP endpoints and serial lines) one gateway polls: each has its own
    /// thread and connection, and libmodbus waits with select(), which cannot take a file
    /// descriptor above 1023 (a connection that gets one fails to connect, see
    /// `ModbusConnection.selectableLimit`). The budget of the 1,024 numbers: 1,000 buses;
    /// the gateway's own that cannot move above 1023 (stdio 3, libdispatch's epoll,
    /// eventfd and timerfd 3, the outbox's two SQLite connections 5 (database, WAL and
    /// their shared -shm), signalfds and a timerfd about 3); a margin of 8
    /// (`DescriptorBudget.margin`: the integrity check's connection, the MQTT socket and
    /// its socket pair, a passing temporary file or lookup). The outbox lock, the reserve
    /// and the uplink's eventfd sit above 1023 (`SelectRange.moveAbove`). At start the
    /// gateway counts what it holds below 1024 and refuses to start when the buses do
    /// not fit (`DescriptorBudget`).
    public static let maximumBuses = 1000

    /// Reads and validates the file at `path`.
    ///
    /// - Throws: `ConfigurationError` listing every problem found (not just the
    ///   first); a missing or unreadable file is one problem naming the file.
    public static func load(file path: String) throws -> GatewayConfiguration {
        let yaml: String
        do {
            yaml = try readText(path)
        } catch let problem as FileProblem {
            throw ConfigurationError(file: path, problems: [
                ConfigProblem(path: "", message: problem.message, hint: problem.hint, file: path),
            ])
        }
        return try parse(yaml: yaml, file: path)
    }

    /// Validates `yaml`; `file` names it in problems.
    ///
    /// - Throws: `ConfigurationError` listing every problem found; malformed
    ///   YAML is one problem with the line and column the YAML parser reported.
    public static func parse(yaml: String, file: String = "gateway.yaml") throws -> GatewayConfiguration {
        if let problem = YAMLDocumentBounds.problem(yaml, file: file) {
            throw ConfigurationError(file: file, problems: [problem])
        }
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            throw ConfigurationError(file: file, problems: [syntaxProblem(error, yaml: yaml, file: file)])
        }
        let log = ProblemLog(file: file)
        guard let root else {
            log.report("", at: nil, "the configuration is empty",
                       hint: "write at least gateway: { id: ... }, mqtt: { host: ... } and devices:")
            throw ConfigurationError(file: file, problems: log.problems)
        }
        let configuration = SchemaReader(log: log)
            .configuration(YAMLValue(node: root, path: "", name: "document", log: log))
        guard var configuration, log.problems.isEmpty else {
            if log.problems.isEmpty {
                // Every nil above comes with a problem; this is a loader bug.
                log.report("", at: nil, "the configuration could not be read", hint: "report this as a bug")
            }
            throw ConfigurationError(file: file, problems: log.problemsInFileOrder)
        }
        configuration.warnings = log.warnings
        return configuration
    }

    private struct FileProblem: Error {
        var message: String
        var hint: String
    }

    /// The file's text. Only a regular file of at most `YAMLDocumentBounds.maximumBytes`
    /// is read: its kind is checked before it is opened, so a FIFO cannot block
    /// the loader and `/dev/zero` cannot fill memory.
    private static func readText(_ path: String) throws -> String {
        var info = stat()
        guard stat(path, &info) == 0 else {
            let code = errno
            if code == ENOENT {
                throw FileProblem(
                    message: "configuration file '\(path)' does not exist",
                    hint: "check the path, or create the file from the example gateway.yaml")
            }
            throw FileProblem(
                message: "cannot read configuration file '\(path)': \(String(cString: strerror(code)))",
                hint: "check that the gateway's user may read it and the directories above it (ls -ld \(path))")
        }
        if let problem = kindProblem(info.st_mode, path: path) { throw problem }
        let limit = YAMLDocumentBounds.maximumBytes
        guard info.st_size <= limit else { throw tooLarge(path, size: Int(info.st_size)) }
        // O_NONBLOCK: should the path have become a FIFO since stat, open does not wait for a writer.
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            throw FileProblem(
                message: "cannot read configuration file '\(path)': \(String(cString: strerror(code)))",
                hint: code == EACCES ? "check that the gateway's user may read it (ls -l \(path))" : "check the file")
        }
        defer { close(fd) }
        guard fstat(fd, &info) == 0 else {
            let code = errno
            throw FileProblem(message: "cannot read configuration file '\(path)': \(String(cString: strerror(code)))",
                              hint: "check the file")
        }
        if let problem = kindProblem(info.st_mode, path: path) { throw problem }
        var bytes = [UInt8](repeating: 0, count: limit + 1)
        var count = 0
        while count < bytes.count {
            let got = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, $0.count - count) }
            if got == 0 { break }
            if got < 0 {
                let code = errno
                if code == EINTR { continue }
                throw FileProblem(
                    message: "cannot read configuration file '\(path)': \(String(cString: strerror(code)))",
                    hint: "check the file and the disk it is on")
            }
            count += got
        }
        guard count <= limit else { throw tooLarge(path, size: count) }
        guard let text = String(validating: bytes[..<count], as: UTF8.self) else {
            throw FileProblem(
                message: "configuration file '\(path)' is not UTF-8 text",
                hint: "save it as UTF-8")
        }
        return text
    }

    /// A problem unless `mode` is a regular file's.
    private static func kindProblem(_ mode: mode_t, path: String) -> FileProblem? {
        let kind: String
        switch mode & S_IFMT {
        case S_IFREG: return nil
        case S_IFDIR:
            return FileProblem(
                message: "'\(path)' is a directory, not a configuration file",
                hint: "name the YAML file itself, e.g. \(path)/gateway.yaml")
        case S_IFIFO: kind = "a FIFO (named pipe)"
        case S_IFCHR: kind = "a character device"
        case S_IFBLK: kind = "a block device"
        case S_IFSOCK: kind = "a socket"
        default: kind = "not a file"
        }
        return FileProblem(
            message: "configuration file '\(path)' is not a regular file: it is \(kind)",
            hint: "name the gateway.yaml file itself (a regular file)")
    }

    /// `size` as far as it is known: more than the limit when the read stopped there.
    private static func tooLarge(_ path: String, size: Int) -> FileProblem {
        let limit = YAMLDocumentBounds.maximumBytes
        let shown = size > limit + 1 ? "\(size) bytes" : "larger than \(limit) bytes"
        return FileProblem(
            message: "configuration file '\(path)' is \(shown); the gateway reads at most \(limit) bytes (1 MiB)",
            hint: "a gateway.yaml is a few KB: check that the file named is the configuration")
    }

    /// One problem for YAML that cannot be parsed, placed where Yams saw it.
    private static func syntaxProblem(_ error: any Error, yaml: String, file: String) -> ConfigProblem {
        let generalHint = "check the indentation and quote values that contain ': ', ' #', '[' or '{'"
        guard let error = error as? YamlError else {
            return ConfigProblem(path: "", message: "malformed YAML: \(error)", hint: generalHint, file: file)
        }
        func located(_ problem: String, _ context: YamlError.Context?, _ mark: Mark) -> ConfigProblem {
            let lines = yaml.split(separator: "\n", omittingEmptySubsequences: false)
            let indentedWithTab = lines.indices.contains(mark.line - 1)
                && lines[mark.line - 1].prefix(while: \.isWhitespace).contains("\t")
            let hint = if problem.contains("tab") || indentedWithTab {
                "indent with spaces; YAML does not allow tabs for indentation"
            } else if problem.contains("alias") {
                "define the anchor (&name) before referring to it (*name)"
            } else if problem.contains("document") {
                "keep one YAML document per file: remove the extra '---'"
            } else {
                generalHint
            }
            var message = "malformed YAML: \(problem)"
            if let context {
                message += " (\(context.text) at line \(context.mark.line), column \(context.mark.column))"
            }
            return ConfigProblem(path: "", line: mark.line, column: mark.column,
                                 message: message, hint: hint, file: file)
        }
        switch error {
        case let .scanner(context, problem, mark, _),
             let .parser(context, problem, mark, _),
             let .composer(context, problem, mark, _):
            return located(problem, context, mark)
        case let .duplicatedKeysInMapping(duplicates, context):
            let keys = duplicates.map { "'\($0)'" }.joined(separator: ", ")
            return ConfigProblem(
                path: "", line: context.mark.line, column: context.mark.column,
                message: "key \(keys) appears more than once in the same mapping",
                hint: "keep one of them", file: file)
        case let .reader(problem, offset, _, _):
            let (line, column) = offset.map { position(ofUTF8Offset: $0, in: yaml) } ?? (nil, nil)
            return ConfigProblem(path: "", line: line, column: column,
                                 message: "unreadable text: \(problem)",
                                 hint: "remove control characters and save the file as UTF-8", file: file)
        default:
            return ConfigProblem(path: "", message: "malformed YAML: \(error)", hint: generalHint, file: file)
        }
    }

    private static func position(ofUTF8Offset offset: Int, in text: String) -> (Int?, Int?) {
        let prefix = text.utf8.prefix(offset)
        let line = prefix.reduce(1) { $1 == UInt8(ascii: "\n") ? $0 + 1 : $0 }
        let column = prefix.reversed().prefix { $0 != UInt8(ascii: "\n") }.count + 1
        return (line, column)
    }
}

/// The schema of gateway.yaml, read in one pass that reports every problem.
struct SchemaReader {
    let log: ProblemLog
    /// Tag lists read so far (devices of one type share a list).
    let tagLists = TagListMemo()

    func configuration(_ document: YAMLValue) -> GatewayConfiguration? {
        guard var root = MappingReader(document, hint: "the file must be a mapping with gateway:, mqtt: and devices:")
        else { return nil }

        let gatewaySection = root.required(
            "gateway", hint: "add a gateway: section with at least id: <gateway id>"
        ).flatMap(identity)
        let gateway = gatewaySection?.identity
        let mqtt = root.required(
            "mqtt", message: "missing broker: there is no mqtt section",
            hint: "add mqtt: with at least host: <broker address>"
        ).flatMap { mqttSettings($0, gatewayID: gateway?.id) }
        let buffer = root.optional("buffer").map(bufferSettings) ?? BufferSettings()
        let replay = root.optional("replay").map(replaySettings) ?? ReplaySettings()
        let logLevel = root.optional("log_level").map { $0.choice(LogLevel.self) } ?? .info
        let devices = root.required(
            "devices", hint: "add devices: with at least one device and its tags"
        ).flatMap { self.devices($0, identity: gateway, dots: gatewaySection?.dots ?? .refused) }
        let payload = root.optional("payload").map(payloadSettings) ?? PayloadSettings()
        let sparkplugValue = root.optional("sparkplug")
        let sparkplug = sparkplugValue.map(sparkplugSettings)
        let commandsValue = root.optional("commands")
        let commands = commandsValue.map { commandSettings($0, format: mqtt?.format) } ?? CommandSettings()
        root.finish()
        let sparkplugChecked = checkSparkplug(format: mqtt?.format, section: sparkplug, sectionValue: sparkplugValue,
                                              payload: payload, payloadValue: root.optional("payload"),
                                              commands: commands, commandsValue: commandsValue,
                                              document: document)
        if mqtt?.willDelay != nil, let commands, commands.enabled {
            // With a Will delay the broker keeps the session, and the command subscription
            // with it, while the gateway is away: it would queue a command sent meanwhile
            // and deliver it after the reconnect, where a clean session never sees it.
            log.report("commands.enabled", at: commandsValue?.mark ?? document.mark,
                       "commands cannot be enabled with mqtt.will_delay: the broker keeps the gateway's session while it "
                           + "is away, so a command sent during an outage would be queued and run after the reconnect",
                       hint: "remove mqtt.will_delay (commands need a clean session), or set commands.enabled: false")
        }

        if let gateway, let buffer, let devices, let payload, let maxBytes = buffer.maxBytes,
           let bufferValue = root.optional("buffer") {
            checkRoom(maxBytes, in: bufferValue, identity: gateway, devices: devices, payload: payload)
        }

        guard let gateway, let mqtt, let buffer, let replay, let logLevel, let devices, let payload, let commands,
              let sparkplugChecked else { return nil }
        var configuration = GatewayConfiguration(
            gateway: gateway, mqtt: mqtt, buffer: buffer, replay: replay, devices: devices, logLevel: logLevel)
        configuration.payload = payload
        configuration.sparkplug = sparkplugChecked
        configuration.commands = commands
        return configuration
    }

    // MARK: gateway

    private func identity(_ value: YAMLValue) -> (identity: GatewayIdentity, dots: TopicDots)? {
        guard var section = MappingReader(value, hint: "write gateway: as a mapping, e.g. gateway: { id: gw-01 }")
        else { return nil }
        let dots = section.optional("allow_dots_in_topics").map { value -> TopicDots? in
            value.boolean(hint: "write allow_dots_in_topics: true or false").map { $0 ? .allowed : .refused }
        } ?? .refused
        let idValue = section.required(
            "id", hint: "add id: <name of this gateway>; it becomes a topic level <prefix>/<id>/...")
        let id = idValue.flatMap { topicLevel($0, what: "gateway id", dots: dots ?? .refused) }
        let prefixValue = section.optional("topic_prefix")
        let prefix = prefixValue.map { topicPrefix($0, dots: dots ?? .refused) } ?? "edge"
        let statsInterval = section.optional("stats_interval")
            .map { $0.duration(in: .seconds(1) ... .seconds(86_400)) } ?? .seconds(60)
        section.finish()

        guard let id, let prefix, let statsInterval, let dots else { return nil }
        let identity = GatewayIdentity(id: id, topicPrefix: prefix, statsInterval: statsInterval)
        // Every topic of the gateway itself; the devices' topics are checked with each device.
        for topic in [identity.statusTopic, identity.statsTopic, identity.gapsTopic] {
            guard let problem = TopicSyntax.topicProblem(topic) else { continue }
            let culprit = prefix.utf8.count > id.utf8.count ? (prefixValue ?? idValue) : idValue
            (culprit ?? value).report(problem, hint: "shorten gateway.topic_prefix or gateway.id: MQTT topics are at most 65535 bytes")
            return nil
        }
        return (identity, dots)
    }

    private func topicLevel(_ value: YAMLValue, what: String, dots: TopicDots) -> String? {
        guard let name = value.string() else { return nil }
        guard TopicSyntax.isLevelName(name) else {
            value.report("\(what) '\(Excerpt.of(name))' is not a valid MQTT topic level",
                         hint: "use only \(TopicSyntax.levelCharacters); no '/', '+', '#' or spaces")
            return nil
        }
        return checkDots(in: name, of: value, what: what, dots: dots) ? name : nil
    }

    /// A '.' in a topic: refused, or with `gateway.allow_dots_in_topics: true` a warning.
    /// Returns false when refused.
    private func checkDots(in text: String, of value: YAMLValue, what: String, dots: TopicDots) -> Bool {
        guard text.contains(".") else { return true }
        let shown = Excerpt.of(text)
        switch dots {
        case .refused:
            value.report("\(what) '\(shown)' contains '.': \(TopicSyntax.whyNoDots)",
                         hint: "use '-' or '_' instead (e.g. '\(Excerpt.of(text.replacingOccurrences(of: ".", with: "-")))'), "
                             + "or set gateway.allow_dots_in_topics: true if every broker on the way keeps '.' (mosquitto does)")
            return false
        case .allowed:
            log.warn(value.path, at: value.mark,
                     "\(what) '\(shown)' contains '.' (allowed by gateway.allow_dots_in_topics): \(TopicSyntax.whyNoDots)",
                     hint: "keep it only while every broker on the way keeps '.'; '-' or '_' work everywhere")
            return true
        }
    }

    private func topicPrefix(_ value: YAMLValue, dots: TopicDots) -> String? {
        guard let prefix = value.string() else { return nil }
        if let problem = TopicSyntax.prefixProblem(prefix) {
            value.report(problem, hint: "write topic levels separated by single '/', e.g. edge or plant-a/edge")
            return nil
        }
        guard checkDots(in: prefix, of: value, what: "topic prefix", dots: dots) else { return nil }
        return prefix
    }

    // MARK: mqtt

    func mqttSettings(_ value: YAMLValue, gatewayID: String?) -> MQTTSettings? {
        guard var section = MappingReader(value, hint: "write mqtt: as a mapping with host:, port:, ...")
        else { return nil }
        let hasServers = section.contains("servers")
        let hostValue = hasServers ? section.optional("host") : section.required(
            "host", message: "missing broker: mqtt has no host",
            hint: "add host: <broker address>, e.g. host: 10.8.0.1 (or servers: [{ host: a }, { host: b }] for a failover list)")
        let portValue = section.optional("port")
        var host = hostValue.flatMap { nonEmptyString($0, hint: "write the broker's host name or IP address") }
        var port = portValue.map { $0.integer(in: 1...65535, rangeHint: "TCP ports are 1...65535") } ?? 1883
        let clientID = section.optional("client_id").map { value -> String? in
            guard let id = value.string() else { return nil }
            guard (1...65535).contains(id.utf8.count) else {
                value.report("client_id must be 1...65535 bytes long", hint: "remove client_id to use the gateway id")
                return nil
            }
            return id
        } ?? gatewayID
        let keepalive = section.optional("keepalive").map(keepalive) ?? .seconds(30)
        let qos = section.optional("qos").map {
            $0.integer(in: 0...2, rangeHint: "QoS is 0 (at most once), 1 (at least once) or 2 (exactly once)")
        } ?? 1
        if qos == 2, let qosValue = section.optional("qos") {
            log.warn(qosValue.path, at: qosValue.mark,
                     "QoS 2 is not supported by some brokers: RabbitMQ answers it with PUBACK, which ends the "
                         + "connection (the gateway then says so and backs off); AWS IoT Core refuses it",
                     hint: "use qos: 1 unless the broker is known to support QoS 2 (mosquitto does): the outbox resends "
                         + "until PUBACK and every data message carries (boot, seq) for consumers to drop duplicates")
        }
        let maxInflight = section.optional("max_inflight").map { $0.integer(in: 1...65535) } ?? 100
        let reconnectMin = section.optional("reconnect_min")
            .map { $0.duration(in: .milliseconds(10) ... .seconds(86_400)) } ?? .seconds(1)
        let reconnectMaxValue = section.optional("reconnect_max")
        var reconnectMax = reconnectMaxValue
            .map { $0.duration(in: .milliseconds(10) ... .seconds(86_400)) } ?? .seconds(30)
        if let low = reconnectMin, let high = reconnectMax, high < low {
            let message = "reconnect_max \(DurationSyntax.format(high)) is shorter than reconnect_min \(DurationSyntax.format(low))"
            let hint = "make reconnect_max at least reconnect_min"
            if let reconnectMaxValue {
                reconnectMaxValue.report(message, hint: hint)
            } else {
                log.report(value.path + ".reconnect_max", at: value.keyMark ?? value.mark, message, hint: hint)
            }
            reconnectMax = nil
        }
        let serversValue = section.optional("servers")
        let servers = serversValue.flatMap(mqttServers)  // nil when absent or wrong
        if let serversValue {
            if hostValue != nil || portValue != nil {
                serversValue.report("mqtt has both servers: and host:/port:",
                                    hint: "list every broker under servers: (the first is preferred) and remove host: and port:")
            }
            host = servers?.first?.host
            port = servers?.first?.port
        }
        let failbackAfter = section.optional("failback_after")
            .map { $0.duration(in: .seconds(1) ... .seconds(86_400)) } ?? .seconds(300)
        let protocolVersion = section.optional("protocol")
            .map { $0.choice(MQTTProtocolVersion.self, aliases: ["3": .v311, "311": .v311, "5.0": .v5]) } ?? .v311
        let willDelayValue = section.optional("will_delay")
        let messageExpiryValue = section.optional("message_expiry")
        let security = mqttSecurity(&section)
        let binding = mqttBinding(&section)
        let format = section.optional("format").map { $0.choice(MessageFormat.self) } ?? .json
        section.finish()
        // Each nil when absent; a refused value also sets `mqtt5Refused`.
        var mqtt5Refused = false
        let willDelay = willDelayValue.flatMap { value in
            let interval = mqtt5Interval(value, protocolVersion: protocolVersion, what: "will_delay",
                                         range: .seconds(1) ... .seconds(86_400))
            if interval == nil { mqtt5Refused = true }
            return interval
        }
        let messageExpiry = messageExpiryValue.flatMap { value in
            let interval = mqtt5Interval(value, protocolVersion: protocolVersion, what: "message_expiry",
                                         range: .seconds(1) ... .seconds(31_536_000))
            if interval == nil { mqtt5Refused = true }
            return interval
        }
        if let willDelayValue, willDelay != nil {
            if qos == 2 {
                willDelayValue.report(
                    "will_delay cannot be used with qos: 2: the broker keeps the session across a reconnect, and with it "
                        + "the packet id of a QoS 2 message awaiting PUBREL; a new message reusing that id would be "
                        + "taken for the old one and dropped",
                    hint: "use qos: 1 (every data message carries (boot, seq) for consumers to drop duplicates), or remove will_delay")
            }
            if format == .sparkplug {
                willDelayValue.report(
                    "will_delay cannot be used with format: sparkplug: Sparkplug B 3.0 requires an MQTT 5 edge node to "
                        + "connect with Clean Start and a session expiry of 0, so its NDEATH comes at once",
                    hint: "remove will_delay")
            }
        }

        guard let host, let port, let clientID, let keepalive, let qos, let maxInflight,
              let reconnectMin, let reconnectMax, let security, let binding, let format, let failbackAfter,
              let protocolVersion
        else { return nil }
        var settings = MQTTSettings(
            host: host, port: port, clientID: clientID, keepalive: keepalive, qos: qos,
            maxInflight: maxInflight, reconnectMin: reconnectMin, reconnectMax: reconnectMax)
        settings.failbackAfter = failbackAfter
        settings.protocolVersion = protocolVersion
        guard !mqtt5Refused else { return nil }
        settings.willDelay = willDelay
        settings.messageExpiry = messageExpiry
        security.apply(to: &settings, portWritten: portValue != nil)
        if let list = servers {
            // A server without port: gets the default of the connection (8883 with TLS).
            let defaultPort = settings.tls == nil ? 1883 : 8883
            let resolved = list.map { MQTTServer(host: $0.host, port: $0.port == 0 ? defaultPort : $0.port) }
            for (index, server) in resolved.enumerated() where resolved[..<index].contains(server) {
                serversValue?.report("mqtt.servers[\(index)] (\(server.endpoint)) is listed twice",
                                     hint: "list each broker once")
                return nil
            }
            settings.host = resolved[0].host
            settings.port = resolved[0].port
            settings.failover = Array(resolved.dropFirst())
        }
        (settings.bindInterface, settings.bindAddress) = binding
        settings.format = format
        return settings
    }

    /// An MQTT 5 interval (`mqtt.will_delay`, `mqtt.message_expiry`): whole seconds in
    /// `range`, refused under MQTT 3.1.1, which has no such property. `nil`: refused.
    private func mqtt5Interval(_ value: YAMLValue, protocolVersion: MQTTProtocolVersion?, what: String,
                               range: ClosedRange<Duration>) -> Duration? {
        guard let duration = value.duration(in: range) else { return nil }
        guard duration.components.attoseconds == 0 else {
            value.report("\(what) \(DurationSyntax.format(duration)) is not a whole number of seconds",
                         hint: "MQTT 5 counts this interval in seconds, e.g. \(what): \(max(1, duration.components.seconds))s")
            return nil
        }
        if protocolVersion == .v311 {
            value.report("\(what) needs MQTT 5: MQTT 3.1.1 has no such property and the broker would ignore it",
                         hint: "set mqtt.protocol: 5 (the broker must support it; mosquitto 2 does), or remove \(what)")
            return nil
        }
        return duration
    }

    /// `mqtt.servers`: brokers in order of preference, each `{ host, port }`; a port
    /// left out is 0 here and becomes the connection's default once TLS is known.
    private func mqttServers(_ value: YAMLValue) -> [MQTTServer]? {
        guard let items = value.list(itemName: "server", hint: "write servers: as a list, e.g. servers: [{ host: a }, { host: b, port: 1884 }]")
        else { return nil }
        guard !items.isEmpty else {
            value.report("mqtt.servers is empty", hint: "list at least one broker, e.g. servers: [{ host: 10.8.0.1 }]")
            return nil
        }
        var servers: [MQTTServer] = []
        var failed = false
        for item in items {
            guard var entry = MappingReader(item, hint: "write each server as { host: <address>, port: <port> }") else {
                failed = true
                continue
            }
            let host = entry.required("host", hint: "add host: <broker address>")
                .flatMap { nonEmptyString($0, hint: "write the broker's host name or IP address") }
            let port = entry.optional("port").map { $0.integer(in: 1...65535, rangeHint: "TCP ports are 1...65535") } ?? 0
            entry.finish()
            guard let host, let port else {
                failed = true
                continue
            }
            servers.append(MQTTServer(host: host, port: port))
        }
        return failed ? nil : servers
    }

    /// `bind_interface` / `bind_address` (at most one): where the connection must come from.
    private func mqttBinding(_ section: inout MappingReader) -> (interface: String?, address: String?)? {
        let interfaceValue = section.optional("bind_interface")
        let addressValue = section.optional("bind_address")
        let interface = interfaceValue.map { value -> String? in
            guard let name = nonEmptyString(value, hint: "name the VPN interface, e.g. bind_interface: wg0") else { return nil }
            guard name.utf8.count < 16, !name.contains("/"), !name.contains(where: \.isWhitespace) else {
                value.report("'\(Excerpt.of(name))' is not a network interface name",
                             hint: "Linux interface names are 1...15 characters without '/' or spaces, e.g. wg0")
                return nil
            }
            return name
        }
        let address = addressValue.map { value -> String? in
            guard let text = nonEmptyString(value, hint: "write a local IP address, e.g. bind_address: 10.8.0.2") else { return nil }
            guard IPAddressSyntax.isValid(text) else {
                value.report("'\(Excerpt.of(text))' is not an IP address", hint: "write a local IPv4 or IPv6 address, e.g. 10.8.0.2")
                return nil
            }
            return text
        }
        if let interfaceValue, addressValue != nil {
            interfaceValue.report("bind_interface and bind_address both set",
                                  hint: "keep one: bind_interface follows the interface's address as it changes")
            return nil
        }
        if interface == .some(nil) || address == .some(nil) { return nil }
        return (interface ?? nil, address ?? nil)
    }

    private func keepalive(_ value: YAMLValue) -> Duration? {
        guard let keepalive = value.duration(in: .seconds(5) ... .seconds(65535),
                                             rangeHint: "MQTT keepalive is 5s...65535s")
        else { return nil }
        guard keepalive.components.attoseconds == 0 else {
            value.report("keepalive must be a whole number of seconds", hint: "MQTT counts keepalive in seconds, e.g. 30s")
            return nil
        }
        return keepalive
    }

    private func nonEmptyString(_ value: YAMLValue, hint: String) -> String? {
        guard let text = value.string(hint: hint) else { return nil }
        guard !text.trimmingSpaces.isEmpty else {
            value.report("\(value.name) is empty", hint: hint)
            return nil
        }
        return text
    }

    // MARK: buffer

    private func bufferSettings(_ value: YAMLValue) -> BufferSettings? {
        guard var section = MappingReader(value, hint: "write buffer: as a mapping with path:, max_bytes:, ...")
        else { return nil }
        let defaults = BufferSettings()
        let path = section.optional("path").map { value -> String? in
            guard let path = nonEmptyString(value, hint: "write the path of the SQLite outbox file") else { return nil }
            var info = stat()
            guard stat(path, &info) == 0 else { return path }  // created on the first run
            switch info.st_mode & S_IFMT {
            case S_IFREG:
                return path
            case S_IFDIR:
                value.report("buffer.path '\(Excerpt.of(path))' is a directory, not the outbox file",
                             hint: "name the SQLite file inside it, e.g. \(Excerpt.of(path.hasSuffix("/") ? path : path + "/"))outbox.sqlite")
            default:
                value.report("buffer.path '\(Excerpt.of(path))' is not a regular file",
                             hint: "name a file for the SQLite outbox, e.g. /var/lib/edge-gateway/outbox.sqlite")
            }
            return nil
        } ?? defaults.path
        let sync = section.optional("sync").map { $0.choice(BufferSettings.Sync.self) } ?? defaults.sync
        let maxMessages = nullable(section.optional("max_messages"), absent: defaults.maxMessages) {
            $0.integer(in: 1...Int.max, rangeHint: "use a positive count, or none for no limit")
        }
        let maxBytes = nullable(section.optional("max_bytes"), absent: defaults.maxBytes) { $0.byteSize() }
        let maxAge = nullable(section.optional("max_age"), absent: defaults.maxAge) {
            $0.duration(in: .seconds(1) ... .seconds(Int64.max / 2))
        }
        let dropPolicy = section.optional("drop_policy").map { $0.choice(BufferSettings.DropPolicy.self) }
            ?? defaults.dropPolicy
        section.finish()

        guard let path, let sync, let maxMessages, let maxBytes, let maxAge, let dropPolicy else { return nil }
        return BufferSettings(
            path: path, sync: sync, maxMessages: maxMessages, maxBytes: maxBytes,
            maxAge: maxAge, dropPolicy: dropPolicy)
    }

    /// `buffer.max_bytes` must hold at least one data message with room to spare,
    /// or every message is dropped as soon as it is committed.
    private func checkRoom(_ maxBytes: Int64, in bufferValue: YAMLValue, identity: GatewayIdentity,
                           devices: [DeviceConfiguration], payload: PayloadSettings) {
        let largest = devices.map {
            MessageSizeBound.dataMessage(of: $0, identity: identity, sealing: payload.seal.algorithm)
        }.max() ?? 0
        let minimum = MessageSizeBound.minimumMaxBytes(largestMessage: largest)
        guard maxBytes < minimum else { return }
        var reader = MappingReader(bufferValue, hint: "")
        let value = reader?.claim("max_bytes")
        let message = "max_bytes \(maxBytes) cannot work: the minimum is \(minimum) bytes "
            + "(room for several of this configuration's largest data messages, up to \(largest) bytes each, "
            + "and at least \(MessageSizeBound.floor / 1024)KiB); below it the outbox drops what it should keep"
        let hint = "set max_bytes to at least \((minimum + 1023) / 1024)KiB, or none for no limit"
        if let value {
            value.report(message, hint: hint)
        } else {
            log.report(bufferValue.path + ".max_bytes", at: bufferValue.keyMark ?? bufferValue.mark, message, hint: hint)
        }
    }

    // MARK: replay

    private func replaySettings(_ value: YAMLValue) -> ReplaySettings? {
        guard var section = MappingReader(value, hint: "write replay: as a mapping with order: and max_rate:")
        else { return nil }
        let defaults = ReplaySettings()
        let order = section.optional("order").map { $0.choice(ReplaySettings.Order.self) } ?? defaults.order
        let maxRate = section.optional("max_rate").map {
            $0.integer(in: 0...1_000_000, rangeHint: "messages per second, 0 for unlimited")
        } ?? defaults.maxRate
        section.finish()
        guard let order, let maxRate else { return nil }
        return ReplaySettings(order: order, maxRate: maxRate)
    }

    /// A setting where null (or `none`) means "not set": `.some(nil)` then and
    /// when absent without a default; `nil` after a problem.
    private func nullable<T>(_ value: YAMLValue?, absent: T?, _ read: (YAMLValue) -> T?) -> T?? {
        guard let value else { return .some(absent) }
        if value.meansNone { return .some(nil) }
        guard let setting = read(value) else { return nil }
        return .some(setting)
    }

    // MARK: devices

    /// What the cross-device checks need, read even when the rest of a device is wrong.
    private struct DeviceKey {
        var index: Int
        var name: YAMLValue?
        var nameText: String?
        var bus: String?
        var unitID: Int?
        var unitValue: YAMLValue?
        var device: YAMLValue
        var transport: ModbusTransport?
    }

    private func devices(_ value: YAMLValue, identity: GatewayIdentity?, dots: TopicDots) -> [DeviceConfiguration]? {
        guard let items = value.list(
            itemName: "device", hint: "write each device as a list item starting with '- name: ...'")
        else { return nil }
        guard !items.isEmpty else {
            value.report("no devices are configured", hint: "add at least one device with tcp:, unit_id: and tags:")
            return nil
        }
        var keys: [DeviceKey] = []
        let devices = items.enumerated().map { index, item in
            device(item, index: index, identity: identity, dots: dots, keys: &keys)
        }
        checkUniqueNames(keys)
        checkDistinctUnits(keys)
        checkSerialLines(keys)
        checkBusCount(keys, devices: value)
        let read = devices.compactMap { $0 }
        return read.count == devices.count ? SharedTagLists.share(read) : nil
    }

    private func checkUniqueNames(_ keys: [DeviceKey]) {
        var first: [String: DeviceKey] = [:]
        for key in keys {
            guard let name = key.nameText, let value = key.name else { continue }
            if let earlier = first[name] {
                value.report("device name '\(Excerpt.of(name))' is already used by devices[\(earlier.index)]",
                             hint: "give each device a unique name; it is the topic level <prefix>/<gw>/<device>/data")
            } else {
                first[name] = key
            }
        }
    }

    private func checkBusCount(_ keys: [DeviceKey], devices: YAMLValue) {
        let buses = Set(keys.compactMap(\.bus)).count
        guard buses > ConfigurationLoader.maximumBuses else { return }
        devices.report(
            "\(buses) buses (distinct tcp endpoints and serial ports): one gateway polls at most \(ConfigurationLoader.maximumBuses) "
                + "(a thread and a connection each; libmodbus cannot wait on a file descriptor above 1023)",
            hint: "split the devices over two gateways, each with its own gateway.id and outbox")
    }

    private func checkDistinctUnits(_ keys: [DeviceKey]) {
        struct Address: Hashable { var bus: String; var unitID: Int }
        var first: [Address: DeviceKey] = [:]
        for key in keys {
            guard let bus = key.bus, let unitID = key.unitID else { continue }
            let address = Address(bus: bus, unitID: unitID)
            if let earlier = first[address] {
                let message = "devices[\(earlier.index)] and devices[\(key.index)] both use unit id \(unitID) on \(bus)"
                let hint = "give each device a distinct unit_id (devices on one bus share its connection)"
                if let unitValue = key.unitValue {
                    unitValue.report(message, hint: hint)
                } else {
                    log.report(key.device.path + ".unit_id", at: key.device.mark, message, hint: hint)
                }
            } else {
                first[address] = key
            }
        }
    }

    private func device(_ value: YAMLValue, index: Int, identity: GatewayIdentity?, dots: TopicDots,
                        keys: inout [DeviceKey]) -> DeviceConfiguration? {
        guard var section = MappingReader(value, hint: "write each device as a mapping with name:, tcp:, tags:")
        else { return nil }
        let nameValue = section.required(
            "name", hint: "add name: <device>; it becomes the topic level <prefix>/<gw>/<device>/data")
        let name = nameValue.flatMap { value -> String? in
            guard let name = topicLevel(value, what: "device name", dots: dots) else { return nil }
            guard let identity else { return name }
            let topics = [identity.dataTopic(device: name), identity.deviceStatusTopic(device: name),
                          identity.deviceMetaTopic(device: name)]
            if let problem = topics.lazy.compactMap(TopicSyntax.topicProblem).first {
                value.report(problem, hint: "shorten the device name (or gateway.topic_prefix): MQTT topics are at most 65535 bytes")
                return nil
            }
            return name
        }

        let tcp = section.optional("tcp")
        let rtu = section.optional("rtu")
        var transport: ModbusTransport?
        if let tcp, let rtu {
            rtu.report("a device has either tcp: or rtu:, not both",
                       hint: "keep tcp: for Modbus TCP or rtu: for a serial line")
            _ = tcpTransport(tcp)
            _ = rtuTransport(rtu)
        } else if let tcp {
            transport = tcpTransport(tcp)
        } else if let rtu {
            transport = rtuTransport(rtu)
        } else {
            log.report(value.path + ".tcp", at: value.mark, "missing required key 'tcp' (or 'rtu')",
                       hint: "add tcp: { host: <device address>, port: 502 } or rtu: { port: /dev/ttyUSB0, baud: 9600 }")
        }

        let unitValue = section.optional("unit_id")
        let unitID = unitValue.map { value -> Int? in
            if rtu != nil, tcp == nil {
                return value.integer(in: 1...247, rangeHint: "Modbus RTU slave addresses are 1...247 (0 is broadcast)")
            }
            return value.integer(in: 0...255, rangeHint: "Modbus TCP unit ids are 0...255 (usually 1; 255 or 0 when the device ignores it)")
        } ?? 1
        let pollInterval = section.optional("poll_interval")
            .map { $0.duration(in: .milliseconds(10) ... .seconds(86_400)) } ?? .seconds(1)
        let timeoutValue = section.optional("timeout")
        let timeout = timeoutValue.map { $0.duration(in: .milliseconds(10) ... .seconds(3_600)) } ?? .milliseconds(500)
        let byteOrder = section.optional("byte_order").map { $0.choice(ByteOrder.self) } ?? .abcd
        let tags = section.required(
            "tags", hint: "add tags: with at least one register to read"
        ).flatMap(tags)
        let maxGap = section.optional("max_gap").map {
            $0.integer(in: 0...1999, rangeHint: "unused registers (or bits) a merged read may span, e.g. 0...10; 0 merges only touching tags")
        } ?? 0
        let byteTimeout = nullable(section.optional("byte_timeout"), absent: nil) {
            $0.duration(in: .milliseconds(1) ... .seconds(60))
        }
        let retriesValue = section.optional("retries")
        let retries = retriesValue.map {
            $0.integer(in: 0...10, rangeHint: "extra attempts after a timeout, 0...10 (each costs up to timeout on the bus)")
        } ?? 0
        let publishValue = section.optional("publish")
        let publishMode = publishValue.map { $0.choice(PublishMode.self) } ?? .always
        let maxIntervalValue = section.optional("max_interval")
        var maxInterval = maxIntervalValue.map { $0.duration(in: .milliseconds(10) ... .seconds(86_400 * 7)) } ?? .seconds(60)
        if let maxIntervalValue, publishMode == .always {
            maxIntervalValue.report("max_interval only applies with publish: on_change",
                                    hint: "add publish: on_change, or remove max_interval (every poll is published)")
            maxInterval = nil
        }
        section.finish()

        keys.append(DeviceKey(index: index, name: nameValue, nameText: name, bus: transport?.busKey,
                              unitID: unitID, unitValue: unitValue, device: value, transport: transport))
        guard let name, let transport, let unitID, let pollInterval, let timeout, let byteOrder, let tags,
              let maxGap, let byteTimeout, let retries, let publishMode, let maxInterval
        else { return nil }
        let device = DeviceConfiguration(
            name: name, transport: transport, unitID: unitID, pollInterval: pollInterval,
            timeout: timeout, byteOrder: byteOrder, tags: tags, maxGap: maxGap, byteTimeout: byteTimeout,
            retries: retries, publish: publishMode == .always ? .always : .onChange(maxInterval: maxInterval))
        checkLongestRead(device, index: index, timeout: timeoutValue, retries: retriesValue, section: value)
        return device
    }

    private enum PublishMode: String, CaseIterable {
        case always
        case onChange = "on_change"
    }

    private func rtuTransport(_ value: YAMLValue) -> ModbusTransport? {
        guard var section = MappingReader(
            value, hint: "write rtu: { port: /dev/ttyUSB0, baud: 9600, parity: none, data_bits: 8, stop_bits: 1 }")
        else { return nil }
        let port = section.required("port", hint: "add port: <serial device>, e.g. /dev/ttyUSB0 or /dev/serial/by-id/...")
            .flatMap { nonEmptyString($0, hint: "write the serial device's path, e.g. /dev/ttyUSB0") }
        let baud = section.optional("baud").map {
            $0.integer(in: 50...4_000_000, rangeHint: "a baud rate such as 9600, 19200, 38400 or 115200")
        } ?? 9600
        let parity = section.optional("parity").map {
            $0.choice(SerialSettings.Parity.self, aliases: ["n": .none, "e": .even, "o": .odd])
        } ?? SerialSettings.Parity.none
        let dataBits = section.optional("data_bits").map {
            $0.integer(in: 5...8, rangeHint: "Modbus RTU uses 8 data bits")
        } ?? 8
        let stopBits = section.optional("stop_bits").map {
            $0.integer(in: 1...2, rangeHint: "1 or 2 (Modbus RTU: 1 with parity, 2 without)")
        } ?? 1
        let rs485 = section.optional("rs485").map { $0.boolean(hint: "write rs485: true to switch the port to RS-485 mode") } ?? false
        let rts = section.optional("rts").map { $0.choice(SerialSettings.RTS.self) } ?? SerialSettings.RTS.none
        section.finish()
        guard let port, let baud, let parity, let dataBits, let stopBits, let rs485, let rts else { return nil }
        return .rtu(SerialSettings(port: port, baud: baud, parity: parity, dataBits: dataBits, stopBits: stopBits,
                                   rs485: rs485, rts: rts))
    }

    /// Devices on one serial port share the line: their settings must agree.
    private func checkSerialLines(_ keys: [DeviceKey]) {
        var first: [String: (key: DeviceKey, serial: SerialSettings)] = [:]
        for key in keys {
            guard case let .rtu(serial) = key.transport else { continue }
            if let earlier = first[serial.port] {
                if earlier.serial != serial {
                    log.report(key.device.path + ".rtu", at: key.device.mark,
                               "devices[\(earlier.key.index)] and devices[\(key.index)] share \(serial.port) with different line settings (\(earlier.serial.summary) vs \(serial.summary))",
                               hint: "devices on one serial port share the line: give them the same baud, parity, data_bits, stop_bits, rs485 and rts")
                }
            } else {
                first[serial.port] = (key, serial)
            }
        }
    }

    private func tcpTransport(_ value: YAMLValue) -> ModbusTransport? {
        guard var section = MappingReader(value, hint: "write tcp: { host: <device address>, port: 502 }")
        else { return nil }
        let host = section.required("host", hint: "add host: <the device's (or Modbus gateway's) address>")
            .flatMap { nonEmptyString($0, hint: "write the device's host name or IP address") }
        let port = section.optional("port").map { $0.integer(in: 1...65535, rangeHint: "TCP ports are 1...65535") } ?? 502
        section.finish()
        guard let host, let port else { return nil }
        return .tcp(host: host, port: port)
    }

    // MARK: tags

    private func tags(_ value: YAMLValue) -> [TagConfiguration]? {
        if let read = tagLists.list(for: value.node) { return read }
        let problems = log.problems.count
        guard let read = readTags(value) else { return nil }
        if log.problems.count == problems { tagLists.remember(read, for: value.node) }
        return read
    }

    private func readTags(_ value: YAMLValue) -> [TagConfiguration]? {
        guard let items = value.list(
            itemName: "tag", hint: "write each tag as a list item starting with '- name: ...'")
        else { return nil }
        guard !items.isEmpty else {
            value.report("the device has no tags", hint: "add at least one tag with name:, table:, address: and type:")
            return nil
        }
        var firstIndex: [String: Int] = [:]
        var tags: [TagConfiguration?] = []
        for (index, item) in items.enumerated() {
            let (tag, nameValue) = self.tag(item)
            tags.append(tag)
            guard let nameValue, let name = nameValue.text else { continue }
            if let earlier = firstIndex[name] {
                nameValue.report("tag name '\(Excerpt.of(name))' is already used by tags[\(earlier)] of this device",
                                 hint: "give each tag of a device a unique name; it is the key in the data message")
            } else {
                firstIndex[name] = index
            }
        }
        // Exactly as long as the list (compactMap would grow it to the next power of two).
        var read: [TagConfiguration] = []
        read.reserveCapacity(tags.count)
        for tag in tags {
            guard let tag else { return nil }
            read.append(tag)
        }
        return read
    }

    /// The tag, and its name value when the name itself is valid (for the uniqueness check).
    private func tag(_ value: YAMLValue) -> (TagConfiguration?, YAMLValue?) {
        guard var section = MappingReader(value, hint: "write each tag as a mapping with name:, table:, address:, type:")
        else { return (nil, nil) }
        let nameValue = section.required("name", hint: "add name: <tag>; it is the key of the value in the data message")
        let name: String? = nameValue.flatMap { value -> String? in
            guard let name = value.string() else { return nil }
            guard TopicSyntax.isLevelName(name) else {
                value.report("tag name '\(Excerpt.of(name))' contains characters that are not allowed",
                             hint: "use only \(TopicSyntax.levelCharacters)")
                return nil
            }
            return name
        }
        let table = section.required("table", hint: "add table: holding, input, coils or discrete_inputs").flatMap {
            $0.choice(RegisterTable.self, aliases: [
                "holding_register": .holding, "holding_registers": .holding, "input_register": .input,
                "input_registers": .input, "coil": .coils, "discrete_input": .discreteInputs, "discrete": .discreteInputs,
            ])
        }
        let addressValue = section.required("address", hint: "add address: <zero-based register address>")
        let address = addressValue.flatMap { $0.integer(in: 0...65535, rangeHint: "Modbus addresses are 0...65535") }
        let typeValue = section.optional("type")
        var type = typeValue.map { $0.choice(ValueType.self) }
            ?? (table?.holdsBits == true ? .bool : nil)
        if typeValue == nil, table?.holdsBits != true {
            log.report(value.path + ".type", at: value.keyMark ?? value.mark, "missing required key 'type'",
                       hint: "add type: int16, uint16, int32, uint32, int64, uint64, float32, float64, bool (with bit:) or string (with length:)")
        }
        let byteOrder = nullable(section.optional("byte_order"), absent: nil) { $0.choice(ByteOrder.self) }
        let scaleValue = section.optional("scale")
        let scale = scaleValue.map { value -> Double? in
            guard let scale = value.finiteNumber() else { return nil }
            guard scale != 0 else {
                value.report("scale must not be 0", hint: "use 1 for raw values; value = raw × scale + offset")
                return nil
            }
            return scale
        } ?? 1
        let offsetValue = section.optional("offset")
        let offset = offsetValue.map { $0.finiteNumber() } ?? 0
        let bitValue = section.optional("bit")
        var bit: Int? = bitValue.flatMap { $0.integer(in: 0...15, rangeHint: "bits of a register are 0 (least significant) ... 15") }
        let lengthValue = section.optional("length")
        var length: Int? = lengthValue.flatMap { $0.integer(in: 1...125, rangeHint: "registers of text, 1...125 (two ASCII characters each)") }
        let unit = section.optional("unit").map { nonEmptyString($0, hint: "write the engineering unit, e.g. °C or m³/h") }
        let pollInterval = section.optional("poll_interval")
            .map { $0.duration(in: .milliseconds(10) ... .seconds(86_400)) }
        let deadbandValue = section.optional("deadband")
        let percentValue = section.optional("deadband_percent")
        var deadband: Deadband? = Deadband.none
        if deadbandValue != nil, let percentValue {
            percentValue.report("a tag has deadband or deadband_percent, not both",
                                hint: "keep deadband: for an absolute change or deadband_percent: for a relative one")
            deadband = nil
        } else if let deadbandValue {
            deadband = nonNegative(deadbandValue).map { .absolute($0) }
        } else if let percentValue {
            deadband = nonNegative(percentValue).map { .percent($0) }
        }
        let writeGuard = self.writeGuard(&section)
        section.finish()

        // Combinations of table, type, bit and length.
        if let table, let typeValue, table.holdsBits, let chosen = type, chosen != .bool {
            typeValue.report("\(table.rawValue) hold single bits, not \(chosen.rawValue)",
                             hint: "use type: bool (or leave type out) for \(table.rawValue)")
            type = nil
        }
        if let type, let table {
            if type == .bool, !table.holdsBits, bitValue == nil {
                log.report(value.path + ".bit", at: value.keyMark ?? value.mark,
                           "a bool tag of \(table.rawValue) registers needs bit:",
                           hint: "add bit: 0...15 (0 is the least significant bit), or use table: coils / discrete_inputs")
                bit = nil
            }
            if let bitValue, type != .bool || table.holdsBits {
                bitValue.report("bit: applies only to bool tags of holding or input registers",
                                hint: type != .bool ? "use type: bool to read one bit of a register" : "remove bit: (a coil is a single bit)")
                bit = nil
            }
            if type == .string, lengthValue == nil {
                log.report(value.path + ".length", at: value.keyMark ?? value.mark,
                           "a string tag needs length:", hint: "add length: <registers>, two ASCII characters per register")
                length = nil
            }
            if let lengthValue, type != .string {
                lengthValue.report("length: applies only to string tags",
                                   hint: "remove length: (a \(type.rawValue) occupies \(type.registerCount) register(s))")
                length = nil
            }
            if type == .string || type == .bool {
                for (key, given) in [("scale", scaleValue), ("offset", offsetValue)] {
                    given?.report("\(key): applies only to numbers, not \(type.rawValue) tags", hint: "remove \(key):")
                }
                if let deadbandValue = deadbandValue ?? percentValue {
                    deadbandValue.report("a deadband applies only to numbers, not \(type.rawValue) tags",
                                         hint: "remove it: any change of a \(type.rawValue) is published")
                    deadband = nil
                }
            }
        }

        let validName = name == nil ? nil : nameValue
        if let address, let table, let type, let addressValue {
            let width = table.holdsBits ? 1 : (type == .string ? (length ?? 1) : type.registerCount)
            if address + width - 1 > 65535 {
                addressValue.report(
                    "a \(type.rawValue) at address \(address) runs past the last register",
                    hint: "a \(type.rawValue) occupies \(width) registers; the last address is 65535")
                return (nil, validName)
            }
        }
        guard let name, let table, let address, let type, let byteOrder, let scale, let offset,
              let deadband
        else { return (nil, validName) }
        if bitValue != nil && bit == nil { return (nil, validName) }
        if lengthValue != nil && length == nil || type == .string && length == nil { return (nil, validName) }
        if case .some(.none) = pollInterval { return (nil, validName) }
        if case .some(.none) = unit { return (nil, validName) }
        if type == .bool, !table.holdsBits, bit == nil { return (nil, validName) }
        var tag = TagConfiguration(name: name, table: table, address: address, type: type,
                                   byteOrder: byteOrder, scale: scale, offset: offset, bit: bit,
                                   length: type == .string ? length ?? 1 : 1, unit: unit ?? nil,
                                   pollInterval: pollInterval ?? nil, deadband: deadband)
        guard let writeGuard, checkWriteGuard(writeGuard, of: tag) else { return (nil, validName) }
        (tag.writable, tag.minimum, tag.maximum) = (writeGuard.writable, writeGuard.minimum, writeGuard.maximum)
        return (tag, nameValue)
    }

    private func nonNegative(_ value: YAMLValue) -> Double? {
        guard let number = value.finiteNumber() else { return nil }
        guard number >= 0 else {
            value.report("\(value.name) must not be negative", hint: "write the smallest change to publish, e.g. 0.5")
            return nil
        }
        return number
    }
}
