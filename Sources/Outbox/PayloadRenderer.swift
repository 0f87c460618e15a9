// Rendering a batch's payloads beside its insert loop.
import Dispatch

/// Renders draft `i` with seq `firstSeq + i`, chunk by chunk on a background
/// thread, while the writer inserts the chunks already rendered. Encoding and
/// sealing then overlap SQLite's work instead of adding to the transaction's time.
/// Small batches are rendered inline.
///
/// Invariant: `storage[i]` is written once, by the rendering thread, before
/// `ready[i / chunk]` is signalled; the writer reads it only after waiting for
/// that signal. The storage is freed only after the last chunk is signalled.
final class PayloadRenderer: @unchecked Sendable {
    private static let chunk = 64
    private let count: Int
    private let storage: UnsafeMutablePointer<[UInt8]>
    private let ready: [DispatchSemaphore]
    private var waitedChunks = 0
    private let inline: Bool

    init(_ drafts: [OutboxDraft], boot: Int64, firstSeq: Int64) {
        count = drafts.count
        storage = .allocate(capacity: max(count, 1))
        storage.initialize(repeating: [], count: count)
        inline = count < 2 * Self.chunk
        if inline {
            for index in 0..<count { storage[index] = drafts[index].render(boot, firstSeq + Int64(index)) }
            ready = []
            return
        }
        let chunks = (count + Self.chunk - 1) / Self.chunk
        ready = (0..<chunks).map { _ in DispatchSemaphore(value: 0) }
        nonisolated(unsafe) let output = storage
        let ready = self.ready
        let count = self.count
        DispatchQueue.global(qos: .userInitiated).async {
            for chunk in 0..<chunks {
                for index in chunk * Self.chunk..<min(count, (chunk + 1) * Self.chunk) {
                    output[index] = drafts[index].render(boot, firstSeq + Int64(index))
                }
                ready[chunk].signal()
            }
        }
    }

    /// The payload of draft `index`; waits for its chunk if it is not rendered yet.
    /// Call with increasing indices.
    func payload(at index: Int) -> [UInt8] {
        if !inline {
            while waitedChunks <= index / Self.chunk {
                ready[waitedChunks].wait()
                waitedChunks += 1
            }
        }
        return storage[index]
    }

    /// Waits for the rendering thread to finish (also when the insert loop stopped early).
    func waitUntilDone() {
        while waitedChunks < ready.count {
            ready[waitedChunks].wait()
            waitedChunks += 1
        }
    }

    deinit {
        storage.deinitialize(count: count)
        storage.deallocate()
    }
}
