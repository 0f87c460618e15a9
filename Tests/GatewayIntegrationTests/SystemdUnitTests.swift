// systemd/edge-gateway.service as systemd itself judges it: `systemd-analyze verify`
// and the exposure rating of `systemd-analyze security` (offline: no running
// systemd needed).
import Foundation
import Testing
import TestSupport

/// The repository's root directory.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// Runs a command to its end; returns its exit status and its output (stdout and stderr).
func runCommand(_ executable: String, _ arguments: [String], in directory: TemporaryDirectory,
                environment: [String: String] = [:], timeout: Duration = .seconds(60)) async throws -> (status: Int32, output: String) {
    let log = directory.file("cmd-\(UUID().uuidString.prefix(8)).log")
    let child = try ChildProcess(executable, arguments, log: log, environment: environment)
    let status = try await child.waitForExit(timeout: timeout)
    return (status, child.output)
}

@Suite struct SystemdUnitTests {
    @Test func unitVerifiesAndIsRatedOK() async throws {
        let analyze = try requireTool("systemd-analyze", package: "systemd")
        let directory = try TemporaryDirectory("unit")
        defer { directory.remove() }
        // verify checks that ExecStart= exists: point it at the binary just built.
        let unit = try String(contentsOfFile: repositoryRoot + "/systemd/edge-gateway.service", encoding: .utf8)
            .replacingOccurrences(of: "/usr/bin/edge-gateway", with: try builtProduct("edge-gateway"))
        let path = directory.file("edge-gateway.service")
        try unit.write(toFile: path, atomically: true, encoding: .utf8)

        let verify = try await runCommand(analyze, ["verify", path], in: directory)
        #expect(verify.status == 0 && verify.output.isEmpty, "systemd-analyze verify: \(verify.output)")

        let security = try await runCommand(analyze, ["security", "--offline=true", path], in: directory)
        let match = try #require(security.output.firstMatch(of: /Overall exposure level for [^:]+: ([0-9.]+) (\w+)/),
                                 "no rating in: \(security.output)")
        let exposure = try #require(Double(String(match.1)))
        print("systemd-analyze security: exposure \(exposure) \(match.2) (10 = unprotected, OK is 2.5 or less)")
        #expect(exposure <= 2.5, "\(security.output)")
    }
}
