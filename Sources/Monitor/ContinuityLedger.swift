// What the monitor knows about the seqs of one (gateway, boot): received, dropped
// (gap records), unobserved (published while the monitor was not watching) and lost.

/// The continuity ledger of one `(gateway, boot)`. Memory grows with holes, not messages.
///
/// A seq is **lost** once it is ≤ a highest-committed seq that the gateway reported
/// and then confirmed with an empty backlog (`confirm()`), and it is neither
/// received, nor covered by a gap record, nor unobserved — and it is still missing
/// at the next confirmation. That second look gives data still queued at the broker
/// a full stats interval to arrive: stats travel at QoS 0, which a broker may deliver
/// ahead of QoS 1 data queued for a slow subscriber.
public struct ContinuityLedger: Sendable, Equatable, Codable {
    public let boot: Int64
    public private(set) var received = SeqRanges()
    public private(set) var dropped = SeqRanges()
    public private(set) var unobserved = SeqRanges()
    public private(set) var lost = SeqRanges()
    public private(set) var duplicates: Int64 = 0
    /// The highest committed seq the gateway reported for this boot (stats or birth).
    public private(set) var reportedCommitted: Int64 = 0
    /// Everything up to here is final: received, dropped, unobserved or lost.
    public private(set) var judgedThrough: Int64 = 0
    /// Seqs up to here have been looked at once; the missing ones wait in `suspect`.
    public private(set) var pendingThrough: Int64 = 0
    /// Missing at the last confirmation; lost if still missing at the next one.
    public private(set) var suspect = SeqRanges()
    /// Set while the monitor may have missed messages after this seq (it was not
    /// subscribed, or the ledger is new); closed by the next seq or a confirmation.
    public private(set) var blindAfter: Int64?

    public init(boot: Int64, blindAfter: Int64? = nil) {
        self.boot = boot
        self.blindAfter = blindAfter
    }

    public enum Arrival: Sendable, Equatable {
        case new
        case duplicate
        /// It had been declared lost; it is received now and no longer counted lost.
        case lateAfterLost
    }

    /// Records a received data message.
    public mutating func receive(_ seq: Int64) -> Arrival {
        if let after = blindAfter, seq > after {
            if seq > after + 1 { markUnobserved((after + 1)...(seq - 1)) }
            blindAfter = nil
        }
        guard received.insert(seq) else {
            duplicates += 1
            return .duplicate
        }
        unobserved.remove(seq...seq)
        if lost.contains(seq) {
            lost.remove(seq...seq)
            return .lateAfterLost
        }
        return .new
    }

    /// Applies a gap record: `range` was dropped by the gateway and reported.
    /// Returns how many seqs are newly dropped and how many of them had been declared lost.
    public mutating func applyGap(_ range: ClosedRange<Int64>) -> (newlyDropped: Int64, wereLost: Int64) {
        let fresh = dropped.missing(in: range)
        dropped.insert(range)
        var wereLost: Int64 = 0
        for part in fresh.ranges {
            let overlap = lost.missing(in: part)
            var inLost = SeqRanges([part]); inLost.subtract(overlap)
            wereLost += inLost.count
            lost.remove(part)
            unobserved.remove(part)
        }
        return (fresh.count, wereLost)
    }

    /// The gateway says `seq` is the highest it committed in this boot. Returns
    /// `false` when that goes backwards (bad input).
    public mutating func reportCommitted(_ seq: Int64) -> Bool {
        guard seq >= reportedCommitted else { return false }
        reportedCommitted = seq
        return true
    }

    /// The gateway reported an empty backlog after its last committed report:
    /// everything up to `reportedCommitted` has been published. Judges the seqs
    /// not judged yet and returns those newly declared lost.
    public mutating func confirm() -> SeqRanges {
        let through = reportedCommitted
        if let after = blindAfter {
            if through > after { markUnobserved((after + 1)...through) }
            blindAfter = nil
        }
        // Second look: what was suspect and is still missing is lost.
        var newlyLost = suspect
        newlyLost.subtract(received)
        newlyLost.subtract(dropped)
        newlyLost.subtract(unobserved)
        lost.formUnion(newlyLost)
        suspect = SeqRanges()
        judgedThrough = pendingThrough
        // First look at what was reported since.
        if through > pendingThrough {
            var missing = received.missing(in: (pendingThrough + 1)...through)
            missing.subtract(dropped)
            missing.subtract(unobserved)
            suspect = missing
            pendingThrough = through
        }
        return newlyLost
    }

    /// The monitor may have missed what was published after the highest seq it has.
    /// Suspects cannot be proven lost any more (they may have been queued for the
    /// session that is gone): they become unobserved.
    public mutating func beginBlindWindow() {
        if blindAfter == nil { blindAfter = max(received.upperBound ?? 0, pendingThrough) }
        var unproven = suspect
        unproven.subtract(received)
        unobserved.formUnion(unproven)
        suspect = SeqRanges()
    }

    private mutating func markUnobserved(_ range: ClosedRange<Int64>) {
        var window = received.missing(in: range)
        window.subtract(dropped)
        unobserved.formUnion(window)
    }
}
