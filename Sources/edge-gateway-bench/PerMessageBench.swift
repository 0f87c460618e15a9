// `edge-gateway-bench per-message`: what one poll costs the real gateway process.
//
//   One device of 100 uint16 holding registers on the libmodbus simulator, a local
//   mosquitto, QoS 1, `sync: full` (and one run with `sync: normal`):
//   - CPU per 1,000 values: utime + stime of the gateway (/proc/<pid>/stat) over the run
//   - wakeups per second: voluntary context switches (a thread blocked and was woken)
//     summed over all the gateway's threads (/proc/<pid>/task/*/status), sampled every
//     100 ms so a thread that ends during the run keeps what it counted up to its last
//     sample; involuntary switches (preemptions: the machine's load, not the gateway's
//     wakeups) are printed beside them. At 1 poll/s that is the idle figure, also split
//     by kind of thread (bus, MQTT network, libdispatch's manager and workers, other).
//   - poll → subscriber latency: the message's `ts` (poll time, UTC ms, rounded down)
//     vs the wall clock when a subscriber's network thread receives it
//   against a plain write + fsync of 200 bytes on the same file system, in the same run.
//   BENCH_GATEWAY=<path> runs another build of edge-gateway (before/after comparisons);
//   BENCH_SECONDS=<n> sets the length of each run (10 s).
//   modpoll 1.6.0 at 10 and 100 polls/s on the same simulator and broker is the peer
//   baseline (ModpollBaseline.swift): the gateway's CPU per value as a ratio to it.
//   The floor (FloorBaseline.swift), after each gateway run at the same rate and sync:
//   the same work per poll on one thread straight through libmodbus, sqlite3 and
//   libmosquitto, its thread's CPU and wakeups per poll; the gateway's CPU per value as
//   a ratio to it, and the floor's to modpoll's (the least any poller doing this work
//   on this machine can reach).
import Foundation
import GatewayConfig
import LocalPeers
import Modbus
import MQTTUplink
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Receive times of the data messages a subscriber sees, with their `ts`.
private final class LatencyRecorder: Sendable {
    /// Milliseconds from `ts` to reception, one per message, while `recording`.
    let latencies = Mutex<[Double]>([])
    let received = Atomic<Int>(0)
    let recording = Atomic<Bool>(false)
    let connected = Atomic<Bool>(false)

    func note(_ payload: [UInt8]) {
        let now = Date().timeIntervalSince1970
        received.add(1, ordering: .relaxed)
        guard recording.load(ordering: .relaxed), let ts = Self.timestamp(in: payload) else { return }
        latencies.withLock { $0.append((now - ts) * 1000) }
    }

