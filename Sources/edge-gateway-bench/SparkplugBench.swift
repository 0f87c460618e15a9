// `sparkplug`: the CPU cost of a 100-tag Sparkplug DDATA (committed form at ingest plus
// the wire form rendered at publish: aliases, seq, send time) vs the JSON data message
// of the same poll, in alternating rounds of the same run.
import Foundation
import Gateway
import GatewayConfig
import Modbus
import SparkplugB

func benchSparkplug() {
    let types: [ValueType] = [.int16, .uint16, .int32, .uint32, .float32, .int64, .uint64, .float64]
    let tags = (0..<100).map { index in
        TagConfiguration(name: "tag_\(index)", table: .holding, address: index * 4, type: types[index % types.count],
                         scale: index % 3 == 0 ? 0.1 : 1, unit: index % 2 == 0 ? "°C" : nil)
    }
    let device = DeviceConfiguration(name: "bench", transport: .tcp(host: "127.0.0.1", port: 502), tags: tags)
    let node = SparkplugNode(topics: SparkplugTopics(group: "plant-a", node: "gw-01"), devices: [device])
    let readings = tags.enumerated().map { index, tag -> DevicePoll.Reading in
        let value: TagValue = tag.scale != 1 || tag.type == .float32 || tag.type == .float64
            ? .number(Double(index) * 1.25 - 40) : .integer(Int64(index * 37 % 30000))
        return DevicePoll.Reading(tag: tag.name, value: .success(value))
    }
    let poll = DevicePoll(device: "bench", timestamp: Date(), readings: readings)
    let messages = 5_000
    let rounds = 5
    print("sparkplug: \(messages) encodings of one 100-tag poll per run, \(rounds) alternating rounds, medians")
    var jsonTimes: [Double] = []
    var sparkplugTimes: [Double] = []
    var storedTimes: [Double] = []
    var storedBytes = 0
    var jsonBytes = 0
    var sparkplugBytes = 0
    for _ in 0..<rounds {
        var start = processCPUTime()
        for seq in 0..<messages {
            jsonBytes = MessageEncoding.dataMessage(gateway: "gw-01", poll: poll, boot: 1, seq: Int64(seq)).count
        }
        jsonTimes.append(processCPUTime() - start)
        start = processCPUTime()
        for seq in 0..<messages {
            let stored = node.storedDData(poll, boot: 1, seq: Int64(seq))
            sparkplugBytes = (try? node.wireDData(stored: stored, device: "bench", seq: UInt8(truncatingIfNeeded: seq),
                                                  historical: false, at: Date()))?.count ?? 0
        }
        sparkplugTimes.append(processCPUTime() - start)
        start = processCPUTime()
        for seq in 0..<messages {
            storedBytes = node.storedDData(poll, boot: 1, seq: Int64(seq)).count
        }
        storedTimes.append(processCPUTime() - start)
    }
    func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
    figure("JSON, µs per message", median(jsonTimes) / Double(messages) * 1e6, "µs")
    figure("Sparkplug stored + wire DDATA, µs per message", median(sparkplugTimes) / Double(messages) * 1e6, "µs")
    figure("  of which the committed form (ingest)", median(storedTimes) / Double(messages) * 1e6, "µs")
    figure("  (JSON bytes per message)", Double(jsonBytes), "B")
    figure("  (Sparkplug DDATA bytes per message)", Double(sparkplugBytes), "B")
    figure("  (Sparkplug committed form bytes per message)", Double(storedBytes), "B")
    print(String(format: "  ratio Sparkplug (ingest + publish) / JSON CPU (target <= 1.0): %.2f",
                 median(sparkplugTimes) / median(jsonTimes)))
    print(String(format: "  ratio Sparkplug ingest encoding alone / JSON CPU: %.2f", median(storedTimes) / median(jsonTimes)))
}
