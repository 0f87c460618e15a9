// `mqtt.will_delay` handed to the uplink.
import GatewayConfig
import MQTTUplink

extension MQTTUplinkSettings {
    /// These settings with the Will Delay Interval (MQTT 5; the loader refuses it under 3.1.1).
    func delayingWill(as mqtt: MQTTSettings) -> MQTTUplinkSettings {
        var settings = self
        settings.willDelay = mqtt.protocolVersion == .v5 ? mqtt.willDelay : nil
        return settings
    }
}
