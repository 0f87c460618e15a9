// Writes the model's changes to the state file, off the model loop. A batch stays
// pending until its transaction commits: a write that fails (disk full, read-only
// file system) is retried with backoff, merged with the changes that come meanwhile.
import Foundation
import Logging
import Synchronization

extension ModelChanges {
    /// Adds `newer` (taken after `self`) so that writing the result stores what writing
    /// `self` and then `newer` would. Records and ledgers are whole values, so the newer
    /// one replaces the older; history is appended and kept to `historyLimit` per gateway.
    public mutating func append(_ newer: ModelChanges, historyLimit: Int) {
        let removed = Set(newer.removedLedgers)
        if !removed.isEmpty {
            ledgers.removeAll { removed.contains($0.gateway) }
            removedLedgers = Array(Set(removedLedgers).union(removed))
        }
        let newerGateways = Set(newer.gateways.map(\.id))
        gateways.removeAll { newerGateways.contains($0.id) }
        gateways += newer.gateways
        let newerLedgers = Set(newer.ledgers.map { LedgerID(gateway: $0.gateway, boot: $0.ledger.boot) })
        ledgers.removeAll { newerLedgers.contains(LedgerID(gateway: $0.gateway, boot: $0.ledger.boot)) }
        ledgers += newer.ledgers
        history += newer.history
        var kept: [String: Int] = [:]
        for entry in history { kept[entry.gateway, default: 0] += 1 }
        if kept.values.contains(where: { $0 > historyLimit }) {
            // Oldest first: drop from the front what the file would trim anyway.
            var excess = kept.mapValues { max(0, $0 - historyLimit) }
            history.removeAll { entry in
                guard let over = excess[entry.gateway], over > 0 else { return false }
                excess[entry.gateway] = over - 1
                return true
            }
        }
        ignored.merge(newer.ignored) { _, newest in newest }
    }

    private struct LedgerID: Hashable {
        var gateway: String
        var boot: Int64
    }
}

/// Owns the state file's write side: `submit` never waits; `run` writes what is pending.
public final class StateWriter: Sendable {
    /// Whether the last write committed.
    public enum Health: Sendable, Equatable {
        case writing
        /// Writes fail since `since`; the changes are kept and retried.
        case failing(since: Date)
    }

    public let store: MonitorStore
    private let historyLimit: Int
    private let logger: Logger
    private let retryMin: Duration
    private let retryMax: Duration
    /// Attempts made after `finish()` while writes fail, before giving up.
    private let attemptsAtShutdown = 3
    /// Changes not yet committed, oldest first (merged into one batch).
    private let pending = Mutex(ModelChanges())
    private let healthState = Mutex(Health.writing)
    private let finished = Atomic<Bool>(false)
    private let doorbell: AsyncStream<Void>
    private let ring: AsyncStream<Void>.Continuation

    public init(store: MonitorStore, historyLimit: Int, logger: Logger,
                retryMin: Duration = .milliseconds(200), retryMax: Duration = .seconds(10)) {
        self.store = store
        self.historyLimit = historyLimit
        self.logger = logger
        self.retryMin = retryMin
        self.retryMax = retryMax
        (doorbell, ring) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    public var health: Health { healthState.withLock { $0 } }

    /// Queues `changes` (newer than everything submitted before) for the next write.
    public func submit(_ changes: ModelChanges) {
        guard !changes.isEmpty else { return }
        pending.withLock { $0.append(changes, historyLimit: historyLimit) }
        ring.yield()
    }

    /// No more changes will come: `run` writes what is pending and returns.
    public func finish() {
        finished.store(true, ordering: .releasing)
        ring.finish()
    }

    /// Writes pending changes until `finish()`, retrying failed writes with backoff;
    /// then makes a few last attempts (a full disk must not hold up the shutdown).
    public func run() async {
        var delay = retryMin
        for await _ in doorbell {
            while await writePending() == .failed {
                if finished.load(ordering: .acquiring) || Task.isCancelled { break }
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, retryMax)
            }
            delay = retryMin
        }
        for attempt in 1...attemptsAtShutdown {
            guard await writePending() == .failed else { return }
            if attempt == attemptsAtShutdown || Task.isCancelled { break }
            try? await Task.sleep(for: retryMin * attempt)
        }
        let left = pending.withLock { $0 }
        logger.error("stopping with changes not written to the state file", metadata: [
            "file": "\(store.path)", "gateways": "\(left.gateways.count)", "ledgers": "\(left.ledgers.count)",
            "history": "\(left.history.count)",
            "fix": "free space on (or make writable) the state file's file system; the retained topics rebuild the fleet at the next start, the ledgers' last changes are unobserved",
        ])
    }

    private enum Outcome { case written, failed }

    private func writePending() async -> Outcome {
        let batch = pending.withLock { current in
            defer { current = ModelChanges() }
            return current
        }
        guard !batch.isEmpty else { return .written }
        do {
            try await store.write(batch, historyLimit: historyLimit)
        } catch {
            // Kept: older than anything submitted meanwhile.
            pending.withLock { newer in
                var merged = batch
                merged.append(newer, historyLimit: historyLimit)
                newer = merged
            }
            let firstFailure = healthState.withLock { health -> Bool in
                guard case .writing = health else { return false }
                health = .failing(since: Date())
                return true
            }
            if firstFailure {
                logger.error("cannot write the state file; keeping the changes and retrying", metadata: [
                    "file": "\(store.path)", "error": "\(error)",
                    "fix": "free space on (or make writable) the state file's file system",
                ])
            }
            return .failed
        }
        let recovered = healthState.withLock { health -> Date? in
            defer { health = .writing }
            if case let .failing(since) = health { return since }
            return nil
        }
        if let recovered {
            logger.info("state file writable again; the kept changes are written", metadata: [
                "file": "\(store.path)", "failing_for_s": "\(Int(Date().timeIntervalSince(recovered).rounded()))",
            ])
        }
        return .written
    }
}
