// Two gateway processes on one outbox file: the second refuses to start, however
// the path is spelled; `status` keeps working beside the running one.
import Foundation
import Outbox
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct OutboxLockProcessTests {
    /// Writes a copy of the scenario's configuration with another gateway id and
    /// `outboxPath` as buffer.path.
    func secondConfig(_ e2e: EndToEnd, outboxPath: String, name: String) throws -> String {
        let config = try String(contentsOfFile: e2e.configPath, encoding: .utf8)
            .replacingOccurrences(of: "id: \(e2e.gatewayID)", with: "id: gw-second")
            .replacingOccurrences(of: "path: \(e2e.outboxPath)", with: "path: \(outboxPath)")
        let path = e2e.directory.file(name)
        try config.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func aSecondGatewayOnTheSameOutboxIsRefusedHoweverThePathIsSpelled() async throws {
        let e2e = try await EndToEnd()
        try e2e.startGateway()
        try await waitUntil("data flowing") { e2e.dataMessages.count >= 2 }
        let first = e2e.gateway!

        let subdirectory = e2e.directory.file("sub")
        try FileManager.default.createDirectory(atPath: subdirectory, withIntermediateDirectories: true)
        let link = e2e.directory.file("link.sqlite")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: e2e.outboxPath)
        let spellings = [
            "same config": e2e.configPath,
            "other gateway id": try secondConfig(e2e, outboxPath: e2e.outboxPath, name: "same-path.yaml"),
            "../ path": try secondConfig(e2e, outboxPath: subdirectory + "/../outbox.sqlite", name: "dotdot.yaml"),
            "symlink": try secondConfig(e2e, outboxPath: link, name: "symlink.yaml"),
        ]
        for (spelling, config) in spellings.sorted(by: { $0.key < $1.key }) {
            let second = try ChildProcess(try builtProduct("edge-gateway"), ["run", "--config", config],
                                          log: e2e.directory.file("second-\(UUID().uuidString.prefix(6)).log"))
            let status = try await second.waitForExit(timeout: .seconds(10))
            #expect(status == 78, "\(spelling): exit status \(status): \(second.output)")
            #expect(second.output.contains("pid \(first.pid)"), "\(spelling): names the holder: \(second.output)")
            #expect(second.output.contains(e2e.outboxPath), "\(spelling): names the file: \(second.output)")
            #expect(!second.output.contains("gateway starting"), "\(spelling): \(second.output)")
        }
        #expect(first.isRunning, "the first gateway keeps running")
        // Nobody else took a boot: the first gateway's boot 1 is still the outbox's boot.
        #expect(try Outbox.readStatistics(path: e2e.outboxPath).boot == 1)

        // `status` only reads: it works beside the running gateway, as often as asked.
        for _ in 0..<2 {
            let status = try ChildProcess(try builtProduct("edge-gateway"), ["status", "--config", e2e.configPath, "--json"],
                                          log: e2e.directory.file("status-\(UUID().uuidString.prefix(6)).log"))
            #expect(try await status.waitForExit() == 0, "\(status.output)")
            #expect(status.output.contains("\"boot\":1"), "\(status.output)")
        }
        let countBefore = e2e.dataMessages.count
        try await waitUntil("data still flowing after the refused starts and status") {
            e2e.dataMessages.count > countBefore + 2
        }
        first.signal(SIGTERM)
        #expect(try await first.waitForExit() == 0, "\(e2e.diagnostics)")

        // Once the first is gone, the next one starts (the lock went with the process).
        try e2e.startGateway()
        try await waitUntil("the second boot online") {
            e2e.subscriber.messages(on: e2e.statusTopic).contains { $0.json["state"] as? String == "online" && $0.json["boot"] as? Int == 2 }
        }
        e2e.gateway!.signal(SIGTERM)
        #expect(try await e2e.gateway!.waitForExit() == 0, "\(e2e.diagnostics)")
    }
}
