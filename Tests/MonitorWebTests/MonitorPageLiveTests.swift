// The page in a real browser against the real thing: a mosquitto on loopback, the
// `edge-monitor` executable with its own monitor.yaml, and a publisher that speaks
// the gateways' wire format (status with boot and session, device status, stats
// with seq_committed, data) through mosquitto_pub. Headless Chromium loads the
// monitor's page; the DOM must show every gateway in the state the monitor
// derived, the lost range, and a clicked gateway's history. A screenshot is kept.
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The monitor executable, once the package builds it.
let monitorBuilt = (try? builtProduct("edge-monitor")) != nil

/// Publishes like a gateway, one mosquitto_pub per message (in order, QoS 1).
struct WirePublisher {
    let executable: String
    let port: Int
    let prefix: String
    let directory: TemporaryDirectory

    init(port: Int, prefix: String, directory: TemporaryDirectory) throws {
        executable = try requireTool("mosquitto_pub", package: "mosquitto-clients")
        self.port = port
        self.prefix = prefix
        self.directory = directory
    }

    func publish(_ topic: String, _ payload: [String: Any], retain: Bool = false) async throws {
        let json = String(decoding: try JSONSerialization.data(withJSONObject: payload, options: [.sortedKeys]), as: UTF8.self)
        var arguments = ["-h", "127.0.0.1", "-p", String(port), "-q", "1", "-t", "\(prefix)/\(topic)", "-m", json]
        if retain { arguments.append("-r") }
        let result = try await runCommand(executable, arguments, in: directory)
        try #require(result.status == 0, "mosquitto_pub \(topic): \(result.output)")
    }

    static let now: String = {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date())
    }()

    func birth(_ gateway: String, boot: Int, session: Int, statsIntervalMs: Int) async throws {
        try await publish("\(gateway)/status", ["state": "online", "gateway": gateway, "boot": boot, "session": session,
                                                "stats_interval_ms": statsIntervalMs, "ts": Self.now], retain: true)
    }

    func offline(_ gateway: String, boot: Int, session: Int, reason: String) async throws {
        // The gateway's Will carries `connected_at` (its CONNECT time), the clean offline status `ts`.
        let time = reason == "connection lost" ? "connected_at" : "ts"
        try await publish("\(gateway)/status", ["state": "offline", "reason": reason, "gateway": gateway, "boot": boot,
                                                "session": session, time: Self.now], retain: true)
    }

    func device(_ gateway: String, _ device: String, online: Bool, error: String? = nil) async throws {
        var payload: [String: Any] = ["state": online ? "online" : "offline", "gateway": gateway, "ts": Self.now]
        if let error { payload["error"] = error }
        try await publish("\(gateway)/\(device)/status", payload, retain: true)
    }

    func stats(_ gateway: String, boot: Int, buffered: Int, seqCommitted: Int) async throws {
        try await publish("\(gateway)/stats", [
            "gateway": gateway, "boot": boot, "ts": Self.now, "buffered_messages": buffered, "buffered_bytes": buffered * 200,
            "oldest_age_ms": buffered > 0 ? 5000 : NSNull(), "dropped": 0, "published": seqCommitted, "inflight": 0,
            "polls_ok": seqCommitted, "polls_failed": 0, "seq_committed": seqCommitted])
    }

    func data(_ gateway: String, _ device: String, boot: Int, seq: Int) async throws {
        try await publish("\(gateway)/\(device)/data", [
            "gateway": gateway, "device": device, "ts": Self.now, "boot": boot, "seq": seq,
            "values": ["temperature": 71.5], "errors": [String: String]()])
    }
}

/// GET over loopback; nil when nothing answers.
func httpGet(_ url: String) async -> (status: Int, body: Data)? {
    guard let endpoint = URL(string: url) else { return nil }
    var request = URLRequest(url: endpoint)
    request.timeoutInterval = 5
    guard let (data, response) = try? await URLSession.shared.data(for: request),
          let http = response as? HTTPURLResponse else { return nil }
    return (http.statusCode, data)
}

/// The gateways of /api/fleet by id (state, lost, ...), or empty.
func fleetGateways(_ base: String) async -> [String: [String: Any]] {
    guard let (status, body) = await httpGet(base + "/api/fleet"), status == 200,
          let fleet = try? JSONSerialization.jsonObject(with: body) as? [String: Any],
          let gateways = fleet["gateways"] as? [[String: Any]] else { return [:] }
    return Dictionary(gateways.compactMap { g in (g["id"] as? String).map { ($0, g) } }, uniquingKeysWith: { a, _ in a })
}

