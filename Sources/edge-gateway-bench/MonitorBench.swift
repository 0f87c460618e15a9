// `make bench` monitor section: the real edge-monitor process.
//
//   monitor-ingest  100,000 data messages of 1 KB queued for the monitor's persistent
//                   session, then drained by edge-monitor (continuity tracking on)
//                   vs mosquitto_sub draining the same queue to /dev/null
//   monitor-fleet   10,000 simulated gateways (retained birth + stats every 10 s, kept
//                   flowing while measuring): RSS, and p50/p99 of /, /api/fleet and
//                   /metrics, against the static page and the ingest-only CPU
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import MQTTUplink
import Synchronization
import LocalPeers

/// Publishes `messages` at QoS 1 through libmosquitto and waits for every PUBACK.
func publishAll(port: Int, _ messages: [MQTTMessage]) async throws {
    let acked = Atomic<Int>(0)
    let connected = Atomic<Bool>(false)
    let uplink = MQTTUplink(settings: MQTTUplinkSettings(host: "127.0.0.1", port: port, clientID: "bench-pub-\(UUID().uuidString.prefix(6))",
                                                         maxInflight: 1000), logger: quiet) { event in
        switch event {
        case .connected: connected.store(true, ordering: .releasing)
        case .published: acked.add(1, ordering: .relaxed)
        default: break
        }
    }
    uplink.start()
    try await waitUntil("the bench publisher to connect") { connected.load(ordering: .acquiring) }
    for message in messages { _ = try uplink.publish(message) }
    try await waitUntil("\(messages.count) PUBACKs", timeout: .seconds(600)) { acked.load(ordering: .relaxed) >= messages.count }
    await uplink.stop()
}

