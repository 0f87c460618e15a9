// mqtt.format and the sparkplug: section of gateway.yaml.
import Foundation
import Testing
@testable import GatewayConfig

private func document(format: String?, sparkplug: String?, payload: String = "") -> String {
    """
    gateway: { id: gw-01 }
    mqtt:
      host: broker.example
    \(format.map { "  format: \($0)" } ?? "")
    \(sparkplug ?? "")
    \(payload)
    devices:
      - name: boiler-1
        tcp: { host: 127.0.0.1 }
        tags: [{ name: t, table: input, address: 1, type: int16 }]
    """
}

@Suite struct SparkplugConfigTests {
    @Test func formatDefaultsToJSONWithoutASparkplugSection() throws {
        let config = try ConfigurationLoader.parse(yaml: document(format: nil, sparkplug: nil))
        #expect(config.mqtt.format == .json)
        #expect(config.sparkplug == nil)
    }

    @Test func sparkplugFormatWithGroupAndPrimaryHost() throws {
        let config = try ConfigurationLoader.parse(yaml: document(format: "sparkplug", sparkplug: """
        sparkplug:
          group_id: plant-a
          primary_host_id: scada-1
        """))
        #expect(config.mqtt.format == .sparkplug)
        #expect(config.sparkplug == SparkplugSettings(groupID: "plant-a", primaryHostID: "scada-1"))
    }

    @Test func sparkplugFormatNeedsTheSection() {
        let problems = rejectedProblems(document(format: "sparkplug", sparkplug: nil))
        #expect(problems.count == 1 && problems.first?.path == "sparkplug", "\(problems)")
        #expect(problems.first?.hint.contains("group_id") == true)
    }

    @Test func aSparkplugSectionWithJSONFormatIsRefusedRatherThanIgnored() {
        let problems = rejectedProblems(document(format: nil, sparkplug: "sparkplug: { group_id: plant-a }"))
        #expect(problems.count == 1 && problems.first?.path == "sparkplug", "\(problems)")
        #expect(problems.first?.hint.contains("format: sparkplug") == true)
    }

    @Test func anUnknownFormatIsNamed() {
        let problems = rejectedProblems(document(format: "spb", sparkplug: nil))
        #expect(problems.first?.path == "mqtt.format", "\(problems)")
    }

    /// tck-id-topic-structure-namespace-valid-group-id: no '+', '/', '#'.
    @Test(arguments: ["plant+a", "plant/a", "plant#a", "''"])
    func invalidSparkplugIDsAreRefused(id: String) {
        let groupProblems = rejectedProblems(document(format: "sparkplug", sparkplug: "sparkplug: { group_id: \(id) }"))
        #expect(groupProblems.map(\.path) == ["sparkplug.group_id"], "\(groupProblems)")
        #expect(groupProblems.first?.message.contains("not a valid Sparkplug id") == true, "\(groupProblems)")
        let hostProblems = rejectedProblems(document(format: "sparkplug",
                                             sparkplug: "sparkplug: { group_id: g, primary_host_id: \(id) }"))
        #expect(hostProblems.map(\.path) == ["sparkplug.primary_host_id"], "\(hostProblems)")
    }

    @Test func sealingIsRefusedWithSparkplug() throws {
        let directory = NSTemporaryDirectory() + "sparkplug-config-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let key = directory + "/k1.key"
        try String(repeating: "ab", count: 32).write(toFile: key, atomically: false, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: key)
        let payload = """
        payload:
          seal: aes-256-gcm
          keys: [{ id: k1, file: \(key) }]
        """
        // Sealing itself is fine with JSON ...
        _ = try ConfigurationLoader.parse(yaml: document(format: "json", sparkplug: nil, payload: payload))
        // ... and refused with Sparkplug, naming the reason.
        let problems = rejectedProblems(document(format: "sparkplug", sparkplug: "sparkplug: { group_id: g }", payload: payload))
        #expect(problems.map(\.path) == ["payload.seal"], "\(problems)")
        #expect(problems.first?.message.contains("Sparkplug hosts cannot open") == true)
    }

    /// With Sparkplug, `commands.enabled: true` (DCMD writes, unsigned) is refused at
    /// load unless `commands.sparkplug_unsigned: true`, naming the key and the reason.
    @Test func commandsWithSparkplugNeedSparkplugUnsigned() throws {
        let directory = NSTemporaryDirectory() + "sparkplug-config-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let key = directory + "/ops1.key"
        try String(repeating: "ab", count: 32).write(toFile: key, atomically: false, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: key)
        let commands = "commands: { enabled: true, keys: [{ id: ops1, file: \(key) }] }"
        // Commands themselves are fine with JSON ...
        _ = try ConfigurationLoader.parse(yaml: document(format: "json", sparkplug: nil, payload: commands))
        // ... off is fine with Sparkplug ...
        _ = try ConfigurationLoader.parse(yaml: document(format: "sparkplug", sparkplug: "sparkplug: { group_id: g }",
                                                         payload: "commands: { enabled: false }"))
        // ... and on is refused with Sparkplug unless sparkplug_unsigned says so, naming the key and why.
        let unsignedOff = "commands: { enabled: true }"
        let problems = rejectedProblems(document(format: "sparkplug", sparkplug: "sparkplug: { group_id: g }", payload: unsignedOff))
        #expect(problems.map(\.path) == ["commands.enabled"], "\(problems)")
        #expect(problems.first?.hint.contains("commands.sparkplug_unsigned: true") == true, "\(problems)")
        #expect(problems.first?.message.contains("no signature") == true, "\(problems)")
        let unsignedOn = "commands: { enabled: true, sparkplug_unsigned: true }"
        let config = try ConfigurationLoader.parse(yaml: document(format: "sparkplug", sparkplug: "sparkplug: { group_id: g }",
                                                                  payload: unsignedOn))
        #expect(config.commands.enabled && config.commands.sparkplugUnsigned && config.commands.keys.isEmpty)
        // Keys would suggest DCMD is signed: refused with Sparkplug.
        let withKeys = "commands: { enabled: true, sparkplug_unsigned: true, keys: [{ id: ops1, file: \(key) }] }"
        let keyProblems = rejectedProblems(document(format: "sparkplug", sparkplug: "sparkplug: { group_id: g }", payload: withKeys))
        #expect(keyProblems.map(\.path) == ["commands.keys"], "\(keyProblems)")
        // sparkplug_unsigned means nothing to JSON commands, which are always signed.
        let jsonUnsigned = "commands: { enabled: true, sparkplug_unsigned: true, keys: [{ id: ops1, file: \(key) }] }"
        let jsonProblems = rejectedProblems(document(format: "json", sparkplug: nil, payload: jsonUnsigned))
        #expect(jsonProblems.map(\.path) == ["commands.sparkplug_unsigned"], "\(jsonProblems)")
    }
}
