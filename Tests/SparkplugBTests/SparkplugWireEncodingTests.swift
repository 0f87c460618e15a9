// The hand-written DDATA path (ProtobufWire.swift) against swift-protobuf as the oracle:
// the test builds the message it expects with the generated types, writing each value
// field by Sparkplug 3.0's rules itself, and compares the bytes (stored form) or the
// decoded message (wire form, whose fields come in another order).
import Foundation
import GatewayConfig
import Modbus
import SparkplugB
import SwiftProtobuf
import Testing
import TestSupport

private let when = Date(timeIntervalSince1970: 1_790_000_000.456)


private struct Case {
    var tag: TagConfiguration
    var reading: Result<TagValue, TagError>
    /// The metric swift-protobuf should carry for it (name, timestamp, datatype, value or is_null).
    var expected: SparkplugMetric
}

/// 100 tags of every type the gateway publishes, with extremes, random values, failed
/// reads, values out of their type's range and a unicode string.
private func cases(seed: UInt64) -> [Case] {
    var random = SplitMix64(seed: seed)
    let types: [ValueType] = [.int16, .uint16, .int32, .uint32, .int64, .uint64, .float32, .float64, .bool, .string]
    var result: [Case] = []
    for index in 0..<100 {
        let type = types[index % types.count]
        let scaled = index % 13 == 5 && [.int16, .uint16, .int32, .uint32, .int64, .uint64].contains(type)
        var tag = TagConfiguration(name: "tag_\(index)_\(type.rawValue)", table: .holding, address: index * 4, type: type)
        if scaled { tag.scale = 0.1 }
        if index % 7 == 0 { tag.unit = "m³/h" }
        var metric = SparkplugMetric()
        metric.name = tag.name
        metric.timestamp = 1_790_000_000_456
        let bits = random.next()
        let extreme = index % 10 == index / 10 % 10  // some tags get their type's extremes
        var reading: Result<TagValue, TagError>
        func bad(_ type: UInt32) {
            metric.datatype = type
            metric.isNull = true
            var quality = SparkplugPayload.PropertyValue()
            quality.type = 3  // Int32
            quality.intValue = 0  // BAD
            metric.properties.keys = ["Quality"]
            metric.properties.values = [quality]
        }
        if scaled {
            let value = Double(Int64(bitPattern: bits) % 100_000) / 10
            reading = .success(.number(value))
            metric.datatype = 10
            metric.doubleValue = value
        } else {
            switch type {
            case .int16:
                let value = extreme ? Int16.min : Int16(truncatingIfNeeded: bits)
                reading = .success(.integer(Int64(value)))
                metric.datatype = 2
                metric.intValue = UInt32(UInt16(bitPattern: value))  // two's complement at 16 bits
            case .uint16:
                let value = extreme ? UInt16.max : UInt16(truncatingIfNeeded: bits)
                reading = .success(.integer(Int64(value)))
                metric.datatype = 6
                metric.intValue = UInt32(value)
            case .int32:
                let value = extreme ? Int32.min : Int32(truncatingIfNeeded: bits)
                reading = .success(.integer(Int64(value)))
                metric.datatype = 3
                metric.intValue = UInt32(bitPattern: value)
            case .uint32:
                let value = extreme ? UInt32.max : UInt32(truncatingIfNeeded: bits)
                reading = .success(.integer(Int64(value)))
                metric.datatype = 7
                metric.intValue = value
            case .int64:
                let value = extreme ? Int64.min : Int64(bitPattern: bits)
                reading = .success(.integer(value))
                metric.datatype = 4
                metric.longValue = UInt64(bitPattern: value)
            case .uint64:
                // Above Int64.max the register decoder hands a Double (exact for this one).
                reading = extreme ? .success(.number(18_446_744_073_709_549_568)) : .success(.integer(Int64(bits >> 1)))
                metric.datatype = 8
                metric.longValue = extreme ? 18_446_744_073_709_549_568 : bits >> 1
            case .float32:
                let value = Float(bitPattern: UInt32(truncatingIfNeeded: bits) & 0xBF7F_FFFF)  // finite
                reading = .success(.number(Double(value)))
                metric.datatype = 9
                metric.floatValue = value
            case .float64:
                let value = extreme ? -Double.greatestFiniteMagnitude : Double(bitPattern: bits & 0xBFEF_FFFF_FFFF_FFFF)
                reading = .success(.number(value))
                metric.datatype = 10
                metric.doubleValue = value
            case .bool:
                reading = .success(.bool(bits & 1 == 1))
                metric.datatype = 11
                metric.booleanValue = bits & 1 == 1
            case .string:
                let value = extreme ? "" : "héllo \(bits % 1000) – ünïcode"
                reading = .success(.string(value))
                metric.datatype = 12
                metric.stringValue = value
            }
        }
        if index % 17 == 3 {  // a failed read
            reading = .failure(TagError("modbus exception 2"))
            metric = SparkplugMetric()
            metric.name = tag.name
            metric.timestamp = 1_790_000_000_456
            bad(UInt32(SparkplugDataType(of: tag).rawValue))
        } else if index % 31 == 11, type == .int16 || type == .uint16 {  // out of the type's range
            reading = .success(.integer(70_000))
            metric = SparkplugMetric()
            metric.name = tag.name
            metric.timestamp = 1_790_000_000_456
            bad(UInt32(SparkplugDataType(of: tag).rawValue))
        }
        result.append(Case(tag: tag, reading: reading, expected: metric))
    }
    return result
}

