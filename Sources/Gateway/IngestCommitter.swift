// Who commits the polls handed to the ingest service, and the polls waiting meanwhile:
// the combining group commit of the live path.
//
// A bus thread that hands a poll over while nobody commits commits it itself, at once, on
// its own thread (no hop to the ingest task, none to GRDB's queue). Polls handed over
// while a commit is under way wait, and the committer takes them all in its next
// transaction: 1,000 devices still share commits.
import Modbus
import Outbox

/// The ingest service's committer as a state machine; the service keeps it under a lock
/// and does what each transition returns. Pure: no I/O, no threads (unit-tested alone).
///
/// The rule that keeps a bus thread from being held by other buses' polls: a bus thread
/// commits the batch it found (its own poll and whatever waited) and at most one more
/// round of what arrived during that commit (`busRounds` in all). If polls still wait
/// after that, it hands them to the ingest task (woken once) and goes back to polling:
/// its own device's next poll is late by at most two commits, however busy the others.
/// It does not start a commit (or a second round) that is not expected to end before
/// its next poll is due (`CommitTimeEstimate`): on a slow disk the ingest task commits,
/// and the polls stay on time.
/// A batch the bus thread could not commit on its own (the outbox needs its async
/// recovery: full disk, I/O error, a WAL to truncate) goes to the ingest task too, ahead
/// of the polls that came after it.
///
/// Shutdown (`Lifecycle`): stopped gracefully, the ingest task commits what is handed over
/// and waits for a bus thread still committing to hand over; cancelled, it commits what it
/// holds without waiting for anybody. Either way, once it ends (`TaskStep.end`) nobody
/// commits for others: a bus thread commits what it hands over itself, however late, and a
/// thread that must not block counts its polls as lost (`BusStep.countAsLost`). A poll
/// handed over is always committed or counted, never left waiting for a task that is gone.
struct IngestCommitter {
    /// Who commits now.
    enum Committer {
        /// A bus thread, synchronously on its own thread.
        case busThread
        /// The ingest task (async `Outbox.append`); first `deferred`: batches a bus thread
        /// rendered but could not commit, oldest first.
        case ingestTask(deferred: [[OutboxDraft]])
    }

    enum State {
        /// Nobody commits. `waiting` holds polls a bus thread queued and is about to commit
        /// (`takeForBusThread`), or that the ingest task was woken for; else it is empty.
        case idle(waiting: [DevicePoll])
        /// `Committer` commits a batch; polls handed over meanwhile wait, in order.
        case committing(Committer, waiting: [DevicePoll])
    }

    /// Where the ingest task is in its life.
    enum Lifecycle {
        case running
        /// Graceful shutdown: only the ingest task starts commits, a bus thread still
        /// committing hands over to it when its batch is done, and the task ends when
        /// nothing is left.
        case stopping
        /// The ingest task was cancelled: it commits what it holds, and ends as soon as
        /// nothing is left or a bus thread commits (it cannot wait to be woken any more).
        case cancelled
        /// The ingest task has ended: a bus thread commits what it hands over on its own
        /// thread, every round, whatever its next poll's time; any other thread counts it
        /// as lost.
        case ended
    }

    /// What a bus thread does next.
    enum BusStep {
        /// Commit these polls now, on this thread, then report with `busThreadCommitted`.
        case commit([DevicePoll])
        /// Wake the ingest task: the polls are its to commit.
        case wakeIngestTask
        /// Nothing: another committer has the polls.
        case nothing
        /// Nobody can commit these (the ingest task has ended and the caller must not
        /// block): count them as lost (`DropReason.shuttingDown`) and log it.
        case countAsLost([DevicePoll])
        /// The batch this bus thread could not commit cannot go to the ingest task (it has
        /// ended): count its `Int` messages as lost, then report with `busThreadCommitted`.
        case countBatchAsLost(Int)
    }

    /// What the ingest task does next.
    enum TaskStep {
        /// Commit these drafts (a bus thread's batch it could not commit), then take again.
        case commitDrafts([OutboxDraft])
        /// Commit these polls, then take again.
        case commitPolls([DevicePoll])
        /// A bus thread commits: it hands over (and wakes the task) when something is left.
        case leaveToBusThread
        /// Nothing waits; wait to be woken.
        case done
        /// Return from `run()`: the lifecycle is `ended`, whoever hands a poll over from
        /// now on commits it (or counts it) themselves.
        case end
    }

