// The uplink's network thread as a serial `TaskExecutor`: a task that prefers it (the
// forwarder) runs between the thread's socket turns, so a PUBACK read and the publishes
// it frees happen on one thread, with no wake-up of another.
import CMosquitto
import Descriptors
import Foundation
import Synchronization

/// Jobs for the uplink's network thread, and the thread's one place to sleep.
///
/// The thread (`MQTTUplink`'s) sleeps only in `wait(socket:wantWrite:timeout:)`: a
/// `poll` on the MQTT socket and an eventfd. A job enqueued from another thread writes
/// the eventfd once (until the thread takes the queue); one enqueued on the thread
/// itself (a task resumed by a callback) needs no wake at all: the thread runs it with
/// `runJobs()` after the socket turn.
///
/// Jobs run once the uplink is started. Once its thread has ended (`stop`), jobs go to
/// the global concurrent executor, so a task that still prefers this one never hangs.
public final class UplinkExecutor: TaskExecutor, Sendable {
    // Everything shared is in `queue` (a Mutex) or `owner` (written once, by the network
    // thread before it runs a job); the eventfd is opened here and closed in deinit.
    private let queue = Mutex(Queue())
    let wakeFD: Int32
    /// pthread_self() of the network thread, 0 before it started.
    private let owner = Atomic<UInt>(0)

    private struct Queue {
        var jobs: [UnownedJob] = []
        /// The buffer of the last batch `runJobs` ran, emptied and handed back: the next
        /// batch swaps it in, so taking the queue allocates nothing.
        var spare: [UnownedJob] = []
        /// The eventfd was written and the thread has not taken the queue since.
        var signalled = false
        var ended = false
    }

    /// What the socket is ready for after `wait`.
    struct Readiness {
        var readable = false
        var writable = false
    }

    init() {
        let fd = eventfd(0, Int32(EFD_CLOEXEC) | Int32(EFD_NONBLOCK))
        let code = errno
        // Without an eventfd nothing could wake the thread: a process out of descriptors at start.
        precondition(fd >= 0, "cannot create the uplink's eventfd: \(String(cString: strerror(code)))")
        wakeFD = SelectRange.moveAbove(fd)
    }

    deinit { close(wakeFD) }

    /// True on the network thread.
    public var isCurrentThread: Bool {
        let owner = owner.load(ordering: .acquiring)
        return owner != 0 && owner == UInt(pthread_self())
    }

    public func enqueue(_ job: UnownedJob) {
        enum Then { case nothing, signal, forward }
        let onThread = isCurrentThread
        let then = queue.withLock { queue -> Then in
            if queue.ended { return .forward }
            queue.jobs.append(job)
            if onThread || queue.signalled { return .nothing }
            queue.signalled = true
            return .signal
        }
        switch then {
        case .nothing: break
        case .signal: signal()
        case .forward: globalConcurrentExecutor.enqueue(job)
        }
    }

    /// Wakes the thread's `wait` (a stop, a disconnect, a publish that left bytes to write).
    func wake() {
        let write = queue.withLock { queue -> Bool in
            guard !queue.signalled, !queue.ended else { return false }
            queue.signalled = true
            return true
        }
        if write { signal() }
    }

    private func signal() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, 8)  // cannot fail short of a counter overflow (2^64 - 1 wakes)
    }

    // MARK: - On the network thread

    /// Called first thing on the network thread.
    func adoptCurrentThread() {
        owner.store(UInt(pthread_self()), ordering: .releasing)
    }

    /// Sleeps until `socket` (if any, -1 for none) is readable (or writable, with
    /// `wantWrite`), a job or `wake()` comes, or `timeout` passes; at once when jobs wait.
    /// Runs no job: `runJobs()` does, after the socket's turn.
    func wait(socket: Int32, wantWrite: Bool, timeout: Duration) -> Readiness {
        let jobsWaiting = queue.withLock { !$0.jobs.isEmpty }
        // A tuple on the stack, not an array: no allocation per turn.
        var fds = (pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: socket, events: Int16(POLLIN) | (wantWrite ? Int16(POLLOUT) : 0), revents: 0))
        let watched: nfds_t = socket >= 0 ? 2 : 1
        // Rounded up: a turn that ends before its timeout only loops.
        let milliseconds = jobsWaiting ? 0 : Int32(min(max(0, (timeout / .milliseconds(1)).rounded(.up)), Double(Int32.max)))
        let count = withUnsafeMutableBytes(of: &fds) { bytes in
            poll(bytes.baseAddress!.assumingMemoryBound(to: pollfd.self), watched, milliseconds)
        }
        guard count > 0 else { return Readiness() }  // timeout, or EINTR: the caller's turn just ends
        if fds.0.revents & Int16(POLLIN) != 0 {
            var value: UInt64 = 0
            _ = read(wakeFD, &value, 8)
        }
        guard watched == 2 else { return Readiness() }
        let events = fds.1.revents
        // An error or hang-up is read, so libmosquitto reports it (as its own loop does).
        return Readiness(readable: events & Int16(POLLIN | POLLERR | POLLHUP) != 0,
                         writable: events & Int16(POLLOUT) != 0)
    }

    /// Runs the jobs queued, and those they queue, a bounded number of rounds (a task
    /// that yields for ever must not starve the socket: the next `wait` then only polls).
    func runJobs() {
        for _ in 0..<16 {
            // The queue's buffer is taken whole and the spare (empty) put in its place; once
            // run, the batch's buffer, the only reference left, is emptied in place and
            // becomes the spare. (Copying the queue out and emptying it kept two references
            // to one buffer, so each turn allocated a new one.)
            var batch = queue.withLock { queue -> [UnownedJob] in
                queue.signalled = false
                let taken = queue.jobs
                queue.jobs = queue.spare
                queue.spare = []
                return taken
            }
            if batch.isEmpty {
                queue.withLock { $0.spare = batch }
                return
            }
            for job in batch { job.runSynchronously(on: asUnownedTaskExecutor()) }
            batch.removeAll(keepingCapacity: true)
            queue.withLock { $0.spare = batch }
        }
    }

    /// The network thread is ending: the jobs still queued run now, later ones go to
    /// the global concurrent executor.
    func end() {
        let rest = queue.withLock { queue -> [UnownedJob] in
            queue.ended = true
            defer { queue.jobs = [] }
            return queue.jobs
        }
        for job in rest { job.runSynchronously(on: asUnownedTaskExecutor()) }
    }
}
