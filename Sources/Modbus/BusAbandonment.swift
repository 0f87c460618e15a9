// Ending a bus's work from another thread while its own thread may be blocked
// inside libmodbus: the stop path of the gateway never waits for a bus thread.
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// The switch that abandons one bus: callable from any thread, once or more.
///
/// After `abandon()` returns:
/// - the socket of a request in flight is shut down (`shutdown(2)`), so a
///   `select`/`recv` blocked in libmodbus returns at once instead of at its timeout;
/// - no connection of the bus is made or used again (`ModbusConnection.connect`
///   refuses), so a retry cannot start another long wait;
/// - nothing passed to `unlessAbandoned` runs any more: the bus reports nothing.
///
/// A serial line (RTU) cannot be woken this way (`shutdown(2)` is for sockets):
/// its thread stays in the current request until that request's timeout, then
/// stops without another request.
public final class BusAbandonment: Sendable {
    private enum State {
        /// Working; the descriptor of the open connection, if one is open.
        case working(descriptor: Int32?)
        case abandoned
    }

    private let state = Mutex(State.working(descriptor: nil))

    public init() {}

    /// Abandons the bus (see the type's promises). Never blocks on the bus thread:
    /// it only waits for a report in progress (`unlessAbandoned`) or a close.
    public func abandon() {
        state.withLock { state in
            if case let .working(descriptor?) = state {
                // Under the lock: the connection cannot close the descriptor (and the
                // number cannot be reused by another file) between here and the call.
                _ = shutdown(descriptor, Int32(SHUT_RDWR))
            }
            state = .abandoned
        }
    }

    public var isAbandoned: Bool {
        state.withLock { if case .abandoned = $0 { true } else { false } }
    }

    /// Runs `body` unless the bus is abandoned; `abandon()` waits while it runs, so
    /// nothing `body` does can happen after `abandon()` returned. Keep it short
    /// and non-blocking. Returns whether it ran.
    @discardableResult
    public func unlessAbandoned(_ body: () -> Void) -> Bool {
        state.withLock { state in
            guard case .working = state else { return false }
            body()
            return true
        }
    }

    /// A connection was opened on `descriptor`. False when the bus was abandoned
    /// meanwhile: the caller closes the connection instead of using it.
    func opened(descriptor: Int32) -> Bool {
        state.withLock { state in
            guard case .working = state else { return false }
            state = .working(descriptor: descriptor)
            return true
        }
    }

    /// Closes the connection with `close` while `abandon()` cannot touch its descriptor.
    func closing(_ close: () -> Void) {
        state.withLock { state in
            close()
            if case .working = state { state = .working(descriptor: nil) }
        }
    }
}
