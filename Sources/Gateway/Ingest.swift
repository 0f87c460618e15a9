// From polls to committed outbox rows: group commit of everything that arrived
// while the previous commit was syncing, committed by the bus thread that handed a
// poll over when nobody else commits (IngestCommitter.swift says who commits when).
import Foundation
import GatewayClock
import GatewayConfig
import Logging
import Modbus
import Outbox
import Sealing
import SparkplugB
import ServiceLifecycle
import Synchronization

/// Collects device polls from the bus threads and commits them to the outbox in
/// batches. A poll counts as a message once its batch is committed.
///
/// Polls are handed over with `queue(_:)` then `commitOnBusThread()`: a bus thread
/// commits on its own thread while nobody else commits (no thread hop); the others'
/// polls wait for that commit's next round or for the ingest task (see `IngestCommitter`).
/// From any other thread the ingest task commits them.
public final class IngestService: Service, Sendable {
    /// Most messages in one transaction.
    static let maxBatch = 2_000

    private let identity: GatewayIdentity
    private let qos: UInt8
    private let outbox: Outbox
    private let logger: Logger
    private let committer = Mutex(IngestCommitter(maxBatch: IngestService.maxBatch))
    /// How long commits take lately (bus threads' and the ingest task's).
    private let commitTime = Mutex(CommitTimeEstimate())
    private let wakeUps: AsyncStream<Void>
    private let wakeUp: AsyncStream<Void>.Continuation
    /// Called after each commit with the rows committed (in id order, never empty): the
    /// forwarder publishes them without reading them back when it is caught up. Called by
    /// the committer before it gives up its turn, so calls come in commit order.
    private let onCommit: @Sendable ([OutboxMessage]) -> Void
    /// Seals each data payload inside the committing transaction, so the outbox
    /// on disk holds only sealed payloads; `nil` when `payload.seal` is `none`.
    private let sealer: Sealer?
    /// Set with `mqtt.format: sparkplug`: polls are committed as Sparkplug DDATA.
    private let sparkplug: SparkplugNode?
    /// What of an `on_change` poll changed (Sparkplug only); used by the committer alone
    /// (one at a time, `IngestCommitter`), in commit order.
    private let exceptions: Mutex<SparkplugReportByException>
    /// The data topic of each configured device, built once: a poll's topic is looked up,
    /// not interpolated anew for every poll.
    private let dataTopics: [String: String]

