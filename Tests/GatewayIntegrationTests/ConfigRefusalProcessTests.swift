// The real edge-gateway binary refusing configurations: every problem (key
// files included) found before the outbox is opened, exit 78 with the YAML path
// and line; files that are not configurations; `status --json` failing in JSON.
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite struct ConfigRefusalProcessTests {
    /// Runs the gateway binary with `arguments` to its exit.
    private func gateway(_ arguments: [String], in directory: TemporaryDirectory,
                         log: String) async throws -> (status: Int32, output: String) {
        let child = try ChildProcess(try builtProduct("edge-gateway"), arguments, log: directory.file(log))
        let status = try await child.waitForExit(timeout: .seconds(30))
        return (status, child.output)
    }

    @Test func aMalformedKeyFileStopsCheckConfigAndRunBeforeTheOutboxWithExit78() async throws {
        let directory = try TemporaryDirectory("malformed-key")
        defer { directory.remove() }
        let keyFile = directory.file("k1.key")
        try "this is not a key\n".write(toFile: keyFile, atomically: true, encoding: .utf8)
        chmod(keyFile, 0o600)
        let outbox = directory.file("state/outbox.sqlite")
        let config = directory.file("gateway.yaml")
        try """
        gateway: { id: gw }
        mqtt: { host: 127.0.0.1, port: \(freeLoopbackPort()) }
        buffer: { path: \(outbox) }
        payload:
          seal: aes-256-gcm
          keys:
            - { id: k1, file: \(keyFile) }
        devices: [{ name: d, tcp: { host: 127.0.0.1, port: \(freeLoopbackPort()) }, tags: [{ name: t, table: input, address: 0, type: int16 }] }]
        """.write(toFile: config, atomically: true, encoding: .utf8)

        let check = try await gateway(["check-config", config], in: directory, log: "check.log")
        #expect(check.status == 78, "\(check.output)")
        #expect(!check.output.contains("OK"), "no OK before the error: \(check.output)")
        #expect(check.output.contains("\(config):7:") && check.output.contains("payload.keys[0].file")
                && check.output.contains("not a 32-byte key"), "file, line, YAML path and what: \(check.output)")

        let run = try await gateway(["run", "--config", config], in: directory, log: "run.log")
        #expect(run.status == 78, "EX_CONFIG, which the unit does not restart: \(run.output)")
        #expect(run.output.contains("payload.keys[0].file"), "\(run.output)")
        #expect(!FileManager.default.fileExists(atPath: outbox), "the outbox was not opened (no boot number used)")
    }

    @Test func aFIFOOrDevZeroAsTheConfigurationIsNotARegularFile() async throws {
        let directory = try TemporaryDirectory("fifo-config")
        defer { directory.remove() }
        let fifo = directory.file("gateway.yaml")
        #expect(mkfifo(fifo, 0o644) == 0)
        for (path, kind) in [(fifo, "a FIFO"), ("/dev/zero", "a character device")] {
            for arguments in [["check-config", path], ["run", "--config", path]] {
                // No one writes to the FIFO: the gateway must not wait for a writer.
                let result = try await gateway(arguments, in: directory, log: "\(arguments[0]).log")
                #expect(result.status == 78, "\(arguments): \(result.output)")
                #expect(result.output.contains("is not a regular file: it is \(kind)"), "\(arguments): \(result.output)")
                #expect(!result.output.lowercased().contains("permission"), "\(result.output)")
            }
        }
    }

    @Test func statusJSONReportsAMissingOutboxAsAJSONError() async throws {
        let directory = try TemporaryDirectory("status-json")
        defer { directory.remove() }
        let missing = directory.file("nowhere/outbox.sqlite")
        let result = try await gateway(["status", "--json", "--outbox", missing], in: directory, log: "status.log")
        #expect(result.status != 0)
        let line = try #require(result.output.split(separator: "\n").first, "printed nothing")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(result.output)")
        #expect(object["outbox"] as? String == missing)
        #expect((object["error"] as? String)?.contains("no outbox file") == true, "\(object)")

        // A configuration that cannot be read is a JSON error too.
        let config = try await gateway(["status", "--json", "--config", directory.file("missing.yaml")], in: directory,
                                       log: "status-config.log")
        #expect(config.status == 78)
        let configObject = try JSONSerialization.jsonObject(with: Data(config.output.utf8)) as? [String: Any]
        #expect((configObject?["error"] as? String)?.contains("does not exist") == true, "\(config.output)")
    }
}
