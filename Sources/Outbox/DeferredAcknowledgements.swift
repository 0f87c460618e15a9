// Acknowledged ids waiting to be deleted inside the next transaction that writes the
// outbox anyway (an append's), and the delete of their own when none comes soon.
//
// A live gateway commits a poll, the broker acknowledges it a few milliseconds later, and
// the next poll commits again: deleting the acknowledged row in that next append's
// transaction saves a transaction (BEGIN, DELETE, meta UPDATE, COMMIT, a WAL write) and
// a hop to the writer's thread per message.
import Dispatch
import Foundation
import GRDB
import Logging
import Synchronization

/// The acknowledged ids not yet deleted, when the oldest of them came, and whether a
/// timer or a delete of their own is under way. All of it under one lock.
///
/// The timer repeats every `delay` while ids wait and stops when it finds none: a live
/// gateway always has the last poll's id waiting for the next append, so a one-shot timer
/// re-armed at each check cost the dispatch manager thread an extra wake-up per check.
final class PendingAcknowledgements: Sendable {
    struct Settings: Sendable {
        /// This many ids waiting: they are deleted at once, without waiting for an append.
        var flushAt: Int
        /// Ids waiting this long without an append are deleted by themselves (checked every
        /// `delay`: an id waits less than twice this).
        var delay: Duration
    }

    private struct State {
        var ids: [Int64] = []
        /// When `ids` went from empty to not empty.
        var since: ContinuousClock.Instant?
        var timer = TimerState.idle
        /// What the timer calls (`timerFired()`, then what it answers).
        var onTimer: (@Sendable () -> Void)?
        var flush = FlushState.idle
        var settings = Settings(flushAt: 1, delay: .zero)
        /// Told how many ids went through a transaction (committed or failed).
        var observer: (@Sendable (Int) -> Void)?
        /// Tests only (`onceAfterTake`): called once, after a `take` that took ids.
        var afterTake: (@Sendable () -> Void)?
    }
    /// The timer is either stopped or repeating every `delay` (the source, to cancel it).
    /// Invariant, under the lock: ids wait ⇒ the timer ticks.
    enum TimerState {
        case idle
        case ticking(any DispatchSourceTimer)
    }
    enum FlushState { case idle, queued }
    /// What the caller does after handing ids over or after the timer fired.
    enum Next { case nothing, flush }

    private let state = Mutex(State())

    /// A ticking source is kept alive by libdispatch until it is cancelled.
    deinit {
        state.withLock { state in
            if case let .ticking(timer) = state.timer { timer.cancel() }
        }
    }

    /// Queues `ids`; says whether to delete now. Starts the timer (which calls `onTimer`
    /// every `settings.delay`) if it is stopped.
    func add(_ ids: [Int64], settings: Settings, onTimer: @escaping @Sendable () -> Void) -> Next {
        state.withLock { state in
            state.settings = settings
            if state.onTimer == nil { state.onTimer = onTimer }
            if state.ids.isEmpty { state.since = .now }
            state.ids.append(contentsOf: ids)
            return Self.due(&state)
        }
    }

    /// The timer fired: delete what waited `delay`; what is younger waits for the next
    /// tick (an id waits less than `2 × delay`); with nothing waiting the timer stops.
    func timerFired() -> Next {
        state.withLock { state in
            guard let since = state.since, !state.ids.isEmpty else {
                if case let .ticking(timer) = state.timer { timer.cancel() }
                state.timer = .idle
                return .nothing
            }
            guard ContinuousClock.now - since >= state.settings.delay, state.flush == .idle else { return .nothing }
            state.flush = .queued
            return .flush
        }
    }

    /// Whether the timer runs (for tests).
    var timerIsTicking: Bool {
        state.withLock { state in
            if case .ticking = state.timer { return true }
            return false
        }
    }

    /// Everything waiting, for the transaction that deletes it.
    ///
    /// Invariant: a taken id is deleted before any drop can see its row. So only two kinds of
    /// caller take: the writer's queue (every drop runs there, serialised with the taker's
    /// delete) and a transaction that already holds the file's write lock (the second
    /// connection's, `AcknowledgementConnection.delete(taking:)`): until it commits no other
    /// connection writes. An id taken anywhere else could be dropped as one of the oldest
    /// rows meanwhile (counted lost, a gap record) although the broker acknowledged it.
    func take() -> [Int64] {
        let (ids, afterTake) = state.withLock { state -> ([Int64], (@Sendable () -> Void)?) in
            let ids = state.ids
            state.ids.removeAll(keepingCapacity: true)
            state.since = nil
            guard !ids.isEmpty, let afterTake = state.afterTake else { return (ids, nil) }
            state.afterTake = nil
            return (ids, afterTake)
        }
        afterTake?()
        return ids
    }

