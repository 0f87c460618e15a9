// The `commands:` section and the `writable`/`min`/`max` keys of tags.
import Modbus
import Sealing

extension SchemaReader {
    /// `format`: the wire scheme (nil when `mqtt:` had problems; keys are then required
    /// as for JSON). Sparkplug's rules for commands are checked by `checkSparkplug`.
    func commandSettings(_ value: YAMLValue, format: MessageFormat?) -> CommandSettings? {
        guard var section = MappingReader(value, hint: "write commands: as a mapping with enabled:, keys:, max_age: and rate:")
        else { return nil }
        let defaults = CommandSettings()
        var failed = false
        let enabledValue = section.optional("enabled")
        let enabled = enabledValue.map { $0.boolean(hint: "write enabled: true to accept commands, false to subscribe to none") }
            ?? false
        var keys: [SealingKey] = []
        if let keysValue = section.optional("keys") {
            if let items = keysValue.list(itemName: "key", hint: "write each key as - { id: ops1, file: /etc/edge-gateway/ops1.key }") {
                var seen: [String: Int] = [:]
                for (index, item) in items.enumerated() {
                    guard let key = payloadKey(item) else { failed = true; continue }
                    if let earlier = seen[key.key.id] {
                        item.report("key id '\(key.key.id)' is already used by keys[\(earlier)]",
                                    hint: "give each command key its own id; the id names the key in every command")
                        failed = true
                    } else {
                        seen[key.key.id] = index
                        keys.append(key.key)
                    }
                }
            } else { failed = true }
        }
        let maxAge = section.optional("max_age")
            .map { $0.duration(in: .seconds(1) ... .seconds(300), rangeHint: "1s...5m; a command older than this is refused") }
            ?? defaults.maxAge
        let maxSkew = section.optional("max_skew")
            .map { $0.duration(in: .zero ... .seconds(60), rangeHint: "0s...60s; how far ahead a command's clock may be") }
            ?? defaults.maxSkew
        let rate = section.optional("rate").map(commandRate) ?? defaults.rate
        let unsignedValue = section.optional("sparkplug_unsigned")
        let unsigned = unsignedValue.map {
            $0.boolean(hint: "write sparkplug_unsigned: true to run Sparkplug DCMD writes authenticated by broker ACLs only")
        } ?? false
        section.finish()

        if let unsignedValue, unsigned == true, format == .json {
            unsignedValue.report("sparkplug_unsigned applies only with mqtt.format: sparkplug; JSON commands are always signed",
                                 hint: "remove sparkplug_unsigned:, or set format: sparkplug under mqtt:")
            failed = true
        }
        if enabled == true, keys.isEmpty, !failed, format != .sparkplug {
            log.report(value.path + ".keys", at: value.keyMark ?? value.mark,
                       "commands are enabled but no command key is listed",
                       hint: "make one with `edge-gateway keygen /etc/edge-gateway/ops1.key` and add keys: [{ id: ops1, file: /etc/edge-gateway/ops1.key }]")
            failed = true
        }
        guard !failed, let enabled, let maxAge, let maxSkew, let rate, let unsigned else { return nil }
        return CommandSettings(enabled: enabled, keys: keys, maxAge: maxAge, maxSkew: maxSkew, rate: rate,
                               sparkplugUnsigned: unsigned)
    }

    /// `5/s`, `30/m`, `1/10s`: a count per duration.
    private func commandRate(_ value: YAMLValue) -> CommandSettings.Rate? {
        let hint = "write a count per time, e.g. 5/s, 30/m or 1/10s"
        guard let text = value.string(hint: hint) else { return nil }
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let count = Int(String(parts[0]).trimmingSpaces), (1...10_000).contains(count) else {
            value.report("rate '\(Excerpt.of(text))' is not a count per time (count 1...10000)", hint: hint)
            return nil
        }
        var unit = String(parts[1]).trimmingSpaces
        if let first = unit.first, first.isLetter { unit = "1" + unit }
        guard let per = DurationSyntax.parse(unit), per >= .milliseconds(100), per <= .seconds(86_400) else {
            value.report("rate '\(Excerpt.of(text))' has no time unit between 100ms and 1d", hint: hint)
            return nil
        }
        return CommandSettings.Rate(count: count, per: per)
    }

    /// What a tag says about writing it, read before the tag's mapping is finished.
    struct WriteGuard {
        var writable = false
        var writableValue: YAMLValue?
        var minimum: Double?
        var minimumValue: YAMLValue?
        var maximum: Double?
        var maximumValue: YAMLValue?
    }

    /// `writable:`, `min:` and `max:` of a tag; nil after a problem.
    func writeGuard(_ section: inout MappingReader) -> WriteGuard? {
        var guardSettings = WriteGuard()
        var failed = false
        if let value = section.optional("writable") {
            guardSettings.writableValue = value
            if let writable = value.boolean(hint: "write writable: true to let signed commands set this tag") {
                guardSettings.writable = writable
            } else { failed = true }
        }
        if let value = section.optional("min") {
            guardSettings.minimumValue = value
            if let number = value.finiteNumber() { guardSettings.minimum = number } else { failed = true }
        }
        if let value = section.optional("max") {
            guardSettings.maximumValue = value
            if let number = value.finiteNumber() { guardSettings.maximum = number } else { failed = true }
        }
        return failed ? nil : guardSettings
    }

    /// Reports what cannot be written; true when the guard fits the tag.
    func checkWriteGuard(_ settings: WriteGuard, of tag: TagConfiguration) -> Bool {
        var fits = true
        if settings.writable, let value = settings.writableValue {
            if tag.table == .input || tag.table == .discreteInputs {
                value.report("\(tag.table.rawValue) are read-only in Modbus: tag '\(tag.name)' cannot be writable",
                             hint: "only holding registers and coils can be written; remove writable:")
                fits = false
            } else if tag.type == .string {
                value.report("string tags cannot be writable", hint: "remove writable: (numbers and coils can be written)")
                fits = false
            } else if tag.bit != nil {
                value.report("a bit of a register cannot be writable: writing it would rewrite the other 15 bits",
                             hint: "remove writable:, or map the bit to a coil on the device")
                fits = false
            }
        }
        for bound in [settings.minimumValue, settings.maximumValue].compactMap({ $0 }) {
            if !settings.writable {
                bound.report("\(bound.name): bounds a commanded value and applies only to writable tags",
                             hint: "add writable: true, or remove \(bound.name):")
                fits = false
            } else if tag.type == .bool {
                bound.report("\(bound.name): applies only to numbers, not bool tags", hint: "remove \(bound.name):")
                fits = false
            }
        }
        if let low = settings.minimum, let high = settings.maximum, low > high, let value = settings.maximumValue {
            value.report("max \(high) is below min \(low)", hint: "make max at least min")
            fits = false
        }
        return fits
    }
}
