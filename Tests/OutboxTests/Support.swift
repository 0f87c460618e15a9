// Shared pieces of the outbox tests: temporary directories, drafts, a hand-driven clock,
// a log handler that records what was logged.

import Foundation
import Logging
import Outbox
import Testing

/// A fresh directory under the system temp directory, removed by `remove()`.
struct TemporaryDirectory {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "outbox-tests-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> String { path + "/" + name }

    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// Runs `body` with a temporary directory that is removed afterwards.
func withTemporaryDirectory<T>(_ body: (TemporaryDirectory) async throws -> T) async throws -> T {
    let directory = try TemporaryDirectory()
    defer { directory.remove() }
    return try await body(directory)
}

/// A JSON-ish payload embedding boot and seq, padded to `size` bytes.
func payload(boot: Int64, seq: Int64, size: Int = 200) -> [UInt8] {
    var bytes = Array(#"{"boot":\#(boot),"seq":\#(seq),"v":""#.utf8)
    while bytes.count < size - 2 { bytes.append(UInt8(ascii: "x")) }
    bytes.append(contentsOf: Array(#""}"#.utf8))
    return bytes
}

/// `count` drafts on `topic` whose payloads are `size` bytes.
func drafts(_ count: Int, topic: String = "edge/gw-01/boiler-1/data", size: Int = 200) -> [OutboxDraft] {
    (0..<count).map { _ in
        OutboxDraft(topic: topic, qos: 1) { boot, seq in payload(boot: boot, seq: seq, size: size) }
    }
}

/// A wall clock the test moves by hand.
final class ManualClock: Sendable {
    private let lock = NSLock()
    nonisolated(unsafe) private var current: Date

    init(_ start: Date = Date(timeIntervalSince1970: 1_800_000_000)) {
        current = start
    }

    var now: Date {
        lock.lock()
        defer { lock.unlock() }
        return current
    }

    func advance(by duration: Duration) {
        lock.lock()
        defer { lock.unlock() }
        current += Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}

/// Everything a logger logged, for checking what an operator would see.
final class LogRecorder: Sendable {
    struct Entry: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: Logger.Metadata
    }

    private let lock = NSLock()
    nonisolated(unsafe) private var recorded: [Entry] = []

    var entries: [Entry] {
        lock.lock()
        defer { lock.unlock() }
        return recorded
    }

    func record(_ entry: Entry) {
        lock.lock()
        defer { lock.unlock() }
        recorded.append(entry)
    }

    var logger: Logger {
        Logger(label: "outbox-test") { _ in RecordingLogHandler(recorder: self) }
    }
}

struct RecordingLogHandler: LogHandler {
    let recorder: LogRecorder
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?
    var logLevel: Logger.Level = .trace

    func log(event: LogEvent) {
        recorder.record(.init(
            level: event.level, message: "\(event.message)",
            metadata: metadata.merging(event.metadata ?? [:]) { $1 }))
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
}

/// A logger that drops everything.
let quietLogger = Logger(label: "outbox-test") { _ in SwiftLogNoOpLogHandler() }

/// Whether this process runs as root (needed to mount a tmpfs).
var isRoot: Bool { getuid() == 0 }

/// Whether the tests run in CI, where a missing prerequisite must fail the test.
var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

/// Runs a program and returns its exit status and combined output.
@discardableResult
func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Waits for `condition` until `timeout`, polling every 10 ms; records an issue when the
/// deadline passes (the background check and the deferred deletes run on other threads).
func waitFor(_ what: String, timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("timed out waiting for \(what)")
            return
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}

extension Outbox {
    /// Acknowledges `ids` as the forwarder does (queued with `acknowledgeWithNextWrite`)
    /// and deletes them at once in a transaction of their own, as the queue does when its
    /// size bound or its delay comes before the next append: for tests that want the rows
    /// gone before they look.
    func acknowledgeNow(_ ids: [Int64]) async {
        acknowledgeWithNextWrite(ids, flushAt: Int.max, delay: .seconds(600))
        await deleteQueuedAcknowledgements()
    }
}
