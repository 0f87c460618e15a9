// What an MQTT 5 broker announces in CONNACK about the connection, read for the log.
// libmosquitto applies the limits itself (see `MQTTUplink.runSession`); the uplink only
// reports them and warns where one undoes a setting.
import CMosquitto

/// The CONNACK properties that limit or change the connection (MQTT 5 §3.2.2.3); `nil`
/// where the broker did not send one (the default applies).
struct BrokerLimits: Equatable, Sendable {
    /// Most QoS 1/2 publishes the broker takes unacknowledged (libmosquitto holds back the rest).
    var receiveMaximum: UInt16?
    /// Largest packet the broker accepts (libmosquitto refuses a larger publish: `.brokerLimit`).
    var maximumPacketSize: UInt32?
    /// Topic aliases the broker accepts; the uplink sends none.
    var topicAliasMaximum: UInt16?
    /// The keepalive the broker imposes instead of the one sent (libmosquitto adopts it).
    var serverKeepAlive: UInt16?
    /// The session expiry the broker imposes instead of the one sent.
    var sessionExpiryInterval: UInt32?

    init(properties: OpaquePointer?) {
        var value16: UInt16 = 0
        var value32: UInt32 = 0
        func read16(_ identifier: mqtt5_property) -> UInt16? {
            mosquitto_property_read_int16(properties, Int32(identifier.rawValue), &value16, false) != nil ? value16 : nil
        }
        func read32(_ identifier: mqtt5_property) -> UInt32? {
            mosquitto_property_read_int32(properties, Int32(identifier.rawValue), &value32, false) != nil ? value32 : nil
        }
        receiveMaximum = read16(MQTT_PROP_RECEIVE_MAXIMUM)
        maximumPacketSize = read32(MQTT_PROP_MAXIMUM_PACKET_SIZE)
        topicAliasMaximum = read16(MQTT_PROP_TOPIC_ALIAS_MAXIMUM)
        serverKeepAlive = read16(MQTT_PROP_SERVER_KEEP_ALIVE)
        sessionExpiryInterval = read32(MQTT_PROP_SESSION_EXPIRY_INTERVAL)
    }

    /// The limits as log metadata (only those the broker sent).
    var metadata: [String: String] {
        var fields: [String: String] = [:]
        if let receiveMaximum { fields["receive_maximum"] = "\(receiveMaximum)" }
        if let maximumPacketSize { fields["maximum_packet_size"] = "\(maximumPacketSize)" }
        if let topicAliasMaximum { fields["topic_alias_maximum"] = "\(topicAliasMaximum)" }
        if let serverKeepAlive { fields["server_keepalive"] = "\(serverKeepAlive) s" }
        if let sessionExpiryInterval { fields["session_expiry"] = "\(sessionExpiryInterval) s" }
        return fields
    }

    /// The session expiry the broker granted, when it is shorter than the Will delay of
    /// `start` (the Will then comes after that expiry, not after the delay).
    func shortens(_ start: SessionStart) -> UInt32? {
        guard case let .resumableFor(seconds) = start, let granted = sessionExpiryInterval, granted < seconds
        else { return nil }
        return granted
    }
}