private func gatewayMetric(_ name: String, _ value: Int64) -> SparkplugMetric {
    var metric = SparkplugMetric()
    metric.name = name
    metric.timestamp = 1_790_000_000_456
    metric.datatype = 4
    metric.longValue = UInt64(bitPattern: value)
    return metric
}

@Suite struct SparkplugWireEncodingTests {
    /// SendData / SendComplexData: the committed DDATA of a 100-tag poll is byte for byte
    /// what swift-protobuf writes for the same metrics (every datatype, negative integers
    /// as two's complement at their width, 64-bit extremes, strings, failed tags).
    @Test(arguments: [UInt64(1), 42, 0xDEAD_BEEF])
    func sendComplexDataStoredFormMatchesSwiftProtobufByteForByte(seed: UInt64) throws {
        let all = cases(seed: seed)
        let device = DeviceConfiguration(name: "dev", transport: .tcp(host: "127.0.0.1", port: 502), tags: all.map(\.tag))
        let node = SparkplugNode(topics: SparkplugTopics(group: "g", node: "n"), devices: [device])
        var readings = all.map { DevicePoll.Reading(tag: $0.tag.name, value: $0.reading) }
        var expected = SparkplugPayload()
        expected.metrics = [gatewayMetric("Gateway/Boot", 7), gatewayMetric("Gateway/Seq", -3)]
            + all.map(\.expected)
        // A tag the configuration no longer has: a guessed datatype, still named.
        readings.append(.init(tag: "gone", value: .success(.integer(-9))))
        expected.metrics.append(gatewayMetric("gone", -9))
        let stored = node.storedDData(DevicePoll(device: "dev", timestamp: when, readings: readings), boot: 7, seq: -3)
        let oracle: [UInt8] = try expected.serializedBytes()
        #expect(stored == oracle, "first difference at byte \(zip(stored, oracle).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(stored.count, oracle.count)) of \(stored.count)/\(oracle.count)")
        #expect(try SparkplugPayload(serializedBytes: stored) == expected)
    }

    /// SendData: the published DDATA decodes to the expected message with aliases from the
    /// DBIRTH in place of names, seq, send time, and (replayed) is_historical on every metric
    /// or (unsynchronised clock) the corrected poll time.
    @Test(arguments: [false, true])
    func sendDataWireFormDecodesToTheExpectedMessage(historical: Bool) throws {
        let all = cases(seed: 7)
        let device = DeviceConfiguration(name: "dev", transport: .tcp(host: "127.0.0.1", port: 502), tags: all.map(\.tag))
        let node = SparkplugNode(topics: SparkplugTopics(group: "g", node: "n"), devices: [device])
        let birth = try SparkplugPayload(serializedBytes: try #require(node.dbirth(device: "dev", latest: [:], boot: 7, seq: 1, at: when)))
        let aliasOf = Dictionary(uniqueKeysWithValues: birth.metrics.map { ($0.name, $0.alias) })
        let stored = node.storedDData(DevicePoll(device: "dev", timestamp: when,
                                                 readings: all.map { .init(tag: $0.tag.name, value: $0.reading) }),
                                      boot: 7, seq: 123_456_789_012)
        let sent = when.addingTimeInterval(60)
        let corrected = historical ? when.addingTimeInterval(-5) : nil
        let wire = try node.wireDData(stored: stored, device: "dev", seq: 255, historical: historical, at: sent,
                                      pollTime: corrected)
        var expected = SparkplugPayload()
        expected.timestamp = SparkplugNode.milliseconds(sent)
        expected.seq = 255
        expected.metrics = ([gatewayMetric("Gateway/Boot", 7), gatewayMetric("Gateway/Seq", 123_456_789_012)]
            + all.map(\.expected)).map { metric in
                var metric = metric
                metric.alias = aliasOf[metric.name]!
                metric.clearName()
                if historical { metric.isHistorical = true }
                if let corrected { metric.timestamp = SparkplugNode.milliseconds(corrected) }
                return metric
            }
        let decoded = try SparkplugPayload(serializedBytes: wire)
        #expect(decoded == expected)
        #expect(decoded.metrics.count == 102 && decoded.metrics.allSatisfy { !$0.hasName && $0.hasAlias })
    }

    /// Rows that are not Sparkplug payloads, or are cut short, are refused, never read past their end.
    @Test func truncatedOrCorruptRowsAreRefused() throws {
        let all = cases(seed: 3)
        let device = DeviceConfiguration(name: "dev", transport: .tcp(host: "127.0.0.1", port: 502), tags: all.map(\.tag))
        let node = SparkplugNode(topics: SparkplugTopics(group: "g", node: "n"), devices: [device])
        let stored = node.storedDData(DevicePoll(device: "dev", timestamp: when,
                                                 readings: all.map { .init(tag: $0.tag.name, value: $0.reading) }),
                                      boot: 1, seq: 1)
        var refused = 0
        for cut in stride(from: 1, to: stored.count, by: 37) {
            do {
                let wire = try node.wireDData(stored: Array(stored.prefix(cut)), device: "dev", seq: 0, historical: true, at: when)
                _ = try? SparkplugPayload(serializedBytes: wire)
            } catch {
                refused += 1
            }
        }
        #expect(refused > 0)
        // Many timestamp fields in one metric: each grows from 2 to 7 bytes when corrected.
        let timestamps: [UInt8] = (0..<400).map { $0 % 2 == 0 ? 0x18 : 0x01 }
        let row: [UInt8] = [0x12, 0x90, 0x03] + timestamps
        let wire = try node.wireDData(stored: row, device: "dev", seq: 0, historical: true, at: when, pollTime: when)
        #expect(try SparkplugPayload(serializedBytes: wire).metrics.count == 1)
    }
}
