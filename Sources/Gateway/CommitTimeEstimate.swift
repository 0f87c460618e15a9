// How long a commit takes lately: whether a bus thread has the time to commit before
// its next poll, or leaves the commit to the ingest task.

/// A peak of recent commit times that decays: each commit either raises it to its own
/// time or lowers it by an eighth. One slow fsync keeps bus threads from committing for
/// the next few commits; a disk that stays slow keeps them from it for good.
///
/// Kept in whole nanoseconds: `Duration`'s own division goes through its 128-bit
/// generic arithmetic, a measurable cost when it runs for every commit.
struct CommitTimeEstimate {
    private var expectedNanoseconds: Int64 = 0

    var expected: Duration {
        Duration(secondsComponent: expectedNanoseconds / 1_000_000_000,
                 attosecondsComponent: expectedNanoseconds % 1_000_000_000 * 1_000_000_000)
    }

    mutating func record(_ took: Duration) {
        let (seconds, attoseconds) = took.components
        let nanoseconds = seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000
        expectedNanoseconds = max(nanoseconds, expectedNanoseconds - expectedNanoseconds / 8)
    }

    /// Whether a commit started at `now` is expected to end before `deadline` (nil: no deadline).
    func fits(now: ContinuousClock.Instant, before deadline: ContinuousClock.Instant?) -> Bool {
        guard let deadline else { return true }
        return now + expected <= deadline
    }
}
