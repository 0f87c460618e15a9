// Reading the outbox ahead of the window: the requests the forwarder makes, the
// answers the reader gives, and the backoff after a failed read.
import Outbox

/// What to read next from the outbox, for one session.
struct LeaseRequest: Sendable, Equatable {
    enum Side: Sendable { case live, backlog }

    var session: Int
    var side: Side
    /// Rows with a greater id are wanted.
    var cursor: Int64
    /// `.live`: the newest id known committed when asking; when nothing is found,
    /// every row up to it is gone (acknowledged or dropped) and the cursor moves
    /// past it. `.backlog`: the backlog's last id; nothing beyond it is wanted.
    var limit: Int64
    var max: Int

    /// The answer to this request, given `rows` read with `lease(after: cursor, max: max)`.
    func answer(_ rows: [OutboxMessage]) -> LeaseResult {
        switch side {
        case .live:
            return LeaseResult(session: session, side: side,
                               outcome: .rows(rows, cursor: rows.last?.id ?? Swift.max(cursor, limit)))
        case .backlog:
            let wanted = rows.filter { $0.id <= limit }
            // Short of what was asked, or cut at the limit: the backlog is done.
            let done = rows.count < max || wanted.count < rows.count
            return LeaseResult(session: session, side: side,
                               outcome: .rows(wanted, cursor: done ? limit : wanted.last?.id ?? limit))
        }
    }

    /// The answer when the read failed.
    func failed(_ error: any Error) -> LeaseResult {
        LeaseResult(session: session, side: side, outcome: .failed("\(error)"))
    }
}

/// Rows read for a `LeaseRequest`, and where its side's cursor goes next.
struct LeaseResult: Sendable {
    enum Outcome: Sendable {
        case rows([OutboxMessage], cursor: Int64)
        /// The read failed; the cursors stay, the read is retried after a backoff.
        case failed(String)
    }

    var session: Int
    var side: LeaseRequest.Side
    var outcome: Outcome
}

/// Spaces out reads of an outbox that fails: 100 ms after the first failure,
/// doubling up to 5 s, and says when a failure episode starts and ends so it is
/// logged once, not once per attempt.
struct LeaseBackoff {
    static let first = Duration.milliseconds(100)
    static let longest = Duration.seconds(5)

    /// Failed reads in the current episode (0: reads work).
    private(set) var failures = 0
    /// When the next read may be made, while reads fail.
    private(set) var retryAt: ContinuousClock.Instant?
    private var delay = first

    /// Whether a read may be made now.
    func allows(now: ContinuousClock.Instant) -> Bool {
        retryAt.map { now >= $0 } ?? true
    }

    /// A read failed; returns true when this starts an episode (log it).
    mutating func failed(now: ContinuousClock.Instant) -> Bool {
        failures += 1
        retryAt = now + delay
        delay = min(delay * 2, Self.longest)
        return failures == 1
    }

    /// A read worked; returns how many failed before it when that ends an episode.
    mutating func succeeded() -> Int? {
        defer {
            failures = 0
            retryAt = nil
            delay = Self.first
        }
        return failures > 0 ? failures : nil
    }
}