    /// What the cancelled ingest task does next in its last turn (after `cancel()`): nothing
    /// to wait for, since no wake-up can come any more.
    enum LastTurnStep {
        /// Commit these drafts, then take again.
        case commitDrafts([OutboxDraft])
        /// Commit these polls, then take again.
        case commitPolls([DevicePoll])
        /// Return: the lifecycle is `ended`.
        case end
    }

    /// Batches a bus thread commits in a row before it hands the rest to the ingest task.
    static let busRounds = 2

    /// Most polls in one transaction.
    let maxBatch: Int
    private(set) var state = State.idle(waiting: [])
    private(set) var lifecycle = Lifecycle.running

    init(maxBatch: Int) {
        precondition(maxBatch > 0)
        self.maxBatch = maxBatch
    }

    /// A bus thread hands `poll` over; it calls `takeForBusThread` next, outside its
    /// abandonment lock (the poll counts as handed over from here).
    mutating func queue(_ poll: DevicePoll) {
        switch state {
        case var .idle(waiting):
            state = .idle(waiting: [])  // `waiting` stays the array's only owner: no copy
            waiting.append(poll)
            state = .idle(waiting: waiting)
        case .committing(let committer, var waiting):
            state = .idle(waiting: [])
            waiting.append(poll)
            state = .committing(committer, waiting: waiting)
        }
    }

    /// After `queue`: commit what waits if nobody does. A caller that is not a bus thread
    /// (`onBusThread` false: it must not block) and any caller while stopping hand the
    /// polls to the ingest task instead; a bus thread without time for a commit before its
    /// next poll (`inTime` false) too. Once the ingest task has ended, a bus thread commits
    /// whatever the time, and a caller that must not block counts the polls as lost.
    mutating func takeForBusThread(onBusThread: Bool = true, inTime: Bool = true) -> BusStep {
        guard case var .idle(waiting) = state, !waiting.isEmpty else { return .nothing }
        switch lifecycle {
        case .running where onBusThread && inTime, .ended where onBusThread:
            break  // this thread commits
        case .ended:
            state = .idle(waiting: [])
            return .countAsLost(waiting)
        case .running, .stopping, .cancelled:
            state = .committing(.ingestTask(deferred: []), waiting: waiting)
            return .wakeIngestTask
        }
        state = .idle(waiting: [])
        let batch = Self.take(&waiting, max: maxBatch)
        state = .committing(.busThread, waiting: waiting)
        return .commit(batch)
    }

    /// The bus thread committed its `round`th batch (1 for the first), or counted it as
    /// lost (`countBatchAsLost`). `mayCommitAgain` false: it has no time for another round
    /// (its next poll is due), it hands over. With the ingest task ended it commits every
    /// round itself until nothing waits.
    mutating func busThreadCommitted(round: Int, mayCommitAgain: Bool = true) -> BusStep {
        guard case .committing(.busThread, var waiting) = state else {
            preconditionFailure("a bus thread committed while it was not the committer: \(state)")
        }
        if lifecycle == .ended {
            state = .idle(waiting: [])
            if waiting.isEmpty { return .nothing }
            let batch = Self.take(&waiting, max: maxBatch)
            state = .committing(.busThread, waiting: waiting)
            return .commit(batch)
        }
        if lifecycle == .running {
            if waiting.isEmpty {
                state = .idle(waiting: [])
                return .nothing
            }
            if round < Self.busRounds, mayCommitAgain {
                state = .idle(waiting: [])
                let batch = Self.take(&waiting, max: maxBatch)
                state = .committing(.busThread, waiting: waiting)
                return .commit(batch)
            }
        }
        // Rounds used up, or stopping (the ingest task waits to learn the bus thread is
        // done), or cancelled and still finishing (it takes what waits when it looks again).
        state = .committing(.ingestTask(deferred: []), waiting: waiting)
        return .wakeIngestTask
    }