    /// The `ts` of a data message (`"ts":"2026-11-24T02:36:38.123Z"`) in seconds since 1970.
    static func timestamp(in payload: [UInt8]) -> Double? {
        guard let range = payload.firstRange(of: Array(#""ts":""#.utf8)), payload.count >= range.upperBound + 24
        else { return nil }
        let text = String(decoding: payload[range.upperBound..<(range.upperBound + 24)], as: UTF8.self)
        let digits = text.split(whereSeparator: { "-T:.Z".contains($0) }).compactMap { Int($0) }
        guard digits.count == 7 else { return nil }
        var parts = tm()
        parts.tm_year = Int32(digits[0] - 1900); parts.tm_mon = Int32(digits[1] - 1); parts.tm_mday = Int32(digits[2])
        parts.tm_hour = Int32(digits[3]); parts.tm_min = Int32(digits[4]); parts.tm_sec = Int32(digits[5])
        return Double(timegm(&parts)) + Double(digits[6]) / 1000
    }
}

private final class SubscriberBox: Sendable {
    let uplink = Mutex<MQTTUplink?>(nil)
}

/// CPU seconds (utime + stime) of process `pid` so far.
func cpuSeconds(pid: pid_t) -> Double {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return 0 }
    // Fields after "(comm)": state is field 3, utime 14, stime 15.
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
    return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// Per thread of `pid` (by thread id): voluntary and involuntary context switches, and
/// nanoseconds on a CPU (/proc/<pid>/task/<tid>/schedstat: a nanosecond clock, where
/// utime + stime come in 10 ms ticks, too coarse for a few idle polls).
private func contextSwitches(pid: pid_t) -> [String: ThreadCounts] {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
    var counts: [String: ThreadCounts] = [:]
    for task in tasks {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8) else { continue }
        var entry = ThreadCounts()
        entry.name = ((try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/comm", encoding: .utf8)) ?? "")
            .trimmingCharacters(in: .newlines)
        if let schedstat = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/schedstat", encoding: .utf8) {
            entry.cpuNanoseconds = Int(schedstat.split(separator: " ").first ?? "0") ?? 0
        }
        for line in status.split(separator: "\n") {
            if line.hasPrefix("voluntary_ctxt_switches:") {
                entry.voluntary = Int(line.split(separator: "\t").last ?? "0") ?? 0
            } else if line.hasPrefix("nonvoluntary_ctxt_switches:") {
                entry.involuntary = Int(line.split(separator: "\t").last ?? "0") ?? 0
            }
        }
        counts[task] = entry
    }
    return counts
}

private struct ThreadCounts {
    var voluntary = 0
    var involuntary = 0
    var cpuNanoseconds = 0
    /// The thread's name (`comm`).
    var name = ""

    /// Which of the gateway's threads this is, by its name: a bus thread (`bus <key>`), the
    /// MQTT network thread (`mqtt-<client id>`), libdispatch's (its manager thread and
    /// workers, named after a root queue: `…default-qos`, `…qos.overcommit`), or another.
    var kind: String {
        if name.hasPrefix("bus ") { return "bus" }
        if name.hasPrefix("mqtt-") { return "MQTT network" }
        if name.hasSuffix("qos") || name.hasSuffix("overcommit") { return "libdispatch" }
        return "other"
    }
}

/// Context switches and CPU time of all threads of a process over a run, threads that
/// start or end during it included (sampled every 100 ms: an ending thread loses at most
/// its last 100 ms).
private final class SwitchCounter: Sendable {
    private struct State {
        var first: [String: ThreadCounts] = [:]
        var last: [String: ThreadCounts] = [:]
    }
    private let state = Mutex(State())
    private let pid: pid_t

    init(pid: pid_t) {
        self.pid = pid
        let now = contextSwitches(pid: pid)
        state.withLock { $0.first = now; $0.last = now }
    }

    func sample() {
        let now = contextSwitches(pid: pid)
        state.withLock { state in
            for (task, counts) in now {
                state.last[task] = counts
                if state.first[task] == nil { state.first[task] = ThreadCounts() }  // started during the run
            }
        }
    }

    /// Voluntary switches since the start by kind of thread (`ThreadCounts.kind`).
    var voluntaryByKind: [String: Int] {
        state.withLock { state in
            var byKind: [String: Int] = [:]
            for (task, last) in state.last {
                byKind[last.kind, default: 0] += last.voluntary - (state.first[task]?.voluntary ?? 0)
            }
            return byKind
        }
    }

    /// Switches and CPU seconds since the start, and how many threads were seen.
    var total: (voluntary: Int, involuntary: Int, cpuSeconds: Double, threads: Int) {
        state.withLock { state in
            var total = (voluntary: 0, involuntary: 0, cpuSeconds: 0.0, threads: state.last.count)
            for (task, last) in state.last {
                let first = state.first[task] ?? ThreadCounts()
                total.voluntary += last.voluntary - first.voluntary
                total.involuntary += last.involuntary - first.involuntary
                total.cpuSeconds += Double(last.cpuNanoseconds - first.cpuNanoseconds) / 1e9
            }
            return total
        }
    }
}

/// p99 (and p50) in milliseconds of `count` writes of 200 bytes each followed by fsync.
private func fsyncLatencies(path: String, count: Int) -> [Double] {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    guard fd >= 0 else { return [] }
    defer { close(fd); unlink(path) }
    let block = [UInt8](repeating: 0x78, count: 200)
    var results: [Double] = []
    for _ in 0..<count {
        let start = ContinuousClock.now
        _ = block.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        fsync(fd)
        results.append(seconds(ContinuousClock.now - start) * 1000)
    }
    return results
}

private func percentile(_ values: [Double], _ p: Double) -> Double {
    guard !values.isEmpty else { return .nan }
    let sorted = values.sorted()
    return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

private struct PerMessageRun {
    var pollsPerSecond: Int
    var sync: String
    var messages: Int
    var cpuPerThousandValues: Double
    var cpuPerPoll: Double
    /// From the threads' nanosecond run times (see `contextSwitches`).
    var cpuPerPollPrecise: Double
    var wakeupsPerSecond: Double
    /// The same by kind of thread (`ThreadCounts.kind`).
    var wakeupsPerSecondByKind: [String: Double]
    var preemptionsPerSecond: Double
    var threads: Int
    var latencies: [Double]
}

private func runGateway(directory: TemporaryDirectory, broker: MosquittoBroker, modbusPort: Int,
                        pollsPerSecond: Int, sync: String, duration: Duration) async throws -> PerMessageRun {
    let tags = (0..<100).map { "      - { name: r\($0), table: holding, address: \($0), type: uint16 }" }
        .joined(separator: "\n")
    let name = "per-message-\(pollsPerSecond)-\(sync)"
    let config = directory.file("\(name).yaml")
    try """
    gateway: { id: bench }
    mqtt: { host: 127.0.0.1, port: \(broker.port), qos: 1 }
    buffer: { path: \(directory.file("\(name).sqlite")), sync: \(sync) }
    log_level: error
    devices:
      - name: meter
        tcp: { host: 127.0.0.1, port: \(modbusPort) }
        poll_interval: \(1000 / pollsPerSecond)ms
        tags:
    \(tags)
    """.write(toFile: config, atomically: true, encoding: .utf8)
    let recorder = LatencyRecorder()
    let box = SubscriberBox()
    let topic = GatewayIdentity(id: "bench").dataTopic(device: "meter")
    let subscriber = MQTTUplink(settings: MQTTUplinkSettings(host: "127.0.0.1", port: broker.port,
                                                             clientID: "bench-sub-\(pollsPerSecond)-\(sync)"),
                                logger: quiet) { event in
        switch event {
        case .connected:
            try? box.uplink.withLock { try $0?.subscribe(topic, qos: 1) }
            recorder.connected.store(true, ordering: .releasing)
        case let .message(message): recorder.note(message.payload)
        default: break
        }
    }
    box.uplink.withLock { $0 = subscriber }
    subscriber.start()
    try await waitUntil("the bench subscriber to connect") { recorder.connected.load(ordering: .acquiring) }
    let binary = try ProcessInfo.processInfo.environment["BENCH_GATEWAY"] ?? builtProduct("edge-gateway")
    let gateway = try ChildProcess(binary, ["run", "--config", config],
                                   log: directory.file("\(name).log"))
    try await waitUntil("the first data message", timeout: .seconds(60)) {
        recorder.received.load(ordering: .relaxed) > 0 || !gateway.isRunning
    }
    guard gateway.isRunning else {
        throw ModbusBenchFailure(description: "the gateway exited: \(gateway.output.suffix(1000))")
    }
    try await Task.sleep(for: .seconds(2))  // warm-up, not measured
    let cpuStart = cpuSeconds(pid: gateway.pid)
    let switches = SwitchCounter(pid: gateway.pid)
    let receivedStart = recorder.received.load(ordering: .relaxed)
    let start = ContinuousClock.now
    recorder.recording.store(true, ordering: .relaxed)
    while ContinuousClock.now - start < duration {
        try await Task.sleep(for: min(.milliseconds(100), duration - (ContinuousClock.now - start)))
        switches.sample()
    }
    recorder.recording.store(false, ordering: .relaxed)
    let elapsed = seconds(ContinuousClock.now - start)
    let cpu = cpuSeconds(pid: gateway.pid) - cpuStart
    let switchesEnd = switches.total
    let messages = recorder.received.load(ordering: .relaxed) - receivedStart
    gateway.signal(SIGTERM)
    _ = try await gateway.waitForExit()
    await subscriber.stop()
    let polls = Double(pollsPerSecond) * elapsed
    return PerMessageRun(
        pollsPerSecond: pollsPerSecond, sync: sync, messages: messages,
        cpuPerThousandValues: cpu * 1000 / max(Double(messages) * 100 / 1000, 0.001),
        cpuPerPoll: cpu * 1000 / polls,
        cpuPerPollPrecise: switchesEnd.cpuSeconds * 1000 / polls,
        wakeupsPerSecond: Double(switchesEnd.voluntary) / elapsed,
        wakeupsPerSecondByKind: switches.voluntaryByKind.mapValues { Double($0) / elapsed },
        preemptionsPerSecond: Double(switchesEnd.involuntary) / elapsed,
        threads: switchesEnd.threads, latencies: recorder.latencies.withLock { $0 })
}

func benchPerMessage(directory: TemporaryDirectory) async throws {
    let duration = Duration.seconds(Int(ProcessInfo.processInfo.environment["BENCH_SECONDS"] ?? "") ?? 10)
    print("per-message: the gateway process, one device of 100 uint16 registers, QoS 1, \(duration) per run")
    let broker = try MosquittoBroker()
    try await broker.start()
    defer { Task { [broker] in try? await broker.stop() } }
    let modbusPort = freeLoopbackPort()
    let simulator = try ModbusSimulator(port: modbusPort, animate: true)
    try simulator.start()
    defer { simulator.stop() }
    let fsyncs = fsyncLatencies(path: directory.file("fsync.bin"), count: 500)
    var runs: [PerMessageRun] = []
    var floors: [FloorRun] = []
    for (rate, sync) in [(1, "full"), (10, "full"), (100, "full"), (100, "normal")] {
        runs.append(try await runGateway(directory: directory, broker: broker, modbusPort: modbusPort,
                                         pollsPerSecond: rate, sync: sync, duration: duration))
        floors.append(try await runFloor(directory: directory, brokerPort: broker.port, modbusPort: modbusPort,
                                         pollsPerSecond: rate, sync: sync, duration: duration))
    }
    func floor(_ rate: Int, _ sync: String) -> FloorRun? {
        floors.first { $0.pollsPerSecond == rate && $0.sync == sync }
    }
    let fsyncP99 = percentile(fsyncs, 0.99)
    var modpollRuns: [ModpollRun] = []
    var modpollProblem: String?
    do {
        let modpoll = try modpollExecutable()
        for rate in [10, 100] {
            modpollRuns.append(try await runModpoll(executable: modpoll, directory: directory, brokerPort: broker.port,
                                                    modbusPort: modbusPort, pollsPerSecond: rate, duration: duration))
        }
    } catch {
        modpollProblem = "\(error)"
    }
    for run in runs {
        let label = "\(run.pollsPerSecond) polls/s, sync \(run.sync)"
        print(String(format: "  %@: %d messages, %d threads", label, run.messages, run.threads))
        figure("  CPU per 1,000 values", run.cpuPerThousandValues, "ms")
        figure("  CPU per poll", run.cpuPerPoll * 1000, "µs")
        figure("  CPU per poll (threads' run time, ns clock)", run.cpuPerPollPrecise * 1000, "µs")
        figure("  wakeups (voluntary context switches, all threads)", run.wakeupsPerSecond, "/s")
        figure("  preemptions (involuntary switches: the machine's load)", run.preemptionsPerSecond, "/s")
        figure("  poll → subscriber p50 (ts has ms resolution)", percentile(run.latencies, 0.5), "ms")
        figure("  poll → subscriber p99", percentile(run.latencies, 0.99), "ms")
        if run.sync == "full" && run.pollsPerSecond == 100 {
            print(String(format: "  p99 above the fsync p99 (target <= 5 ms): %.1f ms", percentile(run.latencies, 0.99) - fsyncP99))
        }
        if let floor = floor(run.pollsPerSecond, run.sync) {
            print(String(format: "    floor, one thread doing the same work (libmodbus, sqlite3, libmosquitto): %d polls in %.1f s, %d overruns, %d-byte payloads",
                         floor.polls, floor.seconds, floor.overruns, floor.payloadBytes))
            figure("  floor CPU per poll (the thread's CPU clock)", floor.cpuPerPoll * 1e6, "µs")
            figure("  floor CPU per 1,000 values", floor.cpuPerThousandValues, "ms")
            figure("  floor wakeups (voluntary switches)", floor.wakeupsPerPoll, "per poll")
            figure("  floor preemptions (involuntary switches)", floor.preemptionsPerPoll, "per poll")
            // Both nanosecond clocks of the threads' run time; utime + stime counts 10 ms
            // ticks, none at all in a few idle polls.
            let perValue = run.cpuPerThousandValues > 0
                ? String(format: "%.2f", run.cpuPerThousandValues / floor.cpuPerThousandValues) : "n/a (no 10 ms tick counted)"
            print(String(format: "    gateway / floor CPU per poll (threads' ns clocks): %.2f; per value (gateway utime + stime): %@",
                         run.cpuPerPollPrecise / (floor.cpuPerPoll * 1000), perValue))
        }
    }
    figure("baseline: write + fsync of 200 bytes, p50", percentile(fsyncs, 0.5), "ms")
    figure("baseline: write + fsync of 200 bytes, p99", fsyncP99, "ms")
    if let modpollProblem { print("  modpoll baseline unavailable: \(modpollProblem)") }
    for peer in modpollRuns {
        print(String(format: "  modpoll 1.6.0 at %d polls/s (reached %.1f/s):", peer.pollsPerSecond,
                     Double(peer.messages) / peer.seconds))
        figure("  modpoll CPU per 1,000 values", peer.cpuPerThousandValues, "ms")
        if let ours = runs.first(where: { $0.pollsPerSecond == peer.pollsPerSecond && $0.sync == "full" }) {
            figure("  edge-gateway (sync full) CPU per 1,000 values", ours.cpuPerThousandValues, "ms")
            print(String(format: "    edge-gateway / modpoll CPU per value (target <= 0.1): %.3f",
                         ours.cpuPerThousandValues / peer.cpuPerThousandValues))
        }
        if let floor = floor(peer.pollsPerSecond, "full") {
            figure("  floor (sync full) CPU per 1,000 values", floor.cpuPerThousandValues, "ms")
            print(String(format: "    floor / modpoll: the least any poller doing this work on this machine can reach: %.3f",
                         floor.cpuPerThousandValues / peer.cpuPerThousandValues))
        }
    }
    if let idle = runs.first {
        print(String(format: "  idle (1 poll/s): %.1f wakeups/s beyond the poll (target <= 5), %.2f ms CPU per poll (target <= 0.3; %.2f ms in 10 ms ticks)",
                     idle.wakeupsPerSecond - 1, idle.cpuPerPollPrecise, idle.cpuPerPoll))
        let byKind = idle.wakeupsPerSecondByKind.sorted { $0.value > $1.value }
            .map { String(format: "%@ %.1f", $0.key, $0.value) }.joined(separator: ", ")
        print("  idle wakeups/s by thread: \(byKind)")
        if let floor = floor(1, "full") {
            print(String(format: "  idle floor (1 poll/s, one thread): %.3f ms CPU per poll (the gateway's target <= 0.3), %.1f wakeups per poll",
                         floor.cpuPerPoll * 1000, floor.wakeupsPerPoll))
        }
        // The same wakeups split by what causes them: w(r) = periodic + r × per poll, from
        // the 1 and 10 polls/s runs (both sync full).
        if let ten = runs.first(where: { $0.pollsPerSecond == 10 && $0.sync == "full" }) {
            let perPoll = (ten.wakeupsPerSecond - idle.wakeupsPerSecond) / 9
            print(String(format: "  idle split: %.1f wakeups per poll (bus, commit, publish, PUBACK, delete), %.1f/s not caused by polls",
                         perPoll, idle.wakeupsPerSecond - perPoll))
        }
    }
}
