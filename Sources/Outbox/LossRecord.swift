/// Where ``Outbox/recordLossOnCallingThread(_:reason:writingNow:)`` put a loss.
public enum LossRecord: Sendable, Equatable {
    /// In the file: counted, its seqs consumed, and a gap record (reported upstream).
    case gapRecorded
    /// In the file's meta row alone (the disk had no room for the gap record): counted and
    /// its seqs consumed, so a restart keeps it (the counters, and the next boot's
    /// `previous_boot_last_seq` is above seqs no message carries); the gap record follows
    /// in a transaction of its own once the disk has room, if the process still runs.
    case countedWithoutGapRecord
    /// Not in the file (not asked to write, or the file took nothing): in memory, counted by
    /// ``Outbox/statistics()`` and written with the next transaction that succeeds; lost if
    /// the process ends first.
    case inMemoryOnly
}
