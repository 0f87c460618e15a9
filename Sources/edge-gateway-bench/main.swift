// `make bench`: the figures the issues ask for, each next to a baseline measured
// in the same run on the same machine. Prints; asserts nothing.
//
//   append   outbox appends (sync full, 200-byte payloads, group commits of 1000)
//            vs raw SQLite inserts of the same rows in the same transactions
//   replay   draining a 200,000-message backlog through the forwarder at QoS 1
//            vs publishing the same messages from memory through libmosquitto
//            with the same inflight window
//   rss      RSS of the gateway process holding 1,000,000 buffered messages: the shipped
//            (static) build and the dynamic release build, and where the RSS is
//   duplicates  SIGKILL during full-speed replay: messages sent twice vs the window (CrashReplayBench.swift)
//   startup  spawn → READY=1 with a 1 GiB outbox vs reading the file (StartupBench.swift)
//   modbus   see ModbusBench.swift
//   seal     seal + outbox append (AES-256-GCM, HMAC-SHA256) vs unsealed appends (SealBench.swift)
//   service  spawn → READY=1 vs process start; one WATCHDOG=1 vs one syscall (ServiceBench.swift)
//   sparkplug  a 100-tag Sparkplug DDATA vs the JSON message of the same poll (SparkplugBench.swift)
//   sparkplug-scale  the gateway process at 100 devices × 100 tags every 100 ms, json vs sparkplug (SparkplugScaleBench.swift)
//   monitor-ingest, monitor-fleet  edge-monitor (MonitorBench.swift)
//   encode   decode + JSON encode of one 100-tag poll in process vs copying its bytes (EncodeBench.swift)
//   per-message  CPU per value, idle wakeups, poll → subscriber latency of the gateway process vs fsync, modpoll
//            and a one-thread floor doing the same work (PerMessageBench.swift, ModpollBaseline.swift, FloorBaseline.swift)
//   commands command → write → result with polls at 10 ms vs an MQTT round trip (CommandBench.swift)
//   scale    cores, RSS, threads, overruns of the gateway with 1,000 TCP devices at 1 s and 100 at 100 ms (ScaleBench.swift)
import Foundation
import Gateway
import GatewayConfig
import LocalPeers
import Logging
import Modbus
import MQTTUplink
import Outbox
import ServiceLifecycle
import Synchronization

let arguments = Set(CommandLine.arguments.dropFirst())
let selected = arguments.isEmpty
    ? ["append", "replay", "rss", "duplicates", "startup", "modbus", "encode", "seal", "service", "sparkplug", "sparkplug-scale", "per-message", "commands",
       "monitor-ingest", "monitor-fleet", "scale"]
    : arguments
nonisolated let quiet: Logger = {
    var logger = Logger(label: "bench")
    logger.logLevel = .error
    return logger
}()

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func figure(_ name: String, _ value: Double, _ unit: String) {
    let padded = name.padding(toLength: 56, withPad: " ", startingAt: 0)
    print("  \(padded) \(String(format: "%12.1f", value)) \(unit)")
}

nonisolated let payload = [UInt8](repeating: UInt8(ascii: "x"), count: 200)

func drafts(_ count: Int) -> [OutboxDraft] {
    (0..<count).map { _ in OutboxDraft(topic: "edge/bench/device/data", qos: 1) { _, _ in payload } }
}

/// Fills a new outbox with `count` messages (sync normal: setup, not the figure).
func prefilledOutbox(_ path: String, count: Int) async throws -> Outbox {
    let outbox = try Outbox(settings: OutboxSettings(path: path, synchronous: .normal, maxMessages: nil, maxBytes: nil),
                            logger: quiet)
    let batch = drafts(1000)
    for _ in 0..<(count / 1000) { _ = try await outbox.append(batch) }
    return outbox
}

// MARK: - append

func benchAppend(directory: TemporaryDirectory) async throws {
    print("append: 200,000 messages of 200 bytes, group commits of 1,000, synchronous=FULL, WAL")
    let total = 200_000
    let clock = ContinuousClock()
    let outbox = try Outbox(settings: OutboxSettings(path: directory.file("append.sqlite"), synchronous: .full),
                            logger: quiet)
    let batch = drafts(1000)
    let outboxTime = try await clock.measure {
        for _ in 0..<(total / 1000) { _ = try await outbox.append(batch) }
    }
    let baselineTime = try RawSQLite.insertBenchmark(path: directory.file("raw.sqlite"), total: total, batch: 1000,
                                                     payload: payload)
    let outboxRate = Double(total) / seconds(outboxTime)
    let baselineRate = Double(total) / seconds(baselineTime)
    figure("outbox append (target >= 100,000)", outboxRate, "msg/s")
    figure("baseline: raw sqlite3 INSERT, same rows and commits", baselineRate, "msg/s")
    print(String(format: "  ratio outbox / raw sqlite3: %.2f", outboxRate / baselineRate))
}

