// `edge-gateway-bench service`: what running under systemd costs.
//   time from spawning the gateway to READY=1 on $NOTIFY_SOCKET (the outbox opened,
//   every bus polling, the forwarder turning) vs spawning `edge-gateway --version`
//   to its exit (process start alone); and one WATCHDOG=1 datagram vs one
//   getppid() system call.
import Foundation
import Gateway
import LocalPeers
#if canImport(Glibc)
import Glibc
#endif

func benchService(directory: TemporaryDirectory) async throws {
    print("service: 5 starts of the gateway under a stand-in NOTIFY_SOCKET (no broker, one silent device)")
    let binary = try builtProduct("edge-gateway")
    let config = directory.file("service.yaml")
    try """
    gateway: { id: gw-bench }
    mqtt: { host: 127.0.0.1, port: \(freeLoopbackPort()) }
    buffer: { path: \(directory.file("service.sqlite")) }
    log_level: error
    devices:
      - name: meter
        tcp: { host: 127.0.0.1, port: \(freeLoopbackPort()) }
        tags: [{ name: t, table: holding, address: 0, type: int16 }]
    """.write(toFile: config, atomically: true, encoding: .utf8)
    var ready: [Double] = []
    var bare: [Double] = []
    for run in 0..<5 {
        let (gateway, milliseconds) = try await spawnUntilReady(binary, config: config, log: directory.file("service-\(run).log"),
                                                                watchdogMicroseconds: 2_000_000, directory: directory,
                                                                timeout: .seconds(30))
        ready.append(milliseconds)
        gateway.signal(SIGTERM)
        _ = try await gateway.waitForExit()

        let versionStart = ContinuousClock.now
        let version = try ChildProcess(binary, ["--version"], log: directory.file("version-\(run).log"))
        _ = try await version.waitForExit()
        bare.append(seconds(ContinuousClock.now - versionStart) * 1000)
    }
    let medianReady = ready.sorted()[ready.count / 2], medianBare = bare.sorted()[bare.count / 2]
    figure("spawn → READY=1 (median of 5)", medianReady, "ms")
    figure("baseline: spawn → exit of --version (median of 5)", medianBare, "ms")
    figure("ratio", medianReady / max(medianBare, 0.001), "x")

    let notify = try NotifySocket(abstract: true, directory: directory)
    let notifier = try SystemdNotifier(socketPath: notify.path, watchdogInterval: .seconds(1))
    let count = 20_000
    let clock = ContinuousClock()
    let petting = clock.measure { for _ in 0..<count { notifier.watchdog() } }
    let syscalls = clock.measure { for _ in 0..<count { _ = getppid() } }
    figure("one WATCHDOG=1 datagram", seconds(petting) / Double(count) * 1e9, "ns")
    figure("baseline: one getppid() system call", seconds(syscalls) / Double(count) * 1e9, "ns")
}
