import Foundation
import GRDB
import Logging
import Synchronization

/// The store-and-forward buffer of the gateway: an SQLite file (WAL) holding every data
/// message from the moment it is committed until the broker acknowledged it.
///
/// Promises:
/// - A message exists once ``append(_:)`` returned it; it is deleted only after
///   ``acknowledgeWithNextWrite(_:flushAt:delay:)`` or by a counted drop that is recorded
///   as an ``OutboxGap``.
/// - One process at a time: the outbox holds a lock on `<path>.lock` while it is open.
/// - `boot` goes up at every open and never goes backwards, also when a corrupt file is
///   moved aside or the file is deleted (`<path>.boot` keeps the last one).
/// - `seq` starts at 1 in each boot, is assigned in the committing transaction and is
///   consecutive: a missing seq is always either a recorded gap or a message still in
///   the outbox.
/// - SQLite work runs on GRDB's serial dispatch queue (``appendOnCallingThread(_:)``
///   holds it from the calling thread), or, for deletes of acknowledged rows, on the thread
///   that hands the ids over (the MQTT network thread) with a second connection
///   (`AcknowledgementConnection`, only when the write lock is free); never on Swift's
///   cooperative thread pool.
public final class Outbox: Sendable {
    /// The boot counter of this run (1 at the first start of a new file with no boot file beside it).
    public let boot: Int64
    /// Path the corrupt file was moved to at open, if that happened (the gateway announces it).
    public let quarantinedPath: String?
    /// Set when the outbox did not hold the last boot (quarantined, deleted or replaced):
    /// where it was found instead (the gateway announces it).
    public let bootRecovery: BootRecovery?
    /// Where the previous boot of this file ended (its last committed seq); nil for a
    /// new (or quarantined and replaced) file.
    public let previousBoot: OutboxBootEnd?
    /// The settings the outbox was opened with.
    public let settings: OutboxSettings

    let database: DatabaseQueue  // internal: SparkplugBdSeq.swift uses it too
    let logger: Logger  // internal: DeferredAcknowledgements.swift logs too
    private let now: @Sendable () -> Date
    private let measuring: (@Sendable () -> MeasuredAt)?
    /// The in-memory state beside SQLite, touched from GRDB's queue and from callers' tasks.
    private let state = Mutex(MemoryState())
    private let reserve: ReserveFile
    /// Whether the reserve is there, asked before every append (ReservePresence.swift).
    private let reservePresence: ReservePresence
    /// The WAL's size after each commit, from SQLite (WALSize.swift): no `stat` per append.
    let walSize: WALSize  // internal: tests read it
    /// Held while the outbox is open: no second process uses the file.
    private let lock: OutboxLock
    /// The check of a file too big to check before opening; nil when it was checked first.
    private let backgroundCheck: BackgroundIntegrityCheck?
    /// Told when gap records were written (OutboxObservers.swift).
    let gapObserver = GapObserver()
    /// Acknowledged ids deleted with the next append (DeferredAcknowledgements.swift).
    let pendingAcknowledgements = PendingAcknowledgements()
    /// The second connection that deletes acknowledged rows on the forwarder's thread when
    /// the file's write lock is free (DeferredAcknowledgements.swift); nil if it did not open.
    let acknowledgementConnection: AcknowledgementConnection?

    /// The little state kept in memory: the current drop episode (for logging once per
    /// episode) and losses that could not yet be written to the file (disk full).
    private struct MemoryState {
        struct Episode {
            var started: Date
            var dropped: Int64
            var reasons: [DropReason]
        }
        var episode: Episode?
        /// Messages lost while even the bookkeeping could not be written. They get their seqs
        /// and gap record in the next transaction that succeeds.
        var unrecordedLoss: [(reason: DropReason, count: Int64)] = []
        /// Losses already counted in the meta row, with their seqs, whose gap records found no
        /// room yet (see `recordLoss`): written by the next transaction of their own that succeeds.
        var unwrittenGaps = DropLedger()
        /// Set while the disk is full: the outbox holds at most this many bytes, so that it
        /// reuses its own free pages instead of growing the file (reason `disk_full`).
        var diskFullCeiling: Int64?
        /// `synchronous = FULL` could not be set back after a delete (see `deleteAcknowledgedRelaxed`):
        /// the next append sets it before committing.
        var fullSyncPending = false
        /// The reserve file cannot be made for a reason other than space (permissions, a
        /// read-only filesystem): the outbox runs without it, at its configured limits.
        var reserveProblem: ReserveFile.Failure?
    }

    /// Opens (creating if needed) the outbox at `settings.path`.
    ///
    /// First takes the outbox's lock (see `OutboxLock`). WAL journal, `synchronous` per settings,
    /// `PRAGMA quick_check` (before opening up to `settings.checkBeforeOpenMaxBytes`, else in the
    /// background: see ``integrity``). A file that is corrupt or not a database is renamed aside to `<path>.corrupt-<UTC timestamp>` (with its `-wal` and
    /// `-shm`), ``quarantinedPath`` says where, and a fresh outbox starts. Runs the named
    /// migrations, then starts a boot above the file's, the boot file's and a quarantined
    /// file's last boot (``bootRecovery`` says when the file did not hold the highest),
    /// and records it in the boot file; seq starts at 1.
    ///
    /// - Parameter now: the wall clock used for `createdAt`, `max_age` and ages (tests pass their own).
    /// - Parameter measuring: boottime and kernel boot now, when known: `max_age` then ages the
    ///   rows of the current kernel boot by boottime, not by a wall clock that may have stepped.
    /// - Throws: ``OutboxError`` naming the path and the fix (permissions, missing directory,
    ///   `.inUse` with the pid of the process holding the outbox, …).
    public convenience init(
        settings: OutboxSettings,
        logger: Logger,
        now: @escaping @Sendable () -> Date = { Date() },
        measuring: (@Sendable () -> MeasuredAt)? = nil
    ) throws {
        try self.init(settings: settings, logger: logger, now: now, measuring: measuring, reserveBesides: settings.path)
    }

