// The ingest service's committer alone: who commits, when a bus thread hands over to
// the ingest task, what happens at shutdown.
import Foundation
@testable import Gateway
import GatewayClock
import Modbus
import Outbox
import Testing

@Suite("ingest committer: who commits the polls handed over")
struct IngestCommitterTests {
    static func poll(_ device: String, _ index: Int) -> DevicePoll {
        DevicePoll(device: device,
                   clock: ClockReading(wall: Date(timeIntervalSince1970: 1_000), boottime: Int64(index), bootID: "b",
                                       sync: .unsynchronised),
                   readings: [])
    }

    /// Device and index of each poll (index in `boottime`), to compare batches.
    static func names(_ polls: [DevicePoll]) -> [String] { polls.map { "\($0.device)#\($0.clock.boottime)" } }

    static func commitBatch(_ step: IngestCommitter.BusStep) -> [String]? {
        if case let .commit(polls) = step { return names(polls) }
        return nil
    }

    static func isWake(_ step: IngestCommitter.BusStep) -> Bool {
        if case .wakeIngestTask = step { return true }
        return false
    }

    static func isNothing(_ step: IngestCommitter.BusStep) -> Bool {
        if case .nothing = step { return true }
        return false
    }

    static func taskPolls(_ step: IngestCommitter.TaskStep) -> [String]? {
        if case let .commitPolls(polls) = step { return names(polls) }
        return nil
    }

    static func isDone(_ step: IngestCommitter.TaskStep) -> Bool {
        if case .done = step { return true }
        return false
    }

    static func isEnd(_ step: IngestCommitter.TaskStep) -> Bool {
        if case .end = step { return true }
        return false
    }

    static func lostPolls(_ step: IngestCommitter.BusStep) -> [String]? {
        if case let .countAsLost(polls) = step { return names(polls) }
        return nil
    }

    @Test func aLoneBusThreadCommitsItsOwnPollAndLeavesTheCommitterIdle() {
        var committer = IngestCommitter(maxBatch: 100)
        committer.queue(Self.poll("a", 1))
        let step1 = committer.takeForBusThread()
        #expect(Self.commitBatch(step1) == ["a#1"])
        let step2 = committer.busThreadCommitted(round: 1)
        #expect(Self.isNothing(step2))
        guard case let .idle(waiting) = committer.state else {
            Issue.record("not idle after the commit: \(committer.state)")
            return
        }
        #expect(waiting.isEmpty)
        // The ingest task, woken for nothing, finds nothing to do.
        let step3 = committer.takeForIngestTask()
        #expect(Self.isDone(step3))
    }

    @Test func pollsArrivingDuringACommitWaitForTheCommittersNextRound() {
        var committer = IngestCommitter(maxBatch: 100)
        committer.queue(Self.poll("a", 1))
        let step4 = committer.takeForBusThread()
        #expect(Self.commitBatch(step4) == ["a#1"])
        // Two other buses hand polls over while "a" commits: they do not commit.
        committer.queue(Self.poll("b", 1))
        let step5 = committer.takeForBusThread()
        #expect(Self.isNothing(step5))
        committer.queue(Self.poll("c", 1))
        let step6 = committer.takeForBusThread()
        #expect(Self.isNothing(step6))
        // The ingest task, woken meanwhile, leaves them to the bus thread.
        let step7 = committer.takeForIngestTask()
        guard case .leaveToBusThread = step7 else {
            Issue.record("the ingest task took polls from a committing bus thread")
            return
        }
        // Bus "a" commits them in its second round, in the order they came.
        let step8 = committer.busThreadCommitted(round: 1)
        #expect(Self.commitBatch(step8) == ["b#1", "c#1"])
        let step9 = committer.busThreadCommitted(round: 2)
        #expect(Self.isNothing(step9))
    }

