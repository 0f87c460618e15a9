// Sparkplug B payloads decoded back with the generated protobuf types. Test names
// carry the Sparkplug 3.0 TCK assertion ids they check.
import Foundation
import GatewayConfig
import Modbus
import SparkplugB
import SwiftProtobuf
import Testing

private let topics = SparkplugTopics(group: "plant-a", node: "gw-01")
private let when = Date(timeIntervalSince1970: 1_790_000_000.123)

private func tag(_ name: String, _ type: ValueType, unit: String? = nil, scale: Double = 1) -> TagConfiguration {
    var tag = TagConfiguration(name: name, table: .holding, address: 0, type: type)
    tag.unit = unit
    tag.scale = scale
    return tag
}

private let allTypes: [TagConfiguration] = [
    tag("i16", .int16, unit: "°C"), tag("u16", .uint16), tag("i32", .int32), tag("u32", .uint32),
    tag("i64", .int64), tag("u64", .uint64), tag("f32", .float32), tag("f64", .float64, unit: "m³/h"),
    tag("b", .bool), tag("s", .string), tag("scaled", .int16, scale: 0.1),
]

private func node() -> SparkplugNode {
    SparkplugNode(topics: topics, devices: [
        DeviceConfiguration(name: "boiler-1", transport: .tcp(host: "127.0.0.1", port: 502), tags: allTypes),
        DeviceConfiguration(name: "pump-2", transport: .tcp(host: "127.0.0.1", port: 502), tags: [tag("i16", .int16)]),
    ])
}

