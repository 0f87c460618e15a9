// When the forwarder asks for its next housekeeping tick: seldom while nothing waits
// (the live path runs on events), every quarter second while something waits for a retry.
import Foundation
@testable import Gateway
import GatewayConfig
import MQTTUplink
import Outbox
import Testing

@Suite struct TickCadenceTests {
    @Test func aQuietForwarderTicksSeldomAndABusyOneOften() async throws {
        let forwarder = ForwarderHarness(replay: ReplaySettings(), maxInflight: 10)
        try await forwarder.connect(session: 1)
        try await forwarder.tick()  // the gap check after the connect is done
        #expect(forwarder.loop.nextTick(now: forwarder.now) > ForwarderService.busyTick,
                "connected, nothing in flight, nothing to retry: no quarter-second ticks")
        #expect(forwarder.loop.nextTick(now: forwarder.now) <= ForwarderService.quietTick)

        try await forwarder.commit(3)
        #expect(forwarder.publishedIDs == [1, 2, 3])
        #expect(forwarder.loop.nextTick(now: forwarder.now) == ForwarderService.busyTick, "messages in flight")

        try await forwarder.acknowledge()
        #expect(forwarder.outbox.remainingIDs.isEmpty, "acknowledged and deleted")
        #expect(forwarder.loop.nextTick(now: forwarder.now) > ForwarderService.busyTick, "quiet again")
    }

    @Test func aMessagePutBackAfterATransientErrorKeepsTheQuarterSecondRetry() async throws {
        let forwarder = ForwarderHarness(replay: ReplaySettings(), maxInflight: 10)
        try await forwarder.connect(session: 1)
        forwarder.uplink.fail(topic: ForwarderHarness.dataTopic, with: .transient)
        try await forwarder.commit(1)
        #expect(forwarder.publishedIDs.isEmpty)
        #expect(forwarder.loop.nextTick(now: forwarder.now) == ForwarderService.busyTick, "the retry waits for the tick")
        forwarder.uplink.fail(topic: ForwarderHarness.dataTopic, with: nil)
        try await forwarder.tick()
        #expect(forwarder.publishedIDs == [1])
    }
}
