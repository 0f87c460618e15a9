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

/// Outbox ids the broker acknowledged, collected into batches: one delete
/// transaction per batch instead of one per message.
struct AckBatch {
    /// A batch is written once it holds this many ids (or when the window is idle, or on the tick).
    static let size = 1024

    private(set) var ids: [Int64] = []

    var isFull: Bool { ids.count >= Self.size }

    mutating func add(_ id: Int64) { ids.append(id) }

    /// The ids collected so far, nil when none; the batch starts over.
    mutating func take() -> [Int64]? {
        guard !ids.isEmpty else { return nil }
        defer { ids.removeAll(keepingCapacity: true) }
        return ids
    }
}