@Suite(.serialized) struct MonitorPageLiveTests {
    @Test(.enabled(if: isCI || (MonitorPageBrowserTests.browserAvailable && monitorBuilt),
                   "needs chromium (make deps) and the edge-monitor executable (swift build)"))
    func pageShowsTheFleetAsTheMonitorSeesIt() async throws {
        let monitorBinary = try builtProduct("edge-monitor")
        let directory = try TemporaryDirectory("monitor-live")
        defer { directory.remove() }
        let broker = try MosquittoBroker()
        try await broker.start()   // killed when `broker` goes (MosquittoBroker's deinit)

        let prefix = "live\(Int.random(in: 1000...9999))"
        let httpPort = freeLoopbackPort()
        // A central key, so that a tampered sealed message counts as a seal failure.
        let keyFile = directory.file("k1.key")
        try String(repeating: "5a", count: 32).write(toFile: keyFile, atomically: true, encoding: .utf8)
        chmod(keyFile, 0o600)
        let config = """
            monitor:
              listen: 127.0.0.1:\(httpPort)
              state: \(directory.file("monitor.sqlite"))
              topic_prefix: \(prefix)
              stale_after: auto
              history: 50
            mqtt:
              host: 127.0.0.1
              port: \(broker.port)
              client_id: edge-monitor-\(prefix)
            keys:
              - { id: k1, file: \(keyFile) }
            log_level: info
            """
        try config.write(toFile: directory.file("monitor.yaml"), atomically: true, encoding: .utf8)
        let monitor = try ChildProcess(monitorBinary, ["run", "--config", directory.file("monitor.yaml")],
                                       log: directory.file("monitor.log"))
        defer {
            monitor.signal(SIGTERM)
            monitor.waitBlocking()
        }
        let base = "http://127.0.0.1:\(httpPort)"
        try await waitUntil("edge-monitor's HTTP server on \(httpPort) (log: \(monitor.output))", timeout: .seconds(30)) {
            isListening(port: httpPort)
        }

        let publisher = try WirePublisher(port: broker.port, prefix: prefix, directory: directory)
        // The first birth proves the monitor is subscribed before the rest is published.
        try await publisher.birth("gw-online", boot: 3, session: 1, statsIntervalMs: 60_000)
        var listed: [String: [String: Any]] = [:]
        for _ in 0..<1500 where listed["gw-online"] == nil {
            listed = await fleetGateways(base)
            if listed["gw-online"] == nil { try await Task.sleep(for: .milliseconds(20)) }
        }
        try #require(listed["gw-online"] != nil, "the monitor never listed gw-online: \(monitor.output.suffix(2000))")

        try await publisher.device("gw-online", "boiler-1", online: true)
        try await publisher.device("gw-online", "pump-2", online: false, error: "modbus: connection timed out")
        try await publisher.stats("gw-online", boot: 3, buffered: 0, seqCommitted: 0)
        // An HMAC-signed data message whose signature is wrong (altered on the way).
        let plain = #"{"gateway":"gw-online","device":"boiler-1","boot":3,"seq":1,"values":{},"errors":{}}"#
        try await publisher.publish("gw-online/boiler-1/data", [
            "v": 1, "alg": "HS256", "kid": "k1", "msg": Data(plain.utf8).base64EncodedString(),
            "sig": Data(repeating: 0, count: 32).base64EncodedString()])

        // Killed: its Will (same session as its birth) arrives.
        try await publisher.birth("gw-killed", boot: 5, session: 2, statsIntervalMs: 60_000)
        try await publisher.offline("gw-killed", boot: 5, session: 2, reason: "connection lost")
        // Stopped cleanly.
        try await publisher.birth("gw-stopped", boot: 9, session: 1, statsIntervalMs: 60_000)
        try await publisher.offline("gw-stopped", boot: 9, session: 1, reason: "shutdown")
        // Online, but its stats stop after one: stale after 3 × 1 s.
        try await publisher.birth("gw-stale", boot: 2, session: 1, statsIntervalMs: 1000)
        try await publisher.stats("gw-stale", boot: 2, buffered: 0, seqCommitted: 0)
        // Seqs 4 and 5 never arrive; the gateway reports 7 committed and an empty backlog.
        try await publisher.birth("gw-lossy", boot: 1, session: 1, statsIntervalMs: 60_000)
        for seq in [1, 2, 3, 6, 7] { try await publisher.data("gw-lossy", "press", boot: 1, seq: seq) }
        // The report, then two empty-backlog stats: the monitor looks twice before it calls a seq lost.
        try await publisher.stats("gw-lossy", boot: 1, buffered: 0, seqCommitted: 7)
        try await publisher.stats("gw-lossy", boot: 1, buffered: 0, seqCommitted: 7)
        try await publisher.stats("gw-lossy", boot: 1, buffered: 0, seqCommitted: 7)

        let expected = ["gw-online": "online", "gw-killed": "offline_connection_lost", "gw-stopped": "offline_shutdown",
                        "gw-stale": "stale"]
        var fleet: [String: [String: Any]] = [:]
        let deadline = ContinuousClock.now + .seconds(30)
        func settled() -> Bool {
            expected.allSatisfy { fleet[$0.key]?["state"] as? String == $0.value }
                && (fleet["gw-lossy"]?["lost"] as? Int ?? 0) > 0
                && (fleet["gw-online"]?["seal_failures"] as? Int ?? 0) > 0
        }
        while !settled() && ContinuousClock.now < deadline {
            fleet = await fleetGateways(base)
            if !settled() { try await Task.sleep(for: .milliseconds(50)) }
        }
        try #require(settled(), "the monitor's API never showed \(expected), lost on gw-lossy and a seal failure on gw-online: \(fleet)")

        // The page, as a browser renders it from the monitor's own API.
        let browser = try HeadlessChromium(directory: directory)
        let dom = try await browser.dumpDOM(base + "/")
        #expect(dom.body["data-loaded"] == "true", "the page never rendered the fleet")
        let rows = dom.elements("tr", with: "data-gateway")
        let shown = Dictionary(rows.map { ($0["data-gateway"]!, $0["data-state"]!) }, uniquingKeysWith: { a, _ in a })
        for (gateway, state) in expected {
            #expect(shown[gateway] == state, "\(gateway) shown as \(shown[gateway] ?? "nothing"), the API says \(state)")
        }
        #expect(dom.rowText("data-gateway", "gw-killed")?.contains("offline: connection lost") == true)
        #expect(dom.rowText("data-gateway", "gw-stopped")?.contains("offline: shutdown") == true)
        #expect(dom.rowText("data-gateway", "gw-online")?.contains("pump-2: modbus: connection timed out") == true)
        #expect(dom.rowText("data-gateway", "gw-online")?.contains("seal failures 1") == true)
        let lossy = try #require(rows.first { $0["data-gateway"] == "gw-lossy" })
        #expect(lossy["data-lost"] == "2", "lost on the page: \(lossy)")
        #expect(dom.rowText("data-gateway", "gw-lossy")?.contains("boot 1: 4–5") == true,
                "\(dom.rowText("data-gateway", "gw-lossy") ?? "no row")")
        #expect(rows.first?["data-gateway"] == "gw-lossy", "lost data is not listed first")

