// `edge-gateway-bench encode`: the CPU of turning one poll's registers into its
// JSON data message, in process, without I/O: the part of a message's cost that
// is the gateway's own arithmetic and allocation.
//
//   - the per-message device: 100 uint16 holding registers, unscaled
//   - a mixed device: 100 tags of every numeric type, a third of them scaled by 0.1
//   Each: decode (registers → readings, as a poll does) and encode (readings →
//   data message) timed apart, CPU time of the process (CLOCK_PROCESS_CPUTIME_ID),
//   best of 3 rounds of 20,000 polls. The baseline in the same run is copying the
//   message's bytes once (the least any encoder must do).
import Foundation
import Gateway
import Modbus

private struct EncodeCase {
    var name: String
    var tags: [TagConfiguration]
    var words: [UInt16]
}

private func encodeCases() -> [EncodeCase] {
    let plain = (0..<100).map { TagConfiguration(name: "r\($0)", table: .holding, address: $0, type: .uint16) }
    let types: [ValueType] = [.int16, .uint16, .int32, .uint32, .float32, .int64, .uint64, .float64]
    var mixed: [TagConfiguration] = []
    var address = 0
    for index in 0..<100 {
        let type = types[index % types.count]
        mixed.append(TagConfiguration(name: "tag_\(index)", table: .holding, address: address, type: type,
                                      scale: index % 3 == 0 ? 0.1 : 1))
        address += type.registerCount
    }
    func words(_ count: Int) -> [UInt16] {
        (0..<count).map { UInt16(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) & 0x3FFF }
    }
    return [EncodeCase(name: "100 × uint16", tags: plain, words: words(100)),
            EncodeCase(name: "100 mixed, 1/3 scaled", tags: mixed, words: words(address))]
}

/// The readings of one poll of `tags` from one block of `words` starting at address 0,
/// decoded as a poll decodes a block (BusPoller.poll).
private func decodePoll(_ tags: [TagConfiguration], _ indices: [Int], _ words: [UInt16]) -> [DevicePoll.Reading] {
    var results = [Result<TagValue, TagError>](repeating: .failure(TagError("not read")), count: tags.count)
    RegisterDecoding.decode(block: words, startingAt: 0, tags: tags, indices: indices, deviceOrder: .abcd, into: &results)
    return indices.map { DevicePoll.Reading(tag: tags[$0].name, value: results[$0]) }
}

private func line(_ name: String, _ value: Double, _ unit: String) {
    print("    \(name.padding(toLength: 54, withPad: " ", startingAt: 0)) \(String(format: "%10.2f", value)) \(unit)")
}

func benchEncode() {
    let polls = 20_000
    print("encode: one poll's registers → readings → JSON data message, in process, best of 3 × \(polls) polls")
    for testCase in encodeCases() {
        let indices = Array(testCase.tags.indices)
        var decodeBest = Double.infinity, encodeBest = Double.infinity, copyBest = Double.infinity
        var sink = 0
        var bytes = 0
        for _ in 0..<3 {
            var start = processCPUTime()
            var readings: [DevicePoll.Reading] = []
            for _ in 0..<polls {
                readings = decodePoll(testCase.tags, indices, testCase.words)
                sink &+= readings.count
            }
            decodeBest = min(decodeBest, processCPUTime() - start)
            let poll = DevicePoll(device: "meter", timestamp: Date(), readings: readings)
            start = processCPUTime()
            var message: [UInt8] = []
            for seq in 0..<polls {
                message = MessageEncoding.dataMessage(gateway: "bench", poll: poll, boot: 1, seq: Int64(seq))
                bytes = message.count
            }
            encodeBest = min(encodeBest, processCPUTime() - start)
            start = processCPUTime()
            for _ in 0..<polls {
                // A fresh buffer filled byte by byte (`Array(message)` would only share the storage).
                let copy = [UInt8](unsafeUninitializedCapacity: message.count) { buffer, count in
                    count = buffer.initialize(from: message).1
                }
                sink &+= copy.withUnsafeBufferPointer { Int($0[$0.count / 2]) }
            }
            copyBest = min(copyBest, processCPUTime() - start)
        }
        // `sink` keeps the optimiser from dropping the loops.
        print("  \(testCase.name), \(bytes)-byte messages\(sink == 42 ? " " : "")")
        line("decode per poll", decodeBest / Double(polls) * 1e6, "µs")
        line("encode per poll", encodeBest / Double(polls) * 1e6, "µs")
        line("decode + encode per 1,000 values", (decodeBest + encodeBest) / Double(polls) * 10 * 1e6, "µs")
        line("baseline: copying the message once, per poll", copyBest / Double(polls) * 1e6, "µs")
    }
}
