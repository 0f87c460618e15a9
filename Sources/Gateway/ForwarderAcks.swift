// Acknowledgements: PUBACKs handed over from the network thread, and the batches of
// acknowledged outbox ids that the deleting task writes.
import Synchronization

/// Acknowledgements from the network thread, waiting for the forwarder.
final class PubackQueue: Sendable {
    private let queued = Mutex<[(session: Int, mid: Int32)]>([])

    /// Returns true when the queue was empty: the caller wakes the forwarder.
    func append(session: Int, mid: Int32) -> Bool {
        queued.withLock { queue in
            queue.append((session, mid))
            return queue.count == 1
        }
    }

    func takeAll() -> [(session: Int, mid: Int32)] {
        queued.withLock { queue in
            defer { queue.removeAll(keepingCapacity: true) }
            return queue
        }
    }
}

/// Acknowledged outbox ids waiting for the deleting task, which takes all of them at
/// once for its next transaction: while one delete commits, the next batch grows, so
/// the lag from PUBACK to delete stays about one transaction long however fast acks come.
final class AcknowledgedIDs: Sendable {
    private struct State {
        var queued: [Int64] = []
        /// Handed over and not yet through a delete transaction (queued or being deleted).
        var outstanding = 0
    }
    private let state = Mutex(State())

    /// Returns true when the queue was empty: the caller wakes the deleting task.
    func append(_ ids: [Int64]) -> Bool {
        state.withLock { state in
            state.queued.append(contentsOf: ids)
            state.outstanding += ids.count
            return state.queued.count == ids.count
        }
    }

    /// Everything queued, nil when nothing is.
    func takeAll() -> [Int64]? {
        state.withLock { state in
            guard !state.queued.isEmpty else { return nil }
            defer { state.queued.removeAll(keepingCapacity: true) }
            return state.queued
        }
    }

    /// A delete transaction of `count` ids ended (committed or failed). Returns how many
    /// were outstanding before.
    @discardableResult
    func finished(_ count: Int) -> Int {
        state.withLock { state in
            defer { state.outstanding -= count }
            return state.outstanding
        }
    }

    /// Acknowledged ids whose rows may still be in the outbox: sent again after a crash.
    var outstanding: Int { state.withLock { $0.outstanding } }
}

/// Outbox ids the broker acknowledged within one burst of PUBACKs, handed to the
/// deleting task together (see `AcknowledgedIDs`).
struct AckBatch {
    private(set) var ids: [Int64] = []

    mutating func add(_ id: Int64) { ids.append(id) }

    /// The ids collected so far, nil when none; the batch starts over.
    mutating func take() -> [Int64]? {
        guard !ids.isEmpty else { return nil }
        defer { ids.removeAll(keepingCapacity: true) }
        return ids
    }
}
