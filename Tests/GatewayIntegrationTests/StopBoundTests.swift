// The shipped unit and the code agree on time limits: systemd waits longer for a
// stop than the gateway can take, and the watchdog interval is the one the
// configuration's read limit is derived from.
import Foundation
import Gateway
import GatewayConfig
import Modbus
import Testing

@Suite struct StopBoundTests {
    func unitSetting(_ key: String) throws -> Duration {
        let unit = try String(contentsOfFile: repositoryRoot + "/systemd/edge-gateway.service", encoding: .utf8)
        let line = try #require(unit.split(separator: "\n").first { $0.hasPrefix("\(key)=") }, "\(key)= in the unit")
        let value = line.dropFirst(key.count + 1)
        let seconds = try #require(Int64(value.hasSuffix("s") ? value.dropLast() : value), "\(line) in seconds")
        return .seconds(seconds)
    }

    @Test func timeoutStopSecCoversTheLongestStop() throws {
        let timeoutStop = try unitSetting("TimeoutStopSec")
        // Room for the process to exit and the outbox to close after the service group.
        #expect(timeoutStop >= GatewayRuntime.stopBound * 2, "TimeoutStopSec \(timeoutStop), stop bound \(GatewayRuntime.stopBound)")
    }

    @Test func theReadLimitIsHalfTheWatchdogInterval() throws {
        #expect(try unitSetting("WatchdogSec") == DeviceConfiguration.longestReadLimit * 2)
    }
}