    /// As the public init, with the reserve file beside `reserveBesides` instead of beside
    /// the outbox (tests put it where it cannot be made), and SQLite's busy timeout of the
    /// writing connection (tests shorten it to see another connection hold the write lock past it).
    init(
        settings: OutboxSettings,
        logger: Logger,
        now: @escaping @Sendable () -> Date,
        measuring: (@Sendable () -> MeasuredAt)?,
        reserveBesides: String,
        busyTimeout: Duration = .seconds(5)
    ) throws {
        var logger = logger
        logger[metadataKey: "outbox"] = "\(settings.path)"
        self.settings = settings
        self.logger = logger
        self.now = now
        self.measuring = measuring

        let path = settings.path
        try Self.prepareDirectory(of: path)
        try Self.checkAccess(path)
        // Before anything touches the file: a second process stops here.
        let lock = try OutboxLock(outboxPath: path)
        self.lock = lock
        let reserve = ReserveFile(besides: reserveBesides)
        self.reserve = reserve
        reservePresence = ReservePresence(reserve, logger: logger)
        let walSize = WALSize(outboxPath: path, autocheckpointPages: reserve.walAutocheckpointPages)
        self.walSize = walSize
        let bootFile = BootFile(besides: lock.resolvedOutboxPath)
        let recordedBoot = bootFile.read() ?? 0
        var floor = (boot: recordedBoot, source: BootSource.stateFile)
        let fileBoot: Int64
        let marker = FailedCheckMarker(besides: path)
        var checkingFirst = Self.checksBeforeOpening(settings, marker: marker)
        do {
            (database, boot, fileBoot) = try Self.openChecked(settings, reserve: reserve, walSize: walSize, bootFloor: floor.boot,
                                                              checkingFirst: checkingFirst, busyTimeout: busyTimeout)
            quarantinedPath = nil
        } catch let error where Self.isCorruption(error) {
            let aside = try Self.quarantine(path, at: now())
            logger.error("outbox file is corrupt or not a database; moved it aside and starting a fresh outbox", metadata: [
                "problem": "\(error)", "moved_to": "\(aside)",
            ])
            if let quarantinedBoot = BootFile.lastBoot(inQuarantined: aside), quarantinedBoot > floor.boot {
                floor = (quarantinedBoot, .quarantinedOutbox)
            }
            do {
                (database, boot, fileBoot) = try Self.openChecked(settings, reserve: reserve, walSize: walSize, bootFloor: floor.boot,
                                                                  checkingFirst: true, busyTimeout: busyTimeout)
                checkingFirst = true
            } catch {
                throw Self.openError(error, path: path)
            }
            quarantinedPath = aside
        } catch {
            throw Self.openError(error, path: path)
        }
        if checkingFirst { marker.remove() }  // checked now: healthy, or moved aside
        bootRecovery = fileBoot < floor.boot ? BootRecovery(previousBoot: floor.boot, source: floor.source) : nil
        if let bootRecovery {
            logger.warning("outbox did not hold the last boot; continuing above it", metadata: [
                "boot": "\(boot)", "previous_boot": "\(bootRecovery.previousBoot)", "from": "\(bootRecovery.source.rawValue)",
            ])
        }
        do {
            // Before any message of this boot is committed: the next start sees it.
            try bootFile.record(boot)
        } catch {
            logger.error("could not record the boot beside the outbox; a corrupt outbox could repeat boot numbers", metadata: [
                "error": "\(error)",
            ])
        }
        do {
            self.previousBoot = try database.read { db in try OutboxStore.previousBoot(db) }
        } catch {
            throw Self.openError(error, path: path)
        }
        acknowledgementConnection = AcknowledgementConnection(path: path, reserve: reserve, walSize: walSize, logger: logger)
        let reserveOutcome = reservePresence.ensure()
        if case let .failed(failure) = reserveOutcome, !failure.isLackOfSpace {
            // Not a full disk: holding the outbox at its size would only drop data.
            state.withLock { $0.reserveProblem = failure }
            logger.error("""
                outbox: cannot create the reserve file \(reserve.path) (\(failure)); this is not a full disk. \
                The outbox keeps buffering within its configured limits, without the reserve: should the disk \
                ever fill up, it may not be able to drop old messages to make room. Fix: \(failure.remedy); \
                the outbox tries again at every stats interval and makes the reserve by itself
                """)
        } else if reserveOutcome != .present, let meta = try? database.read({ db in try Meta.fetch(db) }) {
            // The disk is (nearly) full: stay at the current size until there is room.
            state.withLock { $0.diskFullCeiling = meta.bufferedBytes }
            logger.warning(Self.holdingWarning(reserve, reserveOutcome), metadata: ["bytes": "\(meta.bufferedBytes)"])
        }
        logger.info("outbox open", metadata: [
            "boot": "\(boot)", "synchronous": "\(settings.synchronous.rawValue)",
            "policy": "\(settings.dropPolicy.rawValue)",
            "integrity_check": "\(checkingFirst ? "done" : "in the background")",
        ])
        backgroundCheck = checkingFirst ? nil : BackgroundIntegrityCheck(path: path) { [logger] outcome in
            Self.report(outcome, path: path, marker: marker, logger: logger)
        }
    }

    deinit {
        backgroundCheck?.cancel()
        // Explicitly first: the second connection closes while the outbox's lock is still
        // held (`lock` is let go only after this body, with the stored properties).
        acknowledgementConnection?.close()
    }

    private static func describe(_ outcome: ReserveFile.Outcome, reserve: ReserveFile) -> String {
        switch outcome {
        case .present: "present"
        case let .noRoom(free): "\(free) bytes free, it needs \(2 * reserve.size)"
        case let .failed(failure): "\(failure)"
        }
    }

    /// Why the outbox runs without its reserve file although the disk is not full (it could
    /// not be made: permissions, a read-only filesystem, ...), with the fix; nil when the
    /// reserve is there or missing only for lack of space (a full disk, handled by itself).
    /// For the gateway's status line.
    public var reserveProblem: String? {
        state.withLock { $0.reserveProblem }.map { "no reserve file \(reserve.path) (\($0)): \($0.remedy)" }
    }

    /// The disk is (nearly) full and the reserve could not be made (`outcome`): stay at the
    /// current size, `bufferedBytes`, until there is room (``liftDiskFullCeilingIfRoom()``).
    private func holdAtCurrentSize(_ bufferedBytes: Int64, noReserveBecause outcome: ReserveFile.Outcome) {
        state.withLock { $0.diskFullCeiling = bufferedBytes }
        logger.warning(Self.holdingWarning(reserve, outcome), metadata: ["bytes": "\(bufferedBytes)"])
    }

    /// The warning of an outbox held at its size for want of room for its reserve.
    private static func holdingWarning(_ reserve: ReserveFile, _ outcome: ReserveFile.Outcome) -> Logger.Message {
        """
        outbox: cannot create the reserve file \(reserve.path) (\(reserve.size) bytes; \
        \(describe(outcome, reserve: reserve))): holding the outbox at its current size, \
        and without the reserve a full disk may stop even the drops that make room. Fix: free at least \
        \(2 * reserve.size) bytes on the filesystem holding the outbox; the outbox then creates the \
        reserve and lifts the limit by itself
        """
    }

    /// While a drop episode is open (messages are being dropped, and no append has
    /// succeeded without dropping since): `DROPPING (<reasons>) since <UTC time>`, for the
    /// gateway's status line; nil otherwise.
    public var dropping: String? {
        state.withLock { $0.episode }.map { episode in
            "DROPPING (\(episode.reasons.map(\.rawValue).joined(separator: ","))) since "
                + "\(Self.utcTimestamp(episode.started)), \(episode.dropped) dropped"
        }
    }

