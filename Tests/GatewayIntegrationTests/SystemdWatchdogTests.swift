// The gateway process under a stand-in for systemd: readiness, status lines, the
// watchdog fed from the gateway's own health, and the stopping notice.
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

extension EndToEnd {
    /// Starts the gateway as systemd would for `Type=notify` with `WatchdogSec=`.
    func startGatewayUnderSystemd(notify: NotifySocket, watchdog: Duration) throws {
        let usec = watchdog.components.seconds * 1_000_000 + watchdog.components.attoseconds / 1_000_000_000_000
        gateway = try ChildProcess(try builtProduct("edge-gateway"), ["run", "--config", configPath],
                                   log: directory.file("gateway-sd-\(UUID().uuidString.prefix(6)).log"),
                                   environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "\(usec)"])
    }
}

@Suite(.serialized) struct SystemdWatchdogTests {
    @Test func readyThenWatchdogWhileHealthyAndStoppingOnSIGTERM() async throws {
        let e2e = try await EndToEnd()
        // Abstract socket name, as systemd uses for user managers and containers.
        let notify = try NotifySocket(abstract: true, directory: e2e.directory)
        try e2e.startGatewayUnderSystemd(notify: notify, watchdog: .seconds(1))
        try await waitUntil("READY=1 and three WATCHDOG=1 after it") {
            let datagrams = notify.datagrams
            guard let ready = datagrams.firstIndex(where: { $0.has("READY=1") }) else { return false }
            return datagrams[ready...].filter { $0.has("WATCHDOG=1") }.count >= 3
        }
        // Ready means the outbox is open and polling runs: data is flowing by then or soon.
        try await waitUntil("data") { e2e.dataMessages.count >= 2 }
        let ready = try #require(notify.datagrams.first { $0.has("READY=1") })
        #expect(ready.status?.contains("bus") == true, "READY carries a status line: \(ready.text)")
        #expect(!notify.datagrams.contains { $0.status?.contains("unhealthy") == true }, "\(notify.datagrams.map(\.text))")

        e2e.gateway!.signal(SIGTERM)
        let exit = try await e2e.gateway!.waitForExit(timeout: .seconds(5))
        #expect(exit == 0, "\(e2e.diagnostics)")
        let stopping = try #require(notify.datagrams.firstIndex { $0.has("STOPPING=1") }, "\(notify.datagrams.map(\.text))")
        #expect(!notify.datagrams[stopping...].contains { $0.has("WATCHDOG=1") || $0.has("READY=1") })
    }

    /// A bus whose device accepted the connection and then never answers waits in
    /// a blocking libmodbus read for its whole response timeout (3 s, three watchdog
    /// intervals). That wait is bounded, so the bus is alive: the watchdog stays fed
    /// and the status line never says unhealthy; one silent device must not get the
    /// whole gateway restarted. (A bus stuck past its request's deadline is a hang:
    /// `HealthRuleTests`.)
    @Test func watchdogStaysFedWhileABusWaitsOnASilentDevice() async throws {
        let e2e = try await EndToEnd()
        let hung = try SilentTCPListener()
        let config = try String(contentsOfFile: e2e.configPath, encoding: .utf8)
            .replacingOccurrences(of: "port: \(e2e.modbusPort) }", with: "port: \(hung.port) }")
            .replacingOccurrences(of: "timeout: 200ms", with: "timeout: 3s")
        try config.write(toFile: e2e.configPath, atomically: true, encoding: .utf8)
        let notify = try NotifySocket(abstract: false, directory: e2e.directory)
        try e2e.startGatewayUnderSystemd(notify: notify, watchdog: .seconds(1))

        // The device goes offline once its first 3 s read timed out; then a second read waits.
        try await waitUntil("the silent device offline and WATCHDOG=1 going on after it", timeout: .seconds(20)) {
            guard e2e.statuses(e2e.deviceStatusTopic).last == "offline" else { return false }
            return notify.datagrams.filter { $0.has("WATCHDOG=1") }.count >= 14
        }
        let datagrams = notify.datagrams
        #expect(datagrams.first?.has("READY=1") == true, "\(datagrams.map(\.text))")
        #expect(!datagrams.contains { $0.status?.hasPrefix("unhealthy") == true },
                "a bus waiting inside a bounded request is alive: \(datagrams.map(\.text))")
        #expect(!e2e.gateway!.output.contains("watchdog not fed"), "\(e2e.diagnostics)")
        e2e.gateway!.signal(SIGTERM)
        #expect(try await e2e.gateway!.waitForExit(timeout: .seconds(10)) == 0, "\(e2e.diagnostics)")
    }
}
