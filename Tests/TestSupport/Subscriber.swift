// An MQTT subscriber that records everything it receives, for assertions.
import Foundation
import Logging
import MQTTUplink
import Synchronization

/// One received message, with its arrival order.
public struct ReceivedMessage: Sendable {
    public var topic: String
    public var payload: [UInt8]
    public var retained: Bool
    /// When the subscriber's network thread handed it on.
    public var arrived: ContinuousClock.Instant

    public var text: String { String(decoding: payload, as: UTF8.self) }

    /// The payload as a JSON object (empty when it is not one).
    public var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(payload))) as? [String: Any] ?? [:]
    }
}

/// Subscribes to `filter` on every (re)connect and records what arrives.
public final class RecordingSubscriber: Sendable {
    /// What the uplink's event callback writes and the tests read.
    private final class Store: Sendable {
        let received = Mutex<[ReceivedMessage]>([])
        let connections = Atomic<Int>(0)
        let uplink = Mutex<MQTTUplink?>(nil)
    }

    private let uplink: MQTTUplink
    private let store = Store()

    /// - Parameter persistentSession: a clean-session=false session with a fixed client id,
    ///   so the broker queues QoS 1 messages while the subscriber reconnects.
    public init(port: Int, filter: String, persistentSession: Bool = false) {
        let store = self.store
        var logger = Logger(label: "test-subscriber")
        logger.logLevel = .error
        uplink = MQTTUplink(
            settings: MQTTUplinkSettings(host: "127.0.0.1", port: port, clientID: "test-sub-\(UUID().uuidString.prefix(8))",
                                         keepalive: .seconds(10), reconnectMin: .milliseconds(100),
                                         reconnectMax: .milliseconds(500), cleanSession: !persistentSession),
            logger: logger,
            onEvent: { event in
                switch event {
                case .connected:
                    try? store.uplink.withLock {
                        try $0?.subscribe(filter, qos: 1)
                        try $0?.subscribe("test/marker", qos: 1)
                    }
                    store.connections.add(1, ordering: .relaxed)
                case let .message(message):
                    store.received.withLock {
                        $0.append(ReceivedMessage(topic: message.topic, payload: message.payload, retained: message.retain,
                                                  arrived: .now))
                    }
                default:
                    break
                }
            })
        store.uplink.withLock { [uplink] in $0 = uplink }
        uplink.start()
    }

    deinit { uplink.requestStop() }

    public var messages: [ReceivedMessage] { store.received.withLock { $0 } }

    public func messages(on topic: String) -> [ReceivedMessage] { messages.filter { $0.topic == topic } }

    /// Waits until the subscriber is connected (and so subscribed).
    public func waitConnected(timeout: Duration = .seconds(10)) async throws {
        try await waitUntil("the test subscriber to connect", timeout: timeout) { store.connections.load(ordering: .relaxed) > 0 }
        // The SUBACK is not reported; a round trip through the broker proves the subscription.
        try await roundTrip()
    }

    /// Publishes a marker to itself and waits for it: everything the broker routed
    /// before the marker has arrived once this returns.
    public func roundTrip(timeout: Duration = .seconds(10)) async throws {
        let marker = "marker-\(UUID().uuidString)"
        let deadline = ContinuousClock.now + timeout
        while true {
            _ = try? uplink.publish(MQTTMessage(topic: "test/marker", payload: Array(marker.utf8), qos: 1))
            do {
                try await waitUntil("marker round trip", timeout: .milliseconds(500)) {
                    messages.contains { $0.topic == "test/marker" && $0.text == marker }
                }
                return
            } catch {
                guard ContinuousClock.now < deadline else { throw TimedOut(what: "a round trip through the broker") }
            }
        }
    }

    public func publish(_ topic: String, _ text: String, retain: Bool = false) throws {
        _ = try uplink.publish(MQTTMessage(topic: topic, payload: Array(text.utf8), qos: 1, retain: retain))
    }

    public func publishBytes(_ topic: String, _ payload: [UInt8], retain: Bool = false) throws {
        _ = try uplink.publish(MQTTMessage(topic: topic, payload: payload, qos: 1, retain: retain))
    }
}
