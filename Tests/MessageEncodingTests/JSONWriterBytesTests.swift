// Every payload besides the data message (status, meta, gaps, stats) is written with
// JSONWriter's primitives: the same calls on the writer and on the one it replaced
// (LegacyMessageEncoding.swift) give the same bytes.
import Foundation
@testable import Gateway
import Testing
import TestSupport

@Suite struct JSONWriterBytesTests {
    private enum Call {
        case beginObject, endObject, beginArray, endArray, null
        case key(String), string(String), integer(Int64), number(Double), bool(Bool)
    }

    private func write(_ calls: [Call]) -> (new: [UInt8], old: [UInt8]) {
        var new = JSONWriter()
        var old = LegacyJSONWriter()
        for call in calls {
            switch call {
            case .beginObject: new.beginObject(); old.beginObject()
            case .endObject: new.endObject(); old.endObject()
            case .beginArray: new.beginArray(); old.beginArray()
            case .endArray: new.endArray(); old.endArray()
            case .null: new.null(); old.null()
            case let .key(name): new.key(name); old.key(name)
            case let .string(text): new.string(text); old.string(text)
            case let .integer(value): new.integer(value); old.integer(value)
            case let .number(value): new.number(value); old.number(value)
            case let .bool(value): new.bool(value); old.bool(value)
            }
        }
        return (new.bytes, old.bytes)
    }

    @Test func everyPrimitiveWithEdgeValues() {
        var calls: [Call] = [.beginObject]
        for (index, value) in EncodingSamples.integers.enumerated() { calls += [.key("i\(index)"), .integer(value)] }
        for (index, value) in EncodingSamples.numbers.enumerated() { calls += [.key("n\(index)"), .number(value)] }
        for (index, text) in (EncodingSamples.strings + EncodingSamples.names).enumerated() {
            calls += [.key(text), .string(text), .key("x\(index)"), .bool(index % 2 == 0), .key("z"), .null]
        }
        calls += [.key("list"), .beginArray, .integer(1), .string("a"), .beginObject, .endObject, .null, .endArray]
        calls += [.key("ts"), .string(MessageEncoding.timestamp(Date(timeIntervalSince1970: 1_795_000_000.25)))]
        calls.append(.endObject)
        let (new, old) = write(calls)
        let same = new == old  // a Bool: the arrays themselves would flood the failure message
        #expect(same, "\(firstDifference(new, old))")
    }

    @Test(arguments: 0..<40)
    func randomCallSequences(seed: UInt64) {
        var random = SplitMix64(seed: 1000 + seed)
        var calls: [Call] = [.beginObject]
        for _ in 0..<Int(random.next() % 200) {
            calls.append(.key(EncodingSamples.names.randomElement(using: &random)!))
            switch EncodingSamples.randomValue(&random) {
            case let .success(.integer(value)): calls.append(.integer(value))
            case let .success(.number(value)): calls.append(.number(value))
            case let .success(.bool(value)): calls.append(.bool(value))
            case let .success(.string(text)): calls.append(.string(text))
            case let .failure(error): calls.append(.string(error.message))
            }
        }
        calls.append(.endObject)
        let (new, old) = write(calls)
        let same = new == old  // a Bool: the arrays themselves would flood the failure message
        #expect(same, "\(firstDifference(new, old))")
    }

    /// Every payload's `ts` is `MessageEncoding.timestamp`; the meta and status payloads
    /// write it through the writer's own timestamp call.
    @Test func timestampValuesMatchTheStringForm() {
        for date in EncodingSamples.dates {
            var new = JSONWriter()
            new.beginObject(); new.key("ts"); new.timestamp(date); new.endObject()
            var old = LegacyJSONWriter()
            old.beginObject(); old.key("ts"); old.string(LegacyMessageEncoding.timestamp(date)); old.endObject()
            let same = new.bytes == old.bytes
            #expect(same, "\(date.timeIntervalSince1970): \(firstDifference(new.bytes, old.bytes))")
        }
    }
}
