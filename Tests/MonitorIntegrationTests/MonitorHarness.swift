// The real edge-monitor process against a real mosquitto, read through its HTTP
// API and /metrics; real edge-gateway processes (or a contract-following test
// publisher) on the fleet side.
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import MQTTUplink
import Sealing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

final class MonitorHarness: @unchecked Sendable {
    let directory: TemporaryDirectory
    let broker: MosquittoBroker
    let httpPort = freeLoopbackPort()
    private(set) var monitor: ChildProcess?
    private var monitorLogs: [String] = []
    let statePath: String
    var configPath: String { directory.file("monitor.yaml") }

    /// - Parameters:
    ///   - keys: `keys:` entries of monitor.yaml as (id, file).
    ///   - mqtt: the `mqtt:` section's lines (indented) instead of the test broker's host and port.
    ///   - statePath: the state file instead of one in the test's directory.
    init(staleAfter: String = "auto", keys: [(String, String)] = [], mqtt: ((_ brokerPort: Int) -> String)? = nil,
         statePath: String? = nil) async throws {
        directory = try TemporaryDirectory("monitor")
        self.statePath = statePath ?? directory.file("state/monitor.sqlite")
        broker = try MosquittoBroker(persistent: true)
        try await broker.start()
        let server = mqtt?(broker.port) ?? """
              host: 127.0.0.1
              port: \(broker.port)
            """
        var yaml = """
        monitor:
          listen: 127.0.0.1:\(httpPort)
          state: \(self.statePath)
          topic_prefix: edge
          stale_after: \(staleAfter)
        mqtt:
        \(server)
          client_id: edge-monitor-test
          keepalive: 5s
          reconnect_min: 100ms
          reconnect_max: 1s
        log_level: debug

        """
        if !keys.isEmpty {
            yaml += "keys:\n" + keys.map { "  - { id: \($0.0), file: \($0.1) }\n" }.joined()
        }
        try yaml.write(toFile: directory.file("monitor.yaml"), atomically: true, encoding: .utf8)
    }

    deinit {
        monitor = nil
        directory.remove()
    }

    func startMonitor() async throws {
        let log = directory.file("monitor-\(monitorLogs.count).log")
        monitorLogs.append(log)
        monitor = try ChildProcess(try builtProduct("edge-monitor"), ["run", "--config", configPath], log: log)
        try await waitUntil("edge-monitor to answer on port \(httpPort)\n\(logs)") {
            guard monitor?.isRunning == true else { throw HarnessFailure("edge-monitor exited:\n\(logs)") }
            return isListening(port: httpPort)
        }
    }

    func stopMonitor(_ signal: Int32) async throws -> Int32 {
        guard let monitor else { return 0 }
        monitor.signal(signal)
        let status = try await monitor.waitForExit()
        self.monitor = nil
        return status
    }

    var logs: String {
        monitorLogs.map { (try? String(contentsOfFile: $0, encoding: .utf8)) ?? "" }.joined(separator: "\n---\n")
    }

    // MARK: HTTP

