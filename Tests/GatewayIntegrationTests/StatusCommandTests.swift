// `edge-gateway status` beside a running outbox: the rows the broker acknowledged wait in
// the running process's memory for its next write, so the file, all status can read,
// still counts them; status says a gateway runs and that its backlog may include them.
import Foundation
import Gateway
import Logging
import Outbox
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite struct StatusCommandTests {
    private func status(_ arguments: [String], in directory: TemporaryDirectory,
                        log: String) async throws -> (status: Int32, output: String) {
        let child = try ChildProcess(try builtProduct("edge-gateway"), ["status"] + arguments, log: directory.file(log))
        let status = try await child.waitForExit(timeout: .seconds(30))
        return (status, child.output)
    }

    private func json(_ output: String) throws -> [String: Any] {
        let line = try #require(output.split(separator: "\n").first, "printed nothing")
        return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(output)")
    }

    @Test func statusBesideARunningOutboxSaysItsBacklogMayIncludeAcknowledgedRows() async throws {
        let directory = try TemporaryDirectory("status-running")
        defer { directory.remove() }
        let path = directory.file("outbox.sqlite")
        let seconds = Int(ForwarderService.acknowledgedRowsDeletedWithin / .seconds(1))
        do {
            // This test process is the running gateway: it holds the outbox open.
            let quiet = Logger(label: "status-test") { _ in SwiftLogNoOpLogHandler() }
            let outbox = try Outbox(settings: .init(path: path), logger: quiet)
            let committed = try await outbox.append((0..<3).map { _ in
                OutboxDraft(topic: "edge/gw/dev/data", qos: 1) { boot, seq in
                    Array("{\"boot\":\(boot),\"seq\":\(seq)}".utf8)
                }
            })
            // Acknowledged as the forwarder does: deleted with the next write, not yet.
            outbox.acknowledgeWithNextWrite(committed.map(\.id), flushAt: 100, delay: .seconds(600))

            let text = try await status(["--outbox", path], in: directory, log: "status-text.log")
            #expect(text.status == 0, "\(text.output)")
            #expect(text.output.contains("buffered messages   3"), "the file still holds them: \(text.output)")
            #expect(text.output.contains("gateway             running (pid \(getpid()))"), "\(text.output)")
            #expect(text.output.contains("may include messages the broker acknowledged in the last \(seconds) s"),
                    "\(text.output)")

            let running = try json(try await status(["--outbox", path, "--json"], in: directory,
                                                    log: "status-json.log").output)
            #expect(running["buffered_messages"] as? Int == 3)
            #expect(running["gateway_running"] as? Bool == true, "\(running)")
            #expect(running["gateway_pid"] as? Int == Int(getpid()), "\(running)")
            #expect(running["buffered_includes_acknowledged_within_s"] as? Int == seconds, "\(running)")

            await outbox.deleteQueuedAcknowledgements()  // as the gateway does when it stops
        }
        // Stopped: the figures are exact, and status says nothing runs.
        let text = try await status(["--outbox", path], in: directory, log: "status-stopped.log")
        #expect(text.output.contains("gateway             not running"), "\(text.output)")
        #expect(!text.output.contains("may include"), "\(text.output)")
        #expect(text.output.contains("buffered messages   0"), "\(text.output)")
        let stopped = try json(try await status(["--outbox", path, "--json"], in: directory,
                                                log: "status-stopped-json.log").output)
        #expect(stopped["gateway_running"] as? Bool == false, "\(stopped)")
        #expect(stopped["gateway_pid"] == nil, "\(stopped)")
        #expect(stopped["buffered_includes_acknowledged_within_s"] == nil, "\(stopped)")
        #expect(stopped["buffered_messages"] as? Int == 0)
    }
}