    /// Tries again to make a reserve that could not be made for a reason other than space.
    private func retryReserveIfUnavailable() async {
        guard state.withLock({ $0.reserveProblem != nil }) else { return }
        let outcome = reservePresence.ensure()
        switch outcome {
        case .present:
            state.withLock { $0.reserveProblem = nil }
            logger.info("outbox: made the reserve file \(reserve.path); a full disk is handled again")
        case let .failed(failure) where !failure.isLackOfSpace:
            state.withLock { $0.reserveProblem = failure }
        case .noRoom, .failed:
            // The old cause is fixed, but the disk is now short of space: from here on as a
            // start on a (nearly) full disk, whose recovery makes the reserve once there is
            // room. The old cause's text must not stay on the status line.
            state.withLock { $0.reserveProblem = nil }
            let buffered = (try? await database.read { db in try Meta.fetch(db) })?.bufferedBytes
            if let buffered, state.withLock({ $0.diskFullCeiling == nil }) {
                holdAtCurrentSize(buffered, noReserveBecause: outcome)
            }
        }
    }

    /// What the integrity check found: `.ok` when the file was checked before opening;
    /// `.checking` while a big file is checked in the background, then its outcome.
    ///
    /// Damage found in the background does not stop the outbox: what is readable is still
    /// forwarded and new messages are still committed; the error log names the file and the
    /// fix, the statistics carry the finding, and `<path>.check-failed` makes the next start
    /// check the file first and move it aside (`<path>.corrupt-<UTC timestamp>`) as at open.
    public var integrity: OutboxIntegrity { backgroundCheck?.integrity ?? .ok }

    private static func report(_ outcome: OutboxIntegrity, path: String, marker: FailedCheckMarker, logger: Logger) {
        switch outcome {
        case .checking, .ok:
            logger.info("outbox integrity check passed")
        case let .corrupt(findings):
            var recorded = "recorded in \(marker.path)"
            do {
                try marker.record(findings)
            } catch {
                recorded = "could not record it in \(marker.path) (\(error)): stop the gateway and move the file aside by hand"
            }
            logger.error("""
                outbox file \(path) is corrupt (found by the integrity check after start); the gateway keeps \
                forwarding what is readable and buffering new messages. Fix: restart the gateway once the backlog \
                has drained, or as soon as it stops draining (reads of the damaged rows fail): it moves the file \
                aside to \(path).corrupt-<UTC timestamp>, keeping what was not sent in it, and starts a fresh \
                outbox (\(recorded))
                """, metadata: ["findings": "\(findings.prefix(5).joined(separator: "; "))"])
        case let .unchecked(reason):
            logger.warning("outbox integrity check could not finish; the file is checked again at the next start", metadata: [
                "reason": "\(reason)",
            ])
        }
    }

    // MARK: - Append

    /// Commits all drafts in one transaction (group commit: the caller batches), assigning
    /// consecutive seqs of this boot in order, then enforces the capacity limits.
    ///
    /// Returns the messages that are in the outbox now, in id order. With `drop_newest` a full
    /// outbox rejects drafts; with `drop_oldest` a batch larger than the limits pushes out its own
    /// first messages. Either way every dropped message is counted, its seq stays consumed and
    /// a gap is recorded. Messages older than `maxAge` are dropped here too.
    ///
    /// On a full disk or an I/O error the outbox checkpoints the WAL and, with `drop_oldest`,
    /// drops the oldest messages (reason `disk_full`) until the batch fits. It throws only when
    /// nothing of the batch could be committed; that loss is counted and recorded as a gap
    /// (in the next transaction that succeeds, if the disk has no room even for that), with
    /// reason `io_error` also when the commit failed for another reason (a read-only file, ...).
    /// A write lock another connection holds past the busy timeout is waited for, however long
    /// (logged every 30 s, WriteLockWait.swift): never a loss.
    /// It throws `CancellationError` when the calling task is cancelled before the batch
    /// commits: then nothing of it is committed or counted.
    public func append(_ drafts: [OutboxDraft]) async throws -> [OutboxMessage] {
        guard !drafts.isEmpty else { return [] }
        var dropRounds = 0
        var rowsToFree = max(drafts.count, 64)
        var truncatedWAL = false
        liftDiskFullCeilingIfRoom()
        await writeUnwrittenGaps()
        var lockWait: WriteLockWait?
        while true {
            let attempt = ContinuousClock.now
            let loss = takeUnrecordedLoss()
            do {
                let (committed, ledger, acknowledged) = try await database.writeWithoutTransaction { db in
                    try self.appendOnWriter(db, drafts: drafts, unrecordedLoss: loss)
                }
                appended(ledger, unrecordedLoss: loss, acknowledged: acknowledged)
                lockWait?.ended()
                // A background integrity check holds a snapshot: the WAL cannot reset until
                // it ends, and a truncating checkpoint would only wait for it.
                if walSize.bytes > reserve.walLimitBytes, integrity != .checking {
                    // SQLite's own checkpoints are failing: the disk is filling up.
                    await truncateWAL(releasingReserveIfNeeded: true)
                }
                return committed
            } catch {
                putBackUnrecordedLoss(loss)
                if error is CancellationError { throw error }  // nothing committed, nothing counted
                if Self.isLockContention(error) {
                    // Another connection holds the write lock past the busy timeout: wait for
                    // it, nothing committed, nothing counted (WriteLockWait.swift).
                    if lockWait == nil {
                        lockWait = WriteLockWait(doing: "committing \(drafts.count) messages", path: settings.path, logger: logger)
                    }
                    lockWait?.busy(since: attempt, error: error)
                    try await Task.sleep(for: WriteLockWait.pause)
                    continue
                }
                guard let reason = Self.storageFailure(error) else {
                    // Not the disk (read-only, ...), no recovery to try: the batch is lost
                    // all the same, and counted.
                    await recordLoss(Int64(drafts.count), reason: .ioError)
                    throw Self.operationError(error, path: settings.path, doing: "committing \(drafts.count) messages")
                }
                if !truncatedWAL {
                    truncatedWAL = true
                    // The background check's snapshot would keep the truncating checkpoint
                    // waiting (and the WAL growing): the disk comes first; the file is
                    // checked again at the next start.
                    if integrity == .checking { backgroundCheck?.cancel() }
                    await setDiskFullCeiling(margin: Self.estimatedBytes(drafts))
                    await truncateWAL(releasingReserveIfNeeded: true)
                    continue
                }
                if settings.dropPolicy == .dropOldest, dropRounds < 16,
                   await makeRoom(droppingOldest: rowsToFree, reason: reason) > 0
                {
                    dropRounds += 1
                    rowsToFree *= 2
                    continue
                }
                await recordLoss(Int64(drafts.count), reason: reason)
                let kind: OutboxError.Kind = reason == .diskFull ? .diskFull : .ioError
                throw OutboxError(
                    kind, path: settings.path,
                    what: "could not commit \(drafts.count) messages; they are counted as dropped (\(reason.rawValue))",
                    remedy: reason == .diskFull
                        ? "Free space on the filesystem holding the outbox, or lower buffer.max_bytes; the outbox recovers by itself."
                        : "Check the storage device (dmesg, SMART); the outbox retries with the next batch.",
                    underlying: "\(error)")
            }
        }
    }

