// The reconnect backoff and the causes the uplink names: the policy in isolation,
// then the real libmosquitto against a real mosquitto (two clients with one client
// id) and against a loopback listener that accepts TCP and never answers.
import Foundation
import Logging
@testable import MQTTUplink
import Synchronization
import Testing
import TestSupport

@Suite struct ReconnectBackoffTests {
    @Test func failedAttemptsDoubleTheWaitUpToTheMaximum() {
        var backoff = ReconnectBackoff(minimum: .seconds(1), maximum: .seconds(5))
        let waits = (0..<5).map { _ in backoff.ended(.failedToConnect) }
        #expect(waits == [.seconds(1), .seconds(2), .seconds(4), .seconds(5), .seconds(5)])
    }

    @Test func aSessionEndingRightAfterCONNACKDoesNotResetTheBackoff() {
        var backoff = ReconnectBackoff(minimum: .seconds(1), maximum: .seconds(30))
        let waits = (0..<4).map { _ in backoff.ended(.lost(lasted: .milliseconds(300), cause: .closedByBroker)) }
        #expect(waits == [.seconds(1), .seconds(2), .seconds(4), .seconds(8)])
        #expect(backoff.closedRightAfterCONNACK == 4)
    }

    @Test func aStableSessionResetsTheBackoff() {
        var backoff = ReconnectBackoff(minimum: .seconds(1), maximum: .seconds(30))
        for _ in 0..<3 { _ = backoff.ended(.failedToConnect) }
        // The last wait was 4 s; a session of four times that is stable.
        #expect(backoff.ended(.lost(lasted: .seconds(60), cause: .closedByBroker)) == .seconds(1))
        #expect(backoff.closedRightAfterCONNACK == 0)
    }

    /// Two clients with one client id: each session lasts until the other's next
    /// attempt, i.e. the other's wait (up to twice one's own while both back off) plus
    /// a connect. Such sessions never reset, down at the minimum nor up at the maximum.
    @Test func sessionsAsLongAsTheOtherClientsWaitDoNotReset() {
        var backoff = ReconnectBackoff(minimum: .seconds(1), maximum: .seconds(30))
        // At the minimum: the other client waits 1 s too.
        #expect(backoff.ended(.lost(lasted: .milliseconds(1050), cause: .closedByBroker)) == .seconds(1))
        var waits: [Duration] = []
        var otherWait = Duration.seconds(2)
        for _ in 0..<6 {
            waits.append(backoff.ended(.lost(lasted: otherWait + .milliseconds(50), cause: .closedByBroker)))
            otherWait = min(otherWait * 2, .seconds(30))
        }
        #expect(waits == [.seconds(2), .seconds(4), .seconds(8), .seconds(16), .seconds(30), .seconds(30)])
        // Once a session outlasts four times the wait before it (capped at twice the maximum), it resets.
        #expect(backoff.ended(.lost(lasted: .seconds(61), cause: .closedByBroker)) == .seconds(1))
    }

    @Test func theReasonNamesTheCause() {
        var backoff = ReconnectBackoff(minimum: .seconds(1), maximum: .seconds(30))
        let closed = MQTTUplink.LostSession(error: "connection to 127.0.0.1:1: The connection was lost.",
                                            lasted: .milliseconds(100), cause: .closedByBroker)
        _ = backoff.ended(.lost(lasted: closed.lasted, cause: closed.cause))
        #expect(MQTTUplink.explain(closed, backoff: backoff, clientID: "gw-1") == closed.error,
                "one early close proves nothing")
        for _ in 0..<2 { _ = backoff.ended(.lost(lasted: closed.lasted, cause: closed.cause)) }
        #expect(MQTTUplink.explain(closed, backoff: backoff, clientID: "gw-1").hasPrefix(
            "the broker closed the connection 3 times right after CONNACK: another client with the same client id (gw-1)?"))

        let qos2 = MQTTUplink.LostSession(error: "connection to 127.0.0.1:1: A network protocol error occurred.",
                                          lasted: .milliseconds(100), cause: .qos2AnsweredWithPUBACK)
        #expect(MQTTUplink.explain(qos2, backoff: backoff, clientID: "gw-1").hasPrefix(
            "the broker does not support QoS 2 (answered PUBACK): use qos: 1"))
    }

    @Test func theCONNACKDeadlineComesBeforeLibmosquittosKeepalive() {
        #expect(MQTTUplink.connackWait(keepalive: .seconds(2)) == .milliseconds(1500))
        #expect(MQTTUplink.connackWait(keepalive: .seconds(30)) < .seconds(30))
        #expect(MQTTUplink.connackWait(keepalive: .seconds(1)) == .seconds(1))
    }
}

