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
    private let queued = Mutex<[Int64]>([])

    /// Returns true when the queue was empty: the caller wakes the deleting task.
    func append(_ ids: [Int64]) -> Bool {
        queued.withLock { queue in
            queue.append(contentsOf: ids)
            return queue.count == ids.count
        }
    }

    /// Everything queued, nil when nothing is.
    func takeAll() -> [Int64]? {
        queued.withLock { queue in
            guard !queue.isEmpty else { return nil }
            defer { queue.removeAll(keepingCapacity: true) }
            return queue
        }
    }
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
