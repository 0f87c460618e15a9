// Publish errors from the real libmosquitto against a real broker: each says what
// failed and whether retrying can help.
import Foundation
import Logging
import MQTTUplink
import Synchronization
import Testing
import TestSupport

@Suite struct UplinkPublishErrorTests {
    @Test func aTopicBeyondMQTTsLimitIsUnpublishableAndSaysWhy() async throws {
        let broker = try MosquittoBroker()
        try await broker.start()
        let connected = Atomic<Bool>(false)
        var logger = Logger(label: "publish-error-test")
        logger.logLevel = .critical
        let uplink = MQTTUplink(
            settings: MQTTUplinkSettings(host: "127.0.0.1", port: broker.port, clientID: "publish-error-test"),
            logger: logger) { event in
                if case .connected = event { connected.store(true, ordering: .releasing) }
            }
        uplink.start()
        try await waitUntil("the uplink to connect") { connected.load(ordering: .acquiring) }

        let topic = "edge/gw/" + String(repeating: "d", count: 70_000) + "/data"
        do {
            _ = try uplink.publish(MQTTMessage(topic: topic, payload: Array("{}".utf8), qos: 1))
            Issue.record("a 70,000-byte topic was accepted")
        } catch {
            #expect(error.kind == .unpublishable, "\(error)")
            #expect(error.cause.contains("65535"), "names the limit: \(error.cause)")
            #expect(error.description.count < 400, "the topic is cut in the message: \(error.description.count) characters")
        }
        do {
            _ = try uplink.publish(MQTTMessage(topic: "edge/gw/+/data", payload: [], qos: 1))
            Issue.record("a wildcard in a publish topic was accepted")
        } catch {
            #expect(error.kind == .unpublishable, "\(error)")
        }
        // The connection is still usable.
        let sent = try uplink.publish(MQTTMessage(topic: "edge/gw/ok/data", payload: [], qos: 1))
        #expect(sent.session == 1)

        await uplink.stop()
        do {
            _ = try uplink.publish(MQTTMessage(topic: "edge/gw/ok/data", payload: [], qos: 1))
            Issue.record("published after stop")
        } catch {
            #expect(error.kind == .notConnected)
        }
    }
}
