// How a connection starts its MQTT session, and the MQTT 5 properties that follow from
// it (Session Expiry Interval in CONNECT, Will Delay Interval on the Will).
import CMosquitto
import Foundation

/// What the broker keeps of a connection once it is gone.
///
/// MQTT 5 (§3.1.2.5, §3.1.3.2.2): the broker publishes the Will when the Will Delay
/// Interval has passed or the session ends, whichever comes first; a new connection with
/// Clean Start = 1 ends the old session, which publishes its Will at once. So a Will
/// delay needs a session that outlives the connection by at least the delay, and
/// reconnects that resume it (Clean Start = 0).
///
/// What a resumed session means for the outbox: nothing is taken from the broker's
/// session. Each connection uses a fresh libmosquitto handle, which holds no message of
/// an earlier connection, so libmosquitto resends nothing; every row the broker did not
/// acknowledge on the old connection is still in the outbox and is sent again with a
/// new packet id (a duplicate at worst, deduplicated on `(boot, seq)`). A QoS 1 publish
/// leaves no state in the broker's session; a QoS 2 publish does (its packet id until
/// PUBREL), and a new message reusing that id would be taken for the old one and
/// dropped: the configuration refuses `will_delay` with `qos: 2` for that reason. What
/// the broker queued for the gateway's subscriptions while it was away is delivered on
/// the resumed session: the configuration refuses `will_delay` with commands, which must
/// never run after an outage.
enum SessionStart: Equatable {
    /// Clean Start = 1 and no session expiry: the broker keeps nothing and publishes
    /// the Will as soon as the connection is gone.
    case clean
    /// MQTT 5: Clean Start = 0, Session Expiry Interval and Will Delay Interval both
    /// `seconds`: a reconnect within that time resumes the session and the broker never
    /// publishes the Will of the connection that was lost.
    case resumableFor(seconds: UInt32)

    init(_ settings: MQTTUplinkSettings) {
        if settings.mqtt5, let delay = settings.willDelay, let seconds = MQTTInterval.seconds(delay), seconds > 0 {
            self = .resumableFor(seconds: seconds)
        } else {
            self = .clean
        }
    }

    /// The Clean Start flag (`clean_session` of `mosquitto_new`).
    var cleanStart: Bool { self == .clean }

    /// The CONNECT properties; `nil` for none. The caller frees the list.
    func connectProperties() throws(MQTTError) -> OpaquePointer? {
        guard case let .resumableFor(seconds) = self else { return nil }
        return try MQTTProperties.single(MQTT_PROP_SESSION_EXPIRY_INTERVAL, seconds, "the session expiry interval")
    }

    /// The Will's properties; `nil` for none. On success `mosquitto_will_set_v5` owns the
    /// list; on failure the caller frees it.
    func willProperties() throws(MQTTError) -> OpaquePointer? {
        guard case let .resumableFor(seconds) = self else { return nil }
        return try MQTTProperties.single(MQTT_PROP_WILL_DELAY_INTERVAL, seconds, "the Will delay interval")
    }
}

/// MQTT 5 intervals are whole seconds in a four-byte integer.
enum MQTTInterval {
    /// `duration` in whole seconds (rounded up, so an interval is never shorter than
    /// configured); `nil` beyond four bytes.
    static func seconds(_ duration: Duration) -> UInt32? {
        let (whole, attoseconds) = duration.components
        let seconds = whole + (attoseconds > 0 ? 1 : 0)
        return UInt32(exactly: max(seconds, 0))
    }
}

/// Builds libmosquitto property lists.
enum MQTTProperties {
    /// A list of one four-byte integer property.
    static func single(_ identifier: mqtt5_property, _ value: UInt32, _ what: String) throws(MQTTError) -> OpaquePointer? {
        var list: OpaquePointer? = nil
        let rc = mosquitto_property_add_int32(&list, Int32(identifier.rawValue), value)
        let code = errno
        guard rc == MOSQ_ERR_SUCCESS.rawValue else {
            mosquitto_property_free_all(&list)
            throw MQTTError.mosquitto(rc, errno: code, "set \(what)")
        }
        return list
    }
}
