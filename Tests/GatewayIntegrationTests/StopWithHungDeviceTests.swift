// SIGTERM while a bus is inside a long Modbus request: the stop never waits for
// the bus thread, the retained status says offline/shutdown, the process exits 0,
// and what was committed before the stop reaches the broker.
import Foundation
import Outbox
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

extension EndToEnd {
    /// Adds a device on its own bus that accepts TCP connections and never answers.
    func addSilentDevice(port: Int, timeout: String, retries: Int) throws {
        try addSilentDevice(transport: "tcp: { host: 127.0.0.1, port: \(port) }", timeout: timeout, retries: retries)
    }

    /// Adds a device on its own bus (`transport` is its `tcp:` or `rtu:` line) that never answers.
    func addSilentDevice(transport: String, timeout: String, retries: Int) throws {
        let config = try String(contentsOfFile: configPath, encoding: .utf8) + """

          - name: silent-1
            \(transport)
            timeout: \(timeout)
            retries: \(retries)
            tags:
              - { name: level, table: holding, address: 0, type: int16 }

        """
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
    }
}

@Suite(.serialized) struct StopWithHungDeviceTests {
    /// `timeout: 2s, retries: 5`: a read of the silent device holds its bus for 12 s,
    /// three times the service group's graceful shutdown limit (4 s); `timeout: 8s`:
    /// one request alone outlasts it.
    @Test(arguments: [("2s", 5), ("8s", 0)])
    func sigtermDuringAHungRequestPublishesOfflineAndExitsZero(timeout: String, retries: Int) async throws {
        let e2e = try await EndToEnd()
        let silent = try SilentTCPListener()
        try e2e.addSilentDevice(port: silent.port, timeout: timeout, retries: retries)
        try e2e.startGateway()
        let silentStatus = "edge/\(e2e.gatewayID)/silent-1/status"
        try await waitUntil("birth and data from the answering device") {
            e2e.statuses(e2e.statusTopic).contains("online") && e2e.dataMessages.count >= 3
        }
        // The silent bus started its first read at startup; no verdict on the device
        // yet means that read (12 s) is still waiting.
        #expect(e2e.statuses(silentStatus).isEmpty, "the silent device's first read is still in progress")

        e2e.gateway!.signal(SIGTERM)
        let status = try await e2e.gateway!.waitForExit(timeout: .seconds(10))
        #expect(status == 0, "exit status (132 = aborted by ServiceLifecycle): \(e2e.diagnostics)")
        #expect(!e2e.gateway!.output.contains("Cancellation took longer"), "\(e2e.diagnostics)")
        try await e2e.subscriber.roundTrip()

        let offline = e2e.subscriber.messages(on: e2e.statusTopic).filter { $0.json["state"] as? String == "offline" }
        #expect(offline.count == 1, "one offline status, no Last Will: \(offline.map(\.text))")
        #expect(offline.first?.json["reason"] as? String == "shutdown", "\(e2e.diagnostics)")
        let late = RecordingSubscriber(port: e2e.broker.port, filter: e2e.statusTopic)
        try await late.waitConnected()
        try await late.roundTrip()
        let retained = try #require(late.messages(on: e2e.statusTopic).last, "a retained status")
        #expect(retained.retained && retained.json["state"] as? String == "offline"
                && retained.json["reason"] as? String == "shutdown", "retained: \(retained.text)")

        // Every poll committed in this boot was delivered before the offline status.
        let statistics = try Outbox.readStatistics(path: e2e.outboxPath)
        let seqs = Set(e2e.dataMessages.filter { $0["boot"] as? Int == 1 }.compactMap { $0["seq"] as? Int })
        #expect(statistics.committedThisBoot > 0)
        #expect(seqs == Set(1...Int(statistics.committedThisBoot)),
                "committed \(statistics.committedThisBoot), received \(seqs.sorted()) \(e2e.diagnostics)")
        #expect(statistics.bufferedMessages == 0, "\(statistics)")
    }

    /// A serial line cannot be woken by shutdown(2): the bus thread stays in its 8 s
    /// request, the service abandons it after the wind-down, and the stop goes on
    /// without it.
    @Test func sigtermDuringAHungSerialRequestAbandonsTheBusAndExitsZero() async throws {
        let e2e = try await EndToEnd()
        // A pty pair with nobody on the device's end: requests go out, nothing comes back.
        let deviceEnd = e2e.directory.file("rtu-device"), gatewayEnd = e2e.directory.file("rtu-gateway")
        let socat = try ChildProcess(try requireTool("socat", package: "socat"),
                                     ["pty,raw,echo=0,link=\(deviceEnd)", "pty,raw,echo=0,link=\(gatewayEnd)"],
                                     log: e2e.directory.file("socat.log"))
        defer { socat.signal(SIGTERM) }
        try await waitUntil("socat's pty links") { FileManager.default.fileExists(atPath: gatewayEnd) }
        try e2e.addSilentDevice(transport: "rtu: { port: \(gatewayEnd), baud: 19200 }", timeout: "8s", retries: 0)
        try e2e.startGateway()
        try await waitUntil("birth and data from the answering device") {
            e2e.statuses(e2e.statusTopic).contains("online") && e2e.dataMessages.count >= 3
        }
        #expect(e2e.statuses("edge/\(e2e.gatewayID)/silent-1/status").isEmpty, "the serial read is still waiting")

        e2e.gateway!.signal(SIGTERM)
        let status = try await e2e.gateway!.waitForExit(timeout: .seconds(10))
        #expect(status == 0, "\(e2e.diagnostics)")
        #expect(e2e.gateway!.output.contains("abandoned it"), "the serial bus was left behind: \(e2e.diagnostics)")
        try await e2e.subscriber.roundTrip()
        let offline = e2e.subscriber.messages(on: e2e.statusTopic).filter { $0.json["state"] as? String == "offline" }
        #expect(offline.map { $0.json["reason"] as? String } == ["shutdown"], "\(offline.map(\.text))")
        let statistics = try Outbox.readStatistics(path: e2e.outboxPath)
        let seqs = Set(e2e.dataMessages.compactMap { $0["seq"] as? Int })
        #expect(seqs == Set(1...Int(statistics.committedThisBoot)), "\(statistics) \(e2e.diagnostics)")
    }
}