    /// Commits `drafts` as ``append(_:)`` does, synchronously on the calling thread, when the
    /// outbox needs none of its recovery: GRDB's synchronous write (a `DispatchQueue.sync`:
    /// on the calling thread when no other write is under way, else after it). It blocks
    /// for the commit (with `sync: full`, its fsync): call it only from a thread of your own
    /// that may block (a bus thread), never from Swift's cooperative pool.
    ///
    /// Returns ``ImmediateAppend/needsAppend`` (nothing of `drafts` committed, no seq
    /// consumed, nothing counted) when the outbox holds itself below a full disk, gap records
    /// wait to be written, its reserve file is gone (given back on a full disk; a reserve that
    /// cannot be made at all, ``reserveProblem``, does not count), the WAL is over its limit, or the commit
    /// failed: pass the same drafts to
    /// ``append(_:)``, which truncates the WAL, makes room and counts losses.
    public func appendOnCallingThread(_ drafts: [OutboxDraft]) -> ImmediateAppend {
        guard !drafts.isEmpty else { return .committed([]) }
        // Gap records a full disk kept from being written go with the async append only.
        guard state.withLock({ $0.diskFullCeiling == nil && $0.unwrittenGaps.total == 0 }),
              reservePresence.isPresent || state.withLock({ $0.reserveProblem != nil }),
              walSize.bytes <= reserve.walLimitBytes || integrity == .checking
        else { return .needsAppend }
        let loss = takeUnrecordedLoss()
        do {
            let (committed, ledger, acknowledged) = try database.writeWithoutTransaction { db in
                try self.appendOnWriter(db, drafts: drafts, unrecordedLoss: loss)
            }
            appended(ledger, unrecordedLoss: loss, acknowledged: acknowledged)
            return .committed(committed)
        } catch {
            putBackUnrecordedLoss(loss)
            logger.debug("outbox: the synchronous append failed; handing the batch to append", metadata: [
                "messages": "\(drafts.count)", "error": "\(error)",
            ])
            return .needsAppend
        }
    }

    /// On the writer, outside a transaction: the append's transaction, with the acknowledged
    /// ids queued for it. Returns the rows committed, the drops and how many ids it took.
    private func appendOnWriter(
        _ db: Database, drafts: [OutboxDraft], unrecordedLoss loss: [(reason: DropReason, count: Int64)]
    ) throws -> ([OutboxMessage], DropLedger, Int) {
        // Checked on the writer, after any delete queued before this append: a
        // delete that could not set synchronous back to FULL leaves it pending.
        if state.withLock({ $0.fullSyncPending }) {
            try db.execute(sql: "PRAGMA synchronous = FULL")
            state.withLock { $0.fullSyncPending = false }
        }
        // Acknowledged rows go in this transaction, before the limits look at
        // the outbox: no acknowledged row is ever counted as dropped.
        let acknowledged = pendingAcknowledgements.take()
        do {
            let (committed, ledger) = try db.inCachedTransaction {
                try appendTransaction(db, drafts: drafts, unrecordedLoss: loss, acknowledged: acknowledged)
            }
            return (committed, ledger, acknowledged.count)
        } catch {
            walSize.writeFailed()
            follow(pendingAcknowledgements.putBack(acknowledged))
            throw error
        }
    }

    /// After an append's transaction committed: its observers and its drop log.
    private func appended(_ ledger: DropLedger, unrecordedLoss loss: [(reason: DropReason, count: Int64)],
                          acknowledged: Int) {
        pendingAcknowledgements.finished(acknowledged)
        noteDrops(ledger, alreadyNoted: loss, appendSucceeded: true)
        gapObserver.committed(ledger)
    }

    private func appendTransaction(
        _ db: Database, drafts: [OutboxDraft], unrecordedLoss: [(reason: DropReason, count: Int64)],
        acknowledged: [Int64]
    ) throws -> ([OutboxMessage], DropLedger) {
        var meta = try Meta.fetch(db)
        if !acknowledged.isEmpty {
            _ = try Self.deleteAcknowledged(db, ranges: Self.contiguousRanges(acknowledged), meta: &meta)
        }
        let createdAt = now().outboxMilliseconds
        let ceiling = state.withLock { $0.diskFullCeiling }
        var ledger = DropLedger()
        Self.consumeSeqs(for: unrecordedLoss, meta: &meta, ledger: &ledger)

        if let maxAge = settings.maxAge {
            let age = MessageAge(maxAge: Self.milliseconds(maxAge), wallNow: createdAt, measuredNow: measuring?())
            _ = try OutboxStore.dropOldest(db, meta: &meta, ledger: &ledger) { _, row in
                age.expired(row) ? .maxAge : nil
            }
        }

        var committed: [OutboxMessage] = []
        committed.reserveCapacity(drafts.count)
        // Every draft takes the next seq, stored or not: payloads can be rendered
        // (encoded, sealed) on another thread while this one inserts.
        let renderer = PayloadRenderer(drafts, boot: meta.boot, firstSeq: meta.nextSeq)
        defer { renderer.waitUntilDone() }
        for (index, draft) in drafts.enumerated() {
            let seq = meta.nextSeq
            meta.nextSeq += 1
            let payload = renderer.payload(at: index)
            let size = Int64(payload.count + draft.topic.utf8.count)
            if let reason = rejection(size: size, meta: meta, ceiling: ceiling) {
                ledger.add(boot: meta.boot, seq: seq, reason: reason)
                meta.countDropped(1)
                continue
            }
            let id = try OutboxStore.insert(
                db, boot: meta.boot, seq: seq, topic: draft.topic, qos: draft.qos,
                createdAt: createdAt, size: size, payload: payload, measured: draft.measured)
            meta.bufferedMessages += 1
            meta.bufferedBytes += size
            meta.committedTotal += 1
            meta.committedThisBoot += 1
            committed.append(OutboxMessage(
                id: id, boot: meta.boot, seq: seq, topic: draft.topic, qos: draft.qos,
                payload: payload, createdAt: Date(outboxMilliseconds: createdAt), measured: draft.measured))
        }

        if settings.dropPolicy == .dropOldest, overLimit(meta, ceiling: ceiling) != nil {
            let lastDropped = try OutboxStore.dropOldest(db, meta: &meta, ledger: &ledger) { meta, _ in
                self.overLimit(meta, ceiling: ceiling)
            }
            if let lastDropped {
                committed.removeAll { $0.id <= lastDropped }
            }
        }

        try OutboxStore.recordGaps(db, ledger: ledger, now: createdAt)
        try meta.save(db)
        return (committed, ledger)
    }

