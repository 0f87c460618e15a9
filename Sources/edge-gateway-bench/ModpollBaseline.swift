// The peer baseline of `per-message`: modpoll 1.6.0 (Python, pymodbus 3.9.2, paho-mqtt),
// from the venv `make bench` creates in .build/venv-modpoll, polling the same
// simulator and publishing to the same mosquitto (MQTT 5, QoS 1) as the gateway runs:
// one device, one read of 100 holding registers, one JSON message per poll.
//
//   CPU per 1,000 values: utime + stime of the modpoll process (/proc/<pid>/stat)
//   over the run, per value a subscriber received (100 per message).
//   modpoll keeps nothing on disk; it opens and closes the Modbus TCP connection on
//   every poll (its design), and its main loop sleeps 10 ms between checks, so it may
//   not reach 100 polls/s: the figure is per value it delivered.
//   BENCH_MODPOLL=<path> runs another modpoll executable.
import Foundation
import LocalPeers
import MQTTUplink
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What modpoll delivered and spent in one run.
struct ModpollRun {
    var pollsPerSecond: Int
    var messages: Int
    var seconds: Double
    var cpuPerThousandValues: Double
}

/// Why there is no modpoll figure (printed as "modpoll baseline unavailable: <why>").
struct ModpollUnavailable: Error, CustomStringConvertible {
    var description: String
}

/// The modpoll executable: BENCH_MODPOLL, else the Makefile's venv under this package's .build.
func modpollExecutable() throws -> String {
    if let path = ProcessInfo.processInfo.environment["BENCH_MODPOLL"] {
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw ModpollUnavailable(description: "BENCH_MODPOLL=\(path) is not an executable")
        }
        return path
    }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    let path = root.appendingPathComponent(".build/venv-modpoll/bin/modpoll").path
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw ModpollUnavailable(description: "\(path) is missing; `make bench` creates it (apt python3-venv, pip modpoll==1.6.0 pymodbus==3.9.2)")
    }
    return path
}

/// modpoll's configuration: device `meter` (unit 1), one read of holding 0..99, 100 uint16 references.
private func modpollConfig() -> String {
    var lines = ["device,meter,1,,", "poll,holding_register,0,100,BE_BE"]
    lines += (0..<100).map { "ref,r\($0),\($0),uint16,r" }
    return lines.joined(separator: "\n") + "\n"
}

/// Counts the messages modpoll publishes for `meter`.
private final class MessageCounter: Sendable {
    let received = Atomic<Int>(0)
    let connected = Atomic<Bool>(false)
    let uplink = Mutex<MQTTUplink?>(nil)
}

/// Runs modpoll at `pollsPerSecond` for `duration` (after a warm-up) and measures its CPU per value.
func runModpoll(executable: String, directory: TemporaryDirectory, brokerPort: Int, modbusPort: Int,
                pollsPerSecond: Int, duration: Duration) async throws -> ModpollRun {
    let config = directory.file("modpoll-\(pollsPerSecond).csv")
    try modpollConfig().write(toFile: config, atomically: true, encoding: .utf8)
    let counter = MessageCounter()
    let subscriber = MQTTUplink(settings: MQTTUplinkSettings(host: "127.0.0.1", port: brokerPort,
                                                             clientID: "bench-modpoll-sub-\(pollsPerSecond)"),
                                logger: quiet) { event in
        switch event {
        case .connected:
            try? counter.uplink.withLock { try $0?.subscribe("modpoll/meter/data", qos: 1) }
            counter.connected.store(true, ordering: .releasing)
        case .message: counter.received.add(1, ordering: .relaxed)
        default: break
        }
    }
    counter.uplink.withLock { $0 = subscriber }
    subscriber.start()
    do {
        let run = try await measureModpoll(executable: executable, directory: directory, config: config, counter: counter,
                                           brokerPort: brokerPort, modbusPort: modbusPort,
                                           pollsPerSecond: pollsPerSecond, duration: duration)
        await subscriber.stop()
        return run
    } catch {
        await subscriber.stop()
        throw error
    }
}

private func measureModpoll(executable: String, directory: TemporaryDirectory, config: String, counter: MessageCounter,
                            brokerPort: Int, modbusPort: Int, pollsPerSecond: Int,
                            duration: Duration) async throws -> ModpollRun {
    try await waitUntil("the modpoll subscriber to connect") { counter.connected.load(ordering: .acquiring) }
    let rate = String(format: "%.3f", 1.0 / Double(pollsPerSecond))
    let modpoll = try ChildProcess(executable, [
        "-f", config, "--tcp", "127.0.0.1", "--tcp-port", "\(modbusPort)", "-r", rate, "--interval", "0",
        "--mqtt-host", "127.0.0.1", "--mqtt-port", "\(brokerPort)", "--mqtt-version", "5.0", "--mqtt-qos", "1",
        "--mqtt-clientid", "modpoll-bench-\(pollsPerSecond)", "--daemon", "--loglevel", "ERROR",
    ], log: directory.file("modpoll-\(pollsPerSecond).log"))
    defer {
        modpoll.signal(SIGKILL)
        modpoll.waitBlocking()
    }
    try await waitUntil("modpoll's first message", timeout: .seconds(60)) {
        counter.received.load(ordering: .relaxed) > 0 || !modpoll.isRunning
    }
    guard modpoll.isRunning else {
        throw ModpollUnavailable(description: "modpoll exited: \(modpoll.output.suffix(600))")
    }
    try await Task.sleep(for: .seconds(2))  // warm-up, not measured
    let cpuStart = cpuSeconds(pid: modpoll.pid)
    let receivedStart = counter.received.load(ordering: .relaxed)
    let start = ContinuousClock.now
    try await Task.sleep(for: duration)
    let elapsed = seconds(ContinuousClock.now - start)
    let cpu = cpuSeconds(pid: modpoll.pid) - cpuStart
    let messages = counter.received.load(ordering: .relaxed) - receivedStart
    return ModpollRun(pollsPerSecond: pollsPerSecond, messages: messages, seconds: elapsed,
                      cpuPerThousandValues: cpu * 1000 / max(Double(messages) * 100 / 1000, 0.001))
}
