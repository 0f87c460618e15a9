// Spawning the gateway and timing it to READY=1 on its own notify socket: the `service`
// and `startup` sections measure the same span, so they share this one definition of it.
import Foundation
import LocalPeers

/// Starts `edge-gateway run --config <config>` with a fresh notify socket and waits (up to
/// `timeout`) for READY=1. Returns the running gateway and the milliseconds from spawn to the
/// arrival of the READY=1 datagram; the caller stops the gateway.
func spawnUntilReady(_ binary: String, config: String, log: String, watchdogMicroseconds: Int,
                     directory: TemporaryDirectory, timeout: Duration) async throws -> (gateway: ChildProcess, milliseconds: Double) {
    let notify = try NotifySocket(abstract: true, directory: directory)
    let start = ContinuousClock.now
    let gateway = try ChildProcess(binary, ["run", "--config", config], log: log,
                                   environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": String(watchdogMicroseconds)])
    try await waitUntil("READY=1", timeout: timeout) { notify.datagrams.contains { $0.has("READY=1") } }
    let arrived = notify.datagrams.first { $0.has("READY=1") }!.arrived
    return (gateway, seconds(arrived - start) * 1000)
}