// MARK: - replay

final class AckCounter: Sendable {
    let acked = Atomic<Int>(0)
    let connected = Atomic<Bool>(false)
}

func benchReplay(directory: TemporaryDirectory) async throws {
    let total = 200_000
    let window = 100
    let rounds = 3
    let topic = "edge/bench/device/data"
    print("replay: 200,000 buffered messages at QoS 1 to a local mosquitto, inflight window \(window),")
    print("        \(rounds) alternating rounds, medians (the machine's noise is large)")
    let broker = try MosquittoBroker()
    try await broker.start()
    var rawRates: [Double] = []
    var uplinkRates: [Double] = []
    var forwarderRates: [Double] = []
    // The bench process's CPU (user + system, all its threads; the broker is a child) per
    // message while each ran: less noisy than the rates on a busy machine.
    var rawCPU: [Double] = []
    var uplinkCPU: [Double] = []
    var forwarderCPU: [Double] = []
    for round in 1...rounds {
        let rawStart = processCPUSeconds()
        let raw = try await replayRawBaseline(port: broker.port, total: total, window: window, topic: topic)
        rawCPU.append((processCPUSeconds() - rawStart) / Double(total))
        let (uplink, uplinkSpent) = try await replayBaseline(port: broker.port, total: total, window: window)
        uplinkCPU.append(uplinkSpent / Double(total))
        let (forwarder, left, forwarderSpent) = try await replayForwarder(port: broker.port, total: total, window: window,
                                                                          path: directory.file("replay-\(round).sqlite"))
        forwarderCPU.append(forwarderSpent / Double(total))
        rawRates.append(Double(total) / seconds(raw))
        uplinkRates.append(Double(total) / seconds(uplink))
        forwarderRates.append(Double(total) / seconds(forwarder))
        print(String(format: "  round %d: forwarder %.0f msg/s, raw libmosquitto %.0f msg/s, MQTTUplink from a thread %.0f msg/s, left in the outbox %d",
                     round, forwarderRates.last!, rawRates.last!, uplinkRates.last!, left))
        print(String(format: "           CPU per message: forwarder %.1f us, raw libmosquitto %.1f us, MQTTUplink from a thread %.1f us",
                     forwarderCPU.last! * 1e6, rawCPU.last! * 1e6, uplinkCPU.last! * 1e6))
    }
    try await broker.stop()
    func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
    figure("forwarder drain from the outbox (median)", median(forwarderRates), "msg/s")
    figure("raw libmosquitto, one thread, same window (median)", median(rawRates), "msg/s")
    figure("through MQTTUplink from a thread (median)", median(uplinkRates), "msg/s")
    print(String(format: "  ratio forwarder / raw libmosquitto (target >= 0.9): %.2f", median(forwarderRates) / median(rawRates)))
    print(String(format: "  ratio forwarder / MQTTUplink from a thread: %.2f", median(forwarderRates) / median(uplinkRates)))
    figure("CPU per message: forwarder (median)", median(forwarderCPU) * 1e6, "us")
    figure("CPU per message: raw libmosquitto (median)", median(rawCPU) * 1e6, "us")
    figure("CPU per message: MQTTUplink from a thread (median)", median(uplinkCPU) * 1e6, "us")
    print(String(format: "  CPU ratio raw libmosquitto / forwarder: %.2f", median(rawCPU) / median(forwarderCPU)))
}

