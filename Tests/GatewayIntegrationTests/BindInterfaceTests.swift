// mqtt.bind_interface on loopback: connects through the named interface, and
// buffers (saying why) while the interface does not exist.
import Foundation
import Outbox
import Testing
import TestSupport

@Suite(.serialized) struct BindInterfaceTests {
    private func bind(_ e2e: EndToEnd, interface: String) throws {
        let config = try String(contentsOfFile: e2e.configPath, encoding: .utf8)
            .replacingOccurrences(of: "  keepalive: 5s\n", with: "  keepalive: 5s\n  bind_interface: \(interface)\n")
        try config.write(toFile: e2e.configPath, atomically: true, encoding: .utf8)
    }

    @Test func connectsThroughTheNamedInterface() async throws {
        let e2e = try await EndToEnd()
        try bind(e2e, interface: "lo")
        try e2e.startGateway()
        try await waitUntil("birth and data through lo") {
            e2e.statuses(e2e.statusTopic).contains("online") && e2e.dataMessages.count >= 2
        }
    }

    @Test func buffersAndSaysWhyWhileTheInterfaceIsMissing() async throws {
        let e2e = try await EndToEnd()
        try bind(e2e, interface: "nosuch0")
        let notify = try NotifySocket(abstract: true, directory: e2e.directory)
        try e2e.startGatewayUnderSystemd(notify: notify, watchdog: .seconds(2))
        let outbox = e2e.directory.file("outbox.sqlite")
        try await waitUntil("the refusal in the log and status, and polls buffered") {
            e2e.gateway!.output.contains("interface nosuch0 does not exist")
                && notify.datagrams.contains { $0.status?.contains("interface nosuch0 does not exist") == true }
                && ((try? Outbox.readStatistics(path: outbox))?.bufferedMessages ?? 0) >= 3
        }
        try await e2e.subscriber.roundTrip()
        #expect(e2e.statuses(e2e.statusTopic).isEmpty, "never connected by another route: \(e2e.diagnostics)")
        #expect(e2e.dataMessages.isEmpty)
    }
}