    /// Why an incoming message of `size` bytes cannot be stored, if it cannot.
    private func rejection(size: Int64, meta: Meta, ceiling: Int64?) -> DropReason? {
        if let maxBytes = settings.maxBytes, size > maxBytes {
            return .maxBytes  // could never fit, whatever the policy
        }
        guard settings.dropPolicy == .dropNewest else { return nil }
        if let maxMessages = settings.maxMessages, meta.bufferedMessages + 1 > maxMessages {
            return .maxMessages
        }
        if let maxBytes = settings.maxBytes, meta.bufferedBytes + size > maxBytes {
            return .maxBytes
        }
        if let ceiling, meta.bufferedBytes + size > ceiling {
            return .diskFull
        }
        return nil
    }

    /// The limit the outbox is over, if any.
    private func overLimit(_ meta: Meta, ceiling: Int64?) -> DropReason? {
        if let maxMessages = settings.maxMessages, meta.bufferedMessages > maxMessages {
            return .maxMessages
        }
        if let maxBytes = settings.maxBytes, meta.bufferedBytes > maxBytes {
            return .maxBytes
        }
        if let ceiling, meta.bufferedBytes > ceiling {
            return .diskFull
        }
        return nil
    }

    private static func consumeSeqs(
        for loss: [(reason: DropReason, count: Int64)], meta: inout Meta, ledger: inout DropLedger
    ) {
        for (reason, count) in loss where count > 0 {
            let first = meta.nextSeq
            meta.nextSeq += count
            ledger.add(boot: meta.boot, firstSeq: first, lastSeq: meta.nextSeq - 1, reason: reason)
            meta.countDropped(count)
        }
    }

    // MARK: - Disk full

    private static func storageFailure(_ error: any Error) -> DropReason? {
        guard let error = error as? DatabaseError else { return nil }
        switch error.resultCode {
        case .SQLITE_FULL: return .diskFull
        case .SQLITE_IOERR: return .ioError
        default: return nil
        }
    }

    private static func estimatedBytes(_ drafts: [OutboxDraft]) -> Int64 {
        // Payloads are not rendered yet; the topic and a typical payload are a fair guess.
        drafts.reduce(0) { $0 + Int64($1.topic.utf8.count + 256) }
    }

    /// The disk is full: from now on hold the outbox below its current size (minus room for
    /// this batch), so drops reuse free pages inside the file instead of growing it.
    private func setDiskFullCeiling(margin: Int64) async {
        guard state.withLock({ $0.diskFullCeiling == nil }) else { return }
        guard let meta = try? await database.read({ db in try Meta.fetch(db) }) else { return }
        let ceiling = max(0, meta.bufferedBytes - margin)
        state.withLock { $0.diskFullCeiling = ceiling }
        logger.warning("outbox: the disk is full; holding the outbox below its current size", metadata: [
            "bytes": "\(ceiling)", "policy": "\(settings.dropPolicy.rawValue)",
        ])
    }

    /// Lifts the disk-full ceiling once the reserve file could be made again. Without a
    /// reserve that cannot be made for another reason than space (``reserveProblem``): once
    /// the outbox's filesystem has the room making it would ask for (twice its size), and
    /// without trying to make it here, on every append on Swift's pool (``statistics()``
    /// tries again at every stats interval).
    private func liftDiskFullCeilingIfRoom() {
        let (ceiling, cannotBeMade) = state.withLock { ($0.diskFullCeiling != nil, $0.reserveProblem != nil) }
        if cannotBeMade {
            guard ceiling, case let .success(free) = ReserveFile.freeBytes(onFilesystemHolding: settings.path),
                  free >= 2 * reserve.size
            else { return }
        } else {
            guard ceiling || !reservePresence.isPresent else { return }
            guard reservePresence.ensure() == .present else { return }
        }
        let lifted = state.withLock { state in
            defer { state.diskFullCeiling = nil }
            return state.diskFullCeiling != nil
        }
        if lifted {
            logger.info("outbox: the disk has room again; capacity limits are back to the configured ones")
        }
    }

    /// Checkpoints the WAL into the database file and truncates it. When the disk has no room
    /// for that, gives back the reserve file first (see `ReserveFile`).
    private func truncateWAL(releasingReserveIfNeeded: Bool) async {
        do {
            try await database.writeWithoutTransaction { db in try self.truncatingCheckpoint(db) }
        } catch {
            guard releasingReserveIfNeeded, Self.storageFailure(error) != nil, reservePresence.release() else {
                logger.debug("outbox checkpoint failed", metadata: ["error": "\(error)"])
                return
            }
            await setDiskFullCeiling(margin: reserve.size / 4)
            logger.warning("outbox: disk full, released the reserve file to checkpoint the WAL", metadata: [
                "reserve": "\(reserve.path)", "error": "\(error)",
            ])
            await checkpoint()
        }
    }

    private func checkpoint() async {
        do {
            try await database.writeWithoutTransaction { db in try self.truncatingCheckpoint(db) }
        } catch {
            logger.debug("outbox checkpoint failed", metadata: ["error": "\(error)"])
        }
    }

    /// On the writer: checkpoints the whole WAL and truncates it to nothing.
    private func truncatingCheckpoint(_ db: Database) throws {
        do {
            _ = try db.checkpoint(.truncate)
            walSize.truncated()
        } catch {
            walSize.writeFailed()
            throw error
        }
    }

    /// Drops up to `rows` oldest messages to free space in the file; returns how many went.
    private func makeRoom(droppingOldest rows: Int, reason: DropReason) async -> Int64 {
        await checkpoint()
        let loss = takeUnrecordedLoss()
        // Acknowledged rows go first, in their own transaction: never counted as dropped.
        await deleteQueuedAcknowledgements()
        do {
            let ledger = try await database.write { db in
                var meta = try Meta.fetch(db)
                var ledger = DropLedger()
                Self.consumeSeqs(for: loss, meta: &meta, ledger: &ledger)
                var remaining = rows
                _ = try OutboxStore.dropOldest(db, meta: &meta, ledger: &ledger) { _, _ in
                    guard remaining > 0 else { return nil }
                    remaining -= 1
                    return reason
                }
                try OutboxStore.recordGaps(db, ledger: ledger, now: self.now().outboxMilliseconds)
                try meta.save(db)
                return ledger
            }
            noteDrops(ledger, alreadyNoted: loss, appendSucceeded: false)
            gapObserver.committed(ledger)
            await checkpoint()
            return ledger.total - Self.total(loss)
        } catch {
            putBackUnrecordedLoss(loss)
            logger.debug("outbox could not drop messages to make room", metadata: ["error": "\(error)"])
            return 0
        }
    }

