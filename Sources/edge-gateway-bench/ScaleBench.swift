// `edge-gateway-bench scale`: the release gateway with many Modbus TCP devices.
//
//   - 1,000 devices, each on its own port of `edge-gateway simulate --devices 1000`
//     (one simulator process, one thread), 100 uint16 holding registers each, polled every 1 s
//   - 100 devices of the same kind polled every 100 ms
//   Both are 1,000 polls (100,000 values) per second, QoS 1, `sync: full`, a local mosquitto.
//   Over a steady window after a warm-up, of the gateway process (/proc/<pid>/…):
//   cores (utime + stime over wall time), VmRSS and VmHWM, threads, poll overruns
//   (the gateway's stats topic), data messages/s at a subscriber; the simulator's
//   cores separately (not the gateway's); where the resident memory is (smaps:
//   mapped files, malloc arenas, thread stacks).
//   BENCH_GATEWAY=<path> runs another build of edge-gateway as the gateway (the
//   simulator is always this build's); SCALE_BASELINE_GATEWAY=<path> runs that build
//   too, in the same run, for a before/after ratio. BENCH_WARMUP=<s> (10) and
//   BENCH_SECONDS=<s> (20) set the windows; SCALE_RUNS=1000x1s,100x100ms the scenarios.
import Foundation
import GatewayConfig
import LocalPeers
import MQTTUplink
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What /proc says about one process at one moment.
private struct ProcessSample {
    /// utime + stime so far, seconds.
    var cpu: Double
    var rssMB: Double
    var peakRSSMB: Double
    var threads: Int
    var at: ContinuousClock.Instant

    init(pid: pid_t) {
        at = .now
        cpu = 0
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
           let close = stat.lastIndex(of: ")") {
            // Fields after "(comm)": state is field 3, utime 14, stime 15.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            cpu = ((Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)) / Double(sysconf(Int32(_SC_CLK_TCK)))
        }
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        func field(_ name: String) -> Double {
            let line = status.split(separator: "\n").first { $0.hasPrefix(name + ":") } ?? ""
            return Double(line.split(whereSeparator: \.isWhitespace).dropFirst().first ?? "0") ?? 0
        }
        rssMB = field("VmRSS") / 1024
        peakRSSMB = field("VmHWM") / 1024
        threads = Int(field("Threads"))
    }

    /// Cores used between `earlier` and this sample.
    func cores(since earlier: ProcessSample) -> Double {
        (cpu - earlier.cpu) / seconds(at - earlier.at)
    }
}

/// Data messages and the newest stats a subscriber to the whole gateway sees.
private final class ScaleSubscriber: Sendable {
    struct Stats: Sendable {
        var overruns: Int64 = 0
        var pollsOK: Int64 = 0
        var pollsFailed: Int64 = 0
    }

    let dataMessages = Atomic<Int>(0)
    let connected = Atomic<Bool>(false)
    let stats = Mutex<Stats?>(nil)
    let uplink = Mutex<MQTTUplink?>(nil)

    func note(_ message: MQTTMessage) {
        if message.topic.hasSuffix("/data") {
            dataMessages.add(1, ordering: .relaxed)
        } else if message.topic.hasSuffix("/stats"),
                  let object = try? JSONSerialization.jsonObject(with: Data(message.payload)) as? [String: Any] {
            func number(_ key: String) -> Int64 { (object[key] as? NSNumber)?.int64Value ?? 0 }
            stats.withLock {
                $0 = Stats(overruns: number("poll_overruns"), pollsOK: number("polls_ok"), pollsFailed: number("polls_failed"))
            }
        }
    }
}

/// One scenario: `devices` TCP devices of `tags` uint16 registers, polled every `interval`.
private struct ScaleScenario {
    var devices: Int
    var interval: Duration
    var tags = 100

    var name: String {
        let milliseconds = Int(interval / .milliseconds(1))
        return "\(devices)x" + (milliseconds % 1000 == 0 ? "\(milliseconds / 1000)s" : "\(milliseconds)ms")
    }

    init(devices: Int, interval: Duration) {
        self.devices = devices
        self.interval = interval
    }

    /// `1000x1s`, `100x100ms`.
    init?(_ text: Substring) {
        let parts = text.split(separator: "x")
        guard parts.count == 2, let devices = Int(parts[0]) else { return nil }
        let unit = parts[1]
        if unit.hasSuffix("ms"), let value = Int(unit.dropLast(2)) {
            interval = .milliseconds(value)
        } else if unit.hasSuffix("s"), let value = Int(unit.dropLast()) {
            interval = .seconds(value)
        } else {
            return nil
        }
        self.devices = devices
    }

