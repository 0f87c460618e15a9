// When `KernelClock` reads the kernel's sync status again instead of reusing the last
// answer: the status costs a syscall and a `stat` or two, the clocks two vDSO reads.

/// The rule for re-reading the sync status: at once when the wall clock was stepped since
/// the last read, else once `period` has passed.
///
/// Wall time minus boottime stays fixed while the clock runs, however NTP slews it (a
/// slew changes the rate of both clocks alike) and across a suspend (both advance by the
/// time asleep); it moves only when someone steps the wall clock (`settimeofday`, an NTP
/// client's step, a leap second). A step is also the moment the kernel's status changes
/// at once: setting the clock sets `STA_UNSYNC`, and an NTP client's first sync after boot
/// is usually a step. So a reading never carries a status older than the last step, and
/// the `period` bounds only what changes without a step (an NTP client that slews to sync,
/// or whose `maxerror` outgrows the kernel's limit after hours without a server): such a
/// change shows in at most `period`, the readings meanwhile keep the previous status
/// (unsynchronised ones are corrected at publish once a synchronised reading came).
struct SyncStatusRefresh {
    /// The clocks at one read of the status.
    struct Check: Equatable {
        /// CLOCK_REALTIME, nanoseconds since 1970.
        var wall: Int64
        /// CLOCK_BOOTTIME, nanoseconds.
        var boottime: Int64

        /// Wall time minus boottime: the wall time of the kernel's boot as the clock tells it.
        var wallAtBoot: Int64 { wall &- boottime }
    }

    /// The longest a status is reused without a step.
    static let period: Int64 = 10_000_000_000
    /// How far wall minus boottime may move between two reads without counting as a
    /// step: the two clocks are read one after the other, so a thread preempted between
    /// them sees it move by the time it waited (a read too many, never one too few for a
    /// step larger than this).
    static let stepTolerance: Int64 = 1_000_000

    /// Whether the status read at `last` must be read again at `now`.
    static func isDue(last: Check, now: Check) -> Bool {
        guard now.boottime >= last.boottime, now.boottime - last.boottime < period else { return true }
        let moved = now.wallAtBoot &- last.wallAtBoot
        return moved > stepTolerance || moved < -stepTolerance
    }
}