/// Waits until the monitor at `httpPort` knows gateway `id`.
func waitForGateway(_ id: String, httpPort: Int) async throws {
    let deadline = ContinuousClock.now + .seconds(30)
    while ContinuousClock.now < deadline {
        if let body = try? await httpGet("http://127.0.0.1:\(httpPort)/api/gateways/\(id)"),
           let view = try? JSONSerialization.jsonObject(with: body) as? [String: Any], view["id"] as? String == id {
            return
        }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw BenchFailure(description: "edge-monitor did not show gateway \(id) within 30 s")
}

func httpGet(_ url: String) async throws -> Data {
    var request = URLRequest(url: URL(string: url)!)
    request.timeoutInterval = 30
    return try await URLSession.shared.data(for: request).0
}

/// A broker for the monitor benches: nothing limits the queued session.
func benchBroker() async throws -> MosquittoBroker {
    let port = freeLoopbackPort()
    let broker = try MosquittoBroker(port: port, configuration: """
        listener \(port) 127.0.0.1
        allow_anonymous true
        persistence false
        max_queued_messages 0
        max_queued_bytes 0
        """)
    try await broker.start()
    return broker
}

func writeMonitorConfig(_ directory: TemporaryDirectory, brokerPort: Int, httpPort: Int, name: String) throws -> String {
    let path = directory.file("\(name).yaml")
    try """
    monitor:
      listen: 127.0.0.1:\(httpPort)
      state: \(directory.file("\(name).sqlite"))
    mqtt:
      host: 127.0.0.1
      port: \(brokerPort)
      client_id: \(name)
    log_level: error
    """.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

func benchMonitorIngest(directory: TemporaryDirectory) async throws {
    let total = 100_000
    print("monitor-ingest: \(total) data messages of 1 KB queued at QoS 1, drained by the consumer")
    let broker = try await benchBroker()
    let padding = String(repeating: "x", count: 880)
    let messages = (1...total).map { seq in
        MQTTMessage(topic: "edge/gw-bench/boiler-1/data", payload: Array(
            #"{"gateway":"gw-bench","device":"boiler-1","ts":"2026-11-24T02:00:00.000Z","boot":1,"seq":\#(seq),"values":{"temperature":71.5,"note":"\#(padding)"},"errors":{}}"#.utf8),
            qos: 1)
    }

    // Baseline: mosquitto_sub with a persistent session, draining to /dev/null.
    let sub = try requireTool("mosquitto_sub", package: "mosquitto-clients")
    let baseArgs = ["-h", "127.0.0.1", "-p", "\(broker.port)", "-q", "1", "-c", "-i", "bench-sub", "-t", "edge/+/+/data"]
    let subscribe = try ChildProcess(sub, baseArgs + ["-E"], log: directory.file("sub-1.log"))
    _ = try await subscribe.waitForExit()
    try await publishAll(port: broker.port, messages)
    let clock = ContinuousClock()
    var baselineStatus: Int32 = -1
    let baselineTime = try await clock.measure {
        let drain = try ChildProcess("/bin/sh", ["-c", "\(sub) \(baseArgs.joined(separator: " ")) -C \(total) > /dev/null"],
                                     log: directory.file("sub-2.log"))
        baselineStatus = try await drain.waitForExit(timeout: .seconds(600))
    }

    // The monitor: subscribe once (its session persists), stop, queue, start and time the drain.
    let httpPort = freeLoopbackPort()
    let config = try writeMonitorConfig(directory, brokerPort: broker.port, httpPort: httpPort, name: "ingest")
    let monitorBinary = try builtProduct("edge-monitor")
    var monitor = try ChildProcess(monitorBinary, ["run", "--config", config], log: directory.file("monitor-1.log"))
    try await publishAll(port: broker.port, [MQTTMessage(topic: "edge/gw-bench/status",
        payload: Array(#"{"state":"online","gateway":"gw-bench","boot":1,"session":1,"stats_interval_ms":10000}"#.utf8), qos: 1, retain: true)])
    try await waitForGateway("gw-bench", httpPort: httpPort)
    monitor.signal(SIGTERM)
    _ = try await monitor.waitForExit()
    try await publishAll(port: broker.port, messages)
    let start = clock.now
    monitor = try ChildProcess(monitorBinary, ["run", "--config", config], log: directory.file("monitor-2.log"))
    var received = ""
    while clock.now - start < .seconds(600) {
        if let body = try? await httpGet("http://127.0.0.1:\(httpPort)/api/gateways/gw-bench"),
           let view = try? JSONSerialization.jsonObject(with: body) as? [String: Any],
           let boots = view["boots"] as? [[String: Any]], let ranges = boots.first?["received"] as? [[Int]] {
            received = "\(ranges)"
            if ranges == [[1, total]] { break }
        }
        try await Task.sleep(for: .milliseconds(50))
    }
    let monitorTime = clock.now - start
    let status = (try? String(contentsOfFile: "/proc/\(monitor.pid)/status", encoding: .utf8)) ?? ""
    monitor.signal(SIGTERM)
    _ = try await monitor.waitForExit()
    let monitorRate = Double(total) / seconds(monitorTime)
    let baselineRate = Double(total) / seconds(baselineTime)
    figure("edge-monitor ingest incl. start (target >= 20,000)", monitorRate, "msg/s")
    figure("baseline: mosquitto_sub to /dev/null (exit \(baselineStatus))", baselineRate, "msg/s")
    print(String(format: "  ratio edge-monitor / mosquitto_sub: %.2f   (received %@)", monitorRate / baselineRate, received.prefix(40).description))
    figure("edge-monitor peak RSS after ingest, VmHWM", statusKilobytes(status, "VmHWM") / 1024, "MB")
    try await broker.stop()
}

func statusKilobytes(_ status: String, _ field: String) -> Double {
    let line = status.split(separator: "\n").first { $0.hasPrefix(field + ":") } ?? ""
    return Double(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "0") ?? 0
}

/// One line with the monitor's resident and peak memory now, to tell which phase set the peak.
func memoryPhase(_ pid: pid_t, _ phase: String) {
    let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
    print("  " + phase.padding(toLength: 54, withPad: " ", startingAt: 0)
          + String(format: " VmRSS %6.1f MB  VmHWM %6.1f MB", statusKilobytes(status, "VmRSS") / 1024, statusKilobytes(status, "VmHWM") / 1024))
}

func benchMonitorFleet(directory: TemporaryDirectory) async throws {
    let gateways = 10_000
    print("monitor-fleet: \(gateways) simulated gateways (retained birth, a device status, two stats each)")
    let broker = try await benchBroker()
    let httpPort = freeLoopbackPort()
    let config = try writeMonitorConfig(directory, brokerPort: broker.port, httpPort: httpPort, name: "fleet")
    let monitor = try ChildProcess(try builtProduct("edge-monitor"), ["run", "--config", config], log: directory.file("fleet.log"))
    // A probe gateway proves the subscription before the burst.
    try await publishAll(port: broker.port, [MQTTMessage(topic: "edge/probe/status",
        payload: Array(#"{"state":"online","gateway":"probe","boot":1,"session":1}"#.utf8), qos: 1, retain: true)])
    try await waitForGateway("probe", httpPort: httpPort)
    memoryPhase(monitor.pid, "phase: started, probe gateway seen")
    var messages: [MQTTMessage] = []
    for index in 0..<gateways {
        let id = String(format: "gw-%05d", index)
        messages.append(MQTTMessage(topic: "edge/\(id)/status", payload: Array(
            #"{"state":"online","gateway":"\#(id)","boot":3,"session":1,"stats_interval_ms":10000,"ts":"2026-11-24T02:00:00.000Z"}"#.utf8),
            qos: 1, retain: true))
        messages.append(MQTTMessage(topic: "edge/\(id)/boiler-1/status", payload: Array(#"{"state":"online","gateway":"\#(id)","boot":3}"#.utf8),
                                    qos: 1, retain: true))
    }
    for round in 1...2 {
        for index in 0..<gateways {
            let id = String(format: "gw-%05d", index)
            messages.append(MQTTMessage(topic: "edge/\(id)/stats", payload: Array(
                #"{"gateway":"\#(id)","boot":3,"ts":"2026-11-24T02:00:00.000Z","buffered_messages":\#(round),"buffered_bytes":100,"oldest_age_ms":10,"dropped":0,"published":5,"inflight":0,"polls_ok":5,"polls_failed":0,"seq_committed":\#(round * 10)}"#.utf8),
                qos: 1))
        }
    }
    try await publishAll(port: broker.port, messages)
    memoryPhase(monitor.pid, "phase: \(messages.count) retained/stats messages acked")
    try await waitUntil("all gateways in /api/fleet", timeout: .seconds(120)) {
        guard let body = try? Data(contentsOf: URL(string: "http://127.0.0.1:\(httpPort)/api/fleet")!),
              let fleet = try? JSONSerialization.jsonObject(with: body) as? [String: Any],
              let totals = fleet["totals"] as? [String: Any] else { return false }
        return totals["online"] as? Int == gateways + 1
    }
    memoryPhase(monitor.pid, "phase: all gateways in /api/fleet")
    // The fleet keeps talking while the endpoints are measured: stats of every gateway
    // every 10 s (1,000 messages/s), so the model changes between requests.
    let feed = StatsFeed(port: broker.port, gateways: gateways)
    try await feed.start()
    defer { feed.stop() }
    try await Task.sleep(for: .seconds(3))  // let the feed reach its rate
    // Baseline 1: the monitor's CPU while it only ingests the feed (no requests).
    let idleStart = (ContinuousClock.now, processCPUSeconds(monitor.pid))
    try await Task.sleep(for: .seconds(5))
    let ingestCPUPerSecond = (processCPUSeconds(monitor.pid) - idleStart.1) / seconds(ContinuousClock.now - idleStart.0)
    figure("monitor CPU while ingesting the feed only (baseline)", ingestCPUPerSecond * 100, "% of a core")
    memoryPhase(monitor.pid, "phase: 8 s of the stats feed, no requests")
    print("  (per endpoint: wall ms per request p50 / p99 over 100 back-to-back requests, then the same for 20 requests")
    print("   each 300 ms apart so every one meets a new snapshot; CPU ms per request is the monitor's, net of ingest;")
    print("   the page / is static: it is the baseline of the HTTP path itself)")
    var baselineP50 = 0.0
    for (path, what) in [("/", "page / (baseline)"), ("/api/fleet", "/api/fleet"), ("/metrics", "/metrics")] {
        do {
            let burst = try await measureEndpoint(path, httpPort: httpPort, pid: monitor.pid, count: 100, spacing: nil,
                                                  ingestCPUPerSecond: ingestCPUPerSecond)
            let fresh = try await measureEndpoint(path, httpPort: httpPort, pid: monitor.pid, count: 20, spacing: .milliseconds(300),
                                                  ingestCPUPerSecond: ingestCPUPerSecond)
            if path == "/" { baselineP50 = burst.p50 }
            print("  " + what.padding(toLength: 18, withPad: " ", startingAt: 0) + String(
                format: " %6ld KB  burst p50 %7.1f  p99 %7.1f ms | fresh p50 %7.1f  p99 %7.1f ms | CPU %6.1f ms/req | p50 / baseline %6.1f  (target <= 200 ms)",
                burst.size / 1024, burst.p50, burst.p99, fresh.p50, fresh.p99, fresh.cpuPerRequest, burst.p50 / max(baselineP50, 0.001)))
        } catch {
            print("  \(what): \(error)")
        }
        memoryPhase(monitor.pid, "phase: after the requests of \(path)")
    }
    let status = (try? String(contentsOfFile: "/proc/\(monitor.pid)/status", encoding: .utf8)) ?? ""
    figure("edge-monitor peak RSS, VmHWM (target <= 150 MB)", statusKilobytes(status, "VmHWM") / 1024, "MB")
    figure("edge-monitor RSS now, VmRSS", statusKilobytes(status, "VmRSS") / 1024, "MB")
    figure("stats messages published during the run", Double(feed.published), "")
    monitor.signal(SIGTERM)
    _ = try await monitor.waitForExit()
    try await broker.stop()
}

/// Wall times (ms) of `count` GETs of `path`, and the monitor's CPU per request net of ingest.
func measureEndpoint(_ path: String, httpPort: Int, pid: pid_t, count: Int, spacing: Duration?,
                     ingestCPUPerSecond: Double) async throws -> (p50: Double, p99: Double, size: Int, cpuPerRequest: Double) {
    let clock = ContinuousClock()
    var times: [Double] = []
    var size = 0
    var busyCPU = 0.0
    for _ in 0..<count {
        if let spacing { try await Task.sleep(for: spacing) }
        let start = (clock.now, processCPUSeconds(pid))
        size = try await httpGet("http://127.0.0.1:\(httpPort)\(path)").count
        let wall = clock.now - start.0
        busyCPU += max(0, processCPUSeconds(pid) - start.1 - ingestCPUPerSecond * seconds(wall))
        times.append(seconds(wall) * 1000)
    }
    times.sort()
    func percentile(_ p: Double) -> Double { times[min(times.count - 1, Int((Double(times.count) * p).rounded(.up)) - 1)] }
    return (percentile(0.5), percentile(0.99), size, busyCPU / Double(count) * 1000)
}

/// utime + stime of `pid` in seconds (from /proc/<pid>/stat).
func processCPUSeconds(_ pid: pid_t) -> Double {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = text.lastIndex(of: ")") else { return 0 }
    let fields = text[text.index(after: close)...].split(separator: " ")
    // After the command: state is field 3, utime 14, stime 15 (1-based).
    guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// Publishes the stats of `gateways` gateways at QoS 0, each gateway every 10 s, until stopped.
final class StatsFeed: Sendable {
    let port: Int
    let gateways: Int
    private let running = Atomic<Bool>(true)
    private let count = Atomic<Int>(0)
    private let task = Mutex<Task<Void, Never>?>(nil)

    init(port: Int, gateways: Int) {
        self.port = port
        self.gateways = gateways
    }

    var published: Int { count.load(ordering: .relaxed) }

    func start() async throws {
        let connected = Atomic<Bool>(false)
        let uplink = MQTTUplink(settings: MQTTUplinkSettings(host: "127.0.0.1", port: port, clientID: "bench-feed-\(UUID().uuidString.prefix(6))"),
                                logger: quiet) { event in
            if case .connected = event { connected.store(true, ordering: .releasing) }
        }
        uplink.start()
        try await waitUntil("the stats feed to connect") { connected.load(ordering: .acquiring) }
        let gateways = self.gateways
        task.withLock {
            $0 = Task {
                var round = 0
                // 100 batches per 10 s round: a batch every 100 ms (the pacing of a load generator).
                let perBatch = gateways / 100
                while self.running.load(ordering: .relaxed) {
                    round += 1
                    for batch in 0..<100 where self.running.load(ordering: .relaxed) {
                        for index in (batch * perBatch)..<((batch + 1) * perBatch) {
                            let id = String(format: "gw-%05d", index)
                            let payload = #"{"gateway":"\#(id)","boot":3,"ts":"2026-11-24T02:00:00.000Z","buffered_messages":\#(round % 3),"buffered_bytes":100,"oldest_age_ms":10,"dropped":0,"published":5,"inflight":0,"polls_ok":5,"polls_failed":0,"seq_committed":\#(round * 10 + 20)}"#
                            if (try? uplink.publish(MQTTMessage(topic: "edge/\(id)/stats", payload: Array(payload.utf8), qos: 0))) != nil {
                                self.count.add(1, ordering: .relaxed)
                            }
                        }
                        try? await Task.sleep(for: .milliseconds(100))
                    }
                }
                await uplink.stop()
            }
        }
    }

    func stop() {
        running.store(false, ordering: .relaxed)
    }
}

struct BenchFailure: Error, CustomStringConvertible {
    var description: String
}