    /// Tests only: `body` runs once, on the taking thread, right after the next `take` that
    /// takes ids and before their delete: a test makes another thread's write fall there.
    func onceAfterTake(_ body: @escaping @Sendable () -> Void) {
        state.withLock { $0.afterTake = body }
    }

    /// A transaction that took `ids` rolled back: they wait again, first.
    func putBack(_ ids: [Int64]) -> Next {
        guard !ids.isEmpty else { return .nothing }
        return state.withLock { state in
            if state.ids.isEmpty { state.since = .now }
            state.ids.insert(contentsOf: ids, at: 0)
            return Self.due(&state)
        }
    }

    /// Marks a delete of their own as queued when ids wait and none is under way; says
    /// whether the caller is to run it (`Outbox.deleteQueuedAcknowledgementsSoon`).
    func startFlush() -> Bool {
        state.withLock { state in
            guard !state.ids.isEmpty, state.flush == .idle else { return false }
            state.flush = .queued
            return true
        }
    }

    /// A delete of their own ended; says whether another is due already, or the timer.
    func flushEnded() -> Next {
        state.withLock { state in
            state.flush = .idle
            return Self.due(&state)
        }
    }

    /// What waiting ids need now: a delete when there are enough, else the timer if it is stopped.
    private static func due(_ state: inout State) -> Next {
        guard !state.ids.isEmpty else { return .nothing }
        if state.ids.count >= state.settings.flushAt, state.flush == .idle {
            state.flush = .queued
            return .flush
        }
        if case .idle = state.timer, let onTimer = state.onTimer {
            let timer = DispatchSource.makeTimerSource(queue: .global())
            let delay = DispatchTimeInterval.nanoseconds(Int(state.settings.delay / .nanoseconds(1)))
            timer.schedule(deadline: .now() + delay, repeating: delay, leeway: .milliseconds(10))
            timer.setEventHandler(handler: onTimer)
            timer.resume()
            state.timer = .ticking(timer)
        }
        return .nothing
    }

    var isEmpty: Bool { state.withLock { $0.ids.isEmpty } }

    /// Whether an id greater than `id` waits (a lease after `id` would read its row).
    func contains(after id: Int64) -> Bool { state.withLock { $0.ids.contains { $0 > id } } }

    func setObserver(_ observer: @escaping @Sendable (Int) -> Void) {
        state.withLock { $0.observer = observer }
    }

    /// `count` ids taken by a transaction went through it (committed, or failed and given up).
    func finished(_ count: Int) {
        guard count > 0 else { return }
        state.withLock { $0.observer }?(count)
    }
}

extension Outbox {
    /// Queues acknowledged ids to be deleted inside the next transaction that writes the
    /// file: the next append's (so no transaction of their own), a lease's (a lease never
    /// returns an acknowledged row), or one of their own once `flushAt` ids wait or when no
    /// append came for `delay` (an id then waits less than `2 × delay`). Unknown ids are
    /// ignored (duplicate acks, acks of rows dropped meanwhile). Never waits for the file's
    /// write lock; the caller learns that ids went through a transaction from
    /// ``whenAcknowledgementsWritten(_:)``. When `flushAt` is reached here and the write lock
    /// is free, that delete is done before this returns, on the calling thread: a SQLite
    /// transaction (`AcknowledgementConnection`, without an fsync), then the observer,
    /// called synchronously on this thread.
    ///
    /// Until then the rows stay in the outbox and in its counters: a crash sends them
    /// again (a duplicate, never a loss). Deleted inside an append, they are fsynced with it
    /// (`sync: full`); deleted by themselves, without an fsync of their own (a power cut can
    /// only send them again; see `deleteAcknowledgedRelaxed`).
    public func acknowledgeWithNextWrite(_ ids: [Int64], flushAt: Int, delay: Duration) {
        guard !ids.isEmpty else { return }
        let settings = PendingAcknowledgements.Settings(flushAt: Swift.max(1, flushAt), delay: delay)
        let next = pendingAcknowledgements.add(ids, settings: settings) { [weak self] in
            guard let self else { return }
            self.follow(self.pendingAcknowledgements.timerFired())
        }
        // On this thread when the file's write lock is free: no hop to the writer's thread
        // and back, so a forwarder whose window these ids hold is free again at once.
        if next == .flush, deleteOnCallingThread() { return }
        follow(next)
    }

    /// Deletes the waiting ids now, however few (on the calling thread when the file's write
    /// lock is free, else on the writer's queue), unless a delete is under way already: for
    /// a forwarder whose window they hold while rows wait to be sent. Never waits for the
    /// write lock; on the calling thread it runs the transaction and calls the observer.
    public func deleteQueuedAcknowledgementsSoon() {
        guard pendingAcknowledgements.startFlush() else { return }
        if deleteOnCallingThread() { return }
        follow(.flush)
    }