    /// The bus thread could not commit `drafts` (nothing of them was committed): the
    /// ingest task commits them with the outbox's recovery, before what waits. Once the
    /// ingest task has ended nobody has that recovery: the bus thread counts them as lost.
    mutating func busThreadCouldNotCommit(_ drafts: [OutboxDraft]) -> BusStep {
        guard case .committing(.busThread, let waiting) = state else {
            preconditionFailure("a bus thread handed a batch over while it was not the committer: \(state)")
        }
        if lifecycle == .ended { return .countBatchAsLost(drafts.count) }
        state = .committing(.ingestTask(deferred: [drafts]), waiting: waiting)
        return .wakeIngestTask
    }

    /// The ingest task was woken (or is stopping): what it commits next. Stopping or
    /// cancelled, it ends (`.end`) when nothing is left, and cancelled also when a bus
    /// thread commits: the lifecycle is `ended` from then on.
    mutating func takeForIngestTask() -> TaskStep {
        precondition(lifecycle != .ended, "the ingest task took polls after it ended")
        switch state {
        case .committing(.busThread, _):
            if lifecycle == .cancelled {
                lifecycle = .ended  // that bus thread commits what is left, on its own thread
                return .end
            }
            return .leaveToBusThread
        case .committing(.ingestTask(var deferred), var waiting):
            if !deferred.isEmpty {
                let drafts = deferred.removeFirst()
                state = .committing(.ingestTask(deferred: deferred), waiting: waiting)
                return .commitDrafts(drafts)
            }
            if waiting.isEmpty {
                state = .idle(waiting: [])
                return nothingLeft()
            }
            state = .idle(waiting: [])
            let batch = Self.take(&waiting, max: maxBatch)
            state = .committing(.ingestTask(deferred: []), waiting: waiting)
            return .commitPolls(batch)
        case var .idle(waiting):
            if waiting.isEmpty { return nothingLeft() }
            state = .idle(waiting: [])
            let batch = Self.take(&waiting, max: maxBatch)
            state = .committing(.ingestTask(deferred: []), waiting: waiting)
            return .commitPolls(batch)
        }
    }

    /// The cancelled ingest task's last turn: what it commits next, or `.end`. Cancelled,
    /// `takeForIngestTask` never asks it to wait (`.done`, `.leaveToBusThread`): nothing
    /// left ends the task (`nothingLeft`), and so does a bus thread committing.
    mutating func takeForLastTurn() -> LastTurnStep {
        precondition(lifecycle == .cancelled, "the last turn is the cancelled ingest task's: \(lifecycle)")
        switch takeForIngestTask() {
        case let .commitDrafts(drafts): return .commitDrafts(drafts)
        case let .commitPolls(polls): return .commitPolls(polls)
        case .end: return .end
        case .done, .leaveToBusThread:
            preconditionFailure("a cancelled ingest task was asked to wait for a wake-up that cannot come: \(state)")
        }
    }

    /// The ingest task was cancelled during its commit of `drafts` (nothing of them was
    /// committed or counted): they come first again, for its last turn after `cancel()`.
    mutating func ingestTaskWasCancelled(committing drafts: [OutboxDraft]) {
        guard case .committing(.ingestTask(var deferred), let waiting) = state else {
            preconditionFailure("the ingest task handed a batch back while it was not the committer: \(state)")
        }
        state = .idle(waiting: [])
        deferred.insert(drafts, at: 0)
        state = .committing(.ingestTask(deferred: deferred), waiting: waiting)
    }

    /// The ingest task found nothing to commit: it waits, or (shutting down) it ends.
    private mutating func nothingLeft() -> TaskStep {
        guard lifecycle != .running else { return .done }
        lifecycle = .ended
        return .end
    }

    /// Shutdown began: from now on the ingest task commits what is handed over.
    mutating func stop() {
        if lifecycle == .running { lifecycle = .stopping }
    }

    /// The ingest task was cancelled: it commits what it holds and ends without waiting.
    mutating func cancel() {
        if lifecycle == .running || lifecycle == .stopping { lifecycle = .cancelled }
    }

    /// The first `max` polls of `waiting`, removed from it.
    private static func take(_ waiting: inout [DevicePoll], max: Int) -> [DevicePoll] {
        if waiting.count <= max {
            defer { waiting = [] }
            return waiting
        }
        let batch = Array(waiting.prefix(max))
        waiting.removeFirst(max)
        return batch
    }
}
