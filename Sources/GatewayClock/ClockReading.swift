// What the gateway knows about the time of a reading: the wall clock, the time since
// the kernel booted, which kernel boot, and whether the wall clock was synchronised.

import Foundation

/// Whether the wall clock was synchronised (NTP, PTP, GPS: anything that clears the
/// kernel's `STA_UNSYNC`) when it was read.
public enum ClockSync: String, Sendable, Equatable {
    /// The kernel says the clock is synchronised (`STA_UNSYNC` clear, `maxerror`
    /// below the kernel's 16 s limit) and systemd-timesyncd, where it runs, agrees.
    case synchronised
    /// No synchronisation yet (or lost): the wall clock may be anything, e.g. the
    /// time fake-hwclock saved at the last shutdown, or 1970.
    case unsynchronised
}

/// One reading of the clocks, taken together.
public struct ClockReading: Sendable, Equatable {
    /// The wall clock (CLOCK_REALTIME).
    public var wall: Date
    /// Nanoseconds since the kernel booted (CLOCK_BOOTTIME: monotonic, counts suspend,
    /// never set). Only comparable between readings with the same `bootID`.
    public var boottime: Int64
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`): a new one at every boot.
    public var bootID: String
    public var sync: ClockSync

    public init(wall: Date, boottime: Int64, bootID: String, sync: ClockSync) {
        self.wall = wall
        self.boottime = boottime
        self.bootID = bootID
        self.sync = sync
    }

    /// Wall time minus boottime, in milliseconds: the wall time of the kernel's boot
    /// as this reading's wall clock tells it.
    public var wallAtBoot: Int64 {
        Int64((wall.timeIntervalSince1970 * 1000).rounded(.down)) - boottime / 1_000_000
    }
}

/// What the birth and the meta say about the gateway's time.
public struct ClockStatus: Sendable, Equatable {
    /// Where the sync status comes from: `ntp_adjtime`, `ntp_adjtime+timesyncd`
    /// (systemd-timesyncd's `/run/systemd/timesync` is present and consulted) or
    /// `test_clock_file` (the test-only override).
    public var source: String
    public var sync: ClockSync
    /// The kernel's maximum error estimate (`maxerror`), in milliseconds; nil when unknown.
    public var maxErrorMilliseconds: Int64?
    public var bootID: String

    public init(source: String, sync: ClockSync, maxErrorMilliseconds: Int64?, bootID: String) {
        self.source = source
        self.sync = sync
        self.maxErrorMilliseconds = maxErrorMilliseconds
        self.bootID = bootID
    }
}

/// The one clock interface of the gateway: every timestamp, boottime, boot id and
/// sync status comes from here, so tests can substitute a clock.
public protocol TimeSource: Sendable {
    /// Wall time, boottime, boot id and sync status. Cheap: two vDSO clock reads;
    /// the sync status is reused between reads (`KernelClock`: after a step of the wall
    /// clock it is read again at once, otherwise every 10 s).
    func now() -> ClockReading
    /// The current status, for the birth and the meta.
    func status() -> ClockStatus
}