    /// Calls `observer` with the number of ids queued by ``acknowledgeWithNextWrite(_:flushAt:delay:)``
    /// each time a transaction took them and ended (committed, or failed: then they are sent
    /// again later), on the task or thread that ran it. Keep it short and non-blocking. One
    /// observer: a later call replaces it.
    public func whenAcknowledgementsWritten(_ observer: @escaping @Sendable (Int) -> Void) {
        pendingAcknowledgements.setObserver(observer)
    }

    /// Deletes every queued acknowledged id now (at shutdown), in a transaction of its own.
    public func deleteQueuedAcknowledgements() async {
        guard !pendingAcknowledgements.isEmpty else { return }
        let count = try? await database.writeWithoutTransaction { db in self.deleteQueued(db) }
        pendingAcknowledgements.finished(count ?? 0)
    }

    func follow(_ next: PendingAcknowledgements.Next) {
        switch next {
        case .nothing:
            break
        case .flush:
            database.asyncWriteWithoutTransaction { db in
                let count = self.deleteQueued(db)
                self.pendingAcknowledgements.finished(count)
                self.follow(self.pendingAcknowledgements.flushEnded())
            }
        }
    }

    /// A delete of their own is due (`PendingAcknowledgements.Next.flush`, the flush marked
    /// queued): tries it on the calling thread with ``acknowledgementConnection``, which takes
    /// the ids only once it holds the file's write lock (see `PendingAcknowledgements.take`).
    /// Returns false when that could not be done (no such connection, the write lock taken, an
    /// error): the ids are queued again, untouched, and the caller hands the flush to the
    /// writer's queue (`follow(.flush)`), which deletes them or logs why it cannot.
    func deleteOnCallingThread() -> Bool {
        guard let connection = acknowledgementConnection else { return false }
        switch connection.delete(taking: pendingAcknowledgements.take) {
        case .notTaken:
            return false
        case let .rolledBack(ids):
            _ = pendingAcknowledgements.putBack(ids)  // the flush stays queued: no second one
            return false
        case let .committed(count):
            pendingAcknowledgements.finished(count)
            if count > 0, connection.checkpointDue() {
                // The writer's connection checkpoints (and syncs the file) on its queue: this
                // connection never does, and without appends the WAL would only grow.
                database.asyncWriteWithoutTransaction { db in _ = try? db.checkpoint(.passive) }
            }
        }
        // More came meanwhile (another thread): the writer's queue takes them.
        follow(pendingAcknowledgements.flushEnded())
        return true
    }

    /// On the writer, outside a transaction: deletes the queued ids in a transaction of their
    /// own. Returns how many ids it took. A failed delete is logged; its rows are sent again.
    /// A delete that meets the write lock takes none: they stay queued.
    func deleteQueued(_ db: Database) -> Int {
        let ids = pendingAcknowledgements.take()
        guard !ids.isEmpty else { return 0 }
        do {
            try deleteAcknowledgedRelaxed(db, ranges: Self.contiguousRanges(ids))
        } catch let error where Self.isLockContention(error) {
            // Another connection holds the write lock past the busy timeout (WriteLockWait.swift):
            // the ids wait for the next transaction, as if this delete had not run.
            logger.debug("outbox: the write lock is taken; acknowledged rows are deleted later", metadata: [
                "count": "\(ids.count)", "error": "\(error)",
            ])
            follow(pendingAcknowledgements.putBack(ids))
            return 0
        } catch {
            logger.error("cannot delete acknowledged messages; they are sent again later", metadata: [
                "count": "\(ids.count)", "error": "\(error)",
            ])
        }
        return ids.count
    }
}

