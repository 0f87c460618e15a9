// A DCMD's metrics resolved against the node's DBIRTH: name or alias, datatype, value
// field, and negative integers in both encodings hosts use; the read-back DDATA.
import Foundation
import GatewayConfig
import Modbus
import SparkplugB
import SwiftProtobuf
import Testing

@Suite struct SparkplugDCMDTests {
    let node: SparkplugNode = {
        var setpoint = TagConfiguration(name: "setpoint", table: .holding, address: 40, type: .float32)
        setpoint.writable = true
        let level = TagConfiguration(name: "level", table: .holding, address: 44, type: .int16)
        let pump = TagConfiguration(name: "pump", table: .coils, address: 3, type: .bool)
        let big = TagConfiguration(name: "big", table: .holding, address: 50, type: .uint64)
        return SparkplugNode(topics: SparkplugTopics(group: "g", node: "gw"), devices: [
            DeviceConfiguration(name: "boiler-1", transport: .tcp(host: "127.0.0.1", port: 502), tags: [setpoint, level, pump, big]),
        ], commands: true)
    }()

    func alias(_ name: String) throws -> UInt64 {
        let birth = try SparkplugPayload(serializedBytes: try #require(node.dbirth(device: "boiler-1", latest: [:], boot: 1, seq: 1, at: Date())))
        return try #require(birth.metrics.first { $0.name == name }?.alias)
    }

    func metric(name: String? = nil, alias: UInt64? = nil, datatype: SparkplugDataType? = nil,
                _ set: (inout SparkplugMetric) -> Void) -> SparkplugMetric {
        var metric = SparkplugMetric()
        if let name { metric.name = name }
        if let alias { metric.alias = alias }
        if let datatype { metric.datatype = datatype.rawValue }
        set(&metric)
        return metric
    }

    func values(_ metrics: [SparkplugMetric]) -> Result<[(tag: String, value: TagValue)], SparkplugCommandProblem> {
        var payload = SparkplugPayload()
        payload.metrics = metrics
        return node.commandValues(payload, device: "boiler-1")
    }

    func problem(_ metrics: [SparkplugMetric]) -> SparkplugCommandProblem.Kind? {
        if case let .failure(problem) = values(metrics) { return problem.kind }
        return nil
    }

    @Test func byNameOrAliasWithTheirValueFields() throws {
        let result = try values([
            metric(name: "setpoint") { $0.floatValue = 72.5 },
            metric(alias: try alias("pump"), datatype: .boolean) { $0.booleanValue = true },
            metric(name: "level", alias: try alias("level")) { $0.intValue = 65535 },  // Int16 −1 at its width
        ]).get()
        #expect(result.map(\.tag) == ["setpoint", "pump", "level"])
        #expect(result.map(\.value) == [.number(72.5), .bool(true), .integer(-1)])
    }

    @Test func negativeInt16SignExtendedIsReadToo() throws {
        let result = try values([metric(name: "level") { $0.intValue = UInt32.max }]).get()
        #expect(result.map(\.value) == [.integer(-1)])
        // Neither its own width nor sign-extended: not an Int16.
        #expect(problem([metric(name: "level") { $0.intValue = 70_000 }]) == .wrongType)
    }

    @Test func uint64AboveInt64MaxStaysExactEnoughToBeRefusedLater() throws {
        let result = try values([metric(name: "big") { $0.longValue = UInt64.max }]).get()
        #expect(result.map(\.value) == [.number(Double(UInt64.max))])
    }

    @Test func refusals() throws {
        #expect(problem([metric(name: "nope") { $0.floatValue = 1 }]) == .unknownMetric)
        #expect(problem([metric(alias: 9999) { $0.floatValue = 1 }]) == .unknownMetric)
        #expect(problem([metric(name: "setpoint", alias: try alias("pump")) { $0.floatValue = 1 }]) == .malformed)
        #expect(problem([metric { $0.floatValue = 1 }]) == .malformed)
        #expect(problem([metric(name: "Gateway/Seq") { $0.longValue = 1 }]) == .gatewayMetric)
        #expect(problem([metric(name: "setpoint", datatype: .double) { $0.doubleValue = 1 }]) == .wrongType)
        #expect(problem([metric(name: "setpoint") { $0.booleanValue = true }]) == .wrongType)
        #expect(problem([metric(name: "setpoint") { $0.isNull = true }]) == .wrongType)
        #expect(problem([metric(name: "pump") { $0.intValue = 1 }]) == .wrongType)
    }

    @Test func parseRefusesGarbageAndEmptyAndTooMany() throws {
        guard case .failure = SparkplugNode.parseCommand([0xFF, 0xFF, 0xFF]) else { Issue.record("garbage parsed"); return }
        guard case .failure = SparkplugNode.parseCommand([]) else { Issue.record("no metrics parsed"); return }
        var payload = SparkplugPayload()
        payload.metrics = Array(repeating: metric(name: "setpoint") { $0.floatValue = 1 }, count: 65)
        guard case .failure = SparkplugNode.parseCommand(try payload.serializedBytes()) else { Issue.record("65 metrics parsed"); return }
    }

    @Test func readBackDDataCarriesAliasesValuesAndBadQuality() throws {
        let bytes = try #require(node.readBackDData(device: "boiler-1", values: [
            ("setpoint", .success(.number(72.5))), ("pump", .failure(TagError("timeout"))),
        ], seq: 7, at: Date()))
        let payload = try SparkplugPayload(serializedBytes: bytes)
        #expect(payload.seq == 7)
        #expect(payload.metrics.map(\.alias) == [try alias("setpoint"), try alias("pump")])
        #expect(payload.metrics.allSatisfy { !$0.hasName })
        #expect(payload.metrics[0].floatValue == 72.5)
        #expect(payload.metrics[1].isNull)
    }

    @Test func commandCountersAreNodeMetricsOnlyWithCommands() throws {
        let health = SparkplugNodeHealth(boot: 1, backlog: 0, dropped: 0, pollsFailed: 0,
                                         commands: SparkplugCommandCounts(received: 3, executed: 1, refused: 2, failed: 0))
        let with = try SparkplugPayload(serializedBytes: node.nbirth(bdSeq: 0, health: health, at: Date()))
        let byName = Dictionary(uniqueKeysWithValues: with.metrics.map { ($0.name, $0) })
        #expect(byName["Gateway/Commands Received"]?.longValue == 3)
        #expect(byName["Gateway/Commands Refused"]?.longValue == 2)
        let plain = SparkplugNode(topics: SparkplugTopics(group: "g", node: "gw"), devices: [])
        let without = try SparkplugPayload(serializedBytes: plain.nbirth(bdSeq: 0, health: health, at: Date()))
        #expect(!without.metrics.contains { $0.name.hasPrefix("Gateway/Commands") })
    }
}
