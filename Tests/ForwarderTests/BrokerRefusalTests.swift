// MQTT 5 refusals in the forwarder: a PUBACK with a failure reason code frees the
// window slot but deletes nothing; the row goes again after the next connect.
import Foundation
@testable import Gateway
import MQTTUplink
import Testing

@Suite struct BrokerRefusalTests {
    @Test func aRefusedMessageIsKeptCountedAndLoggedOnce() async throws {
        let forwarder = ForwarderHarness(maxInflight: 10)
        try await forwarder.commit(5)
        try await forwarder.connect(session: 1)
        let data = forwarder.uplink.sent.filter { $0.message.topic == ForwarderHarness.dataTopic }
        #expect(data.count == 5)
        let reason = "Not authorized (reason code 0x87)"
        for refused in data.prefix(2) {
            try await forwarder.send(.mqtt(.refused(session: 1, mid: refused.mid, reason: reason)))
        }
        try await forwarder.acknowledge()
        try await forwarder.tick()
        #expect(forwarder.outbox.deletedIDs.sorted() == [3, 4, 5], "refused rows are not deleted")
        #expect(forwarder.outbox.remainingIDs == [1, 2])
        #expect(forwarder.counters.value.refused == 2)
        #expect(forwarder.counters.value.published == 3)
        #expect(forwarder.logs.lines(containing: "the broker refused a message").count == 1, "logged once per reason")

        // After the next connect the kept rows go again.
        try await forwarder.disconnect(session: 1)
        try await forwarder.connect(session: 2)
        try await forwarder.acknowledge()
        try await forwarder.tick()
        #expect(forwarder.outbox.remainingIDs.isEmpty)
    }
}