/// The bench process's CPU time so far (user + system, all threads), in seconds.
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Publishes `total` messages from memory with at most `window` unacknowledged, through
/// the gateway's own `MQTTUplink` (so it moves with the uplink; the target is `replayRawBaseline`).
func replayBaseline(port: Int, total: Int, window: Int) async throws -> (Duration, cpu: Double) {
    let clock = ContinuousClock()
    // The same messages from memory, same window, straight through libmosquitto;
    // a plain thread blocks on a semaphore of `window` permits that
    // each PUBACK gives back.
    let counter = AckCounter()
    let permits = DispatchSemaphore(value: window)
    let uplink = MQTTUplink(
        settings: MQTTUplinkSettings(host: "127.0.0.1", port: port, clientID: "bench-baseline",
                                     maxInflight: window),
        logger: quiet,
        onEvent: { event in
            switch event {
            case .connected: counter.connected.store(true, ordering: .releasing)
            case .published:
                counter.acked.add(1, ordering: .relaxed)
                permits.signal()
            default: break
            }
        })
    uplink.start()
    try await waitUntil("the baseline client to connect") { counter.connected.load(ordering: .acquiring) }
    let message = MQTTMessage(topic: "edge/bench/device/data", payload: payload, qos: 1)
    let baselineStart = clock.now
    let cpuStart = processCPUSeconds()
    let failure = Mutex<String?>(nil)
    let publisher = Thread {
        for sent in 0..<total {
            permits.wait()
            do {
                _ = try uplink.publish(message)
            } catch {
                failure.withLock { $0 = "MQTTUplink.publish of message \(sent + 1) of \(total): \(error)" }
                return
            }
        }
    }
    publisher.start()
    try await waitUntil("the baseline to be acknowledged", timeout: .seconds(300)) {
        counter.acked.load(ordering: .relaxed) >= total || failure.withLock { $0 != nil }
    }
    if let problem = failure.withLock({ $0 }) {
        await uplink.stop()
        throw BaselineFailure(baseline: .replay, step: "through MQTTUplink from a thread", reason: problem)
    }
    let baselineTime = clock.now - baselineStart
    let cpu = processCPUSeconds() - cpuStart
    await uplink.stop()
    return (baselineTime, cpu)
}

/// Drains an outbox of `total` messages through a real `ForwarderService`.
func replayForwarder(port: Int, total: Int, window: Int, path replayPath: String) async throws -> (Duration, Int, cpu: Double) {
    let clock = ContinuousClock()
    // The forwarder draining a real outbox, reopened with synchronous=FULL as deployed.
    do { _ = try await prefilledOutbox(replayPath, count: total) }
    let outbox = try Outbox(settings: OutboxSettings(path: replayPath, synchronous: ProcessInfo.processInfo.environment["BENCH_SYNC"] == "normal" ? .normal : .full, maxMessages: nil,
                                                     maxBytes: nil), logger: quiet)
    let identity = GatewayIdentity(id: "bench", statsInterval: .seconds(3600))
    let forwarder = ForwarderService(
        identity: identity,
        mqtt: MQTTSettings(host: "127.0.0.1", port: port, clientID: "bench-forwarder", maxInflight: window),
        outbox: outbox, pollCounters: PollCounters(), logger: quiet)
    let group = ServiceGroup(configuration: ServiceGroupConfiguration(
        services: [.init(service: forwarder)], gracefulShutdownSignals: [], logger: quiet))
    let measured: (Duration, Double) = try await withThrowingTaskGroup(of: (Duration, Double)?.self) { tasks in
        tasks.addTask { try await group.run(); return nil }
        tasks.addTask {
            try await waitUntil("the forwarder to connect", timeout: .seconds(30)) { forwarder.counters.connected }
            let start = clock.now
            let cpuStart = processCPUSeconds()
            try await waitUntil("the forwarder to drain the backlog", timeout: .seconds(300)) {
                forwarder.counters.published >= Int64(total)
            }
            let elapsed = clock.now - start
            let cpu = processCPUSeconds() - cpuStart
            await group.triggerGracefulShutdown()
            return (elapsed, cpu)
        }
        var result: (Duration, Double)?
        for try await value in tasks { if let value { result = value } }
        return result!
    }
    return (measured.0, try await outbox.statistics().bufferedMessages, measured.1)
}

// MARK: - rss

/// The builds of the gateway the rss bench measures, the shipped one first: the figure
/// for the product is the binary deploy/build-release.sh makes (Swift runtime and
/// Foundation linked in, stripped), which the Debian package installs. BENCH_GATEWAY=<path>
/// measures another binary in its place.
func rssGateways() throws -> [(label: String, path: String)] {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    let shipped = ProcessInfo.processInfo.environment["BENCH_GATEWAY"]
        ?? root.appendingPathComponent(".build/deploy/edge-gateway").path
    let dynamic = try builtProduct("edge-gateway")
    print("  shipped: \(shipped)")
    print("           (deploy/build-release.sh: --static-swift-stdlib, stripped; what the Debian package installs)")
    print("  dynamic: \(dynamic)")
    print("           (swift build -c release: the Swift runtime, Foundation and ICU as the toolchain's shared libraries)")
    guard FileManager.default.isExecutableFile(atPath: shipped) else {
        print("  shipped: NOT MEASURED, \(shipped) is not built: run deploy/build-release.sh (make bench does)")
        return [("dynamic", dynamic)]
    }
    return [("shipped", shipped), ("dynamic", dynamic)]
}

