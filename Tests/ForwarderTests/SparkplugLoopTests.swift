// The forwarding loop as a Sparkplug edge node, in process against the fakes: births
// first, seq taken only by queued messages, historical replay, NDEATH at a clean stop,
// the primary host gate.
import Foundation
@testable import Gateway
import GatewayConfig
import Logging
import Modbus
import MQTTUplink
import Outbox
import SparkplugB
import SwiftProtobuf
import Testing

private let device = DeviceConfiguration(name: "boiler-1", transport: .tcp(host: "127.0.0.1", port: 502),
                                         tags: [TagConfiguration(name: "t", table: .holding, address: 0, type: .int16)])

private func edge(primaryHost: String? = nil, bdSeq: UInt8 = 5) -> SparkplugEdge {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    return SparkplugEdge(settings: SparkplugSettings(groupID: "g", primaryHostID: primaryHost),
                         identity: ForwarderHarness.identity, devices: [device], logger: logger,
                         nextBdSeq: { bdSeq })
}

private extension ForwarderHarness {
    /// Commits `count` stored DDATA rows of boiler-1.
    func commitSparkplug(_ count: Int, node: SparkplugNode) async throws {
        let poll = DevicePoll(device: "boiler-1", timestamp: Date(timeIntervalSince1970: 1_000),
                              readings: [.init(tag: "t", value: .success(.integer(-7)))])
        let newest = outbox.commit(count, topic: node.topics.ddata(device: "boiler-1")) { id in
            node.storedDData(poll, boot: 1, seq: id)
        }
        try await send(.outboxCommitted(newestID: newest))
    }

    /// (topic verb, seq, historical) of each Sparkplug message sent.
    var sparkplugSent: [(verb: String, seq: UInt64?, historical: Bool)] {
        uplink.sent.compactMap { sent in
            let parts = sent.message.topic.split(separator: "/")
            guard parts.first == "spBv1.0", let payload = try? SparkplugPayload(serializedBytes: sent.message.payload)
            else { return nil }
            return (String(parts[2]), payload.hasSeq ? payload.seq : nil,
                    !payload.metrics.isEmpty && payload.metrics.allSatisfy { $0.isHistorical })
        }
    }
}

@Suite struct SparkplugLoopTests {
    /// tck-id-topics-nbirth-seq-num, -dbirth-seq, -ddata-seq-num; no DDATA before the births;
    /// rows committed before the births are historical.
    @Test func birthsFirstThenDataWithConsecutiveSeqTakenOnlyWhenQueued() async throws {
        let edge = edge()
        let harness = ForwarderHarness(sparkplug: edge)
        let node = edge.node
        try await harness.commitSparkplug(2, node: node)
        _ = edge.will(session: 1)  // the uplink thread builds the Will before CONNECT
        try await harness.connect(session: 1)
        #expect(harness.sparkplugSent.map(\.verb) == ["NBIRTH", "DBIRTH", "DDATA", "DDATA"])
        #expect(harness.sparkplugSent.map(\.seq) == [0, 1, 2, 3])
        #expect(harness.sparkplugSent.suffix(2).allSatisfy { $0.historical })
        let nbirth = try SparkplugPayload(serializedBytes: harness.uplink.sent[0].message.payload)
        #expect(nbirth.metrics.first { $0.name == "bdSeq" }?.longValue == 5)
        #expect(harness.uplink.sent[0].message.qos == 0 && !harness.uplink.sent[0].message.retain)

        // A publish that is not queued takes no seq; the retry gets the next one.
        harness.uplink.fail(topic: node.topics.ddata(device: "boiler-1"), with: .transient)
        try await harness.commitSparkplug(1, node: node)
        harness.uplink.fail(topic: node.topics.ddata(device: "boiler-1"), with: nil)
        try await harness.tick()
        #expect(harness.sparkplugSent.map(\.seq) == [0, 1, 2, 3, 4])
        #expect(harness.sparkplugSent.last?.historical == false)
    }

