// The rendered `/api/fleet` and `/metrics` of the latest snapshot: rendered at most
// once per snapshot generation, on one thread of their own, so neither a burst of
// requests nor a large fleet takes a thread from the cooperative pool that the
// model loop (ingest) runs on.
import Dispatch
import Monitor
import Hummingbird
import Synchronization

/// Renders and keeps the bytes of the latest snapshot's views.
final class FleetRendering: Sendable {
    enum Document: Sendable { case fleetJSON, metrics }

    private struct Rendered {
        var generation: UInt64
        var fleet: FleetView?
        var fleetJSON: ByteBuffer?
        var metrics: ByteBuffer?
    }

    private let snapshot: @Sendable () -> FleetSnapshot
    /// Serial: one rendering at a time; a request queued behind another one for the
    /// same generation finds its bytes ready.
    private let queue = DispatchQueue(label: "edge-monitor.rendering", qos: .userInitiated)
    /// Only touched on `queue` (the Mutex makes that checkable, and is never contended).
    private let rendered = Mutex<Rendered?>(nil)
    /// The sizes of the last renderings, to reserve the next buffers at once.
    private let lastSizes = Mutex((fleetJSON: 0, metrics: 0))

    init(snapshot: @escaping @Sendable () -> FleetSnapshot) {
        self.snapshot = snapshot
    }

    /// `document` of the latest snapshot.
    func bytes(_ document: Document) async -> ByteBuffer {
        await withCheckedContinuation { continuation in
            queue.async {
                continuation.resume(returning: self.render(document))
            }
        }
    }

    private func render(_ document: Document) -> ByteBuffer {
        let snapshot = self.snapshot()
        var entry = rendered.withLock { current in
            current.flatMap { $0.generation == snapshot.generation ? $0 : nil }
        } ?? Rendered(generation: snapshot.generation)
        let fleet = entry.fleet ?? snapshot.fleet()
        entry.fleet = fleet
        let bytes: ByteBuffer
        switch document {
        case .fleetJSON:
            if let cached = entry.fleetJSON {
                bytes = cached
            } else {
                let text = fleet.renderedJSON(capacity: lastSizes.withLock { $0.fleetJSON })
                lastSizes.withLock { $0.fleetJSON = text.count }
                bytes = ByteBuffer(bytes: text)
                entry.fleetJSON = bytes
            }
        case .metrics:
            if let cached = entry.metrics {
                bytes = cached
            } else {
                let text = MetricsExposition.render(fleet, ignored: snapshot.model.ignored,
                                                    capacity: lastSizes.withLock { $0.metrics })
                lastSizes.withLock { $0.metrics = text.count }
                bytes = ByteBuffer(bytes: text)
                entry.metrics = bytes
            }
        }
        rendered.withLock { $0 = entry }
        return bytes
    }
}