func benchRSS(directory: TemporaryDirectory) async throws {
    let total = 1_000_000
    print("rss: the gateway process holding \(total) buffered messages (broker unreachable, one device polled)")
    let gateways = try rssGateways()
    let path = directory.file("rss.sqlite")
    do { _ = try await prefilledOutbox(path, count: total) }
    // Interleaved, each run adding 500 polls to the same outbox; then the same processes
    // with an empty outbox: what the runtime and libraries cost alone.
    var full: [String: ProcessMemory] = [:]
    var empty: [String: ProcessMemory] = [:]
    for (label, binary) in gateways {
        let buffered = try Outbox.readStatistics(path: path).bufferedMessages
        full[label] = try await gatewayMemory(binary, directory: directory, outbox: path, waitingFor: buffered + 500,
                                              name: "rss-\(label)")
    }
    for (label, binary) in gateways {
        empty[label] = try await gatewayMemory(binary, directory: directory,
                                               outbox: directory.file("rss-empty-\(label).sqlite"),
                                               waitingFor: 500, name: "rss-empty-\(label)")
    }
    for (label, _) in gateways {
        guard let full = full[label], let empty = empty[label] else { continue }
        let target = label == "shipped" ? " (target <= 24 MB)" : ""
        figure("\(label): peak RSS (VmHWM), 1M buffered\(target)", full.kilobytes("VmHWM") / 1024, "MB")
        figure("\(label): RSS now (VmRSS), 1M buffered", full.kilobytes("VmRSS") / 1024, "MB")
        figure("\(label): baseline: VmHWM, empty outbox, same polling", empty.kilobytes("VmHWM") / 1024, "MB")
        figure("\(label): baseline: VmRSS, empty outbox", empty.kilobytes("VmRSS") / 1024, "MB")
    }
    if let shipped = full["shipped"], let dynamic = full["dynamic"] {
        print(String(format: "  ratio shipped / dynamic, VmRSS with 1,000,000 buffered: %.2f",
                     shipped.kilobytes("VmRSS") / dynamic.kilobytes("VmRSS")))
    }
    print("  where the RSS is (/proc/<pid>/smaps; private dirty: the pages the process wrote, the rest clean and shared):")
    for (label, _) in gateways {
        for (state, memory) in [("1M buffered", full[label]), ("empty", empty[label])] {
            guard let memory else { continue }
            memory.printBreakdown("\(label), \(state)")
        }
    }
}

/// /proc/<pid>/status, smaps_rollup, and smaps by kind and file (`MemoryMap`) of a process.
struct ProcessMemory {
    var status: String
    var rollup: String
    var map: MemoryMap?

    init(pid: pid_t) {
        status = Self.read("/proc/\(pid)/status")
        rollup = Self.read("/proc/\(pid)/smaps_rollup")
        map = MemoryMap(pid: pid)
    }

    /// A /proc file read to its end (their size is 0 to stat).
    private static func read(_ path: String) -> String {
        guard let handle = FileHandle(forReadingAtPath: path), let data = try? handle.readToEnd() else { return "" }
        return String(decoding: data, as: UTF8.self)
    }

    /// A "Field:  N kB" (or "Field: N") value of status or smaps_rollup.
    func kilobytes(_ field: String) -> Double {
        for text in [status, rollup] {
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }) else { continue }
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            return Double(fields.dropFirst().first ?? "0") ?? 0
        }
        return 0
    }

    /// VmRSS by kind: private dirty (files, heap, arenas, stacks, other anonymous) and the
    /// mapped files one by one, each with the pages it wrote.
    func printBreakdown(_ label: String) {
        func mb(_ kilobytes: Int) -> String { String(format: "%.1f", Double(kilobytes) / 1024) }
        print("    \(label): " + String(format: "VmRSS %.1f MB, private dirty %.1f MB, PSS %.1f MB, threads %.0f",
                                           kilobytes("VmRSS") / 1024, kilobytes("Private_Dirty") / 1024,
                                           kilobytes("Pss") / 1024, kilobytes("Threads")))
        guard let map else { return }
        print("      touched in the last \(Int(workingSetWindow.components.seconds)) s of polling (working set, smaps' Referenced, noisy): "
              + "\(mb(map.referenced)) MB; the rest of the RSS is pages start-up mapped (code run once, the kernel's "
              + "fault-around neighbours of each page touched)")
        print("      mapped files \(mb(map.files)) MB (of it private dirty \(mb(map.filesPrivateDirty)) MB); "
              + "malloc: main heap \(mb(map.mainHeap)) MB, \(map.arenaCount) other arenas \(mb(map.arenas)) MB; "
              + "thread stacks \(mb(map.stacks)) MB (\(map.stackCount)); other anonymous \(mb(map.otherAnonymous)) MB")
        let shown = map.byFile.prefix { $0.rss >= 100 }
        let rest = map.byFile.dropFirst(shown.count).reduce(0) { $0 + $1.rss }
        print("      per file, RSS (private dirty, touched) MB: "
              + shown.map { "\($0.name) \(mb($0.rss)) (\(mb($0.privateDirty)), \(mb($0.referenced)))" }.joined(separator: ", ")
              + ", \(map.byFile.count - shown.count) others \(mb(rest))")
    }
}