    /// Counts `count` messages that could not be committed: they get seqs and a gap record
    /// now if the file takes it, else in the next transaction that succeeds.
    private func recordLoss(_ count: Int64, reason: DropReason) async {
        let loss = noteLoss(count, reason: reason)
        do {
            try await writeWaitingForLock(doing: "recording the loss of \(count) messages") { db in
                var meta = try Meta.fetch(db)
                var ledger = DropLedger()
                Self.consumeSeqs(for: loss, meta: &meta, ledger: &ledger)
                try OutboxStore.recordGaps(db, ledger: ledger, now: self.now().outboxMilliseconds)
                try meta.save(db)
            }
            gapObserver.recorded()
        } catch {
            await countInMetaAlone(loss)
        }
    }

    /// Counts `count` messages that were never offered to ``append(_:)`` and never will be
    /// (the gateway is shutting down and nobody can commit them any more): their seqs are
    /// consumed and a gap with `reason` is recorded, in one transaction on the calling thread;
    /// with no room for the gap record, the count and the seqs go into the meta row alone
    /// (as `append` does on a full disk). It blocks like ``appendOnCallingThread(_:)``: call
    /// it from a thread of your own; a caller that must not block passes `writingNow: false`.
    /// Returns where the loss is (``LossRecord``): with ``LossRecord/inMemoryOnly`` it waits,
    /// counted by ``statistics()``, for the next transaction that succeeds. A write lock
    /// another connection holds is waited for, up to 30 s (WriteLockWait.swift).
    @discardableResult
    public func recordLossOnCallingThread(_ count: Int, reason: DropReason, writingNow: Bool = true) -> LossRecord {
        guard count > 0 else { return .gapRecorded }
        let loss = noteLoss(Int64(count), reason: reason)
        guard writingNow else {
            putBackUnrecordedLoss(loss)
            return .inMemoryOnly
        }
        do {
            let ledger = try writeWaitingForLock(doing: "recording the loss of \(count) messages", patience: .seconds(30)) { db in
                var meta = try Meta.fetch(db)
                var ledger = DropLedger()
                Self.consumeSeqs(for: loss, meta: &meta, ledger: &ledger)
                try OutboxStore.recordGaps(db, ledger: ledger, now: self.now().outboxMilliseconds)
                try meta.save(db)
                return ledger
            }
            gapObserver.committed(ledger)
            return .gapRecorded
        } catch {
            do {
                let ledger = try database.write { db in try Self.countInMeta(db, loss) }
                state.withLock { $0.unwrittenGaps.append(ledger) }
                return .countedWithoutGapRecord
            } catch {
                putBackUnrecordedLoss(loss)
                return .inMemoryOnly
            }
        }
    }

    /// Logs the loss of `count` messages (once per drop episode) and adds it to the losses
    /// not yet written; returns all of those, taken for the caller to write.
    private func noteLoss(_ count: Int64, reason: DropReason) -> [(reason: DropReason, count: Int64)] {
        noteDrops(total: count, reasons: [reason], appendSucceeded: false)
        state.withLock { state in
            if let last = state.unrecordedLoss.last, last.reason == reason {
                state.unrecordedLoss[state.unrecordedLoss.count - 1].count += count
            } else {
                state.unrecordedLoss.append((reason, count))
            }
        }
        return takeUnrecordedLoss()
    }

    /// No room for gap records: counts `loss` and consumes its seqs in the meta row alone (one
    /// page, as the start of a boot writes), so that a restart before the disk has room again
    /// does not lose it: the counters say it, and the next boot's `previousBoot` covers its
    /// seqs. The gap records follow in a transaction of their own once there is room.
    /// If even that fails, the loss waits in memory for the next transaction that succeeds.
    private func countInMetaAlone(_ loss: [(reason: DropReason, count: Int64)]) async {
        do {
            let ledger = try await database.write { db in try Self.countInMeta(db, loss) }
            state.withLock { $0.unwrittenGaps.append(ledger) }
        } catch {
            putBackUnrecordedLoss(loss)
        }
    }

    /// In a write: consumes the seqs of `loss` and counts it in the meta row, nothing else;
    /// returns the gap records still to write.
    private static func countInMeta(_ db: Database, _ loss: [(reason: DropReason, count: Int64)]) throws -> DropLedger {
        var meta = try Meta.fetch(db)
        var ledger = DropLedger()
        consumeSeqs(for: loss, meta: &meta, ledger: &ledger)
        try meta.save(db)
        return ledger
    }

    /// Writes the gap records `countInMetaAlone` could not, in a transaction of their own;
    /// they wait for the next try while the disk has no room.
    private func writeUnwrittenGaps() async {
        let ledger = state.withLock { state -> DropLedger? in
            guard state.unwrittenGaps.total > 0 else { return nil }
            defer { state.unwrittenGaps = DropLedger() }
            return state.unwrittenGaps
        }
        guard let ledger else { return }
        do {
            try await database.write { db in
                try OutboxStore.recordGaps(db, ledger: ledger, now: self.now().outboxMilliseconds)
            }
            gapObserver.committed(ledger)
        } catch {
            state.withLock { state in
                var merged = ledger
                merged.append(state.unwrittenGaps)
                state.unwrittenGaps = merged
            }
        }
    }

    private static func total(_ loss: [(reason: DropReason, count: Int64)]) -> Int64 {
        loss.reduce(0) { $0 + $1.count }
    }

    private func takeUnrecordedLoss() -> [(reason: DropReason, count: Int64)] {
        state.withLock { state in
            defer { state.unrecordedLoss = [] }
            return state.unrecordedLoss
        }
    }

    private func putBackUnrecordedLoss(_ loss: [(reason: DropReason, count: Int64)]) {
        guard !loss.isEmpty else { return }
        state.withLock { state in
            state.unrecordedLoss = loss + state.unrecordedLoss
        }
    }

    /// Logs drops once per episode: a warning when dropping starts, an info with the count
    /// when an append succeeds without dropping.
    private func noteDrops(
        _ ledger: DropLedger, alreadyNoted: [(reason: DropReason, count: Int64)], appendSucceeded: Bool
    ) {
        noteDrops(total: ledger.total - Self.total(alreadyNoted), reasons: ledger.reasons, appendSucceeded: appendSucceeded)
    }

