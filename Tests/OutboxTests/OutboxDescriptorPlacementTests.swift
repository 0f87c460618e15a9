import Descriptors
import Foundation
import Testing
@testable import Outbox

/// The descriptors this process has open on `path`, by number (/proc/self/fd).
private func descriptors(on path: String) -> [Int32] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return entries.compactMap { name in
        guard let number = Int32(name),
              let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(name)"),
              target == path else { return nil }
        return number
    }
}

/// The outbox's own descriptors that never go to select() sit above 1023, clear of the
/// numbers the buses' libmodbus connections need.
@Suite struct OutboxDescriptorPlacementTests {
    @Test func theLockFileAndTheReserveAreHeldAbove1023AndTheLockHolds() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
            let resolved = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
            let lock = descriptors(on: resolved + ".lock")
            #expect(lock.count == 1 && lock.allSatisfy { $0 >= SelectRange.limit }, "lock file on \(lock)")
            let reserve = descriptors(on: resolved + "-reserve")
            #expect(reserve.count == 1 && reserve.allSatisfy { $0 >= SelectRange.limit }, "reserve on \(reserve)")
            // The flock(2) moved with the descriptor: another open of the lock file is refused.
            #expect(OutboxLock.use(ofOutboxAt: path) == .open(pid: getpid()))
            #expect(throws: OutboxError.self) { _ = try OutboxLock(outboxPath: path) }
            withExtendedLifetime(outbox) {}
        }
    }

    @Test func movingADescriptorKeepsItsFlockAndCloseOnExec() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("locked")
            let low = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            try #require(low >= 0 && low < SelectRange.limit)
            #expect(flock(low, LOCK_EX | LOCK_NB) == 0)
            let high = SelectRange.moveAbove(low)
            defer { close(high) }
            #expect(high >= SelectRange.limit)
            #expect(fcntl(high, F_GETFD) & FD_CLOEXEC != 0, "close-on-exec")
            let other = open(path, O_RDONLY | O_CLOEXEC)
            defer { close(other) }
            #expect(flock(other, LOCK_SH | LOCK_NB) == -1 && errno == EWOULDBLOCK, "the lock survived the move")
        }
    }
}
