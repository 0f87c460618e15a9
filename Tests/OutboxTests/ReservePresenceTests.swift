import Foundation
import Testing
@testable import Outbox

/// The descriptor that holds the reserve file (`ReservePresence`): a reserve that is there
/// but cannot be held open must not be reported present (every bus commit would then fall
/// back to `append` with nothing logged).
@Suite("reserve presence", .serialized)
struct ReservePresenceTests {
    /// EMFILE, the gateway out of descriptors: the open of the held descriptor fails while
    /// the reserve file itself is there.
    @Test func aReserveThatCannotBeHeldOpenIsAFailureWithItsErrnoLoggedOnce() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let reserve = ReserveFile(besides: directory.file("outbox.sqlite"))
        #expect(reserve.ensure() == .present)
        let logs = LogRecorder()
        let presence = ReservePresence(reserve, logger: logs.logger)

        let outcomes = try withDescriptorsExhausted { [presence.ensure(), presence.ensure()] }
        for outcome in outcomes {
            guard case let .failed(failure) = outcome else {
                Issue.record("reported \(outcome) although the reserve could not be held open")
                continue
            }
            #expect(failure.code == EMFILE)
            #expect(failure.path == reserve.path)
            #expect(!failure.isLackOfSpace, "a reserve problem, not a full disk")
        }
        #expect(!presence.isPresent)
        let logged = logs.entries.filter { $0.level >= .warning }
        #expect(logged.count == 1, "logged once: \(logged.map(\.message))")
        #expect(logged.first?.message.contains(reserve.path) == true)
        #expect(logged.first?.message.contains("errno \(EMFILE)") == true, "\(logged.map(\.message))")

        #expect(presence.ensure() == .present, "held once descriptors are free again")
        #expect(presence.isPresent)
    }

    /// Runs `body` with the soft limit of open files at the lowest free descriptor, so the
    /// next `open` fails with EMFILE; restores the limit before returning.
    func withDescriptorsExhausted<T>(_ body: () -> T) throws -> T {
        var limit = rlimit()
        try #require(getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0)
        let lowestFree = dup(0)
        try #require(lowestFree >= 0)
        close(lowestFree)
        var lowered = limit
        lowered.rlim_cur = rlim_t(lowestFree)
        try #require(setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &lowered) == 0)
        let result = body()
        setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        return result
    }
}
