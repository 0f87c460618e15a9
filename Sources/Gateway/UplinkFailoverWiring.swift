// `mqtt.servers` and `mqtt.failback_after` handed to the uplink.
import GatewayConfig
import MQTTUplink

extension MQTTUplinkSettings {
    /// These settings with the brokers after the first of `mqtt.servers` and `failback_after`.
    func failingOver(as mqtt: MQTTSettings) -> MQTTUplinkSettings {
        var settings = self
        settings.failover = mqtt.failover.map { MQTTServerAddress(host: $0.host, port: $0.port) }
        settings.failbackAfter = mqtt.failbackAfter
        settings.mqtt5 = mqtt.protocolVersion == .v5
        return settings
    }
}
