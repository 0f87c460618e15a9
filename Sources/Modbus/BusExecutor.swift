// A dedicated OS thread per field bus. libmodbus calls block for up to the
// response timeout; running them here keeps Swift's cooperative pool (two
// threads on a two-core box) free for everything else.
import Foundation

/// A serial `TaskExecutor` backed by one thread. Code running under
/// `withTaskExecutorPreference(executor)` executes on that thread, so blocking
/// C calls there stall only this bus.
public final class BusExecutor: TaskExecutor, @unchecked Sendable {
    // Invariant: `jobs` and `stopped` are only touched while holding `condition`.
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var stopped = false
    private var thread: Thread?

    public init(name: String) {
        let thread = Thread { self.runLoop() }  // retained until shutdown() ends the loop
        thread.name = name
        self.thread = thread
        thread.start()
    }

    public func enqueue(_ job: UnownedJob) {
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Stops the thread after the jobs already queued. Call once the bus's work is over.
    public func shutdown() {
        condition.lock()
        stopped = true
        condition.signal()
        condition.unlock()
    }

    private func runLoop() {
        while true {
            condition.lock()
            while jobs.isEmpty && !stopped { condition.wait() }
            if jobs.isEmpty && stopped {
                condition.unlock()
                return
            }
            let batch = jobs
            jobs.removeAll(keepingCapacity: true)
            condition.unlock()
            for job in batch {
                job.runSynchronously(on: asUnownedTaskExecutor())
            }
        }
    }
}