    private func noteDrops(total: Int64, reasons: [DropReason], appendSucceeded: Bool) {
        let clock = now()
        enum Note { case started([DropReason], Int64), ended(MemoryState.Episode), none }
        let note: Note = state.withLock { state in
            if total > 0 {
                if var episode = state.episode {
                    episode.dropped += total
                    for reason in reasons where !episode.reasons.contains(reason) {
                        episode.reasons.append(reason)
                    }
                    state.episode = episode
                    return .none
                }
                state.episode = .init(started: clock, dropped: total, reasons: reasons)
                return .started(reasons, total)
            }
            if appendSucceeded, let episode = state.episode {
                state.episode = nil
                return .ended(episode)
            }
            return .none
        }
        switch note {
        case .started(let reasons, let count):
            logger.warning("outbox is dropping messages", metadata: [
                "reason": "\(reasons.map(\.rawValue).joined(separator: ","))",
                "policy": "\(settings.dropPolicy.rawValue)", "dropped": "\(count)",
            ])
        case .ended(let episode):
            let seconds = max(0, clock.timeIntervalSince(episode.started))
            logger.info("outbox stopped dropping messages", metadata: [
                "dropped": "\(episode.dropped)",
                "reason": "\(episode.reasons.map(\.rawValue).joined(separator: ","))",
                "duration_s": "\(String(format: "%.1f", seconds))",
            ])
        case .none:
            break
        }
    }

    // MARK: - Lease, acknowledge

    /// Up to `max` oldest messages with id greater than `id`, in id order. Deletes nothing
    /// but the acknowledged rows still queued for deletion (first): a lease never returns a
    /// row the broker acknowledged.
    public func lease(after id: Int64, max: Int) async throws -> [OutboxMessage] {
        guard max > 0 else { return [] }
        // Only when the lease would read such a row (after a reconnect): a replay's leases,
        // past every acknowledged row, take no extra transaction.
        if pendingAcknowledgements.contains(after: id) { await deleteQueuedAcknowledgements() }
        do {
            // One SELECT reads one snapshot of the file by itself (whatever the second
            // connection, `AcknowledgementConnection`, commits meanwhile is in it or not,
            // never half): no read-only transaction is needed around it (GRDB's `read` adds
            // `PRAGMA query_only` and BEGIN/COMMIT to every lease).
            return try await database.unsafeRead { db in
                let statement = try db.cachedStatement(sql: """
                    SELECT id, boot, seq, topic, qos, created_at, payload,
                           boottime_ns, kernel_boot_id, clock_synchronised FROM message
                    WHERE id > ? ORDER BY id LIMIT ?
                    """)
                var messages: [OutboxMessage] = []
                messages.reserveCapacity(Swift.min(max, 4096))
                // A batch repeats a few topics and one kernel boot id: one String each,
                // not one allocation per row.
                var topics = RepeatedText()
                var bootIDs = RepeatedText()
                let rows = try Row.fetchCursor(statement, arguments: [id, max])
                while let row = try rows.next() {
                    let payload = try row.withUnsafeData(atIndex: 6) { data in data.map { [UInt8]($0) } ?? [] }
                    let topic = try topics.text(of: row, at: 3) ?? ""
                    let measured = OutboxStore.measured(boottime: row[7], kernelBootID: try bootIDs.text(of: row, at: 8),
                                                        synchronised: row[9])
                    messages.append(OutboxMessage(
                        id: row[0], boot: row[1], seq: row[2], topic: topic,
                        qos: UInt8(clamping: row[4] as Int64),
                        payload: payload, createdAt: Date(outboxMilliseconds: row[5]), measured: measured))
                }
                return messages
            }
        } catch {
            throw Self.operationError(error, path: settings.path, doing: "reading messages to publish")
        }
    }

    /// The highest id ever committed (0 for a new file). Ids are never reused, so
    /// everything committed later has a greater id.
    public func newestID() async throws -> Int64 {
        do {
            // One statement on the writer's queue: consistent without a transaction (see `lease`).
            return try await database.unsafeRead { db in
                try Int64.fetchOne(db, sql: "SELECT seq FROM sqlite_sequence WHERE name = 'message'") ?? 0
            }
        } catch {
            throw Self.operationError(error, path: settings.path, doing: "reading the newest message id")
        }
    }

    /// On the writer, outside a transaction: deletes `ranges` in a transaction of their own.
    /// Unknown ids are ignored: duplicate acks and acks of messages dropped meanwhile are normal.
    ///
    /// The delete is committed without its own fsync (`synchronous = NORMAL` for this
    /// transaction, also with `sync: full`): a crash of the process loses nothing of it, and
    /// a power cut can only undo deletes since the last synced commit (every append with
    /// `sync: full` syncs the WAL up to its end), which sends those messages again: a
    /// duplicate, never a loss. Saves one fsync per batch of acknowledgements.
    func deleteAcknowledgedRelaxed(_ db: Database, ranges: [ClosedRange<Int64>]) throws {
        guard settings.synchronous == .full else {
            try db.inCachedTransaction { try Self.deleteAcknowledged(db, ranges: ranges) }
            return
        }
        try db.cachedStatement(sql: "PRAGMA synchronous = NORMAL").execute()
        let deleted = Result { try db.inCachedTransaction { try Self.deleteAcknowledged(db, ranges: ranges) } }
        do {
            try db.cachedStatement(sql: "PRAGMA synchronous = FULL").execute()
        } catch {
            // The next append sets it again before it commits anything.
            state.withLock { $0.fullSyncPending = true }
            throw error
        }
        try deleted.get()
    }

    /// `PRAGMA synchronous` of the writing connection now (2 = FULL, 1 = NORMAL): what the
    /// next append commits with. For tests of the deletes of acknowledged rows.
    func synchronousLevel() async throws -> Int? {
        try await database.read { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }
    }

    /// Deletes the rows of `ranges` and books them as acknowledged in the meta row.
    static func deleteAcknowledged(_ db: Database, ranges: [ClosedRange<Int64>]) throws {
        var meta = try Meta.fetch(db)
        guard try deleteAcknowledged(db, ranges: ranges, meta: &meta) else { return }
        try meta.save(db)
    }

    /// Deletes the rows of `ranges` and books them in `meta` (not saved); returns whether any went.
    private static func deleteAcknowledged(_ db: Database, ranges: [ClosedRange<Int64>], meta: inout Meta) throws -> Bool {
        let delete = try db.cachedStatement(sql: "DELETE FROM message WHERE id BETWEEN ? AND ? RETURNING size")
        var count: Int64 = 0
        var bytes: Int64 = 0
        for range in ranges {
            let sizes = try Int64.fetchCursor(delete, arguments: [range.lowerBound, range.upperBound])
            while let size = try sizes.next() {
                count += 1
                bytes += size
            }
        }
        guard count > 0 else { return false }
        meta.bufferedMessages -= count
        meta.bufferedBytes -= bytes
        meta.acknowledgedTotal += count
        meta.acknowledgedThisBoot += count
        return true
    }

