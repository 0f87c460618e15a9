// commands: and writable tags in gateway.yaml.
import Foundation
import Sealing
import Testing
@testable import GatewayConfig

private func document(commands: String, tags: String = "[{ name: sp, table: holding, address: 1, type: int16, writable: true }]") -> String {
    """
    gateway: { id: gw-01 }
    mqtt: { host: broker.example }
    \(commands)
    devices:
      - name: d
        tcp: { host: 127.0.0.1 }
        tags: \(tags)
    """
}

private func problems(_ yaml: String) -> [ConfigProblem] {
    do {
        _ = try ConfigurationLoader.parse(yaml: yaml)
        return []
    } catch let error as ConfigurationError {
        return error.problems
    } catch {
        return [ConfigProblem(path: "?", message: "\(error)", hint: "")]
    }
}

@Suite struct CommandsConfigTests {
    let keyFile: String

    init() throws {
        keyFile = NSTemporaryDirectory() + "ops1-\(UUID().uuidString.prefix(8)).key"
        try String(repeating: "ab", count: 32).write(toFile: keyFile, atomically: false, encoding: .utf8)
        chmod(keyFile, 0o600)
    }

    @Test func offByDefault() throws {
        let configuration = try ConfigurationLoader.parse(yaml: document(commands: ""))
        #expect(configuration.commands.enabled == false)
        #expect(configuration.commands.keys.isEmpty)
        #expect(configuration.devices[0].tags[0].writable == true)
    }

    @Test func enabledWithKeysAgeAndRate() throws {
        let configuration = try ConfigurationLoader.parse(yaml: document(commands: """
        commands: { enabled: true, keys: [{ id: ops1, file: \(keyFile) }], max_age: 5s, rate: 30/m }
        """, tags: "[{ name: sp, table: holding, address: 1, type: float32, writable: true, min: 20, max: 90 }]"))
        let commands = configuration.commands
        #expect(commands.enabled && commands.keys.map(\.id) == ["ops1"])
        #expect(commands.maxAge == .seconds(5))
        #expect(commands.rate == CommandSettings.Rate(count: 30, per: .seconds(60)))
        #expect(configuration.devices[0].tags[0].minimum == 20 && configuration.devices[0].tags[0].maximum == 90)
    }

    @Test(arguments: [
        ("commands: { enabled: true }", "commands.keys", "no command key"),
        ("commands: { enabled: true, keys: [{ id: ops1, file: KEY }], rate: fast }", "commands.rate", "count per time"),
        ("commands: { enabled: true, keys: [{ id: ops1, file: KEY }], max_age: 1h }", "commands.max_age", "too long"),
        ("commands: { enabled: true, keys: [{ id: ops1, file: /nonexistent/ops1.key }] }", "commands.keys[0].file", "does not exist"),
    ])
    func refusesWhatCannotWork(_ section: String, path: String, words: String) {
        let found = problems(document(commands: section.replacingOccurrences(of: "KEY", with: keyFile)))
        #expect(found.contains { $0.path == path && $0.message.contains(words) }, "\(found.map(\.description))")
    }

    @Test(arguments: [
        ("[{ name: p, table: input, address: 1, type: int16, writable: true }]", "read-only"),
        ("[{ name: p, table: discrete_inputs, address: 1, writable: true }]", "read-only"),
        ("[{ name: p, table: holding, address: 1, type: string, length: 4, writable: true }]", "string"),
        ("[{ name: p, table: holding, address: 1, type: bool, bit: 3, writable: true }]", "other 15 bits"),
        ("[{ name: p, table: holding, address: 1, type: int16, min: 1 }]", "only to writable"),
        ("[{ name: p, table: holding, address: 1, type: int16, writable: true, min: 5, max: 1 }]", "below min"),
        ("[{ name: p, table: coils, address: 1, writable: true, max: 1 }]", "not bool"),
    ])
    func refusesTagsThatCannotBeWritten(_ tags: String, words: String) {
        let found = problems(document(commands: "", tags: tags))
        #expect(found.contains { $0.path.hasPrefix("devices[0].tags[0]") && $0.message.contains(words) },
                "\(found.map(\.description))")
    }
}
