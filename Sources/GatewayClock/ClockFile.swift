// The test-only clock: wall time, boottime, boot id and sync status from a file a test
// writes, so the gateway process can be taken through a cold start, a clock step and a
// reboot without touching the machine's clock.

import Foundation
import Synchronization

/// A clock read from a file (`key=value` lines), re-read at every `now()`:
///
/// ```
/// boot_id=<any text>
/// sync=synchronised | unsynchronised
/// maxerror_us=<microseconds>
/// anchor_ns=<the real CLOCK_BOOTTIME when the file was written>
/// boottime_ns=<the clock's boottime at anchor_ns>
/// wall_at_boot_ms=<wall time minus boottime, milliseconds since 1970>
/// rate=<clock seconds per real second, a positive integer>
/// ```
///
/// boottime = `boottime_ns + (real CLOCK_BOOTTIME − anchor_ns) × rate`, wall =
/// `wall_at_boot_ms + boottime`. A test steps the wall clock by rewriting
/// `wall_at_boot_ms` (keeping boottime continuous), reboots by a new `boot_id`.
/// The file is replaced atomically by the test (write, then rename).
public final class ClockFile: TimeSource {
    public let path: String
    /// The last contents read whole: a file caught mid-write (or removed as a test
    /// ends) leaves the clock where it was instead of stopping the gateway.
    private let lastGood: Mutex<Contents>

    struct Contents: Equatable, Sendable {
        var bootID: String
        var sync: ClockSync
        var maxErrorMicroseconds: Int64
        var anchor: Int64
        var boottime: Int64
        var wallAtBoot: Int64
        var rate: Int64
    }

    /// Fails naming the file and the field when it cannot be read.
    public init(path: String) throws(ClockOverrideError) {
        self.path = path
        lastGood = Mutex(try Self.read(path))
    }

    private var contents: Contents {
        if let fresh = try? Self.read(path) {
            lastGood.withLock { $0 = fresh }
            return fresh
        }
        return lastGood.withLock { $0 }
    }

    public func now() -> ClockReading {
        let contents = self.contents
        let real = KernelClock.read(CLOCK_BOOTTIME)
        let boottime = contents.boottime + (real - contents.anchor) * contents.rate
        let wallMilliseconds = contents.wallAtBoot + boottime / 1_000_000
        return ClockReading(wall: Date(timeIntervalSince1970: Double(wallMilliseconds) / 1000), boottime: boottime,
                            bootID: contents.bootID, sync: contents.sync)
    }

    public func status() -> ClockStatus {
        let contents = self.contents
        return ClockStatus(source: "test_clock_file", sync: contents.sync,
                           maxErrorMilliseconds: contents.maxErrorMicroseconds / 1000, bootID: contents.bootID)
    }

    static func read(_ path: String) throws(ClockOverrideError) -> Contents {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ClockOverrideError("cannot read the test clock file \(path)")
        }
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        func integer(_ key: String) throws(ClockOverrideError) -> Int64 {
            guard let value = fields[key].flatMap({ Int64($0) }) else {
                throw ClockOverrideError("test clock file \(path): \(key)= is missing or not an integer")
            }
            return value
        }
        guard let bootID = fields["boot_id"], !bootID.isEmpty else {
            throw ClockOverrideError("test clock file \(path): boot_id= is missing")
        }
        guard let sync = fields["sync"].flatMap(ClockSync.init(rawValue:)) else {
            throw ClockOverrideError("test clock file \(path): sync= must be synchronised or unsynchronised")
        }
        let rate = try integer("rate")
        guard rate > 0 else { throw ClockOverrideError("test clock file \(path): rate= must be positive") }
        return Contents(bootID: bootID, sync: sync, maxErrorMicroseconds: try integer("maxerror_us"),
                        anchor: try integer("anchor_ns"), boottime: try integer("boottime_ns"),
                        wallAtBoot: try integer("wall_at_boot_ms"), rate: rate)
    }
}

/// The test clock could not be used, or was asked for outside a test.
public struct ClockOverrideError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Picks the gateway's clock: the kernel's, or the test clock file.
public enum TimeSources {
    /// Names the test clock file. Honoured only by a debug build, and only when
    /// `testFlagVariable` is `1` as well; anywhere else its presence stops the start.
    public static let clockFileVariable = "EDGE_GATEWAY_TEST_CLOCK"
    /// Says the process runs under the test suite.
    public static let testFlagVariable = "EDGE_GATEWAY_TESTING"

    /// The clock for this process, from `environment`.
    ///
    /// - Throws: when `EDGE_GATEWAY_TEST_CLOCK` is set in a release build or without
    ///   `EDGE_GATEWAY_TESTING=1` (a production gateway must never run on a file's clock,
    ///   and silently ignoring the variable would hide the mistake), or when the file is bad.
    public static func fromEnvironment(_ environment: [String: String]) throws(ClockOverrideError) -> any TimeSource {
        guard let path = environment[clockFileVariable] else { return KernelClock() }
        #if DEBUG
        guard environment[testFlagVariable] == "1" else {
            throw ClockOverrideError(
                "\(clockFileVariable) is set but \(testFlagVariable)=1 is not: the clock file is a test-only override. Unset \(clockFileVariable).")
        }
        return try ClockFile(path: path)
        #else
        throw ClockOverrideError(
            "\(clockFileVariable) is set, but a release build never takes its time from a file. Unset \(clockFileVariable).")
        #endif
    }
}
