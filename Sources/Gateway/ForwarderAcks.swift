// Acknowledgements: PUBACKs handed over from the network thread, and the acknowledged
// outbox ids handed to the outbox for deletion.
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

/// How many acknowledged outbox ids were handed to the outbox
/// (`Outbox.acknowledgeWithNextWrite`) and did not yet go through a transaction: their
/// rows may still be in the outbox and are sent again after a crash.
final class AcknowledgedIDs: Sendable {
    private let count = Atomic<Int>(0)
    /// Set when the forwarder waits for a delete to end (these ids held its window back).
    private let wakeRequested = Atomic<Bool>(false)

    func handedOver(_ ids: Int) {
        count.add(ids, ordering: .relaxed)
    }

    /// The forwarder waits for the next transaction to end (`finished` returns true once),
    /// having seen `outstanding` ids awaiting deletion. Returns false, and asks for nothing,
    /// when fewer are outstanding already: a transaction ended meanwhile, look again.
    /// Sequentially consistent with `finished`: one of the two always sees the other.
    func wakeWhenFinished(whileAtLeast outstanding: Int) -> Bool {
        wakeRequested.store(true, ordering: .sequentiallyConsistent)
        guard count.load(ordering: .sequentiallyConsistent) < outstanding else { return true }
        wakeRequested.store(false, ordering: .sequentiallyConsistent)
        return false
    }

    /// A transaction of `ids` ids ended (committed or failed). Returns whether the
    /// forwarder asked to be woken for it.
    func finished(_ ids: Int) -> Bool {
        count.subtract(ids, ordering: .sequentiallyConsistent)
        return wakeRequested.exchange(false, ordering: .sequentiallyConsistent)
    }

    var outstanding: Int { count.load(ordering: .relaxed) }
}

/// Outbox ids the broker acknowledged within one burst of PUBACKs, handed to the
/// outbox together (see `AcknowledgedIDs`).
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
