// The rendered `/api/fleet` and `/metrics` of the latest snapshot: rendered at most
// once per snapshot generation, on one thread of their own, so neither a burst of
// requests nor a large fleet takes a thread from the cooperative pool that the
// model loop (ingest) runs on.
//
// Each document exists once in memory: responses copy it to the socket in small
// chunks instead of holding a second, whole copy of it as one ByteBuffer (at 10,000
// gateways /metrics is about 9.5 MB, /api/fleet about 4.6 MB), and a new generation's
// document is written into the storage of the previous one (already in memory: no new
// pages to fault in and zero) unless a response is still writing that one.
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
        var fleetJSON: [UInt8]?
        var metrics: [UInt8]?
    }

    /// The documents of the latest generation rendered, and the storage of older ones
    /// to write the next ones into.
    private struct Cache {
        var current: Rendered?
        var spareFleetJSON: [UInt8] = []
        var spareMetrics: [UInt8] = []
    }

    /// The bytes of one response are copied into buffers of this size, one at a time.
    static let chunkSize = 128 * 1024

    private let snapshot: @Sendable () -> FleetSnapshot
    /// Serial: one rendering at a time; a request queued behind another one for the
    /// same generation finds its bytes ready.
    private let queue = DispatchQueue(label: "edge-monitor.rendering", qos: .userInitiated)
    /// Only touched on `queue` (the Mutex makes that checkable, and is never contended).
    private let cache = Mutex(Cache())
    /// The sizes of the last renderings, to reserve the next buffers at once.
    private let lastSizes = Mutex((fleetJSON: 0, metrics: 0))

    init(snapshot: @escaping @Sendable () -> FleetSnapshot) {
        self.snapshot = snapshot
    }

    /// `document` of the latest snapshot.
    func bytes(_ document: Document) async -> [UInt8] {
        await withCheckedContinuation { continuation in
            queue.async {
                continuation.resume(returning: self.render(document))
            }
        }
    }

    /// A response body that writes `bytes` in chunks of `chunkSize`, each one made
    /// when the previous one was taken by the connection.
    static func body(_ bytes: [UInt8], chunkSize: Int = chunkSize) -> ResponseBody {
        ResponseBody(contentLength: bytes.count) { writer in
            for chunk in chunks(bytes, size: chunkSize) {
                try await writer.write(chunk)
            }
            try await writer.finish(nil)
        }
    }

    /// `bytes` as consecutive buffers of at most `size` bytes, made one at a time.
    static func chunks(_ bytes: [UInt8], size: Int) -> some Sequence<ByteBuffer> {
        stride(from: 0, to: bytes.count, by: size).lazy.map { start in
            ByteBuffer(bytes: bytes[start..<min(start + size, bytes.count)])
        }
    }

    private func render(_ document: Document) -> [UInt8] {
        let snapshot = self.snapshot()
        // Another generation's documents become spare storage before the new ones are
        // made (responses still writing them keep their own reference).
        var entry = cache.withLock { cache in
            if let current = cache.current, current.generation != snapshot.generation {
                if let old = current.fleetJSON { cache.spareFleetJSON = old }
                if let old = current.metrics { cache.spareMetrics = old }
                cache.current = nil
            }
            return cache.current.take()
        } ?? Rendered(generation: snapshot.generation)
        let fleet = entry.fleet ?? snapshot.fleet()
        entry.fleet = fleet
        let bytes: [UInt8]
        switch document {
        case .fleetJSON:
            if let cached = entry.fleetJSON {
                bytes = cached
            } else {
                let spare = cache.withLock { swap(&$0.spareFleetJSON, with: []) }
                bytes = fleet.renderedJSON(reusing: consume spare, capacity: lastSizes.withLock { $0.fleetJSON })
                lastSizes.withLock { $0.fleetJSON = bytes.count }
                entry.fleetJSON = bytes
            }
        case .metrics:
            if let cached = entry.metrics {
                bytes = cached
            } else {
                let spare = cache.withLock { swap(&$0.spareMetrics, with: []) }
                bytes = MetricsExposition.render(fleet, ignored: snapshot.model.ignored, reusing: consume spare,
                                                 capacity: lastSizes.withLock { $0.metrics })
                lastSizes.withLock { $0.metrics = bytes.count }
                entry.metrics = bytes
            }
        }
        cache.withLock { $0.current = entry }
        return bytes
    }
}

/// `value`'s contents, leaving `replacement` in its place (a move: no copy of the storage).
private func swap<Value>(_ value: inout Value, with replacement: Value) -> Value {
    var taken = replacement
    Swift.swap(&value, &taken)
    return taken
}
