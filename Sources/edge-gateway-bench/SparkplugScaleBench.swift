// `sparkplug-scale`: the real gateway process with 100 devices × 100 tags polled every
// 100 ms (1,000 polls/s, 100,000 values/s), once with `format: json` and once with
// `format: sparkplug`, in alternating rounds of the same run, against a local mosquitto
// and ten libmodbus simulators in this process (ten buses of ten devices). Per run:
//   - CPU cores of the gateway: utime + stime from /proc/<pid>/stat over the window
//   - RSS (VmRSS at the end, VmHWM) from /proc/<pid>/status
//   - data messages per second a subscriber receives (1,000/s is keeping up)
//   - poll overruns over the window: `poll_overruns` of the JSON stats message, the
//     `Gateway/Poll Overruns` node metric of Sparkplug's NDATA
// and the ratios sparkplug / json. BENCH_SECONDS=<n> sets the window (10 s).
import Foundation
import GatewayConfig
import LocalPeers
import Modbus
import MQTTUplink
import SparkplugB
import SwiftProtobuf
import Synchronization

/// What the bench subscriber counts: data messages and the latest poll-overrun counter.
private final class ScaleRecorder: Sendable {
    let data = Atomic<Int>(0)
    let overruns = Atomic<Int>(-1)
    let connected = Atomic<Bool>(false)
    /// Alias of `Gateway/Poll Overruns` from the NBIRTH (Sparkplug's NDATA carries aliases only).
    let overrunAlias = Atomic<Int>(-1)
}

private final class ScaleSubscriberBox: Sendable {
    let uplink = Mutex<MQTTUplink?>(nil)
}

private struct ScaleRun {
    var format: String
    var cpuCores: Double
    var rssMB: Double
    var peakRSSMB: Double
    var messagesPerSecond: Double
    var overruns: Int
}

private let scaleDevices = 100
private let scaleTags = 100
private let scaleBuses = 10

/// The 100 tags of each device: the mixed types of the `sparkplug` section, every third scaled.
private func scaleTagLines() -> String {
    let types: [ValueType] = [.int16, .uint16, .int32, .uint32, .float32, .int64, .uint64, .float64]
    var address = 0
    var lines: [String] = []
    for index in 0..<scaleTags {
        let type = types[index % types.count]
        let scale = index % 3 == 0 ? ", scale: 0.1" : ""
        lines.append("          - { name: tag_\(index), table: holding, address: \(address), type: \(type.rawValue)\(scale) }")
        address += type.registerCount
    }
    return lines.joined(separator: "\n")
}

/// The `/proc/<pid>/status` field (kB) as MB.
private func statusMegabytes(_ status: String, _ field: String) -> Double {
    let line = status.split(separator: "\n").first { $0.hasPrefix(field + ":") } ?? ""
    return (Double(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "0") ?? 0) / 1024
}

private func runScale(format: String, round: Int, directory: TemporaryDirectory, broker: MosquittoBroker,
                      modbusPorts: [Int], duration: Duration) async throws -> ScaleRun {
    let name = "scale-\(format)-\(round)"
    let tags = scaleTagLines()
    let devices = (0..<scaleDevices).map { index in
        """
          - name: dev\(index)
            tcp: { host: 127.0.0.1, port: \(modbusPorts[index % modbusPorts.count]) }
            unit_id: \(index / modbusPorts.count + 1)
            poll_interval: 100ms
            tags:
        \(tags)
        """
    }.joined(separator: "\n")
    let sparkplug = format == "sparkplug"
    let config = directory.file("\(name).yaml")
    try """
    gateway: { id: bench, stats_interval: 1s }
    mqtt: { host: 127.0.0.1, port: \(broker.port), format: \(format) }
    \(sparkplug ? "sparkplug: { group_id: plant-a }" : "")
    buffer: { path: \(directory.file("\(name).sqlite")) }
    log_level: error
    devices:
    \(devices)
    """.write(toFile: config, atomically: true, encoding: .utf8)

    let identity = GatewayIdentity(id: "bench")
    let topics = SparkplugTopics(group: "plant-a", node: "bench")
    let dataFilter = sparkplug ? "\(SparkplugTopics.namespace)/plant-a/DDATA/bench/+" : "\(identity.topicPrefix)/bench/+/data"
    let statsTopic = sparkplug ? topics.ndata : identity.statsTopic
    let recorder = ScaleRecorder()
    let box = ScaleSubscriberBox()
    let subscriber = MQTTUplink(settings: MQTTUplinkSettings(host: "127.0.0.1", port: broker.port, clientID: "bench-\(name)"),
                                logger: quiet) { event in
        switch event {
        case .connected:
            try? box.uplink.withLock { uplink in
                try uplink?.subscribe(dataFilter, qos: 1)
                try uplink?.subscribe(statsTopic, qos: 0)
                if sparkplug { try uplink?.subscribe(topics.nbirth, qos: 0) }
            }
            recorder.connected.store(true, ordering: .releasing)
        case let .message(message):
            if message.topic == statsTopic || message.topic == topics.nbirth {
                if let overruns = pollOverruns(message, sparkplug: sparkplug, recorder: recorder) {
                    recorder.overruns.store(overruns, ordering: .relaxed)
                }
            } else {
                recorder.data.add(1, ordering: .relaxed)
            }
        default: break
        }
    }
    box.uplink.withLock { $0 = subscriber }
    subscriber.start()
    try await waitUntil("the bench subscriber to connect") { recorder.connected.load(ordering: .acquiring) }
    let binary = try ProcessInfo.processInfo.environment["BENCH_GATEWAY"] ?? builtProduct("edge-gateway")
    let gateway = try ChildProcess(binary, ["run", "--config", config], log: directory.file("\(name).log"))
    try await waitUntil("data and a stats message from the \(format) gateway", timeout: .seconds(60)) {
        (recorder.data.load(ordering: .relaxed) > 0 && recorder.overruns.load(ordering: .relaxed) >= 0) || !gateway.isRunning
    }
    guard gateway.isRunning else {
        throw ModbusBenchFailure(description: "the \(format) gateway exited: \(gateway.output.suffix(1000))")
    }
    try await Task.sleep(for: .seconds(3))  // warm-up (connections, births), not measured
    let cpuStart = cpuSeconds(pid: gateway.pid)
    let dataStart = recorder.data.load(ordering: .relaxed)
    let overrunsStart = recorder.overruns.load(ordering: .relaxed)
    let start = ContinuousClock.now
    try await Task.sleep(for: duration)
    let elapsed = seconds(ContinuousClock.now - start)
    let cpu = cpuSeconds(pid: gateway.pid) - cpuStart
    let data = recorder.data.load(ordering: .relaxed) - dataStart
    // The stats message of the window's last second.
    let overrunsEnd = recorder.overruns.load(ordering: .relaxed)
    let status = (try? String(contentsOfFile: "/proc/\(gateway.pid)/status", encoding: .utf8)) ?? ""
    gateway.signal(SIGTERM)
    _ = try await gateway.waitForExit(timeout: .seconds(30))
    await subscriber.stop()
    return ScaleRun(format: format, cpuCores: cpu / elapsed, rssMB: statusMegabytes(status, "VmRSS"),
                    peakRSSMB: statusMegabytes(status, "VmHWM"), messagesPerSecond: Double(data) / elapsed,
                    overruns: overrunsEnd - overrunsStart)
}