    /// Drops messages that MQTT can never carry (a topic or payload beyond the protocol's
    /// limits), in one transaction: counted as dropped and recorded as a gap with reason
    /// `unpublishable`, so consumers see a reported loss instead of a backlog that never
    /// drains. Unknown ids (acknowledged or dropped meanwhile) are ignored.
    public func discardUnpublishable(_ ids: [Int64]) async throws {
        guard !ids.isEmpty else { return }
        do {
            let ledger = try await database.write { db in
                var meta = try Meta.fetch(db)
                var ledger = DropLedger()
                try OutboxStore.delete(db, ids: ids.sorted(), meta: &meta, ledger: &ledger, reason: .unpublishable)
                try OutboxStore.recordGaps(db, ledger: ledger, now: self.now().outboxMilliseconds)
                try meta.save(db)
                return ledger
            }
            noteDrops(ledger, alreadyNoted: [], appendSucceeded: false)
            gapObserver.committed(ledger)
        } catch {
            throw Self.operationError(error, path: settings.path, doing: "dropping \(ids.count) unpublishable messages")
        }
    }

    /// Sorted, de-duplicated ids as closed ranges of consecutive ids.
    static func contiguousRanges(_ ids: [Int64]) -> [ClosedRange<Int64>] {
        let sorted = ids.sorted()
        var ranges: [ClosedRange<Int64>] = []
        var start = sorted[0]
        var end = sorted[0]
        for id in sorted.dropFirst() where id != end {
            if id == end + 1 {
                end = id
            } else {
                ranges.append(start...end)
                start = id
                end = id
            }
        }
        ranges.append(start...end)
        return ranges
    }

    // MARK: - Gaps, statistics

    /// Gaps recorded but not yet reported upstream, oldest first.
    public func pendingGaps() async throws -> [OutboxGap] {
        do {
            // One statement on the writer's queue: consistent without a transaction (see `lease`).
            return try await database.unsafeRead { db in
                try Row.fetchAll(db.cachedStatement(sql: """
                    SELECT id, boot, first_seq, last_seq, count, reason FROM gap ORDER BY id
                    """)).map { row in
                    OutboxGap(id: row[0], boot: row[1], firstSeq: row[2], lastSeq: row[3], count: row[4],
                              reason: DropReason(rawValue: row[5]))
                }
            }
        } catch {
            throw Self.operationError(error, path: settings.path, doing: "reading gap records")
        }
    }

    /// Removes gaps once their report was published and acknowledged. A gap that grew since
    /// it was read (the drop episode went on) keeps its unreported tail.
    public func markGapsReported(_ gaps: [OutboxGap]) async throws {
        guard !gaps.isEmpty else { return }
        do {
            try await database.write { db in
                let current = try db.cachedStatement(sql: "SELECT first_seq, last_seq FROM gap WHERE id = ?")
                let delete = try db.cachedStatement(sql: "DELETE FROM gap WHERE id = ?")
                let shrink = try db.cachedStatement(sql: """
                    UPDATE gap SET first_seq = ?, count = last_seq - ? + 1 WHERE id = ?
                    """)
                for gap in gaps {
                    guard let row = try Row.fetchOne(current, arguments: [gap.id]) else { continue }
                    let lastSeq: Int64 = row[1]
                    if lastSeq > gap.lastSeq {
                        try shrink.execute(arguments: [gap.lastSeq + 1, gap.lastSeq + 1, gap.id])
                    } else {
                        try delete.execute(arguments: [gap.id])
                    }
                }
            }
        } catch {
            throw Self.operationError(error, path: settings.path, doing: "removing reported gap records")
        }
    }

    /// The counters, read from the file (exact, including this boot's). Called at every stats
    /// interval, it also tries again to make a reserve file that could not be made
    /// (``reserveProblem``).
    public func statistics() async throws -> OutboxStatistics {
        await retryReserveIfUnavailable()
        let now = now().outboxMilliseconds
        let unrecorded = state.withLock { Self.total($0.unrecordedLoss) }
        // Rows already acknowledged but waiting for the next append to delete them are not
        // backlog: delete them first, so `bufferedMessages` and the oldest age count only
        // what is still to be sent (a monitor judges losses on an empty backlog).
        await deleteQueuedAcknowledgements()
        do {
            // Two statements (the meta row, the oldest row) in one read transaction: the
            // acknowledgement connection deletes rows off this queue, and a delete it commits
            // between them would show a backlog with no oldest age.
            var statistics = try await database.read { db in try OutboxStore.statistics(db, now: now) }
            statistics.integrity = integrity
            // Losses the full disk did not let us write down yet still count.
            statistics.dropped += unrecorded
            statistics.droppedThisBoot += unrecorded
            return statistics
        } catch {
            throw Self.operationError(error, path: settings.path, doing: "reading statistics")
        }
    }

    /// Reads the counters of an existing outbox read-only, without bumping boot: for
    /// `edge-gateway status`, also while the gateway runs. The "this boot" counters are
    /// those of the running (or last) boot.
    public static func readStatistics(path: String) throws -> OutboxStatistics {
        guard FileManager.default.fileExists(atPath: path) else {
            throw OutboxError(
                .notFound, path: path, what: "there is no outbox file",
                remedy: "Check buffer.path in gateway.yaml; the gateway creates the file on its first run.")
        }
        var configuration = Configuration()
        configuration.readonly = true
        configuration.busyMode = .timeout(5)
        configuration.label = "outbox-status"
        do {
            var queue: DatabaseQueue
            do {
                let plain = try DatabaseQueue(path: path, configuration: configuration)
                _ = try plain.read { db in try Int.fetchOne(db, sql: "PRAGMA schema_version") }
                queue = plain
            } catch let error as DatabaseError where error.resultCode == .SQLITE_CANTOPEN {
                // A read-only directory without -shm: the file cannot change under us, so
                // SQLite may read it as immutable.
                let encoded = path.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? path
                queue = try DatabaseQueue(path: "file:\(encoded)?immutable=1", configuration: configuration)
            }
            defer { try? queue.close() }
            return try queue.read { db in
                guard try db.tableExists("meta"), try db.tableExists("message") else {
                    throw OutboxError(
                        .notAnOutbox, path: path, what: "the file is an SQLite database but not an outbox",
                        remedy: "Check buffer.path in gateway.yaml.")
                }
                return try OutboxStore.statistics(db, now: Date().outboxMilliseconds)
            }
        } catch let error as OutboxError {
            throw error
        } catch {
            throw operationError(error, path: path, doing: "reading statistics")
        }
    }

    /// Whether a process (a running gateway) has the outbox at `path` open now: for
    /// `edge-gateway status`, whose figures then still count the rows that process has had
    /// acknowledged but not yet deleted (they are queued in its memory only, see
    /// ``acknowledgeWithNextWrite(_:flushAt:delay:)``).
    public static func use(path: String) -> OutboxUse {
        OutboxLock.use(ofOutboxAt: path)
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