/// A second connection to the outbox file, only for deleting acknowledged rows on the
/// thread that hands them over (the forwarder's, the MQTT network thread) instead of on the
/// writer's queue: in a replay the broker's acknowledgements free the window only once their
/// rows are deleted (see `ForwardingLoop.fill`), and a hop to the writer's thread and back
/// per delete held a fifth of the window.
///
/// It takes the waiting ids only once it holds the file's write lock (`delete(taking:)`).
/// It never waits: `BEGIN IMMEDIATE` fails at once with `SQLITE_BUSY` while any other
/// connection writes (an append, the queue's own deletes, a checkpoint), and a second caller
/// while one deletes is turned away by `busy`; the ids then go to the writer's queue as
/// before. Reads (the forwarder's leases) do not hold the write lock in WAL mode: a delete
/// runs beside them. The commit writes the WAL without an fsync (`synchronous = NORMAL`, as
/// `deleteAcknowledgedRelaxed` does on the writer): a crash of the process loses nothing of
/// it, and a power cut can only undo it until the next append syncs the WAL, which sends those
/// messages again, a duplicate, never a loss. It never checkpoints (a checkpoint syncs the
/// file): its WAL hook (`WALSize.installWithoutCheckpoint`, in place of SQLite's
/// auto-checkpoint) records the WAL's size in the outbox's shared `WALSize` after each of its
/// commits and, once the WAL holds `walAutocheckpointPages` frames, marks a checkpoint wanted,
/// which the caller hands to the writer's queue (`checkpointDue`), as the writer's own hook
/// would have run it after a commit of its own.
final class AcknowledgementConnection: Sendable {
    private let database: DatabaseQueue
    /// Set while a caller deletes: a second caller takes nothing (`.notTaken`) instead of
    /// waiting for the queue's `sync`.
    private let busy = Atomic<Bool>(false)
    private let logger: Logger
    /// The outbox's record of the WAL's size, which this connection's commits update too.
    private let walSize: WALSize

    /// Nil (logged) when the connection cannot be opened: every delete then takes the
    /// writer's queue.
    init?(path: String, reserve: ReserveFile, walSize: WALSize, logger: Logger) {
        var configuration = Configuration()
        configuration.label = "outbox-acknowledgements"
        configuration.busyMode = .immediateError
        let walLimit = reserve.walLimitBytes
        configuration.prepareDatabase { db in
            // journal_size_limit as the writer's: this connection may be the one that
            // starts the WAL over after a checkpoint (and truncates it then).
            try db.execute(sql: """
                PRAGMA synchronous = NORMAL;
                PRAGMA journal_size_limit = \(walLimit);
                PRAGMA cache_size = -256;
                """)
            // Replaces SQLite's auto-checkpoint hook: this connection never checkpoints.
            // The closure holds `walSize`, the hook's unretained context, as long as the connection.
            try walSize.installWithoutCheckpoint(on: db)
        }
        self.walSize = walSize
        do {
            database = try DatabaseQueue(path: path, configuration: configuration)
        } catch {
            logger.warning("outbox: cannot open a second connection for deleting acknowledged rows; they are deleted on the writer's queue", metadata: [
                "error": "\(error)",
            ])
            return nil
        }
        self.logger = logger
    }

    /// What a delete on this connection came to.
    enum Outcome {
        /// Nothing was taken: another connection holds the write lock, another caller is
        /// deleting, or the transaction could not begin.
        case notTaken
        /// `count` ids were taken and their delete committed.
        case committed(count: Int)
        /// These ids were taken but their delete failed and rolled back: queue them again.
        case rolledBack([Int64])
    }

    /// Takes the ids to delete with `take` once this connection holds the file's write lock
    /// (`BEGIN IMMEDIATE`), deletes their rows and books them, and commits, now, on the
    /// calling thread. Taking them only under the lock is what keeps them from being
    /// dropped: until the commit no other connection writes, so no append can drop their
    /// rows (the oldest, at a limit) as lost while they are neither queued nor deleted. When
    /// the lock is taken, nothing is taken (``Outcome/notTaken``).
    func delete(taking take: () -> [Int64]) -> Outcome {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return .notTaken }
        defer { busy.store(false, ordering: .releasing) }
        var taken: [Int64] = []
        do {
            // The queue's `sync` runs the block on this thread: only callers that passed
            // `busy` use this queue, one at a time.
            try database.writeWithoutTransaction { db in
                try db.inCachedTransaction {
                    taken = take()  // holding the write lock: see `PendingAcknowledgements.take`
                    guard !taken.isEmpty else { return }
                    try Outbox.deleteAcknowledged(db, ranges: Outbox.contiguousRanges(taken))
                }
            }
            return .committed(count: taken.count)
        } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY && taken.isEmpty {
            return .notTaken  // the writer is writing: its queue takes the ids
        } catch {
            logger.debug("outbox: deleting acknowledged rows on the second connection failed; the writer's queue tries", metadata: [
                "error": "\(error)",
            ])
            return taken.isEmpty ? .notTaken : .rolledBack(taken)
        }
    }

    /// True once after a commit of this connection left the WAL at `walAutocheckpointPages`
    /// frames or more (its WAL hook saw it): the caller asks the writer's queue to checkpoint.
    func checkpointDue() -> Bool {
        walSize.takeCheckpointRequest()
    }

    /// Closes the connection (the outbox's deinit, before the outbox's lock is let go).
    /// Waits for a delete under way on another thread.
    func close() {
        do {
            try database.close()
        } catch {
            logger.debug("outbox: closing the second connection failed", metadata: ["error": "\(error)"])
        }
    }
}
