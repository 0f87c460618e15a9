// Telling the forwarder that gap records were written, so it reads them when there is
// something to read instead of on a timer.
import Synchronization

/// The one observer of gap records written (see `Outbox.whenGapsRecorded`).
final class GapObserver: Sendable {
    private let observer = Mutex<(@Sendable () -> Void)?>(nil)

    func set(_ body: @escaping @Sendable () -> Void) { observer.withLock { $0 = body } }

    /// A transaction that wrote `ledger`'s gap records committed.
    func committed(_ ledger: DropLedger) {
        if ledger.total > 0 { recorded() }
    }

    /// A transaction that wrote gap records committed.
    func recorded() {
        observer.withLock { $0 }?()
    }
}

extension Outbox {
    /// Calls `observer` after every transaction that wrote gap records (dropped messages,
    /// whatever the reason) committed, on the task or thread that made it. Keep it short and
    /// non-blocking. One observer: a later call replaces it. Records already in the file
    /// when the observer is set are not announced (read them once at the start).
    public func whenGapsRecorded(_ observer: @escaping @Sendable () -> Void) {
        gapObserver.set(observer)
    }
}
