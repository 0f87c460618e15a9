// `make bench` monitor section: the real edge-monitor process.
//
//   monitor-ingest  100,000 data messages of 1 KB queued for the monitor's persistent
//                   session, then drained by edge-monitor (continuity tracking on)
//                   vs mosquitto_sub draining the same queue to /dev/null
//   monitor-fleet   10,000 simulated gateways (retained birth + stats): RSS, and the
//                   time to serve /, /api/fleet and /metrics
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import MQTTUplink
import Synchronization
import TestSupport

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
    try await waitUntil("all gateways in /api/fleet", timeout: .seconds(120)) {
        guard let body = try? Data(contentsOf: URL(string: "http://127.0.0.1:\(httpPort)/api/fleet")!),
              let fleet = try? JSONSerialization.jsonObject(with: body) as? [String: Any],
              let totals = fleet["totals"] as? [String: Any] else { return false }
        return totals["online"] as? Int == gateways + 1
    }
    let clock = ContinuousClock()
    for (path, what) in [("/", "page /"), ("/api/fleet", "/api/fleet"), ("/metrics", "/metrics")] {
        var times: [Double] = []
        var size = 0
        do {
            for _ in 0..<5 {
                let time = try await clock.measure { size = try await httpGet("http://127.0.0.1:\(httpPort)\(path)").count }
                times.append(seconds(time) * 1000)
            }
            figure("\(what) median of 5, \(size / 1024) KB (target <= 200 ms)", times.sorted()[2], "ms")
        } catch {
            print("  \(what): \(error) after \(times.count) answers")
        }
    }
    let status = (try? String(contentsOfFile: "/proc/\(monitor.pid)/status", encoding: .utf8)) ?? ""
    figure("edge-monitor peak RSS, VmHWM (target <= 150 MB)", statusKilobytes(status, "VmHWM") / 1024, "MB")
    figure("edge-monitor RSS now, VmRSS", statusKilobytes(status, "VmRSS") / 1024, "MB")
    monitor.signal(SIGTERM)
    _ = try await monitor.waitForExit()
    try await broker.stop()
}

struct BenchFailure: Error, CustomStringConvertible {
    var description: String
}