/// The poll-overrun counter in a JSON stats message, or in a Sparkplug NBIRTH (which
/// also names its alias) or NDATA.
private func pollOverruns(_ message: MQTTMessage, sparkplug: Bool, recorder: ScaleRecorder) -> Int? {
    guard sparkplug else {
        let object = try? JSONSerialization.jsonObject(with: Data(message.payload)) as? [String: Any]
        return object?["poll_overruns"] as? Int
    }
    guard let payload = try? SparkplugPayload(serializedBytes: message.payload) else { return nil }
    let name = SparkplugNodeMetric.pollOverruns.rawValue
    if let named = payload.metrics.first(where: { $0.name == name }) {
        recorder.overrunAlias.store(Int(named.alias), ordering: .relaxed)
        return Int(named.longValue)
    }
    let alias = recorder.overrunAlias.load(ordering: .relaxed)
    return payload.metrics.first { alias >= 0 && $0.hasAlias && $0.alias == UInt64(alias) }.map { Int($0.longValue) }
}

func benchSparkplugScale(directory: TemporaryDirectory) async throws {
    let duration = Duration.seconds(Int(ProcessInfo.processInfo.environment["BENCH_SECONDS"] ?? "") ?? 10)
    let rounds = 2
    print("sparkplug-scale: the gateway process, \(scaleDevices) devices × \(scaleTags) tags every 100 ms "
          + "(\(scaleDevices * 10) polls/s) on \(scaleBuses) buses,")
    print("                 format json vs sparkplug, \(rounds) alternating rounds of \(duration), medians")
    let broker = try MosquittoBroker()
    try await broker.start()
    defer { Task { [broker] in try? await broker.stop() } }
    var simulators: [ModbusSimulator] = []
    for _ in 0..<scaleBuses {
        let simulator = try ModbusSimulator(port: freeLoopbackPort())  // fixed values: no animation work per request
        try simulator.start()
        simulators.append(simulator)
    }
    defer { for simulator in simulators { simulator.stop() } }
    var runs: [String: [ScaleRun]] = ["json": [], "sparkplug": []]
    for round in 1...rounds {
        for format in ["json", "sparkplug"] {
            let run = try await runScale(format: format, round: round, directory: directory, broker: broker,
                                         modbusPorts: simulators.map(\.port), duration: duration)
            runs[format]!.append(run)
            print(String(format: "  round %d %@: %.3f cores, %.1f MB RSS, %.0f msg/s, %d overruns",
                         round, format, run.cpuCores, run.rssMB, run.messagesPerSecond, run.overruns))
        }
    }
    func median(_ format: String, _ value: (ScaleRun) -> Double) -> Double {
        let values = runs[format]!.map(value).sorted()
        return values.count % 2 == 0 ? (values[values.count / 2 - 1] + values[values.count / 2]) / 2 : values[values.count / 2]
    }
    for format in ["json", "sparkplug"] {
        figure("\(format): CPU of the gateway, % of one core", median(format) { $0.cpuCores } * 100, "%")
        figure("\(format): RSS (VmRSS at the end)", median(format) { $0.rssMB }, "MB")
        figure("\(format): peak RSS (VmHWM)", median(format) { $0.peakRSSMB }, "MB")
        figure("\(format): data messages received (1,000 = all)", median(format) { $0.messagesPerSecond }, "msg/s")
        figure("\(format): poll overruns in the window", median(format) { Double($0.overruns) }, "slots")
    }
    print(String(format: "  ratio sparkplug / json: CPU %.2f, RSS %.2f, messages/s %.2f",
                 median("sparkplug") { $0.cpuCores } / median("json") { $0.cpuCores },
                 median("sparkplug") { $0.rssMB } / median("json") { $0.rssMB },
                 median("sparkplug") { $0.messagesPerSecond } / median("json") { $0.messagesPerSecond }))
}
