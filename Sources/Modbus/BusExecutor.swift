// A dedicated OS thread per field bus. libmodbus calls block for up to the
// response timeout; running them here keeps Swift's cooperative pool (two
// threads on a two-core box) free for everything else.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A serial `TaskExecutor` backed by one thread. Code running under
/// `withTaskExecutorPreference(executor)` executes on that thread, so blocking
/// C calls there stall only this bus.
///
/// The bus also waits for its next poll on this thread (`sleep(until:)`): one
/// wake-up per poll, with no timer thread in between.
public final class BusExecutor: TaskExecutor, @unchecked Sendable {
    // Invariant: `jobs`, `stopped` and `interrupted` are only touched while holding
    // `mutex`; `mutex` and `condition` are initialised here and destroyed in deinit,
    // after the thread is gone (the thread's closure holds `self` until `runLoop` returns).
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var jobs: [UnownedJob] = []
    private var stopped = false
    /// Set by `interrupt()`: every `sleep(until:)` from then on returns at once.
    private var interrupted = false

    /// Stack of a bus thread: libmodbus, decoding and the poller's synchronous parts
    /// need a few tens of KiB; the 8 MiB default only reserves address space.
    static let stackSize = 512 * 1024

    public init(name: String) {
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        // Timed waits on the monotonic clock: a wall clock step neither delays nor hurries a poll.
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
        let threadName = Self.threadName(name)
        let thread = Thread {  // retained until shutdown() ends the loop
            // Foundation's `Thread.name` does not reach the kernel here (`/proc/.../comm`, perf, top -H).
            Self.nameCurrentThread(threadName)
            pthread_setspecific(Self.busThreadKey, UnsafeRawPointer(bitPattern: 1))
            self.runLoop()
        }
        thread.name = name
        thread.stackSize = Self.stackSize
        thread.start()
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    /// `name` cut to what Linux keeps of a thread's name (15 bytes; a longer one is
    /// refused): the end of a bus key (`bus tcp://10.0.0.5:502` → `bus 0.0.5:502`)
    /// tells buses apart best.
    static func threadName(_ name: String) -> String {
        guard name.utf8.count > 15, name.hasPrefix("bus ") else { return String(name.unicodeScalars.prefix(15)) }
        let key = name.unicodeScalars.dropFirst(4)
        return "bus " + String(String.UnicodeScalarView(key.suffix(11)))
    }

    /// Names the calling thread for the kernel (`/proc/thread-self/comm`; Swift does not
    /// import `pthread_setname_np`). Diagnostics only: a failure changes nothing else.
    public static func nameCurrentThread(_ name: String) {
        let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = Array(name.utf8.prefix(15)).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    /// Whether the calling thread is a bus thread (a `BusExecutor`'s): a dedicated thread
    /// that may block, e.g. for an outbox commit, unlike Swift's cooperative pool.
    public static var isCurrentThreadABus: Bool { pthread_getspecific(busThreadKey) != nil }

    /// Set (to any non-nil value) on every bus thread, nowhere else.
    private static let busThreadKey: pthread_key_t = {
        var key = pthread_key_t()
        let created = pthread_key_create(&key, nil)
        precondition(created == 0, "pthread_key_create failed: \(created)")
        return key
    }()

    public func enqueue(_ job: UnownedJob) {
        pthread_mutex_lock(mutex)
        jobs.append(job)
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Stops the thread after the jobs already queued. Call once the bus's work is over.
    public func shutdown() {
        pthread_mutex_lock(mutex)
        stopped = true
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Blocks the calling job, on this executor's thread, until `deadline`, or
    /// throws `CancellationError` when its task is cancelled (before or during the
    /// wait). Only for a task that runs on this executor and is its only work: no
    /// other job of the executor runs meanwhile.
    public func sleep(until deadline: ContinuousClock.Instant) async throws(CancellationError) {
        let finished = await withTaskCancellationHandler {
            waitOnThread(until: deadline)
        } onCancel: {
            interrupt()
        }
        if !finished || Task.isCancelled { throw CancellationError() }
    }

    /// Wakes a `sleep(until:)` under way, and makes every later one return at once.
    private func interrupt() {
        pthread_mutex_lock(mutex)
        interrupted = true
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    /// True at the deadline, false when interrupted.
    private func waitOnThread(until deadline: ContinuousClock.Instant) -> Bool {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while !interrupted {
            let left = deadline - ContinuousClock.now
            if left <= .zero { return true }
            // The continuous clock also counts suspend; a monotonic timeout re-checked against it is never early.
            var until = timespec()
            clock_gettime(CLOCK_MONOTONIC, &until)
            let (seconds, attoseconds) = left.components
            let nanoseconds = Int(until.tv_nsec) + Int(attoseconds / 1_000_000_000)
            until.tv_sec += Int(seconds) + nanoseconds / 1_000_000_000
            until.tv_nsec = nanoseconds % 1_000_000_000
            _ = pthread_cond_timedwait(condition, mutex, &until)
        }
        return false
    }

    private func runLoop() {
        while true {
            pthread_mutex_lock(mutex)
            while jobs.isEmpty && !stopped { pthread_cond_wait(condition, mutex) }
            if jobs.isEmpty && stopped {
                pthread_mutex_unlock(mutex)
                return
            }
            let batch = jobs
            jobs.removeAll(keepingCapacity: true)
            pthread_mutex_unlock(mutex)
            for job in batch {
                job.runSynchronously(on: asUnownedTaskExecutor())
            }
        }
    }
}
