// What check-config says about settings that some brokers do not carry: '.' in a
// topic level (RabbitMQ delivers it as '/') and QoS 2 (RabbitMQ answers PUBACK).
import Testing
@testable import GatewayConfig

@Suite struct BrokerInteropConfigTests {
    private func document(gateway: String = "id: gw-01", device: String = "boiler-1", qos: String? = nil) -> String {
        """
        gateway: { \(gateway) }
        mqtt:
          host: broker
        \(qos.map { "  qos: \($0)" } ?? "")
        devices:
          - name: \(device)
            tcp: { host: 127.0.0.1 }
            tags:
              - { name: t, table: holding, address: 0, type: int16 }
        """
    }

    private func refusal(_ yaml: String) -> [ConfigProblem] {
        do {
            _ = try ConfigurationLoader.parse(yaml: yaml)
            Issue.record("accepted: \(yaml)")
        } catch let error as ConfigurationError {
            return error.problems
        } catch {
            Issue.record("unexpected \(error)")
        }
        return []
    }

    @Test func aDotInTheGatewayIdIsRefusedAndSaysWhy() {
        let problems = refusal(document(gateway: "id: plant.a"))
        #expect(problems.map(\.path) == ["gateway.id"])
        let problem = problems.first
        #expect(problem?.message.contains("gateway id 'plant.a' contains '.'") == true, "\(problems)")
        #expect(problem?.message.contains("RabbitMQ") == true)
        #expect(problem?.hint.contains("plant-a") == true && problem?.hint.contains("allow_dots_in_topics") == true)
    }

    @Test func aDotInADeviceNameOrThePrefixIsRefused() {
        #expect(refusal(document(device: "boiler.1")).map(\.path) == ["devices[0].name"])
        #expect(refusal(document(gateway: "id: gw-01, topic_prefix: plant.a/edge")).map(\.path) == ["gateway.topic_prefix"])
    }

    @Test func allowDotsInTopicsTurnsTheRefusalsIntoWarnings() throws {
        let config = try ConfigurationLoader.parse(yaml: document(
            gateway: "id: plant.a, topic_prefix: site.b, allow_dots_in_topics: true", device: "boiler.1"))
        #expect(config.gateway.id == "plant.a" && config.devices.first?.name == "boiler.1")
        #expect(Set(config.warnings.map(\.path)) == ["gateway.id", "gateway.topic_prefix", "devices[0].name"],
                "\(config.warnings.map(\.description))")
        #expect(config.warnings.allSatisfy { $0.message.contains("RabbitMQ") })
    }

    @Test func allowDotsInTopicsIsABoolean() {
        #expect(refusal(document(gateway: "id: gw-01, allow_dots_in_topics: yes")).map(\.path) == ["gateway.allow_dots_in_topics"])
    }

    @Test func qos2IsAcceptedWithAWarning() throws {
        let config = try ConfigurationLoader.parse(yaml: document(qos: "2"))
        #expect(config.mqtt.qos == 2)
        #expect(config.warnings.map(\.path) == ["mqtt.qos"])
        #expect(config.warnings.first?.message.contains("QoS 2 is not supported by some brokers") == true)
        #expect(config.warnings.first?.hint.contains("qos: 1") == true)
        #expect(try ConfigurationLoader.parse(yaml: document(qos: "1")).warnings.isEmpty)
    }
}

@Suite struct FailoverConfigTests {
    private func mqtt(_ body: String) -> String {
        """
        gateway: { id: gw-01 }
        mqtt:
        \(body)
        devices:
          - name: boiler-1
            tcp: { host: 127.0.0.1 }
            tags:
              - { name: t, table: holding, address: 0, type: int16 }
        """
    }

    private func paths(_ yaml: String) -> [String] {
        do {
            _ = try ConfigurationLoader.parse(yaml: yaml)
            Issue.record("accepted: \(yaml)")
        } catch let error as ConfigurationError {
            return error.problems.map(\.path)
        } catch {
            Issue.record("unexpected \(error)")
        }
        return []
    }

    @Test func serversListTheBrokersInOrder() throws {
        let config = try ConfigurationLoader.parse(yaml: mqtt("""
          servers:
            - { host: a.example }
            - { host: b.example, port: 1884 }
          failback_after: 2m
        """))
        #expect(config.mqtt.servers == [MQTTServer(host: "a.example", port: 1883), MQTTServer(host: "b.example", port: 1884)])
        #expect(config.mqtt.host == "a.example" && config.mqtt.port == 1883)
        #expect(config.mqtt.failbackAfter == .seconds(120))
    }

    @Test func aSingleHostStaysValidWithNoFailover() throws {
        let config = try ConfigurationLoader.parse(yaml: mqtt("  host: broker"))
        #expect(config.mqtt.servers == [MQTTServer(host: "broker", port: 1883)])
        #expect(config.mqtt.failbackAfter == .seconds(300))
    }

    @Test func serversWithTLSDefaultTo8883() throws {
        let config = try ConfigurationLoader.parse(yaml: mqtt("""
          servers: [{ host: a }, { host: b }]
          tls: { insecure_skip_verify: true }
        """))
        #expect(config.mqtt.servers.map(\.port) == [8883, 8883])
    }

    @Test func serversAndHostTogetherAreRefused() {
        #expect(paths(mqtt("""
          host: a
          servers: [{ host: b }]
        """)).contains("mqtt.servers"))
    }

    @Test func emptyOrDuplicateServersAreRefused() {
        #expect(paths(mqtt("  servers: []")) == ["mqtt.servers"])
        #expect(paths(mqtt("  servers: [{ host: a }, { host: a, port: 1883 }]")) == ["mqtt.servers"])
        #expect(paths(mqtt("  servers: [{ port: 1883 }]")) == ["mqtt.servers[0].host"])
    }
}

@Suite struct ProtocolConfigTests {
    private func mqtt(_ extra: String) -> String {
        """
        gateway: { id: gw-01 }
        mqtt: { host: broker\(extra) }
        devices:
          - name: boiler-1
            tcp: { host: 127.0.0.1 }
            tags:
              - { name: t, table: holding, address: 0, type: int16 }
        """
    }

    @Test func protocolDefaultsTo311AndTakes5() throws {
        #expect(try ConfigurationLoader.parse(yaml: mqtt("")).mqtt.protocolVersion == .v311)
        #expect(try ConfigurationLoader.parse(yaml: mqtt(", protocol: 5")).mqtt.protocolVersion == .v5)
        #expect(try ConfigurationLoader.parse(yaml: mqtt(", protocol: 3.1.1")).mqtt.protocolVersion == .v311)
    }

    @Test func anUnknownProtocolIsRefused() {
        do {
            _ = try ConfigurationLoader.parse(yaml: mqtt(", protocol: 4"))
            Issue.record("protocol 4 accepted")
        } catch let error as ConfigurationError {
            #expect(error.problems.map(\.path) == ["mqtt.protocol"])
            #expect(error.problems.first?.hint.contains("3.1.1, 5") == true, "\(error.problems)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }
}
