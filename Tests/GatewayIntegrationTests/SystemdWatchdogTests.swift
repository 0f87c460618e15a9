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

    /// A bus whose device accepted the connection and then never answers keeps its
    /// thread in a blocking libmodbus read: the feeding stops while it hangs and
    /// resumes when the read times out.
    @Test func watchdogStarvesWhileABusThreadHangs() async throws {
        let e2e = try await EndToEnd()
        let hung = try SilentTCPListener()
        // The hang (3 s response timeout) outlasts the watchdog interval (1 s).
        let config = try String(contentsOfFile: e2e.configPath, encoding: .utf8)
            .replacingOccurrences(of: "port: \(e2e.modbusPort) }", with: "port: \(hung.port) }")
            .replacingOccurrences(of: "timeout: 200ms", with: "timeout: 3s")
        try config.write(toFile: e2e.configPath, atomically: true, encoding: .utf8)
        let notify = try NotifySocket(abstract: false, directory: e2e.directory)
        try e2e.startGatewayUnderSystemd(notify: notify, watchdog: .seconds(1))

        func unhealthy(_ datagram: NotifySocket.Datagram) -> Bool { datagram.status?.hasPrefix("unhealthy") == true }
        try await waitUntil("READY=1, an unhealthy status, a healthy one after it and WATCHDOG=1 again", timeout: .seconds(20)) {
            let datagrams = notify.datagrams
            guard let stuck = datagrams.firstIndex(where: unhealthy),
                  let back = datagrams[stuck...].firstIndex(where: { $0.status != nil && !unhealthy($0) })
            else { return false }
            return datagrams[back...].contains { $0.has("WATCHDOG=1") }
        }
        let datagrams = notify.datagrams
        #expect(datagrams.first?.has("READY=1") == true, "\(datagrams.map(\.text))")
        let stuck = datagrams.firstIndex(where: unhealthy)!
        let back = datagrams[stuck...].firstIndex { $0.status != nil && !unhealthy($0) }!
        #expect(datagrams[stuck].status!.contains("bus tcp://127.0.0.1:\(hung.port)"), "names the hung bus: \(datagrams[stuck].text)")
        #expect(!datagrams[stuck..<back].contains { $0.has("WATCHDOG=1") },
                "no WATCHDOG=1 while the bus hangs: \(datagrams.map(\.text))")
        #expect(e2e.gateway!.output.contains("watchdog not fed"), "\(e2e.diagnostics)")
        if let lastPet = datagrams[..<stuck].last(where: { $0.has("WATCHDOG=1") }),
           let nextPet = datagrams[back...].first(where: { $0.has("WATCHDOG=1") }) {
            print("watchdog: no WATCHDOG=1 for \(nextPet.arrived - lastPet.arrived) while a bus hung (WatchdogSec 1s: systemd would have restarted it)")
        }
        e2e.gateway!.signal(SIGTERM)
        _ = try await e2e.gateway!.waitForExit(timeout: .seconds(10))
    }
}
