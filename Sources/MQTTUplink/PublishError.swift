// Why a publish could not be queued, classified so the caller knows whether to wait
// for a reconnect, retry later, or give up on the message.
import CMosquitto
import Foundation

/// A publish that libmosquitto (or the uplink) refused.
public struct MQTTPublishError: Error, Sendable, CustomStringConvertible {
    /// What the caller should make of it.
    public enum Kind: Sendable, Equatable {
        /// There is no live connection; a disconnect event follows (or came already).
        case notConnected
        /// This message can never be published, on any broker: its topic or payload
        /// breaks a limit of the MQTT protocol. Retrying it is pointless.
        case unpublishable
        /// This connection's broker refuses it (larger than its maximum packet size,
        /// a QoS it does not support); another broker or a reconfigured one may not.
        case brokerLimit
        /// Something that may pass (out of memory, a protocol state): try again later.
        case transient
    }

    public var kind: Kind
    /// libmosquitto's return code (`MOSQ_ERR_…`), nil when the uplink refused by itself.
    public var code: Int32?
    /// The cause in words: libmosquitto's meaning of `code` and, where one applies, the limit broken.
    public var cause: String
    public var topic: String
    public var payloadBytes: Int

    public init(kind: Kind, code: Int32?, cause: String, topic: String, payloadBytes: Int) {
        self.kind = kind
        self.code = code
        self.cause = cause
        self.topic = topic
        self.payloadBytes = payloadBytes
    }

    /// The topic cut for a log line (a 70,000-byte topic would flood it).
    public var topicForLog: String {
        let bytes = topic.utf8.count
        guard bytes > 200 else { return topic }
        return String(decoding: topic.utf8.prefix(120), as: UTF8.self) + "… (\(bytes) bytes)"
    }

    public var description: String {
        "publish to \(topicForLog) (\(payloadBytes) bytes payload) failed: \(cause)"
    }

    /// Classifies libmosquitto's `rc` from `mosquitto_publish`, right at the call
    /// (`errno` read before anything else runs).
    static func mosquitto(_ rc: Int32, errno savedErrno: Int32, topic: String, payloadBytes: Int) -> MQTTPublishError {
        let meaning = rc == MOSQ_ERR_ERRNO.rawValue
            ? String(cString: strerror(savedErrno)) : String(cString: mosquitto_strerror(rc))
        let topicBytes = topic.utf8.count
        let kind: Kind
        var cause = "\(meaning) (libmosquitto rc \(rc))"
        switch rc {
        case MOSQ_ERR_NO_CONN.rawValue, MOSQ_ERR_CONN_LOST.rawValue:
            kind = .notConnected
        case MOSQ_ERR_PAYLOAD_SIZE.rawValue:
            kind = .unpublishable
            cause += ": MQTT carries at most \(mqttMaxPayload) payload bytes"
        case MOSQ_ERR_OVERSIZE_PACKET.rawValue:
            kind = .brokerLimit
            cause += ": the message is larger than the broker's maximum packet size"
        case MOSQ_ERR_MALFORMED_UTF8.rawValue, MOSQ_ERR_INVAL.rawValue:
            kind = .unpublishable
            if topicBytes > mqttMaxTopicBytes {
                cause += ": the topic is \(topicBytes) bytes, MQTT allows at most \(mqttMaxTopicBytes)"
            } else {
                cause += ": an MQTT topic must be valid UTF-8 without NUL, + or #"
            }
        case MOSQ_ERR_QOS_NOT_SUPPORTED.rawValue:
            kind = .brokerLimit
            cause += ": the broker does not support this QoS"
        default:
            kind = .transient
        }
        return MQTTPublishError(kind: kind, code: rc, cause: cause, topic: topic, payloadBytes: payloadBytes)
    }
}

/// MQTT's limits on what one PUBLISH may carry.
let mqttMaxTopicBytes = 65_535
let mqttMaxPayload = 268_435_455