    @Test func aBusThreadHandsOverAfterTwoRoundsAndTheIngestTaskCommitsTheRest() {
        var committer = IngestCommitter(maxBatch: 100)
        committer.queue(Self.poll("a", 1))
        let step10 = committer.takeForBusThread()
        #expect(Self.commitBatch(step10) == ["a#1"])
        committer.queue(Self.poll("b", 1))
        let step11 = committer.busThreadCommitted(round: 1)
        #expect(Self.commitBatch(step11) == ["b#1"])
        committer.queue(Self.poll("c", 1))
        committer.queue(Self.poll("b", 2))
        // Two rounds done and polls still wait: the bus thread goes back to polling.
        let step12 = committer.busThreadCommitted(round: 2)
        #expect(Self.isWake(step12))
        // Buses handing polls over now leave them to the ingest task, which commits.
        committer.queue(Self.poll("a", 2))
        let step13 = committer.takeForBusThread()
        #expect(Self.isNothing(step13))
        let step14 = committer.takeForIngestTask()
        #expect(Self.taskPolls(step14) == ["c#1", "b#2", "a#2"])
        committer.queue(Self.poll("c", 2))
        let step15 = committer.takeForBusThread()
        #expect(Self.isNothing(step15))
        let step16 = committer.takeForIngestTask()
        #expect(Self.taskPolls(step16) == ["c#2"])
        let step17 = committer.takeForIngestTask()
        #expect(Self.isDone(step17))
        // Idle again: the next bus thread commits by itself.
        committer.queue(Self.poll("b", 3))
        let step18 = committer.takeForBusThread()
        #expect(Self.commitBatch(step18) == ["b#3"])
    }

    @Test func aBatchTheBusThreadCouldNotCommitGoesToTheIngestTaskBeforeLaterPolls() {
        var committer = IngestCommitter(maxBatch: 100)
        committer.queue(Self.poll("a", 1))
        let step19 = committer.takeForBusThread()
        #expect(Self.commitBatch(step19) == ["a#1"])
        committer.queue(Self.poll("b", 1))
        let drafts = [OutboxDraft(topic: "t/a", qos: 1) { _, _ in [1] }]
        let step20 = committer.busThreadCouldNotCommit(drafts)
        #expect(Self.isWake(step20))
        committer.queue(Self.poll("a", 2))
        let step21 = committer.takeForBusThread()
        #expect(Self.isNothing(step21))
        let step22 = committer.takeForIngestTask()
        guard case let .commitDrafts(handed) = step22 else {
            Issue.record("the ingest task did not take the bus thread's batch first")
            return
        }
        #expect(handed.map(\.topic) == ["t/a"])
        let step23 = committer.takeForIngestTask()
        #expect(Self.taskPolls(step23) == ["b#1", "a#2"])
        let step24 = committer.takeForIngestTask()
        #expect(Self.isDone(step24))
    }

    @Test func aThreadThatMustNotBlockLeavesItsPollToTheIngestTask() {
        var committer = IngestCommitter(maxBatch: 100)
        committer.queue(Self.poll("a", 1))
        let step25 = committer.takeForBusThread(onBusThread: false)
        #expect(Self.isWake(step25))
        let step26 = committer.takeForIngestTask()
        #expect(Self.taskPolls(step26) == ["a#1"])
        let step27 = committer.takeForIngestTask()
        #expect(Self.isDone(step27))
        // Such a thread wakes the task once, while it has not taken the polls.
        committer.queue(Self.poll("b", 1))
        let step28 = committer.takeForBusThread(onBusThread: false)
        #expect(Self.isWake(step28))
        committer.queue(Self.poll("b", 2))
        let step29 = committer.takeForBusThread(onBusThread: false)
        #expect(Self.isNothing(step29))
        let step30 = committer.takeForIngestTask()
        #expect(Self.taskPolls(step30) == ["b#1", "b#2"])
    }

    @Test func batchesAreCutAtTheLimitInOrder() {
        var committer = IngestCommitter(maxBatch: 2)
        committer.queue(Self.poll("a", 1))
        committer.queue(Self.poll("a", 2))
        committer.queue(Self.poll("a", 3))
        let step31 = committer.takeForBusThread()
        #expect(Self.commitBatch(step31) == ["a#1", "a#2"])
        let step32 = committer.busThreadCommitted(round: 1)
        #expect(Self.commitBatch(step32) == ["a#3"])
        let step33 = committer.busThreadCommitted(round: 2)
        #expect(Self.isNothing(step33))
    }

    @Test func whileStoppingOnlyTheIngestTaskCommitsAndABusThreadCommittingHandsOver() {
        var committer = IngestCommitter(maxBatch: 100)
        committer.queue(Self.poll("a", 1))
        let step34 = committer.takeForBusThread()
        #expect(Self.commitBatch(step34) == ["a#1"])
        committer.stop()
        // The stopping ingest task waits for the bus thread's commit to end.
        let step35 = committer.takeForIngestTask()
        guard case .leaveToBusThread = step35 else {
            Issue.record("the ingest task committed beside a committing bus thread")
            return
        }
        // Done with nothing left, the bus thread still wakes the task (it waits for that).
        let step36 = committer.busThreadCommitted(round: 1)
        #expect(Self.isWake(step36))
        // A poll handed over while stopping is the task's, never a bus thread's.
        committer.queue(Self.poll("b", 1))
        let step38 = committer.takeForBusThread()
        #expect(Self.isNothing(step38), "the woken task takes it")
        let step39 = committer.takeForIngestTask()
        #expect(Self.taskPolls(step39) == ["b#1"])
        // Nothing left: the stopping task ends, and says so.
        let step40 = committer.takeForIngestTask()
        #expect(Self.isEnd(step40))
        #expect(committer.lifecycle == .ended)
    }

