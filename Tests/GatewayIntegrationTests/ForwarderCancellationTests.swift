// Issue 9 item 1, the forwarder's part: when the service group's graceful period
// runs out (a bus stuck inside a long Modbus request) and the forwarder is
// cancelled, the retained status must still end up "offline" (shutdown), not stay
// "online" for a dead gateway.
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A TCP port that accepts connections (the kernel completes the handshake) and
/// never answers a byte: a Modbus device that hangs inside every request.
final class SilentDevice: @unchecked Sendable {
    let port = freeLoopbackPort()
    // Invariant: set once in init, closed once in deinit.
    private let fd: Int32

    init() throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw MissingTool(description: "cannot listen on 127.0.0.1:\(port): \(reason)")
        }
    }

    deinit { close(fd) }
}

@Suite(.serialized) struct ForwarderCancellationTests {
    @Test func aStopThatOutlastsTheGracePeriodStillLeavesTheStatusOffline() async throws {
        let directory = try TemporaryDirectory("cancel")
        defer { directory.remove() }
        let broker = try MosquittoBroker()
        try await broker.start()
        let subscriber = RecordingSubscriber(port: broker.port, filter: "edge/#")
        try await subscriber.waitConnected()
        let device = try SilentDevice()
        let config = directory.file("gateway.yaml")
        try """
        gateway:
          id: gw-hung
        mqtt:
          host: 127.0.0.1
          port: \(broker.port)
          reconnect_min: 100ms
        buffer:
          path: \(directory.file("outbox.sqlite"))
        devices:
          - name: silent-1
            tcp: { host: 127.0.0.1, port: \(device.port) }
            poll_interval: 100ms
            timeout: 20s
            tags:
              - { name: level, table: holding, address: 0, type: int16 }
        """.write(toFile: config, atomically: true, encoding: .utf8)
        let gateway = try ChildProcess(try builtProduct("edge-gateway"), ["run", "--config", config],
                                       log: directory.file("gateway.log"))
        let statusTopic = "edge/gw-hung/status"
        let statuses = { subscriber.messages(on: statusTopic).map(\.json) }
        try await waitUntil("the birth") { statuses().contains { $0["state"] as? String == "online" } }
        let birth = try #require(statuses().last { $0["state"] as? String == "online" })
        // The poller is inside its first request by now: it started before the uplink
        // connected and cannot return for 20 s, longer than the group's graceful period.

        gateway.signal(SIGTERM)
        // The group gives up after its graceful period (4 s) and cancels the forwarder,
        // which must still say offline (shutdown) before it disconnects.
        try await waitUntil("the offline status", timeout: .seconds(12)) {
            statuses().last?["state"] as? String == "offline"
        }
        let offline = try #require(statuses().last)
        #expect(offline["reason"] as? String == "shutdown", "\(offline)\n\(gateway.output)")
        #expect(offline["session"] as? Int == birth["session"] as? Int)
        _ = try? await gateway.waitForExit(timeout: .seconds(10))

        let late = RecordingSubscriber(port: broker.port, filter: statusTopic)
        try await late.waitConnected()
        let retained = try #require(late.messages(on: statusTopic).last)
        #expect(retained.retained)
        #expect(retained.json["state"] as? String == "offline", "the retained status a monitor sees: \(retained.text)")
        #expect(retained.json["reason"] as? String == "shutdown")
    }
}