    /// The gateway's configuration: every device names its own port; the tag list is
    /// written once (an anchor) and referred to by every other device.
    func configuration(ports: [Int], brokerPort: Int, outbox: String) -> String {
        let milliseconds = Int(interval / .milliseconds(1))
        let tagList = (0..<tags).map { "{ name: r\($0), table: holding, address: \($0), type: uint16 }" }
            .joined(separator: ", ")
        var text = """
        gateway: { id: bench, stats_interval: 2s }
        mqtt: { host: 127.0.0.1, port: \(brokerPort), qos: 1, client_id: bench-scale-gateway }
        buffer: { path: \(outbox), sync: full }
        log_level: warning
        devices:

        """
        for (index, port) in ports.prefix(devices).enumerated() {
            let tags = index == 0 ? "&tags [\(tagList)]" : "*tags"
            text += "  - { name: d\(index), tcp: { host: 127.0.0.1, port: \(port) }, poll_interval: \(milliseconds)ms, tags: \(tags) }\n"
        }
        return text
    }
}

private struct ScaleRun {
    var scenario: ScaleScenario
    var gateway: String
    var cores: Double
    var simulatorCores: Double
    var rssMB: Double
    var peakRSSMB: Double
    var threads: Int
    var overrunsInWindow: Int64
    var overrunsTotal: Int64
    var pollsFailedInWindow: Int64
    var messagesPerSecond: Double
    var startup: Duration
    var memory: MemoryMap?
}

/// Starts the gateway on `scenario`, waits for every device's first messages and a
/// warm-up, then measures a window.
private func runScale(_ scenario: ScaleScenario, gatewayBinary: String, label: String, ports: [Int], simulator: ChildProcess,
                      broker: MosquittoBroker, directory: TemporaryDirectory,
                      warmUp: Duration, window: Duration) async throws -> ScaleRun {
    let name = "scale-\(scenario.name)-\(label)"
    let config = directory.file("\(name).yaml")
    try scenario.configuration(ports: ports, brokerPort: broker.port, outbox: directory.file("\(name).sqlite"))
        .write(toFile: config, atomically: true, encoding: .utf8)

    let subscriber = ScaleSubscriber()
    let uplink = MQTTUplink(settings: MQTTUplinkSettings(host: "127.0.0.1", port: broker.port, clientID: "bench-\(name)"),
                            logger: quiet) { event in
        switch event {
        case .connected:
            try? subscriber.uplink.withLock {
                try $0?.subscribe("edge/bench/+/data", qos: 0)
                try $0?.subscribe("edge/bench/stats", qos: 0)
            }
            subscriber.connected.store(true, ordering: .releasing)
        case let .message(message): subscriber.note(message)
        default: break
        }
    }
    subscriber.uplink.withLock { $0 = uplink }
    uplink.start()
    defer { Task { await uplink.stop() } }
    try await waitUntil("the bench subscriber to connect") { subscriber.connected.load(ordering: .acquiring) }

    let started = ContinuousClock.now
    let gateway = try ChildProcess(gatewayBinary, ["run", "--config", config], log: directory.file("\(name).log"))
    defer {
        gateway.signal(SIGTERM)
        gateway.waitBlocking()
    }
    // Every device polled at least once (its first poll is a message).
    try await waitUntil("a message from each of \(scenario.devices) devices", timeout: .seconds(120)) {
        subscriber.dataMessages.load(ordering: .relaxed) >= scenario.devices || !gateway.isRunning
    }
    guard gateway.isRunning else {
        throw ModbusBenchFailure(description: "the gateway exited: \(gateway.output.suffix(2000))")
    }
    let startup = ContinuousClock.now - started
    try await Task.sleep(for: warmUp)
    // Stats come every 2 s: the window runs from one stats message to a later one.
    try await waitUntil("the gateway's stats") { subscriber.stats.withLock { $0 } != nil }
    let statsStart = subscriber.stats.withLock { $0! }
    let gatewayStart = ProcessSample(pid: gateway.pid)
    let simulatorStart = ProcessSample(pid: simulator.pid)
    let messagesStart = subscriber.dataMessages.load(ordering: .relaxed)
    try await Task.sleep(for: window)
    let gatewayEnd = ProcessSample(pid: gateway.pid)
    let memory = MemoryMap(pid: gateway.pid)
    let simulatorEnd = ProcessSample(pid: simulator.pid)
    let messages = subscriber.dataMessages.load(ordering: .relaxed) - messagesStart
    let statsEnd = subscriber.stats.withLock { $0! }
    guard gateway.isRunning else {
        throw ModbusBenchFailure(description: "the gateway exited: \(gateway.output.suffix(2000))")
    }
    return ScaleRun(
        scenario: scenario, gateway: label,
        cores: gatewayEnd.cores(since: gatewayStart), simulatorCores: simulatorEnd.cores(since: simulatorStart),
        rssMB: gatewayEnd.rssMB, peakRSSMB: gatewayEnd.peakRSSMB, threads: gatewayEnd.threads,
        overrunsInWindow: statsEnd.overruns - statsStart.overruns, overrunsTotal: statsEnd.overruns,
        pollsFailedInWindow: statsEnd.pollsFailed - statsStart.pollsFailed,
        messagesPerSecond: Double(messages) / seconds(gatewayEnd.at - gatewayStart.at), startup: startup,
        memory: memory)
}

