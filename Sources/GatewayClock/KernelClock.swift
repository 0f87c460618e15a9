// The machine's own clocks: CLOCK_REALTIME, CLOCK_BOOTTIME, the kernel boot id and the
// kernel's NTP state (ntp_adjtime, read-only), with systemd-timesyncd's view where it runs.

import CTimex
import Foundation
import Synchronization

/// The real clock. Never sets anything: `ntp_adjtime` is called with `modes = 0`.
///
/// The sync status (a syscall and a `stat` or two) is read again when the wall clock was
/// stepped and otherwise at most every `SyncStatusRefresh.period` (see there); between
/// reads `now()` costs two vDSO clock reads.
public final class KernelClock: TimeSource {
    /// systemd-timesyncd's runtime directory; while it exists, `synchronized` in it must too.
    public static let timesyncDirectory = "/run/systemd/timesync"
    static let bootIDPath = "/proc/sys/kernel/random/boot_id"

    private struct Cached {
        var checked: SyncStatusRefresh.Check
        var sync: ClockSync
        var maxErrorMilliseconds: Int64?
        var timesyncd: Bool
    }

    public let bootID: String
    private let cache: Mutex<Cached?> = Mutex(nil)

    public init() {
        bootID = Self.readBootID()
    }

    public func now() -> ClockReading {
        let wall = Self.read(CLOCK_REALTIME)
        let boottime = Self.read(CLOCK_BOOTTIME)
        let sync = cachedStatus(at: SyncStatusRefresh.Check(wall: wall, boottime: boottime)).sync
        return ClockReading(wall: Date(timeIntervalSince1970: Double(wall) / 1e9), boottime: boottime,
                            bootID: bootID, sync: sync)
    }

    public func status() -> ClockStatus {
        let check = SyncStatusRefresh.Check(wall: Self.read(CLOCK_REALTIME), boottime: Self.read(CLOCK_BOOTTIME))
        let cached = cachedStatus(at: check)
        return ClockStatus(source: cached.timesyncd ? "ntp_adjtime+timesyncd" : "ntp_adjtime", sync: cached.sync,
                           maxErrorMilliseconds: cached.maxErrorMilliseconds, bootID: bootID)
    }

    private func cachedStatus(at check: SyncStatusRefresh.Check) -> Cached {
        if let cached = cache.withLock({ $0 }), !SyncStatusRefresh.isDue(last: cached.checked, now: check) {
            return cached
        }
        let kernel = Self.kernelStatus()
        let timesyncd = Self.exists(Self.timesyncDirectory)
        let timesyncdSynchronised = !timesyncd || Self.exists(Self.timesyncDirectory + "/synchronized")
        let fresh = Cached(checked: check,
                           sync: kernel.synchronised && timesyncdSynchronised ? .synchronised : .unsynchronised,
                           maxErrorMilliseconds: kernel.maxErrorMilliseconds, timesyncd: timesyncd)
        cache.withLock { $0 = fresh }
        return fresh
    }

    /// Whether `path` exists: one `stat`, without FileManager's path conversions.
    private static func exists(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0
    }

    /// The kernel's NTP state: synchronised when `STA_UNSYNC` is clear and `maxerror`
    /// is below the kernel's own limit (16 s, past which it sets `STA_UNSYNC` itself).
    static func kernelStatus() -> (synchronised: Bool, maxErrorMilliseconds: Int64?) {
        var state = timex()
        var error: Int32 = 0
        let result = ctimex_read(&state, &error)
        guard result != -1 else { return (false, nil) }
        let maxError = Int64(state.maxerror) / 1000  // microseconds
        let unsync = state.status & Int32(STA_UNSYNC) != 0
        return (!unsync && result != TIME_ERROR && maxError < 16_000, maxError)
    }

    static func read(_ clock: clockid_t) -> Int64 {
        var spec = timespec()
        clock_gettime(clock, &spec)
        return Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
    }

    /// The kernel boot id; fixed for the life of the process (it changes only at boot).
    /// Unreadable (no /proc): an id of this process alone, so rows of another process
    /// are never taken for this boot's and corrected with a wrong offset.
    static func readBootID() -> String {
        let text = (try? String(contentsOfFile: bootIDPath, encoding: .utf8)) ?? ""
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return trimmed.isEmpty ? "unknown-\(UUID().uuidString.lowercased())" : trimmed
    }
}
