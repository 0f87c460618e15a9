// What the forwarder needs from the MQTT uplink and from the outbox, as two small
// protocols: the gateway plugs in `MQTTUplink` and `Outbox`, the unit tests small fakes.
import MQTTUplink
import Outbox

/// Publishing on the live MQTT connection.
protocol UplinkPublishing: Sendable {
    /// Queues `message` on the live connection; returns the session it went out on
    /// and the message id that session's PUBACK will carry. Never blocks.
    func publish(_ message: MQTTMessage) throws(MQTTPublishError) -> (session: Int, mid: Int32)
    /// The broker connection `session` is on (of `mqtt.servers`).
    func server(ofSession session: Int) -> MQTTServerAddress?
    /// MQTT 5 rather than 3.1.1: the protocol the connection speaks, so message
    /// properties reach the broker (3.1.1 has none).
    var mqtt5: Bool { get }
}

extension UplinkPublishing {
    func server(ofSession session: Int) -> MQTTServerAddress? { nil }
}

extension MQTTUplink: UplinkPublishing {
    /// What the uplink was set up to speak: the one place that knows (`mqtt.protocol`).
    var mqtt5: Bool { settings.mqtt5 }
}

/// The outbox as the forwarder uses it: read in id order, delete what the broker
/// acknowledged, report gaps, count.
protocol OutboxReading: Sendable {
    var boot: Int64 { get }
    var previousBoot: OutboxBootEnd? { get }
    var quarantinedPath: String? { get }
    var bootRecovery: BootRecovery? { get }
    func newestID() async throws -> Int64
    func lease(after id: Int64, max: Int) async throws -> [OutboxMessage]
    func discardUnpublishable(_ ids: [Int64]) async throws
    func pendingGaps() async throws -> [OutboxGap]
    func markGapsReported(_ gaps: [OutboxGap]) async throws
    func statistics() async throws -> OutboxStatistics
}

extension Outbox: OutboxReading {}
