// `mqtt.bind_interface` / `mqtt.bind_address` from the configuration to the uplink.
import MQTTUplink

extension MQTTUplinkSettings {
    /// These settings with the configured source binding (interface wins; the
    /// loader never lets both be set).
    func bound(interface: String?, address: String?) -> MQTTUplinkSettings {
        var settings = self
        if let interface {
            settings.sourceBinding = .interface(interface)
        } else if let address {
            settings.sourceBinding = .address(address)
        }
        return settings
    }
}