    @Test func stoppingWithPollsWaitingHandsThemAllOverAfterTheFirstRound() {
        var committer = IngestCommitter(maxBatch: 100)
        committer.queue(Self.poll("a", 1))
        let step41 = committer.takeForBusThread()
        #expect(Self.commitBatch(step41) == ["a#1"])
        committer.queue(Self.poll("b", 1))
        committer.stop()
        let step42 = committer.busThreadCommitted(round: 1)
        #expect(Self.isWake(step42))
        let step43 = committer.takeForIngestTask()
        #expect(Self.taskPolls(step43) == ["b#1"])
        let step44 = committer.takeForIngestTask()
        #expect(Self.isEnd(step44))
    }

    /// After the ingest task ended (stopped gracefully), a poll a bus thread hands over
    /// (a bus that came back late) is committed by that bus thread, not left waiting for a
    /// task that is gone; one from a thread that must not block is counted as lost.
    @Test func afterTheIngestTaskEndedABusThreadCommitsWhatItHandsOverItself() {
        var committer = IngestCommitter(maxBatch: 2)
        committer.stop()
        #expect(Self.isEnd(committer.takeForIngestTask()))
        committer.queue(Self.poll("a", 1))
        let own = committer.takeForBusThread(onBusThread: true, inTime: false)
        #expect(Self.commitBatch(own) == ["a#1"], "committed however late: nobody else will")
        committer.queue(Self.poll("b", 1))
        committer.queue(Self.poll("b", 2))
        committer.queue(Self.poll("b", 3))
        // Every round, beyond `busRounds`, until nothing waits.
        #expect(Self.commitBatch(committer.busThreadCommitted(round: 1, mayCommitAgain: false)) == ["b#1", "b#2"])
        #expect(Self.commitBatch(committer.busThreadCommitted(round: 2, mayCommitAgain: false)) == ["b#3"])
        #expect(Self.isNothing(committer.busThreadCommitted(round: 3, mayCommitAgain: false)))
        // A batch the outbox could not take on the calling thread has nobody to go to.
        committer.queue(Self.poll("c", 1))
        #expect(Self.commitBatch(committer.takeForBusThread()) == ["c#1"])
        committer.queue(Self.poll("c", 2))
        let draft = OutboxDraft(topic: "t", qos: 1) { _, _ in [] }
        guard case .countBatchAsLost(1) = committer.busThreadCouldNotCommit([draft]) else {
            Issue.record("a batch the bus thread could not commit went to an ended ingest task: \(committer.state)")
            return
        }
        #expect(Self.commitBatch(committer.busThreadCommitted(round: 1)) == ["c#2"], "the next batch is tried")
        #expect(Self.isNothing(committer.busThreadCommitted(round: 2)))
        // A thread that must not block cannot commit, and nobody else will: counted as lost.
        committer.queue(Self.poll("d", 1))
        #expect(Self.lostPolls(committer.takeForBusThread(onBusThread: false)) == ["d#1"])
        guard case let .idle(waiting) = committer.state, waiting.isEmpty else {
            Issue.record("polls left waiting after the ingest task ended: \(committer.state)")
            return
        }
    }

    /// Cancelled while a bus thread commits: the task ends at once (it can no longer wait to
    /// be woken) and that bus thread commits what waits, every round, itself.
    @Test func aCancelledIngestTaskLeavesWhatWaitsToTheCommittingBusThread() {
        var committer = IngestCommitter(maxBatch: 100)
        committer.queue(Self.poll("a", 1))
        #expect(Self.commitBatch(committer.takeForBusThread()) == ["a#1"])
        committer.queue(Self.poll("b", 1))
        #expect(Self.isNothing(committer.takeForBusThread()))
        committer.cancel()
        #expect(Self.isEnd(committer.takeForIngestTask()))
        #expect(committer.lifecycle == .ended)
        committer.queue(Self.poll("b", 2))
        #expect(Self.commitBatch(committer.busThreadCommitted(round: 1)) == ["b#1", "b#2"])
        committer.queue(Self.poll("b", 3))
        #expect(Self.commitBatch(committer.busThreadCommitted(round: 2)) == ["b#3"])
        #expect(Self.isNothing(committer.busThreadCommitted(round: 3)))
    }