@Suite struct UplinkBackoffProcessTests {
    /// Two gateways configured with one client id kick each other off: the log names
    /// the likely cause and both back off to `reconnect_max` instead of reconnecting
    /// about once a second for ever.
    @Test func twoClientsWithOneClientIDBackOffAndNameTheCause() async throws {
        let broker = try MosquittoBroker()
        try await broker.start()
        let settings = MQTTUplinkSettings(host: "127.0.0.1", port: broker.port, clientID: "twin-gw", keepalive: .seconds(5),
                                          reconnectMin: .milliseconds(100), reconnectMax: .milliseconds(1600))
        let logs = [LogLines(), LogLines()]
        let connects = Mutex<[Int]>([0, 0])
        let uplinks = (0..<2).map { index in
            MQTTUplink(settings: settings, logger: logs[index].logger(label: "twin-\(index)")) { event in
                if case .connected = event { connects.withLock { $0[index] += 1 } }
            }
        }
        uplinks.forEach { $0.start() }
        defer { uplinks.forEach { $0.requestStop() } }

        let max = "\(settings.reconnectMax)"
        try await waitUntil("both clients to back off to reconnect_max after losing the connection", timeout: .seconds(40)) {
            logs.allSatisfy { $0.lost.filter { $0.retryIn == max }.count >= 2 }
        }
        for log in logs {
            let lost = log.lost
            // The waits grew and never went back to reconnect_min (before the fix every
            // lost connection was retried after reconnect_min).
            let waits = lost.map(\.retryIn)
            let grew = zip(waits, waits.dropFirst()).allSatisfy { pair in
                pair.1 == max || Double(pair.1.split(separator: " ")[0])! > Double(pair.0.split(separator: " ")[0])!
            }
            #expect(grew, "\(waits)")
            #expect(waits.suffix(2).allSatisfy { $0 == max }, "\(waits)")
        }
        let named = logs.flatMap(\.lost).filter {
            $0.error.contains("right after CONNACK: another client with the same client id (twin-gw)?")
        }
        #expect(!named.isEmpty, "the cause is named: \(logs.flatMap(\.lost).map(\.error))")
        // Backing off is not giving up: both keep trying.
        let before = connects.withLock { $0 }
        try await waitUntil("both clients to connect again", timeout: .seconds(20)) {
            let now = connects.withLock { $0 }
            return now[0] > before[0] && now[1] > before[1]
        }
        await withDiscardingTaskGroup { group in
            for uplink in uplinks { group.addTask { await uplink.stop() } }
        }
    }

    /// A listener that accepts TCP and never says a word: the gateway's own CONNACK
    /// deadline names it, not libmosquitto's keepalive ("Unknown error").
    @Test func aSilentBrokerIsNamed() async throws {
        let listener = try SilentListener()
        let failures = Mutex<[(reason: String, retryIn: Duration)]>([])
        let settings = MQTTUplinkSettings(host: "127.0.0.1", port: listener.port, clientID: "silent-test",
                                          keepalive: .seconds(5), reconnectMin: .milliseconds(100),
                                          reconnectMax: .milliseconds(200))
        var logger = Logger(label: "silent-test")
        logger.logLevel = .critical
        let uplink = MQTTUplink(settings: settings, logger: logger) { event in
            if case let .connectFailed(reason, retryIn) = event { failures.withLock { $0.append((reason, retryIn)) } }
        }
        uplink.start()
        // libmosquitto's keepalive (5 s, its minimum) would close the socket at 5 s.
        try await waitUntil("three failed attempts", timeout: .seconds(30)) { failures.withLock { $0.count >= 3 } }
        await uplink.stop()
        let seen = failures.withLock { $0 }
        for failure in seen {
            #expect(failure.reason.hasPrefix("no CONNACK from 127.0.0.1:\(listener.port) within 3.75 s"), "\(failure.reason)")
        }
        #expect(seen.prefix(3).map(\.retryIn) == [.milliseconds(100), .milliseconds(200), .milliseconds(200)])
    }
}

/// The uplink's warnings, kept for the test to read.
final class LogLines: Sendable {
    struct Lost: Sendable {
        var error: String
        var retryIn: String
    }

    private let lines = Mutex<[Lost]>([])

    var lost: [Lost] { lines.withLock { $0 } }

    func logger(label: String) -> Logger {
        var logger = Logger(label: label) { _ in Handler(lines: self) }
        logger.logLevel = .warning
        return logger
    }

    private struct Handler: LogHandler {
        let lines: LogLines
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .warning

        func log(event: LogEvent) {
            guard "\(event.message)" == "connection to broker lost", let metadata = event.metadata else { return }
            lines.lines.withLock {
                $0.append(Lost(error: "\(metadata["error"] ?? "")", retryIn: "\(metadata["retry_in"] ?? "")"))
            }
        }

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
    }
}

/// A TCP listener on 127.0.0.1 that lets the kernel accept connections (its backlog)
/// and never reads or writes: a broker that accepts TCP and never answers.
final class SilentListener: Sendable {
    let port: Int
    private let descriptor: Int32

    init() throws {
        port = freeLoopbackPort()
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw ListenerError(description: "socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(descriptor, 64) == 0 else {
            let error = String(cString: strerror(errno))
            close(descriptor)
            throw ListenerError(description: "cannot listen on 127.0.0.1:\(port): \(error)")
        }
    }

    deinit { close(descriptor) }
}

struct ListenerError: Error, CustomStringConvertible {
    var description: String
}

@Suite struct ServerRotationTests {
    @Test func aRoundGoesDownTheListAndOnlyAFullRoundWaits() {
        var rotation = ServerRotation(count: 3)
        #expect(rotation.index == 0)
        #expect(rotation.failed() == false && rotation.index == 1)
        #expect(rotation.failed() == false && rotation.index == 2)
        #expect(rotation.failed() == true && rotation.index == 0)
    }

    @Test func aConnectionOnALaterServerFailsBackToTheFirst() {
        var rotation = ServerRotation(count: 2)
        _ = rotation.failed()
        #expect(rotation.onLaterServer)
        rotation.ended()
        #expect(rotation.index == 0 && !rotation.onLaterServer)
    }

    @Test func oneServerWaitsAfterEveryFailure() {
        var rotation = ServerRotation(count: 1)
        #expect(rotation.failed() && rotation.failed())
        #expect(!rotation.onLaterServer)
    }
}