/// How long the rss bench lets the gateway poll after clearing its pages' referenced bits.
let workingSetWindow = Duration.seconds(5)

/// Runs the gateway on `outbox` (unreachable broker, one device polled every 10 ms) until
/// the outbox holds `count` messages; returns its memory just before SIGTERM.
func gatewayMemory(_ binary: String, directory: TemporaryDirectory, outbox path: String, waitingFor count: Int,
                   name: String) async throws -> ProcessMemory {
    let modbusPort = freeLoopbackPort()
    let simulator = try ModbusSimulator(port: modbusPort, animate: true)
    try simulator.start()
    defer { simulator.stop() }
    let deadBroker = freeLoopbackPort()
    let config = directory.file("\(name).yaml")
    try """
    gateway: { id: bench }
    mqtt: { host: 127.0.0.1, port: \(deadBroker), reconnect_max: 1s }
    buffer: { path: \(path), max_messages: 2000000, max_bytes: none }
    devices:
      - name: boiler
        tcp: { host: 127.0.0.1, port: \(modbusPort) }
        poll_interval: 10ms
        tags:
          - { name: temperature, table: holding, address: 0, type: int16, scale: 0.1 }
          - { name: flow, table: holding, address: 2, type: float32 }
    """.write(toFile: config, atomically: true, encoding: .utf8)
    let gateway = try ChildProcess(binary, ["run", "--config", config], log: directory.file("\(name).log"))
    // Let it poll (100 polls/s into the outbox) and retry the broker for a while.
    let start = ContinuousClock.now
    try await waitUntil("the gateway to buffer \(count) polls", timeout: .seconds(120)) {
        let statistics = try? Outbox.readStatistics(path: path)
        return (statistics?.bufferedMessages ?? 0) >= count || !gateway.isRunning
    }
    // Its working set: the pages touched in a window of steady polling (a measurement
    // window, not a wait for an event).
    try? "1".write(toFile: "/proc/\(gateway.pid)/clear_refs", atomically: false, encoding: .utf8)
    try await Task.sleep(for: workingSetWindow)
    let memory = ProcessMemory(pid: gateway.pid)
    gateway.signal(SIGTERM)
    _ = try await gateway.waitForExit()
    print("  \(name): " + String(format: "ran %.1f s, buffered %d", seconds(ContinuousClock.now - start),
                 (try? Outbox.readStatistics(path: path).bufferedMessages) ?? -1))
    return memory
}

let directory = try TemporaryDirectory("bench")
defer { directory.remove() }
print("edge-gateway benchmarks (\(ProcessInfo.processInfo.activeProcessorCount) cores)")
if selected.contains("append") { try await benchAppend(directory: directory) }
if selected.contains("replay") { try await benchReplay(directory: directory) }
if selected.contains("rss") { try await benchRSS(directory: directory) }
if selected.contains("duplicates") { try await benchDuplicates(directory: directory) }
if selected.contains("startup") { try await benchStartup(directory: directory) }
if selected.contains("modbus") { try await benchModbus() }
if selected.contains("seal") { try await benchSeal(directory: directory) }
if selected.contains("service") { try await benchService(directory: directory) }
if selected.contains("sparkplug") { benchSparkplug() }
if selected.contains("sparkplug-scale") { try await benchSparkplugScale(directory: directory) }
if selected.contains("encode") { benchEncode() }
if selected.contains("per-message") { try await benchPerMessage(directory: directory) }
if selected.contains("commands") { try await benchCommands(directory: directory) }
if selected.contains("monitor-ingest") { try await benchMonitorIngest(directory: directory) }
if selected.contains("monitor-fleet") { try await benchMonitorFleet(directory: directory) }
if selected.contains("scale") { try await benchScale(directory: directory) }