        // A clicked gateway's history: its birth and its Will.
        let detail = try await browser.dumpDOM(base + "/#gw=gw-killed")
        #expect(detail.elements("aside", with: "data-gateway").first?["data-state"] == "offline_connection_lost")
        let kinds = detail.elements("li", with: "data-kind").compactMap { $0["data-kind"] }
        #expect(kinds.contains("will") && kinds.contains("birth"), "history of gw-killed: \(kinds)")

        let screenshot = NSTemporaryDirectory() + "edge-monitor-page-live.png"
        try? FileManager.default.removeItem(atPath: screenshot)
        try await browser.screenshot(base + "/#gw=gw-lossy", to: screenshot)
        let png = try #require(FileManager.default.contents(atPath: screenshot))
        #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]) && png.count > 20_000)
        print("monitor page screenshot (live monitor): \(screenshot)")

        // The names the rules and the dashboard rely on are the ones this monitor serves.
        let metrics = try #require(await httpGet(base + "/metrics"))
        let text = String(decoding: metrics.body, as: UTF8.self)
        // Sample lines and `# TYPE name kind` lines (a labelled counter may have no sample yet).
        let served = Set(text.split(separator: "\n").compactMap { line -> String? in
            let words = line.split(whereSeparator: { $0 == "{" || $0 == " " })
            if line.hasPrefix("# TYPE "), words.count > 2 { return String(words[2]) }
            return line.hasPrefix("#") ? nil : words.first.map(String.init)
        })
        #expect(contractMetricNames.subtracting(served).isEmpty,
                "metrics the rules and dashboard use but the monitor does not serve: \(contractMetricNames.subtracting(served))")
    }
}