    /// - Parameter sealer: seals every data payload before it is committed.
    /// - Parameter sparkplug: commits polls as the node's stored DDATA instead of JSON.
    public init(identity: GatewayIdentity, qos: Int, outbox: Outbox, logger: Logger, sealer: Sealer? = nil,
                sparkplug: SparkplugNode? = nil, devices: [DeviceConfiguration] = [],
                onCommit: @escaping @Sendable ([OutboxMessage]) -> Void) {
        self.sealer = sealer
        self.sparkplug = sparkplug
        exceptions = Mutex(SparkplugReportByException(devices: devices))
        dataTopics = Dictionary(devices.map { ($0.name, identity.dataTopic(device: $0.name)) },
                                uniquingKeysWith: { first, _ in first })
        self.identity = identity
        self.qos = UInt8(qos)
        self.outbox = outbox
        self.logger = logger
        self.onCommit = onCommit
        (wakeUps, wakeUp) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Hands a poll over from a bus thread; call `commitOnBusThread()` next (after the
    /// bus's abandonment lock is released). Never blocks on I/O.
    public func queue(_ poll: DevicePoll) {
        committer.withLock { $0.queue(poll) }
    }

    /// On a bus thread, after `queue(_:)`: commits what waits if nobody else commits,
    /// synchronously on this thread (a commit, with `sync: full` its fsync), at most
    /// `IngestCommitter.busRounds` batches, then returns to polling; what is left goes to
    /// the ingest task. Called on any other thread (Swift's cooperative pool must never
    /// block), or when a commit is not expected to end before `nextPollDue` (the bus's
    /// next poll), it leaves the polls to the ingest task.
    public func commitOnBusThread(nextPollDue: ContinuousClock.Instant? = nil) {
        let onBus = BusExecutor.isCurrentThreadABus
        let inTime = onBus && fits(before: nextPollDue)
        var step = committer.withLock { $0.takeForBusThread(onBusThread: onBus, inTime: inTime) }
        var round = 1
        /// The polls of the batch this thread commits (a reference, no copy): their devices
        /// name a loss.
        var inHand: [DevicePoll] = []
        while true {
            switch step {
            case .nothing:
                return
            case .wakeIngestTask:
                wakeUp.yield()
                return
            case let .countAsLost(polls):
                countAsLost(polls.count, of: polls, writingNow: false, why: .mustNotBlock)
                return
            case let .countBatchAsLost(count):
                countAsLost(count, of: inHand, writingNow: true, why: .outboxNeedsRecovery)
                step = committer.withLock { $0.busThreadCommitted(round: round) }
                round += 1
            case let .commit(polls):
                inHand = polls
                let drafts = drafts(for: polls)
                let started = ContinuousClock.now
                switch outbox.appendOnCallingThread(drafts) {
                case let .committed(rows):
                    commitTime.withLock { $0.record(ContinuousClock.now - started) }
                    if !rows.isEmpty { onCommit(rows) }
                    let again = fits(before: nextPollDue)
                    step = committer.withLock { $0.busThreadCommitted(round: round, mayCommitAgain: again) }
                case .needsAppend:
                    step = committer.withLock { $0.busThreadCouldNotCommit(drafts) }
                }
                round += 1
            }
        }
    }

    /// Why polls handed over after the ingest task ended could not be committed.
    private enum LateLoss {
        /// Handed over by a thread that must not block (not a bus thread).
        case mustNotBlock
        /// The bus thread's synchronous append handed the batch back: the outbox needs its
        /// async recovery (full disk, I/O error, a WAL to truncate), which nobody runs now.
        case outboxNeedsRecovery
    }

    /// Polls nobody can commit any more (the ingest task has ended): counted as dropped in
    /// the outbox with reason `shutting_down` (a gap record, reported upstream), and logged
    /// once per batch with the devices, why and the fix. Written at once on a bus thread
    /// (`writingNow`: the gap record, or on a full disk the count alone); a thread that must
    /// not block leaves it in memory for the outbox's next transaction. Where it is not in the
    /// file, the log line says that it is the only record.
    private func countAsLost(_ count: Int, of polls: [DevicePoll], writingNow: Bool, why: LateLoss) {
        exceptions.withLock { $0.forget() }  // these values never reached the outbox
        let record = outbox.recordLossOnCallingThread(count, reason: .shuttingDown, writingNow: writingNow)
        let devices = Set(polls.map(\.device)).sorted().joined(separator: ", ")
        let cause = switch why {
        case .mustNotBlock:
            "they were handed over after the ingest task had ended, by a thread that must not block (not a bus thread)"
        case .outboxNeedsRecovery:
            "a bus handed them over after the ingest task had ended, and the outbox could not take them on the bus "
                + "thread (it needs its recovery: full disk or I/O error, see its log)"
        }
        let fix = switch why {
        case .mustNotBlock:
            "none for the stop: nothing but a bus thread hands polls over in the running gateway"
        case .outboxNeedsRecovery:
            "free space on the filesystem holding buffer.path, or check the storage device (dmesg); the stop's "
                + "limits are fixed (GatewayRuntime: 4 s graceful, 4.5 s in all, within the unit's TimeoutStopSec=15s): "
                + "raising TimeoutStopSec does not lengthen them"
        }
        let recorded = switch record {
        case .gapRecorded:
            "in the outbox: a gap record shutting_down, reported upstream (after the next start if the gateway stops now)"
        case .countedWithoutGapRecord:
            "in the outbox's counters and seqs only (no room for its gap record): the next start's birth "
                + "(previous_boot_last_seq) and the dropped counter show it"
        case .inMemoryOnly where !writingNow:
            "in memory, written with the outbox's next commit; if the gateway exits first, only in this log line"
        case .inMemoryOnly:
            "NOWHERE but this log line: the outbox took nothing, not even its counters"
        }
        logger.error("""
            \(count) polls of \(devices) read while the gateway shuts down could not be committed; counted as \
            dropped (\(DropReason.shuttingDown.rawValue)), recorded \(recorded). Why: \(cause). Fix: \(fix)
            """, metadata: [
                "polls": "\(count)", "devices": "\(devices)", "reason": "\(DropReason.shuttingDown.rawValue)",
            ])
    }

    public func run() async {
        await withGracefulShutdownHandler {
            for await _ in wakeUps {
                if await commitPending() { return }
            }
            // Cancelled (not stopped gracefully): commit what is in hand without waiting for
            // anybody, until `.end`; a bus thread still committing keeps the rest
            // (IngestCommitter). In a task of its own, awaited here, which is not cancelled:
            // GRDB's async writes fail at once in a cancelled task.
            committer.withLock { $0.cancel() }
            await Task { await self.lastTurn() }.value
        } onGracefulShutdown: {
            self.beginShutdown()
        }
    }

    /// Graceful shutdown: the pollers have stopped (they stop first). From now on only the
    /// ingest task commits; it commits what is in hand, after a bus thread still inside a
    /// commit has handed over, and then `run()` returns.
    func beginShutdown() {
        committer.withLock { $0.stop() }
        wakeUp.yield()
    }

    /// The sealed envelope of `plain`. A failing CSPRNG or libcrypto is no state
    /// to go on in: the process stops (and systemd restarts it) rather than ever
    /// committing a payload unsealed.
    static func seal(_ plain: [UInt8], topic: String, with sealer: Sealer) -> [UInt8] {
        do {
            return try sealer.seal(plain, topic: topic)
        } catch {
            fatalError("cannot seal a payload for \(topic): \(error)")
        }
    }

    /// The ingest task's turn: commits until nothing waits or a bus thread commits, or the
    /// task is cancelled during a commit. Returns true when the ingest task has ended
    /// (`IngestCommitter.TaskStep.end`).
    private func commitPending() async -> Bool {
        while true {
            let step = committer.withLock { $0.takeForIngestTask() }
            switch step {
            case .done, .leaveToBusThread:
                return false
            case .end:
                return true
            case let .commitDrafts(drafts):
                guard await commit(drafts) else { return false }
            case let .commitPolls(polls):
                guard await commit(drafts(for: polls)) else { return false }
            }
        }
    }

    /// The cancelled ingest task's last turn: commits what it holds and returns only at
    /// `.end` (`IngestCommitter.takeForLastTurn`), so the lifecycle is `ended` afterwards and
    /// a poll handed over later is committed or counted by whoever hands it over, never left
    /// for a task that is gone. A commit of this turn that reports itself cancelled (it
    /// cannot: this runs in a task nobody cancels) has handed its batch back first, and the
    /// loop takes it again.
    private func lastTurn() async {
        while true {
            switch committer.withLock({ $0.takeForLastTurn() }) {
            case .end:
                return
            case let .commitDrafts(drafts):
                _ = await commit(drafts)
            case let .commitPolls(polls):
                _ = await commit(drafts(for: polls))
            }
        }
    }

    /// Whether a commit started now is expected to end before `deadline`.
    private func fits(before deadline: ContinuousClock.Instant?) -> Bool {
        commitTime.withLock { $0.fits(now: .now, before: deadline) }
    }

    /// Commits `drafts` (or the outbox counts their loss); false when the task was
    /// cancelled first: then they wait, first, for the cancelled task's last turn.
    private func commit(_ drafts: [OutboxDraft]) async -> Bool {
        do {
            let started = ContinuousClock.now
            let committed = try await outbox.append(drafts)
            commitTime.withLock { $0.record(ContinuousClock.now - started) }
            if !committed.isEmpty { onCommit(committed) }
        } catch is CancellationError {
            // Cancelled during the commit: nothing of it was committed or counted; the
            // cancelled ingest task commits it again (`run()`), first.
            committer.withLock { $0.ingestTaskWasCancelled(committing: drafts) }
            return false
        } catch {
            exceptions.withLock { $0.forget() }  // the host's values are unknown: send whole polls next
            // The outbox has applied its drop policy and counted the loss.
            logger.error("could not commit polls to the outbox", metadata: [
                "polls": "\(drafts.count)", "error": "\(error)",
            ])
        }
        return true
    }

    /// The outbox drafts of `polls`, in order. Only the committer calls it.
    private func drafts(for polls: [DevicePoll]) -> [OutboxDraft] {
        let gateway = identity.id
        let sealer = self.sealer
        let qos = self.qos
        return polls.map { poll in
            let measured = MeasuredAt(boottime: poll.clock.boottime, kernelBootID: poll.clock.bootID,
                                      synchronised: poll.clock.sync == .synchronised)
            if let node = sparkplug {
                let poll = exceptions.withLock { $0.changes(in: poll) }
                return OutboxDraft(topic: node.topics.ddata(device: poll.device), qos: qos,
                                   measured: measured) { boot, seq in
                    node.storedDData(poll, boot: boot, seq: seq)
                }
            }
            let topic = dataTopics[poll.device] ?? identity.dataTopic(device: poll.device)
            return OutboxDraft(topic: topic, qos: qos, measured: measured) { boot, seq in
                let plain = MessageEncoding.dataMessage(gateway: gateway, poll: poll, boot: boot, seq: seq)
                return sealer.map { Self.seal(plain, topic: topic, with: $0) } ?? plain
            }
        }
    }
}
