// `mqtt.format` and the `sparkplug:` section of gateway.yaml: which wire scheme the
// gateway speaks (the JSON topics or Eclipse Sparkplug B 3.0) and the Sparkplug ids.

/// The wire scheme of everything the gateway publishes (`mqtt.format`).
public enum MessageFormat: String, Sendable, Equatable, CaseIterable {
    /// `<prefix>/<gw>/<device>/data` JSON messages with retained statuses (the default).
    case json
    /// Eclipse Sparkplug B 3.0: `spBv1.0/<group>/NBIRTH|DDATA|.../<node>[/<device>]`, protobuf payloads.
    case sparkplug
}

/// The `sparkplug:` section. The edge node id is `gateway.id`, device ids are device names.
public struct SparkplugSettings: Sendable, Equatable {
    /// The Sparkplug group id: the topic level after `spBv1.0`.
    public var groupID: String
    /// When set, the node waits for this primary host application's `spBv1.0/STATE/<id>`
    /// to say online before it publishes its NBIRTH.
    public var primaryHostID: String?

    public init(groupID: String, primaryHostID: String? = nil) {
        self.groupID = groupID
        self.primaryHostID = primaryHostID
    }

    /// Why `id` cannot be a Sparkplug group, edge node, device or host id, nil if it can.
    /// Sparkplug 3.0 (tck-id-topic-structure-namespace-valid-group-id, -edge-node-id,
    /// -device-id): a valid UTF-8 string without `+`, `/` and `#`. An empty id would make
    /// an empty topic level, so it is refused too.
    public static func idProblem(_ id: String) -> String? {
        if id.isEmpty { return "is empty" }
        for reserved: Character in ["+", "/", "#"] where id.contains(reserved) {
            return "contains '\(reserved)', which Sparkplug reserves"
        }
        if id.unicodeScalars.contains(where: { $0.value == 0 }) { return "contains a NUL character" }
        if id.utf8.count > 1024 { return "is longer than 1024 bytes" }
        return nil
    }
}

extension SchemaReader {
    /// `sparkplug:` with `group_id:` and an optional `primary_host_id:`.
    func sparkplugSettings(_ value: YAMLValue) -> SparkplugSettings? {
        guard var section = MappingReader(value, hint: "write sparkplug: as a mapping, e.g. sparkplug: { group_id: plant-a }")
        else { return nil }
        let group = section.required(
            "group_id", hint: "add group_id: <Sparkplug group>; it becomes the topic level after spBv1.0/"
        ).flatMap { sparkplugID($0, what: "group_id") }
        let hostValue = section.optional("primary_host_id")
        let host = hostValue.map { sparkplugID($0, what: "primary_host_id") }
        section.finish()
        guard let group, host != .some(nil) else { return nil }
        return SparkplugSettings(groupID: group, primaryHostID: host ?? nil)
    }

    private func sparkplugID(_ value: YAMLValue, what: String) -> String? {
        guard let id = value.string() else { return nil }
        if let problem = SparkplugSettings.idProblem(id) {
            value.report("\(what) '\(Excerpt.of(id))' \(problem): it is not a valid Sparkplug id",
                         hint: "use a name without '+', '/' or '#', e.g. plant-a")
            return nil
        }
        return id
    }
}

extension SchemaReader {
    /// What `mqtt.format` and `sparkplug:` say together; nil (after reporting) when they
    /// contradict each other or `payload.seal` (Sparkplug hosts cannot open envelopes).
    /// `section` is nil without a `sparkplug:` section, `.some(nil)` when it has problems.
    /// Returns nil on a problem, else the settings (nil for `json`).
    func checkSparkplug(format: MessageFormat?, section: SparkplugSettings??, sectionValue: YAMLValue?,
                        payload: PayloadSettings?, payloadValue: YAMLValue?,
                        commands: CommandSettings? = nil, commandsValue: YAMLValue? = nil,
                        document: YAMLValue) -> SparkplugSettings?? {
        guard let format else { return nil }  // mqtt: was reported
        switch format {
        case .json:
            if let sectionValue {
                sectionValue.report("sparkplug: is set but mqtt.format is json, so it would be ignored",
                                    hint: "add format: sparkplug under mqtt:, or remove the sparkplug: section")
                return nil
            }
            return .some(nil)
        case .sparkplug:
            guard let section else {
                log.report("sparkplug", at: document.mark, "mqtt.format is sparkplug but there is no sparkplug: section",
                           hint: "add sparkplug: { group_id: <Sparkplug group> }")
                return nil
            }
            guard let settings = section else { return nil }
            if let payload, payload.seal.algorithm != nil {
                log.report("payload.seal", at: payloadValue?.mark ?? document.mark,
                           "payload.seal cannot be used with mqtt.format: sparkplug: Sparkplug hosts cannot open sealed envelopes",
                           hint: "set payload.seal: none (TLS still protects the connection), or use format: json")
                return nil
            }
            if let commands, commands.enabled {
                // A DCMD carries no signature: only the broker's ACLs say who sent it.
                // That must be an explicit choice, and command keys would only pretend.
                if !commands.sparkplugUnsigned {
                    log.report("commands.enabled", at: commandsValue?.mark ?? document.mark,
                               "commands with mqtt.format: sparkplug are DCMD writes, and Sparkplug carries no signature: "
                               + "anyone the broker lets publish on spBv1.0/\(settings.groupID)/DCMD/... could move a device; "
                               + "only the broker's ACLs authenticate the sender",
                               hint: "restrict DCMD publishing with a broker ACL (docs/COMMANDS.md, Sparkplug DCMD), then set "
                               + "commands.sparkplug_unsigned: true; or set commands.enabled: false, or use format: json for signed commands")
                    return nil
                }
                if !commands.keys.isEmpty {
                    log.report("commands.keys", at: commandsValue?.mark ?? document.mark,
                               "command keys are never used with mqtt.format: sparkplug: a DCMD carries no signature to check",
                               hint: "remove keys: (listing them would suggest DCMD writes are signed), or use format: json")
                    return nil
                }
            }
            return .some(settings)
        }
    }
}
