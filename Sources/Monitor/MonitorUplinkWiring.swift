// monitor.yaml's `mqtt:` section handed to the shared MQTT client: the same TLS,
// credentials, source binding and failover list (`servers`, `failback_after`) as a
// gateway's. The loader refuses `protocol: 5` for the monitor.
import Gateway
import GatewayConfig
import MQTTUplink

extension MonitorSettings {
    /// The uplink settings of the monitor's subscription for `mqtt`.
    public static func uplink(for mqtt: MQTTSettings) -> MQTTUplinkSettings {
        var uplink = MQTTUplinkSettings(
            host: mqtt.host, port: mqtt.port, clientID: mqtt.clientID,
            keepalive: mqtt.keepalive, reconnectMin: mqtt.reconnectMin, reconnectMax: mqtt.reconnectMax,
            // A persistent session: the broker keeps QoS 1 messages while the monitor restarts.
            cleanSession: false
        ).secured(by: mqtt)
        uplink.failover = mqtt.failover.map { MQTTServerAddress(host: $0.host, port: $0.port) }
        uplink.failbackAfter = mqtt.failbackAfter
        uplink.sourceBinding = mqtt.bindInterface.map { .interface($0) } ?? mqtt.bindAddress.map { .address($0) } ?? .any
        return uplink
    }
}