    func get(_ path: String) async throws -> (status: Int, body: Data, contentType: String) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(httpPort)\(path)")!)
        request.timeoutInterval = 5
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as! HTTPURLResponse
        return (http.statusCode, data, http.value(forHTTPHeaderField: "Content-Type") ?? "")
    }

    func fleet() async throws -> [String: Any] {
        let (_, body, _) = try await get("/api/fleet")
        return try JSONSerialization.jsonObject(with: body) as! [String: Any]
    }

    func gateway(_ id: String) async throws -> [String: Any]? {
        let (status, body, _) = try await get("/api/gateways/\(id)")
        guard status == 200 else { return nil }
        return try JSONSerialization.jsonObject(with: body) as? [String: Any]
    }

    func metrics() async throws -> String {
        String(decoding: try await get("/metrics").body, as: UTF8.self)
    }

    /// Polls `/api/gateways/<id>` until `condition` holds for it.
    @discardableResult
    func waitForGateway(_ id: String, _ what: String, timeout: Duration = .seconds(15),
                        _ condition: @escaping ([String: Any]) -> Bool) async throws -> [String: Any] {
        let deadline = ContinuousClock.now + timeout
        var last: [String: Any]?
        while ContinuousClock.now < deadline {
            if let view = try? await gateway(id) {
                last = view
                if condition(view) { return view }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw HarnessFailure("\(id): \(what); last view: \(String(describing: last))\nmonitor log:\n\(logs.suffix(4000))")
    }

    /// Polls `/metrics` until it holds `line`.
    func waitForMetric(_ line: String, timeout: Duration = .seconds(15)) async throws {
        let deadline = ContinuousClock.now + timeout
        var last = ""
        while ContinuousClock.now < deadline {
            if let text = try? await metrics() {
                last = text
                if text.split(separator: "\n").contains(where: { $0 == line }) { return }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw HarnessFailure("metric line \(line) in:\n\(last.split(separator: "\n").filter { $0.contains("gateway") }.prefix(40).joined(separator: "\n"))")
    }
}

/// A fleet member that follows the wire contract by hand (through MQTTUplink), so a
/// test can skip a seq, report gaps or tamper with a seal exactly where it wants.
final class ContractPublisher: @unchecked Sendable {
    let gateway: String
    let boot: Int64
    let session: Int64
    private let client: RecordingSubscriber

    init(port: Int, gateway: String, boot: Int64 = 1, session: Int64 = 1) async throws {
        self.gateway = gateway
        self.boot = boot
        self.session = session
        client = RecordingSubscriber(port: port, filter: "unused/\(gateway)")
        try await client.waitConnected()
    }

    func birth(statsIntervalMs: Int64 = 1000, previous: (boot: Int64, lastSeq: Int64)? = nil) throws {
        var extra = ""
        if let previous { extra = #","previous_boot":\#(previous.boot),"previous_boot_last_seq":\#(previous.lastSeq)"# }
        try client.publish("edge/\(gateway)/status",
                           #"{"state":"online","session":\#(session),"stats_interval_ms":\#(statsIntervalMs)\#(extra),"gateway":"\#(gateway)","boot":\#(boot),"ts":"2026-11-24T02:00:00.000Z"}"#,
                           retain: true)
    }

    func dataPayload(_ seq: Int64) -> String {
        #"{"gateway":"\#(gateway)","device":"boiler-1","ts":"2026-11-24T02:00:00.000Z","boot":\#(boot),"seq":\#(seq),"values":{"temperature":71.5},"errors":{}}"#
    }

    var dataTopic: String { "edge/\(gateway)/boiler-1/data" }

    func data(_ seqs: some Sequence<Int64>) throws {
        for seq in seqs { try client.publish(dataTopic, dataPayload(seq)) }
    }

    func raw(_ topic: String, _ payload: [UInt8]) throws {
        try client.publishBytes(topic, payload)
    }

    func stats(buffered: Int64, committed: Int64) throws {
        try client.publish("edge/\(gateway)/stats",
                           #"{"gateway":"\#(gateway)","boot":\#(boot),"ts":"2026-11-24T02:00:00.000Z","buffered_messages":\#(buffered),"buffered_bytes":0,"oldest_age_ms":null,"dropped":0,"published":0,"inflight":0,"polls_ok":1,"polls_failed":0,"seq_committed":\#(committed)}"#)
    }

    func gap(first: Int64, last: Int64) throws {
        try client.publish("edge/\(gateway)/gaps",
                           #"{"gateway":"\#(gateway)","boot":\#(boot),"first_seq":\#(first),"last_seq":\#(last),"count":\#(last - first + 1),"reason":"outbox full","ts":"2026-11-24T02:00:00.000Z"}"#)
    }

    /// Waits until the broker has routed everything published so far.
    func flush() async throws { try await client.roundTrip() }
}

struct HarnessFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
