// The forwarder's one timer: it wakes the forwarding loop at the instant the loop asks
// for (a retry, a deadline, the gap check, the stats) and not otherwise, so an idle
// gateway's forwarder sleeps between polls.
import Dispatch
import Synchronization

/// A reschedulable wake-up: `fire` runs once at the instant last armed.
///
/// Re-arming costs a wake-up of libdispatch's timer thread, so the alarm is moved only
/// when the new instant is earlier than the armed one (or none is armed); an alarm armed
/// too early fires, and the loop arms the right instant then.
final class ForwarderAlarm: @unchecked Sendable {
    // Invariant: `timer` is set once in init and only scheduled or cancelled under
    // `armed`'s lock; its event handler takes only that lock (libdispatch sources are
    // thread-safe).
    private let timer: any DispatchSourceTimer
    /// The instant the timer is scheduled for; nil once it fired (or before it is armed).
    private let armed: Armed

    private final class Armed: Sendable {
        let instant = Mutex<ContinuousClock.Instant?>(nil)
    }

    init(fire: @escaping @Sendable () -> Void) {
        timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "edge-gateway.forwarder-alarm"))
        let armed = Armed()
        self.armed = armed
        timer.setEventHandler {
            armed.instant.withLock { $0 = nil }
            fire()
        }
        timer.resume()
    }

    deinit { timer.cancel() }

    /// Makes the alarm fire at `instant` at the latest (see the type's note on moving it
    /// later); nil leaves an armed alarm to fire.
    func arm(at instant: ContinuousClock.Instant?) {
        guard let instant else { return }
        armed.instant.withLock { armed in
            if let current = armed, current <= instant { return }
            armed = instant
            let left = instant - ContinuousClock.now
            let nanoseconds = left <= .zero ? 0 : Int(min(left, .seconds(86_400)) / .nanoseconds(1))
            timer.schedule(deadline: .now() + .nanoseconds(nanoseconds), leeway: Self.leeway)
        }
    }

    /// Stops the alarm for good.
    func cancel() {
        armed.instant.withLock { _ in timer.cancel() }
    }

    /// How late the alarm may fire (lets the kernel batch timers).
    static let leeway = DispatchTimeInterval.milliseconds(5)
}