private func decode(_ bytes: [UInt8]?) throws -> SparkplugPayload {
    try SparkplugPayload(serializedBytes: try #require(bytes))
}

private let values: [String: TagValue] = [
    "i16": .integer(-1), "u16": .integer(65535), "i32": .integer(-2_000_000_000), "u32": .integer(4_000_000_000),
    "i64": .integer(Int64.min), "u64": .integer(Int64.max), "f32": .number(1.5), "f64": .number(-2.25),
    "b": .bool(true), "s": .string("héllo"), "scaled": .number(-3.2),
]

private func poll(at date: Date = when) -> DevicePoll {
    DevicePoll(device: "boiler-1", timestamp: date,
               readings: allTypes.map { .init(tag: $0.name, value: .success(values[$0.name]!)) })
}

@Suite struct SparkplugTopicTests {
    /// tck-id-topics-nbirth-topic, -ndeath-topic, -ndata-topic, -ncmd-topic, -dbirth-topic, -ddata-topic.
    @Test func topicNamespace() {
        #expect(topics.nbirth == "spBv1.0/plant-a/NBIRTH/gw-01")
        #expect(topics.ndeath == "spBv1.0/plant-a/NDEATH/gw-01")
        #expect(topics.ndata == "spBv1.0/plant-a/NDATA/gw-01")
        #expect(topics.ncmd == "spBv1.0/plant-a/NCMD/gw-01")
        #expect(topics.dbirth(device: "d") == "spBv1.0/plant-a/DBIRTH/gw-01/d")
        #expect(topics.ddeath(device: "d") == "spBv1.0/plant-a/DDEATH/gw-01/d")
        #expect(topics.ddata(device: "d") == "spBv1.0/plant-a/DDATA/gw-01/d")
        #expect(topics.dcmd(device: "d") == "spBv1.0/plant-a/DCMD/gw-01/d")
        #expect(SparkplugTopics.state(host: "scada-1") == "spBv1.0/STATE/scada-1")
        #expect(topics.device(in: "spBv1.0/plant-a/DCMD/gw-01/d", verb: "DCMD") == "d")
        #expect(topics.device(in: "spBv1.0/plant-a/DCMD/gw-02/d", verb: "DCMD") == nil)
    }

    /// seq: 0 on NBIRTH, +1 per message, 255 → 0 (tck-id-topics-ndata-seq-num, -dbirth-seq, -ddata-seq-num).
    @Test func sequenceStartsAtZeroOnBirthAndWraps() {
        var sequence = SparkplugSequence()
        #expect(sequence.birth() == 0)
        var taken: [UInt8] = []
        for _ in 0..<256 { taken.append(sequence.take()) }
        #expect(taken.first == 1 && taken[254] == 255 && taken[255] == 0)
        #expect(sequence.birth() == 0 && sequence.take() == 1)
    }
}

@Suite struct SparkplugPayloadTests {
    /// tck-id-topics-ndeath-payload (only bdSeq), tck-id-topics-ndeath-seq (no seq).
    @Test func ndeathCarriesOnlyBdSeqAndNoSeq() throws {
        let payload = try decode(node().ndeath(bdSeq: 7, at: when))
        #expect(!payload.hasSeq)
        #expect(payload.metrics.count == 1)
        #expect(payload.metrics[0].name == "bdSeq" && payload.metrics[0].longValue == 7)
        #expect(payload.metrics[0].datatype == SparkplugDataType.int64.rawValue)
    }

    /// tck-id-topics-nbirth-seq-num, -nbirth-bdseq-included, -nbirth-rebirth-metric,
    /// tck-id-operational-behavior-data-commands-rebirth-name-aliases, tck-id-payloads-nbirth-timestamp.
    @Test func nbirthHasSeqZeroBdSeqRebirthFalseWithoutAliasAndHealth() throws {
        let health = SparkplugNodeHealth(boot: 12, backlog: 3, dropped: 4, pollsFailed: 5, pollOverruns: 6)
        let payload = try decode(node().nbirth(bdSeq: 9, health: health, at: when))
        #expect(payload.hasSeq && payload.seq == 0)
        #expect(payload.timestamp == 1_790_000_000_123)
        let byName = Dictionary(uniqueKeysWithValues: payload.metrics.map { ($0.name, $0) })
        #expect(byName["bdSeq"]?.longValue == 9)
        let rebirth = try #require(byName["Node Control/Rebirth"])
        #expect(rebirth.datatype == SparkplugDataType.boolean.rawValue && rebirth.booleanValue == false)
        #expect(!rebirth.hasAlias)
        #expect(byName["Gateway/Boot"]?.longValue == 12)
        #expect(byName["Gateway/Backlog"]?.longValue == 3)
        #expect(byName["Gateway/Dropped"]?.longValue == 4)
        #expect(byName["Gateway/Polls Failed"]?.longValue == 5)
        #expect(byName["Gateway/Poll Overruns"]?.longValue == 6)
        // tck-id-payloads-alias-birth-requirement: every other metric has name and alias.
        #expect(payload.metrics.filter { $0.name != "Node Control/Rebirth" }.allSatisfy { $0.hasAlias })
        // NDATA: aliases only (tck-id-payloads-alias-data-cmd-requirement).
        let ndata = try decode(node().ndata(health: health, seq: 3, at: when))
        #expect(ndata.seq == 3 && ndata.metrics.allSatisfy { $0.hasAlias && !$0.hasName })
    }

    /// tck-id-payloads-alias-uniqueness across the node's metrics (node and all devices).
    @Test func aliasesAreUniqueAcrossTheNode() throws {
        let model = node()
        let health = SparkplugNodeHealth(boot: 1, backlog: 0, dropped: 0, pollsFailed: 0)
        var aliases = try decode(model.nbirth(bdSeq: 0, health: health, at: when)).metrics.filter(\.hasAlias).map(\.alias)
        for device in model.deviceNames {
            aliases += try decode(model.dbirth(device: device, latest: [:], boot: 1, seq: 1, at: when)).metrics.map(\.alias)
        }
        #expect(Set(aliases).count == aliases.count && !aliases.isEmpty)
    }

    /// tck-id-topics-dbirth-metrics, tck-id-operational-behavior-data-publish-dbirth-values:
    /// every tag with name, alias, datatype, current value (or is_null), engUnit.
    @Test func dbirthListsEveryTagWithTypeUnitAndCurrentValue() throws {
        let polled = when.addingTimeInterval(-5)
        var latest: [String: SparkplugReading] = [:]
        for (name, value) in values where name != "s" { latest[name] = SparkplugReading(value: .success(value), polled: polled) }
        let payload = try decode(node().dbirth(device: "boiler-1", latest: latest, boot: 12, seq: 1, at: when))
        #expect(payload.seq == 1 && payload.timestamp == 1_790_000_000_123)
        let byName = Dictionary(uniqueKeysWithValues: payload.metrics.map { ($0.name, $0) })
        #expect(Set(byName.keys) == Set(allTypes.map(\.name) + ["Gateway/Boot", "Gateway/Seq"]))
        let expectedTypes: [String: SparkplugDataType] = [
            "i16": .int16, "u16": .uint16, "i32": .int32, "u32": .uint32, "i64": .int64, "u64": .uint64,
            "f32": .float, "f64": .double, "b": .boolean, "s": .string, "scaled": .double,
        ]
        for (name, type) in expectedTypes { #expect(byName[name]?.datatype == type.rawValue, "\(name)") }
        #expect(byName["i16"]?.intValue == 65535)            // −1 as Int16
        #expect(byName["i32"]?.intValue == UInt32(bitPattern: -2_000_000_000))
        #expect(byName["i64"]?.longValue == UInt64(bitPattern: Int64.min))
        #expect(byName["u32"]?.intValue == 4_000_000_000)
        #expect(byName["f32"]?.floatValue == 1.5 && byName["f64"]?.doubleValue == -2.25)
        #expect(byName["b"]?.booleanValue == true && byName["scaled"]?.doubleValue == -3.2)
        #expect(byName["i16"]?.timestamp == SparkplugNode.milliseconds(polled))
        // Not polled yet: is_null and no value.
        #expect(byName["s"]?.isNull == true && byName["s"]?.value == nil)
        #expect(byName["i16"]?.properties.keys == ["engUnit"])
        #expect(byName["i16"]?.properties.values.first?.stringValue == "°C")
        #expect(byName["f64"]?.properties.values.first?.stringValue == "m³/h")
        #expect(byName["Gateway/Boot"]?.longValue == 12)
    }

    /// DDATA by alias only, each metric with its poll time; seq and send time set when
    /// rendered (tck-id-payloads-alias-data-cmd-requirement, tck-id-topics-ddata-seq-num,
    /// tck-id-payloads-ddata-timestamp).
    @Test func ddataCarriesAliasesPollTimeAndSeq() throws {
        let model = node()
        let birth = try decode(model.dbirth(device: "boiler-1", latest: [:], boot: 12, seq: 1, at: when))
        let aliasOf = Dictionary(uniqueKeysWithValues: birth.metrics.map { ($0.name, $0.alias) })
        let stored = model.storedDData(poll(), boot: 12, seq: 4711)
        let sent = when.addingTimeInterval(30)
        let wire = try decode(model.wireDData(stored: stored, device: "boiler-1", seq: 200, historical: false, at: sent))
        #expect(wire.seq == 200 && wire.timestamp == SparkplugNode.milliseconds(sent))
        #expect(wire.metrics.allSatisfy { !$0.hasName && $0.hasAlias && !$0.isHistorical })
        #expect(wire.metrics.allSatisfy { $0.timestamp == 1_790_000_000_123 })
        let byAlias = Dictionary(uniqueKeysWithValues: wire.metrics.map { ($0.alias, $0) })
        #expect(byAlias[aliasOf["Gateway/Seq"]!]?.longValue == 4711)
        #expect(byAlias[aliasOf["Gateway/Boot"]!]?.longValue == 12)
        #expect(byAlias[aliasOf["i16"]!]?.intValue == 65535)
        #expect(byAlias[aliasOf["u64"]!]?.longValue == UInt64(Int64.max))
        #expect(byAlias[aliasOf["s"]!]?.stringValue == "héllo")
    }

    /// Buffered data replayed after the births: is_historical on every metric, original timestamps.
    @Test func replayedDataIsHistoricalWithItsPollTime() throws {
        let model = node()
        let polled = when.addingTimeInterval(-3600)
        let stored = model.storedDData(poll(at: polled), boot: 12, seq: 1)
        let wire = try decode(model.wireDData(stored: stored, device: "boiler-1", seq: 5, historical: true, at: when))
        #expect(wire.metrics.allSatisfy { $0.isHistorical && $0.timestamp == SparkplugNode.milliseconds(polled) })
    }

    /// A failed tag stays in the message: is_null, no value, Quality BAD (0) as an Int32 property
    /// (tck-id-payloads-propertyset-quality-value-type, -value-value).
    @Test func aFailedTagIsNullWithQualityBad() throws {
        let model = node()
        let failed = DevicePoll(device: "pump-2", timestamp: when,
                                readings: [.init(tag: "i16", value: .failure(TagError("modbus exception 2")))])
        let wire = try decode(model.wireDData(stored: model.storedDData(failed, boot: 1, seq: 1), device: "pump-2",
                                              seq: 1, historical: false, at: when))
        let metric = try #require(wire.metrics.last)
        #expect(metric.isNull && metric.value == nil && metric.datatype == SparkplugDataType.int16.rawValue)
        #expect(metric.properties.keys == ["Quality"])
        #expect(metric.properties.values.first?.type == 3 && metric.properties.values.first?.intValue == 0)
    }

    /// A value its datatype cannot hold (a configuration change under a stored row) is BAD, not a wrong number.
    @Test func anOutOfRangeValueIsBadNotTruncated() throws {
        let model = node()
        let odd = DevicePoll(device: "pump-2", timestamp: when, readings: [.init(tag: "i16", value: .success(.integer(70_000)))])
        let wire = try decode(model.wireDData(stored: model.storedDData(odd, boot: 1, seq: 1), device: "pump-2",
                                              seq: 1, historical: false, at: when))
        #expect(wire.metrics.last?.isNull == true)
    }

    /// A row stored before the configuration dropped a tag keeps that metric's name (no alias
    /// to give it); a row that is not a Sparkplug payload is an error, not a guess.
    @Test func unknownNamesStayNamesAndGarbageIsRefused() throws {
        let model = node()
        let renamed = DevicePoll(device: "pump-2", timestamp: when, readings: [
            .init(tag: "i16", value: .success(.integer(1))), .init(tag: "gone", value: .success(.integer(2))),
        ])
        let wire = try decode(model.wireDData(stored: model.storedDData(renamed, boot: 1, seq: 1), device: "pump-2",
                                              seq: 1, historical: false, at: when))
        #expect(wire.metrics.last?.name == "gone" && wire.metrics.last?.hasAlias == false)
        #expect(wire.metrics.dropLast().allSatisfy { $0.hasAlias && !$0.hasName })
        #expect(throws: SparkplugRenderError.self) {
            try model.wireDData(stored: Array(#"{"seq":1}"#.utf8), device: "pump-2", seq: 1, historical: false, at: when)
        }
    }

    /// tck-id-operational-behavior-data-commands-ncmd-rebirth-name, -value.
    @Test func rebirthRequestIsRecognised() throws {
        func ncmd(_ name: String, _ value: Bool) throws -> [UInt8] {
            var metric = SparkplugMetric()
            metric.name = name
            metric.datatype = SparkplugDataType.boolean.rawValue
            metric.booleanValue = value
            var payload = SparkplugPayload()
            payload.metrics = [metric]
            return try payload.serializedBytes()
        }
        #expect(SparkplugNode.isRebirthRequest(try ncmd("Node Control/Rebirth", true)))
        #expect(!SparkplugNode.isRebirthRequest(try ncmd("Node Control/Rebirth", false)))
        #expect(!SparkplugNode.isRebirthRequest(try ncmd("Node Control/Reboot", true)))
        #expect(!SparkplugNode.isRebirthRequest([0xFF, 0xFF]))
    }
}

/// tck-id-topics-ddata-payload: with `publish: on_change`, DDATA carries the metrics that changed.
@Suite struct SparkplugReportByExceptionTests {
    private func poll(_ device: String, _ values: [String: Int64?]) -> DevicePoll {
        DevicePoll(device: device, timestamp: when, readings: values.keys.sorted().map { tag in
            .init(tag: tag, value: values[tag]!.map { .success(.integer($0)) } ?? .failure(TagError("timeout")))
        })
    }

    @Test func onlyChangedTagsOfOnChangeDevicesHeartbeatsWhole() {
        let devices = [
            DeviceConfiguration(name: "rbe", transport: .tcp(host: "127.0.0.1", port: 502),
                                tags: [tag("a", .int16), tag("b", .int16)], publish: .onChange(maxInterval: .seconds(60))),
            DeviceConfiguration(name: "all", transport: .tcp(host: "127.0.0.1", port: 502), tags: [tag("a", .int16)]),
        ]
        var filter = SparkplugReportByException(devices: devices)
        #expect(filter.changes(in: poll("rbe", ["a": 1, "b": 2])).readings.map(\.tag) == ["a", "b"])
        #expect(filter.changes(in: poll("rbe", ["a": 1, "b": 3])).readings.map(\.tag) == ["b"])
        #expect(filter.changes(in: poll("rbe", ["a": nil, "b": 3])).readings.map(\.tag) == ["a"])  // an error is a change
        #expect(filter.changes(in: poll("rbe", ["a": nil, "b": 3])).readings.map(\.tag) == ["a", "b"])  // heartbeat
        #expect(filter.changes(in: poll("all", ["a": 1])).readings.count == 1)
        #expect(filter.changes(in: poll("all", ["a": 1])).readings.count == 1)  // `always` passes whole
        filter.forget()
        #expect(filter.changes(in: poll("rbe", ["a": nil, "b": 4])).readings.map(\.tag) == ["a", "b"])
    }
}