    /// tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath: NDEATH with this
    /// session's bdSeq (and no seq) is the last word of a clean stop.
    @Test func cleanStopSendsNDeathWithTheSessionsBdSeq() async throws {
        let edge = edge(bdSeq: 9)
        let harness = ForwarderHarness(sparkplug: edge)
        _ = edge.will(session: 1)
        try await harness.connect(session: 1)
        try await harness.send(.shutdown)
        let last = try #require(harness.uplink.sent.last)
        #expect(last.message.topic == edge.node.topics.ndeath && last.message.qos == 1)
        let ndeath = try SparkplugPayload(serializedBytes: last.message.payload)
        #expect(!ndeath.hasSeq && ndeath.metrics.map(\.longValue) == [9])
        #expect(try await harness.acknowledge() == .stop)
    }

    /// tck-id-message-flow-edge-node-birth-publish-phid-wait(-online, -timestamp): no NBIRTH before
    /// the primary host's online STATE, an older STATE is ignored.
    @Test func primaryHostGatesTheBirths() async throws {
        let edge = edge(primaryHost: "scada-1")
        let harness = ForwarderHarness(sparkplug: edge)
        try await harness.commitSparkplug(1, node: edge.node)
        _ = edge.will(session: 1)
        try await harness.connect(session: 1)
        #expect(harness.sparkplugSent.isEmpty)
        let topic = SparkplugTopics.state(host: "scada-1")
        func state(_ json: String) -> ForwarderEvent {
            .mqtt(.message(MQTTMessage(topic: topic, payload: Array(json.utf8), qos: 1, retain: true)))
        }
        try await harness.send(state(#"{"online":false,"timestamp":200}"#))
        try await harness.send(state(#"{"online":true,"timestamp":100}"#))  // older: ignored
        #expect(harness.sparkplugSent.isEmpty)
        try await harness.send(state(#"{"online":true,"timestamp":300}"#))
        #expect(harness.sparkplugSent.map(\.verb) == ["NBIRTH", "DBIRTH", "DDATA"])
        #expect(harness.sparkplugSent.last?.historical == true)
    }

    /// Timestamps: DDATA rows polled while the wall clock was 3 h slow and unsynchronised
    /// go out, once a synchronised reading of the same kernel boot is seen, with every
    /// metric timestamp at the true poll time (as the JSON path corrects `ts`); a row
    /// polled synchronised keeps its poll time.
    @Test func metricTimestampsOfUnsynchronisedPollsAreCorrected() async throws {
        let trueWallAtBoot: Int64 = 1_795_000_000_000
        let threeHours: Int64 = 3 * 3600 * 1000
        let clock = ManualClock(wallAtBoot: trueWallAtBoot - threeHours, sync: .unsynchronised)
        let edge = edge()
        let node = edge.node
        let harness = ForwarderHarness(timeSource: clock, sparkplug: edge)
        func commitPoll() async throws -> Int64 {
            let reading = clock.now()
            let poll = DevicePoll(device: "boiler-1", clock: reading,
                                  readings: [.init(tag: "t", value: .success(.integer(3)))])
            let measured = MeasuredAt(boottime: reading.boottime, kernelBootID: reading.bootID,
                                      synchronised: reading.sync == .synchronised)
            let newest = harness.outbox.commit([(node.storedDData(poll, boot: 1, seq: 1), measured)],
                                               topic: node.topics.ddata(device: "boiler-1"))
            try await harness.send(.outboxCommitted(newestID: newest))
            return trueWallAtBoot + reading.boottime / 1_000_000
        }
        let unsynchronisedTrueTime = try await commitPoll()
        clock.change { $0.boottime += 1_000_000_000; $0.wallAtBoot = trueWallAtBoot; $0.sync = .synchronised }
        let synchronisedTime = try await commitPoll()
        _ = edge.will(session: 1)
        try await harness.connect(session: 1)

        let ddata = try harness.uplink.sent.filter { $0.message.topic == node.topics.ddata(device: "boiler-1") }
            .map { try SparkplugPayload(serializedBytes: $0.message.payload) }
        #expect(ddata.count == 2)
        let first = try #require(ddata.first).metrics.filter { $0.hasTimestamp }
        #expect(!first.isEmpty)
        #expect(first.allSatisfy { $0.timestamp == UInt64(unsynchronisedTrueTime) }, "\(first.map(\.timestamp))")
        let second = try #require(ddata.last).metrics.filter { $0.hasTimestamp }
        #expect(!second.isEmpty)
        #expect(second.allSatisfy { $0.timestamp == UInt64(synchronisedTime) }, "\(second.map(\.timestamp))")
    }
}
