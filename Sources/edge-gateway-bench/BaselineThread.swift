// The thread a one-thread baseline of the bench (the floor, the raw replay) runs on.
import Foundation

/// Runs `body` on a new thread named `name` and hands back what it returned or threw.
/// A baseline blocks (sleeps, socket reads, fsync), never on the cooperative pool, and
/// its thread's CPU clock and context switches are its alone.
func onBaselineThread<Value: Sendable>(named name: String,
                                       _ body: @escaping @Sendable () throws -> Value) async throws -> Value {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try body() })
        }
        thread.name = name
        thread.start()
    }
}
