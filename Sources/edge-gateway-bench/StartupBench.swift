// `edge-gateway-bench startup`: how long a gateway with a 1 GiB outbox takes to READY=1.
//
// The outbox is built once and kept under .build/bench-cache (building it takes a while);
// the gateway runs on it with an unreachable broker, so the backlog stays. Printed beside
// it, all with the file in the page cache (read once before): reading the whole file
// (`cat` to /dev/null) and `PRAGMA quick_check` of it, which the start used to wait for.
import Foundation
import GRDBSQLite
import LocalPeers
import Outbox

func benchStartup(directory: TemporaryDirectory) async throws {
    let path = try await cachedBigOutbox(bytes: 1 << 30)
    let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
    print(String(format: "startup: a %.2f GiB outbox", Double(size) / Double(1 << 30))
        + " (\(path)), unreachable broker, one silent device")

    var cat: [Double] = []
    for run in 0..<2 {
        let start = ContinuousClock.now
        let child = try ChildProcess("/bin/cat", [path], log: directory.file("cat-\(run).out"))
        _ = try await child.waitForExit(timeout: .seconds(300))
        cat.append(seconds(ContinuousClock.now - start) * 1000)
        try? FileManager.default.removeItem(atPath: directory.file("cat-\(run).out"))
    }

    let clock = ContinuousClock()
    var findings: [String] = []
    let quickCheck = try clock.measure { findings = try RawSQLite.quickCheck(path: path) }
    guard findings == ["ok"] else { throw RawSQLite.Failure(description: "quick_check of \(path): \(findings)") }

    let binary = try builtProduct("edge-gateway")
    let config = directory.file("startup.yaml")
    try """
    gateway: { id: gw-bench }
    mqtt: { host: 127.0.0.1, port: \(freeLoopbackPort()) }
    buffer: { path: \(path) }
    log_level: error
    devices:
      - name: meter
        tcp: { host: 127.0.0.1, port: \(freeLoopbackPort()) }
        tags: [{ name: t, table: holding, address: 0, type: int16 }]
    """.write(toFile: config, atomically: true, encoding: .utf8)
    var ready: [Double] = []
    for run in 0..<3 {
        let (gateway, milliseconds) = try await spawnUntilReady(binary, config: config, log: directory.file("startup-\(run).log"),
                                                                watchdogMicroseconds: 5_000_000, directory: directory,
                                                                timeout: .seconds(120))
        ready.append(milliseconds)
        gateway.signal(SIGTERM)
        _ = try await gateway.waitForExit(timeout: .seconds(30))
    }
    figure("spawn → READY=1, median of 3 (target <= 1000)", ready.sorted()[1], "ms")
    figure("baseline: cat the file to /dev/null (first run)", cat[0], "ms")
    figure("baseline: cat the file to /dev/null (again, cached)", cat[1], "ms")
    figure("quick_check of the file (the old start waited)", seconds(quickCheck) * 1000, "ms")
}

/// An outbox of at least `bytes`, built once (sync normal, 1 KB payloads) and kept
/// under .build/bench-cache for later runs.
func cachedBigOutbox(bytes: Int) async throws -> String {
    let binaryDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    let cache = binaryDirectory.deletingLastPathComponent().appendingPathComponent("bench-cache").path
    try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
    let path = cache + "/outbox-1g.sqlite"
    let done = path + ".complete"
    if FileManager.default.fileExists(atPath: done) { return path }
    for suffix in ["", "-wal", "-shm", ".boot", ".lock", "-reserve"] { try? FileManager.default.removeItem(atPath: path + suffix) }
    print("  building the 1 GiB outbox once (\(path))…")
    let outbox = try Outbox(settings: OutboxSettings(path: path, synchronous: .normal), logger: quiet)
    let body = [UInt8](repeating: UInt8(ascii: "x"), count: 1000)
    let batch = (0..<1000).map { _ in OutboxDraft(topic: "edge/bench/device/data", qos: 1) { _, _ in body } }
    while ((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0) < bytes {
        _ = try await outbox.append(batch)
    }
    try "".write(toFile: done, atomically: true, encoding: .utf8)
    return path
}
