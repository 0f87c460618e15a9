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

    /// Whether the service is shutting down: then only the ingest task starts commits,
    /// and a bus thread still committing hands over to it when its batch is done.
    enum Lifecycle {
        case running
        case stopping
    }

    /// What a bus thread does next.
    enum BusStep {
        /// Commit these polls now, on this thread, then report with `busThreadCommitted`.
        case commit([DevicePoll])
        /// Wake the ingest task: the polls are its to commit.
        case wakeIngestTask
        /// Nothing: another committer has the polls.
        case nothing
    }

    /// What the ingest task does next.
    enum TaskStep {
        /// Commit these drafts (a bus thread's batch it could not commit), then take again.
        case commitDrafts([OutboxDraft])
        /// Commit these polls, then take again.
        case commitPolls([DevicePoll])
        /// A bus thread commits: it hands over (and wakes the task) when something is left.
        case leaveToBusThread
        /// Nothing waits.
        case done
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
    /// polls to the ingest task instead.
    mutating func takeForBusThread(onBusThread: Bool = true) -> BusStep {
        guard case var .idle(waiting) = state, !waiting.isEmpty else { return .nothing }
        if lifecycle == .stopping || !onBusThread {
            state = .committing(.ingestTask(deferred: []), waiting: waiting)
            return .wakeIngestTask
        }
        state = .idle(waiting: [])
        let batch = Self.take(&waiting, max: maxBatch)
        state = .committing(.busThread, waiting: waiting)
        return .commit(batch)
    }

    /// The bus thread committed its `round`th batch (1 for the first). `mayCommitAgain`
    /// false: it has no time for another round (its next poll is due), it hands over.
    mutating func busThreadCommitted(round: Int, mayCommitAgain: Bool = true) -> BusStep {
        guard case .committing(.busThread, var waiting) = state else {
            preconditionFailure("a bus thread committed while it was not the committer: \(state)")
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
        // Rounds used up, or stopping (the ingest task waits to learn the bus thread is done).
        state = .committing(.ingestTask(deferred: []), waiting: waiting)
        return .wakeIngestTask
    }

    /// The bus thread could not commit `drafts` (nothing of them was committed): the
    /// ingest task commits them with the outbox's recovery, before what waits.
    mutating func busThreadCouldNotCommit(_ drafts: [OutboxDraft]) -> BusStep {
        guard case .committing(.busThread, let waiting) = state else {
            preconditionFailure("a bus thread handed a batch over while it was not the committer: \(state)")
        }
        state = .committing(.ingestTask(deferred: [drafts]), waiting: waiting)
        return .wakeIngestTask
    }

    /// The ingest task was woken (or is stopping): what it commits next.
    mutating func takeForIngestTask() -> TaskStep {
        switch state {
        case .committing(.busThread, _):
            return .leaveToBusThread
        case .committing(.ingestTask(var deferred), var waiting):
            if !deferred.isEmpty {
                let drafts = deferred.removeFirst()
                state = .committing(.ingestTask(deferred: deferred), waiting: waiting)
                return .commitDrafts(drafts)
            }
            if waiting.isEmpty {
                state = .idle(waiting: [])
                return .done
            }
            state = .idle(waiting: [])
            let batch = Self.take(&waiting, max: maxBatch)
            state = .committing(.ingestTask(deferred: []), waiting: waiting)
            return .commitPolls(batch)
        case var .idle(waiting):
            if waiting.isEmpty { return .done }
            state = .idle(waiting: [])
            let batch = Self.take(&waiting, max: maxBatch)
            state = .committing(.ingestTask(deferred: []), waiting: waiting)
            return .commitPolls(batch)
        }
    }

    /// Shutdown began: from now on the ingest task commits what is handed over.
    mutating func stop() {
        lifecycle = .stopping
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
