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
        let config = try String(contentsOfFile: configPath, encoding: .utf8) + """

          - name: silent-1
            tcp: { host: 127.0.0.1, port: \(port) }
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
}
