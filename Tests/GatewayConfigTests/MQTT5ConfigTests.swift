// mqtt.will_delay and mqtt.message_expiry: MQTT 5 properties, refused where they
// cannot work (3.1.1, QoS 2 on a resumed session, Sparkplug B).
import Foundation
import Testing
@testable import GatewayConfig

@Suite struct MQTT5ConfigTests {
    private func document(_ mqtt: String, sparkplug: Bool = false) -> String {
        """
        gateway: { id: gw-01 }
        mqtt: { host: broker, \(mqtt) }
        \(sparkplug ? "sparkplug: { group_id: plant }" : "")
        devices:
          - name: boiler-1
            tcp: { host: 127.0.0.1 }
            tags:
              - { name: t, table: holding, address: 0, type: int16 }
        """
    }

    @Test func bothAreOffByDefault() throws {
        let config = try ConfigurationLoader.parse(yaml: document("protocol: 5"))
        #expect(config.mqtt.willDelay == nil)
        #expect(config.mqtt.messageExpiry == nil)
    }

    @Test func bothAreReadUnderMQTT5() throws {
        let config = try ConfigurationLoader.parse(yaml: document("protocol: 5, will_delay: 10s, message_expiry: 1h"))
        #expect(config.mqtt.willDelay == .seconds(10))
        #expect(config.mqtt.messageExpiry == .seconds(3600))
    }

    @Test func bothAreRefusedUnderMQTT311AndSayWhy() {
        for key in ["will_delay", "message_expiry"] {
            for version in ["", "protocol: 3.1.1, "] {
                let problems = rejectedProblems(document("\(version)\(key): 10s"))
                #expect(problems.map(\.path) == ["mqtt.\(key)"], "\(problems)")
                #expect(problems.first?.message.contains("needs MQTT 5") == true, "\(problems)")
                #expect(problems.first?.hint.contains("protocol: 5") == true, "\(problems)")
            }
        }
    }

    @Test func fractionsOfASecondAreRefused() {
        let problems = rejectedProblems(document("protocol: 5, will_delay: 1500ms"))
        #expect(problems.map(\.path) == ["mqtt.will_delay"])
        #expect(problems.first?.message.contains("whole number of seconds") == true, "\(problems)")
    }

    @Test func willDelayWithQoS2IsRefusedAndSaysWhy() {
        let problems = rejectedProblems(document("protocol: 5, qos: 2, will_delay: 10s"))
        #expect(problems.map(\.path) == ["mqtt.will_delay"], "\(problems)")
        #expect(problems.first?.message.contains("packet id") == true, "\(problems)")
        #expect(problems.first?.hint.contains("qos: 1") == true)
    }

    @Test func willDelayWithSparkplugIsRefusedAndSaysWhy() {
        let problems = rejectedProblems(document("protocol: 5, format: sparkplug, will_delay: 10s", sparkplug: true))
        #expect(problems.map(\.path) == ["mqtt.will_delay"], "\(problems)")
        #expect(problems.first?.message.contains("Clean Start") == true, "\(problems)")
    }

    /// A resumed session keeps the command subscription: the broker would queue a command
    /// sent during an outage and deliver it after the reconnect.
    @Test func willDelayWithCommandsIsRefusedAndSaysWhy() throws {
        let keyFile = NSTemporaryDirectory() + "ops1-\(UUID().uuidString.prefix(8)).key"
        try String(repeating: "ab", count: 32).write(toFile: keyFile, atomically: false, encoding: .utf8)
        chmod(keyFile, 0o600)
        defer { try? FileManager.default.removeItem(atPath: keyFile) }
        let yaml = """
        gateway: { id: gw-01 }
        mqtt: { host: broker, protocol: 5, will_delay: 10s }
        commands: { enabled: true, keys: [{ id: ops1, file: \(keyFile) }] }
        devices:
          - name: boiler-1
            tcp: { host: 127.0.0.1 }
            tags:
              - { name: t, table: holding, address: 0, type: int16, writable: true }
        """
        let problems = rejectedProblems(yaml)
        #expect(problems.map(\.path) == ["commands.enabled"], "\(problems)")
        #expect(problems.first?.message.contains("run after the reconnect") == true, "\(problems)")
        let allowed = try ConfigurationLoader.parse(yaml: yaml.replacingOccurrences(of: "enabled: true", with: "enabled: false"))
        #expect(allowed.mqtt.willDelay == .seconds(10))
    }

    @Test func messageExpiryWorksWithSparkplugAndQoS2() throws {
        let config = try ConfigurationLoader.parse(yaml: document("protocol: 5, qos: 2, message_expiry: 30s"))
        #expect(config.mqtt.messageExpiry == .seconds(30))
    }
}
