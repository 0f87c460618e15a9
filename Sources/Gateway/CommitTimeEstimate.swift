// How long a commit takes lately: whether a bus thread has the time to commit before
// its next poll, or leaves the commit to the ingest task.

/// A peak of recent commit times that decays: each commit either raises it to its own
/// time or lowers it by an eighth. One slow fsync keeps bus threads from committing for
/// the next few commits; a disk that stays slow keeps them from it for good.
struct CommitTimeEstimate {
    private(set) var expected: Duration = .zero

    mutating func record(_ took: Duration) {
        expected = max(took, expected - expected / 8)
    }

    /// Whether a commit started at `now` is expected to end before `deadline` (nil: no deadline).
    func fits(now: ContinuousClock.Instant, before deadline: ContinuousClock.Instant?) -> Bool {
        guard let deadline else { return true }
        return now + expected <= deadline
    }
}
