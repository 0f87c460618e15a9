// mqtt.bind_interface / mqtt.bind_address: where the uplink must connect from.
import Testing
@testable import GatewayConfig

private func document(_ mqttExtra: String) -> String {
    """
    gateway: { id: gw-1 }
    mqtt:
      host: 10.8.0.1
    \(mqttExtra)
    devices:
      - name: meter
        tcp: { host: 127.0.0.1, port: 502 }
        tags: [{ name: t, table: holding, address: 0, type: int16 }]
    """
}

private func paths(_ yaml: String) -> [String] {
    do {
        _ = try ConfigurationLoader.parse(yaml: yaml)
    } catch let error as ConfigurationError {
        return error.problems.map(\.path)
    } catch {}
    return []
}

@Suite struct MQTTBindingTests {
    @Test func bindInterfaceAndAddressAreRead() throws {
        let none = try ConfigurationLoader.parse(yaml: document(""))
        #expect(none.mqtt.bindInterface == nil && none.mqtt.bindAddress == nil)
        let interface = try ConfigurationLoader.parse(yaml: document("  bind_interface: wg0"))
        #expect(interface.mqtt.bindInterface == "wg0")
        let address = try ConfigurationLoader.parse(yaml: document("  bind_address: 10.8.0.2"))
        #expect(address.mqtt.bindAddress == "10.8.0.2")
        let v6 = try ConfigurationLoader.parse(yaml: document("  bind_address: fd00::2"))
        #expect(v6.mqtt.bindAddress == "fd00::2")
    }

    @Test func badBindingsAreRejectedWithTheirPath() {
        #expect(paths(document("  bind_interface: a-very-long-interface-name")) == ["mqtt.bind_interface"])
        #expect(paths(document("  bind_address: wg0")) == ["mqtt.bind_address"])
        #expect(paths(document("  bind_interface: wg0\n  bind_address: 10.8.0.2")) == ["mqtt.bind_interface"])
    }
}