    /// Cancelled with polls in hand: the task commits them (and its deferred batches, a batch
    /// its own cancelled commit handed back first) before it ends.
    @Test func aCancelledIngestTaskCommitsWhatItHoldsThenEnds() {
        var committer = IngestCommitter(maxBatch: 100)
        committer.queue(Self.poll("a", 1))
        #expect(Self.isWake(committer.takeForBusThread(onBusThread: false)))
        #expect(Self.taskPolls(committer.takeForIngestTask()) == ["a#1"])
        committer.queue(Self.poll("a", 2))
        #expect(Self.isNothing(committer.takeForBusThread(onBusThread: false)))
        // Its commit of a#1 failed for the cancellation: the batch comes first again.
        committer.ingestTaskWasCancelled(committing: [])
        committer.cancel()
        guard case .commitDrafts = committer.takeForIngestTask() else {
            Issue.record("the batch the cancelled commit handed back was not taken first: \(committer.state)")
            return
        }
        // A bus thread handing over meanwhile leaves its poll to the finishing task.
        committer.queue(Self.poll("b", 1))
        #expect(Self.isNothing(committer.takeForBusThread()))
        #expect(Self.taskPolls(committer.takeForIngestTask()) == ["a#2", "b#1"])
        #expect(Self.isEnd(committer.takeForIngestTask()))
        committer.queue(Self.poll("c", 1))
        #expect(Self.commitBatch(committer.takeForBusThread()) == ["c#1"])
    }
    /// The cancelled task's last turn never gets a step that waits for a wake-up (none can
    /// come): it commits what it holds until `.end`, also while a bus thread commits.
    @Test func theLastTurnOfACancelledIngestTaskEndsWithoutWaiting() {
        var committer = IngestCommitter(maxBatch: 100)
        committer.queue(Self.poll("a", 1))
        #expect(Self.isWake(committer.takeForBusThread(onBusThread: false)))
        committer.cancel()
        guard case let .commitPolls(polls) = committer.takeForLastTurn() else {
            Issue.record("the last turn did not take the poll it holds: \(committer.state)")
            return
        }
        #expect(Self.names(polls) == ["a#1"])
        guard case .end = committer.takeForLastTurn() else {
            Issue.record("the last turn did not end with nothing left: \(committer.state)")
            return
        }
        #expect(committer.lifecycle == .ended)

        var busy = IngestCommitter(maxBatch: 100)
        busy.queue(Self.poll("b", 1))
        #expect(Self.commitBatch(busy.takeForBusThread()) == ["b#1"])
        busy.cancel()
        guard case .end = busy.takeForLastTurn() else {
            Issue.record("the last turn waited for a committing bus thread: \(busy.state)")
            return
        }
        #expect(busy.lifecycle == .ended)
    }

    @Test func aBusThreadWithoutTimeForASecondRoundHandsOver() {
        var committer = IngestCommitter(maxBatch: 100)
        committer.queue(Self.poll("a", 1))
        let first = committer.takeForBusThread()
        #expect(Self.commitBatch(first) == ["a#1"])
        committer.queue(Self.poll("b", 1))
        let after = committer.busThreadCommitted(round: 1, mayCommitAgain: false)
        #expect(Self.isWake(after))
        let taken = committer.takeForIngestTask()
        #expect(Self.taskPolls(taken) == ["b#1"])
    }

    @Test func theCommitTimeEstimateHoldsASlowCommitAndForgetsItSlowly() {
        var estimate = CommitTimeEstimate()
        let now = ContinuousClock.now
        #expect(estimate.fits(now: now, before: now), "nothing measured yet")
        #expect(estimate.fits(now: now, before: nil), "no deadline")
        estimate.record(.milliseconds(12))
        #expect(!estimate.fits(now: now, before: now + .milliseconds(9)), "a slow fsync keeps the bus from committing")
        #expect(estimate.fits(now: now, before: now + .milliseconds(12)))
        // Fast commits bring it down by an eighth each: 12 ms → under 9 ms after three.
        estimate.record(.milliseconds(1))
        estimate.record(.milliseconds(1))
        #expect(!estimate.fits(now: now, before: now + .milliseconds(9)))
        estimate.record(.milliseconds(1))
        #expect(estimate.fits(now: now, before: now + .milliseconds(9)))
        // A slower commit raises it at once.
        estimate.record(.milliseconds(20))
        #expect(estimate.expected == .milliseconds(20))
    }
}