func benchScale(directory: TemporaryDirectory) async throws {
    let environment = ProcessInfo.processInfo.environment
    let warmUp = Duration.seconds(Int(environment["BENCH_WARMUP"] ?? "") ?? 10)
    let window = Duration.seconds(Int(environment["BENCH_SECONDS"] ?? "") ?? 20)
    let scenarios = (environment["SCALE_RUNS"] ?? "1000x1s,100x100ms").split(separator: ",").compactMap(ScaleScenario.init)
    guard !scenarios.isEmpty else { throw ModbusBenchFailure(description: "SCALE_RUNS names no scenario (e.g. 1000x1s,100x100ms)") }
    let thisBuild = try builtProduct("edge-gateway")
    var gateways = [("this", environment["BENCH_GATEWAY"] ?? thisBuild)]
    if let baseline = environment["SCALE_BASELINE_GATEWAY"] { gateways.insert(("baseline", baseline), at: 0) }
    print("scale: the gateway process with N Modbus TCP devices (one port each) of 100 uint16 registers, QoS 1, sync full;")
    print("       \(warmUp) warm-up after every device's first message, then \(window) measured")

    let broker = try MosquittoBroker()
    try await broker.start()
    defer { Task { [broker] in try? await broker.stop() } }
    let deviceCount = scenarios.map(\.devices).max()!
    let portsFile = directory.file("simulator-ports")
    let simulator = try ChildProcess(thisBuild, ["simulate", "--port", "0", "--devices", "\(deviceCount)", "--ports-file", portsFile],
                                     log: directory.file("simulator.log"))
    defer {
        simulator.signal(SIGTERM)
        simulator.waitBlocking()
    }
    try await waitUntil("the simulator's \(deviceCount) ports", timeout: .seconds(60)) {
        FileManager.default.fileExists(atPath: portsFile) || !simulator.isRunning
    }
    let ports = try String(contentsOfFile: portsFile, encoding: .utf8).split(separator: "\n").compactMap { Int($0) }
    guard ports.count == deviceCount else {
        throw ModbusBenchFailure(description: "the simulator listens on \(ports.count) ports, not \(deviceCount): \(simulator.output.suffix(1000))")
    }

    var runs: [ScaleRun] = []
    for scenario in scenarios {
        for (label, binary) in gateways {
            let run = try await runScale(scenario, gatewayBinary: binary, label: label, ports: ports, simulator: simulator,
                                         broker: broker, directory: directory, warmUp: warmUp, window: window)
            runs.append(run)
            print(String(format: "  %@ (%@): %.3f cores, RSS %.1f MB (peak %.1f), %d threads, %lld overruns in the window"
                         + " (%lld since start), %lld failed polls, %.0f msg/s at the subscriber; simulator %.3f cores; "
                         + "all devices publishing after %.1f s",
                         scenario.name, label, run.cores, run.rssMB, run.peakRSSMB, run.threads, run.overrunsInWindow,
                         run.overrunsTotal, run.pollsFailedInWindow, run.messagesPerSecond, run.simulatorCores,
                         seconds(run.startup)))
        }
    }
    for run in runs {
        let target = run.scenario.interval >= .seconds(1) ? "≤ 0.5 cores, ≤ 100 MB, no overruns" : "≤ 0.25 cores"
        print("  \(run.scenario.name) \(run.gateway) (target \(target)):")
        figure("  gateway CPU time per second of wall time", run.cores * 1000, "ms/s")
        figure("  gateway RSS now, VmRSS", run.rssMB, "MB")
        figure("  gateway peak RSS, VmHWM", run.peakRSSMB, "MB")
        if let memory = run.memory {
            figure("    of it mapped files (binary, Swift, Foundation, ICU)", Double(memory.files) / 1024, "MB")
            figure("    of it malloc: main heap", Double(memory.mainHeap) / 1024, "MB")
            figure("    of it malloc: \(memory.arenaCount) other arenas", Double(memory.arenas) / 1024, "MB")
            figure("    of it thread stacks (\(memory.stackCount) threads)", Double(memory.stacks) / 1024, "MB")
            figure("    deepest thread stack touched", Double(memory.deepestStack), "KiB")
            figure("    of it other anonymous", Double(memory.otherAnonymous) / 1024, "MB")
        }
        figure("  gateway threads", Double(run.threads), "")
        figure("  poll overruns in the window", Double(run.overrunsInWindow), "")
        figure("  data messages at the subscriber", run.messagesPerSecond, "msg/s")
        figure("  expected (devices / interval)", Double(run.scenario.devices) / seconds(run.scenario.interval), "msg/s")
        figure("  simulator CPU time per second (not the gateway's)", run.simulatorCores * 1000, "ms/s")
    }
    if gateways.count == 2 {
        for scenario in scenarios {
            let pair = runs.filter { $0.scenario.name == scenario.name }
            guard pair.count == 2 else { continue }
            print(String(format: "  %@: cores this / baseline %.2f, RSS this / baseline %.2f", scenario.name,
                         pair[1].cores / pair[0].cores, pair[1].rssMB / pair[0].rssMB))
        }
    }
}
