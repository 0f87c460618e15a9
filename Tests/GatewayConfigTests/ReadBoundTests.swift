import Modbus
import Testing
@testable import GatewayConfig

// A silent device holds its bus for timeout × (retries + 1): check-config refuses
// what the watchdog cannot tell from a hang.

private func configuration(timeout: String?, retries: Int?) -> String {
    """
    gateway:
      id: gw-01
    mqtt:
      host: broker
    devices:
      - name: meter
        tcp: { host: 10.0.0.5 }
        tags:
          - { name: power, table: input, address: 0, type: uint16 }
      - name: silent
        tcp: { host: 10.0.0.6 }
    \(timeout.map { "    timeout: \($0)\n" } ?? "")\(retries.map { "    retries: \($0)\n" } ?? "")    tags:
          - { name: level, table: holding, address: 0, type: uint16 }
    """
}

@Test func aReadLongerThanTheWatchdogCoversIsRefusedNamingTheDeviceAndTheLimit() throws {
    for (timeout, retries, total) in [("1h", nil, "1h"), ("8s", 1, "16s"), ("2s", 10, "22s")] as [(String, Int?, String)] {
        let error = try #require(throws: ConfigurationError.self) {
            try ConfigurationLoader.parse(yaml: configuration(timeout: timeout, retries: retries))
        }
        #expect(error.problems.count == 1, "\(error)")
        let problem = try #require(error.problems.first)
        #expect(problem.path == "devices[1].timeout", "\(problem)")
        #expect(problem.line == 12, "\(problem)")
        #expect(problem.message.contains("devices[1] (silent)"), "\(problem.message)")
        #expect(problem.message.contains("= \(total)"), "\(problem.message)")
        #expect(problem.message.contains("15s"), "states the limit: \(problem.message)")
        #expect(problem.hint.contains("WatchdogSec=30s"), "says why: \(problem.hint)")
    }
}

@Test func readsWithinTheLimitLoad() throws {
    for (timeout, retries) in [("2s", 5), ("15s", 0), ("500ms", 10)] as [(String, Int)] {
        let config = try ConfigurationLoader.parse(yaml: configuration(timeout: timeout, retries: retries))
        #expect(config.devices[1].longestRead <= DeviceConfiguration.longestReadLimit)
    }
    // The defaults (500 ms, no retry).
    let config = try ConfigurationLoader.parse(yaml: configuration(timeout: nil, retries: nil))
    #expect(config.devices[1].longestRead == .milliseconds(500))
}
