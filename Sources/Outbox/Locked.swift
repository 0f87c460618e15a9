import Foundation

/// A value guarded by a lock, for the little in-memory state `Outbox` keeps beside SQLite.
///
/// `@unchecked Sendable` is sound because `value` is only ever read or written inside
/// `withLock`, that is while `lock` is held. (`Synchronization.Mutex` would do, but needs
/// macOS 15 and the package still builds for macOS 14.)
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) {
        self.value = value
    }

    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
