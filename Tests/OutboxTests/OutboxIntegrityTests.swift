import Foundation
import Synchronization
import Testing
@testable import Outbox


/// Settings that leave every file's integrity check to the background, as for a big outbox.
private func checkedAfterOpening(_ path: String) -> OutboxSettings {
    var settings = OutboxSettings(path: path)
    settings.checkBeforeOpenMaxBytes = 0
    return settings
}

@Suite("integrity check after opening (a big outbox)")
struct OutboxIntegrityTests {
    func makeOutbox(at path: String, count: Int) async throws {
        let outbox = try Outbox(settings: .init(path: path), logger: quietLogger)
        for _ in 0..<(count / 500) {
            _ = try await outbox.append(drafts(500))
        }
    }

    /// The last eight pages (message rows) become noise; header, schema and meta stay readable.
    func corruptLastPages(_ path: String) throws {
        var bytes = try #require(FileManager.default.contents(atPath: path))
        let start = bytes.count - 8 * 4096
        bytes.replaceSubrange(start..<(start + 8 * 4096), with: Data(repeating: 0xA5, count: 8 * 4096))
        try bytes.write(to: URL(fileURLWithPath: path))
    }

    @Test func aHealthyBigFileOpensAtOnceAndPassesTheCheckLater() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            try await makeOutbox(at: path, count: 2000)
            let outbox = try Outbox(settings: checkedAfterOpening(path), logger: quietLogger)
            #expect(outbox.quarantinedPath == nil)
            try await waitFor("the background check") { outbox.integrity != .checking }
            #expect(outbox.integrity == .ok)
            #expect(try await outbox.statistics().integrity == .ok)
            #expect(!FileManager.default.fileExists(atPath: path + ".check-failed"))
        }
    }

    /// The outcome shows only once it is reported (logged, `.check-failed` written): a
    /// reader that sees `.corrupt` finds both. Showing it first let the test below read the
    /// log and the marker before they existed, on a loaded machine.
    @Test func theOutcomeShowsOnlyOnceItIsReported() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            try await makeOutbox(at: path, count: 10)
            let reporting = Mutex(false)
            let release = DispatchSemaphore(value: 0)
            let check = BackgroundIntegrityCheck(path: path) { _ in
                reporting.withLock { $0 = true }
                release.wait()  // on the check's own thread
            }
            try await waitFor("the report to start") { reporting.withLock { $0 } }
            #expect(check.integrity == .checking, "the outcome shows while it is still being reported")
            release.signal()
            try await waitFor("the outcome") { check.integrity != .checking }
            #expect(check.integrity == .ok)
        }
    }

    /// Damage the start did not wait to find is still found, reported, and acted on at
    /// the next start; what is readable is not thrown away meanwhile.
    @Test func aCorruptBigFileIsFoundAfterOpeningAndMovedAsideAtTheNextStart() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir.file("outbox.sqlite")
            try await makeOutbox(at: path, count: 2000)
            try corruptLastPages(path)
            let damaged = try #require(FileManager.default.contents(atPath: path))

            do {
                let logs = LogRecorder()
                let outbox = try Outbox(settings: checkedAfterOpening(path), logger: logs.logger)
                #expect(outbox.quarantinedPath == nil, "opened without waiting for the check")
                try await waitFor("the background check") { outbox.integrity != .checking }
                guard case let .corrupt(findings) = outbox.integrity else {
                    Issue.record("the damage was not found: \(outbox.integrity)")
                    return
                }
                #expect(!findings.isEmpty)
                if case .corrupt = try await outbox.statistics().integrity {} else {
                    Issue.record("the statistics do not carry the finding")
                }
                let error = logs.entries.first { $0.level == .error && $0.message.contains("corrupt") }
                #expect(error?.message.contains(path) == true, "the log names the file: \(String(describing: error))")
                #expect(error?.message.contains("restart") == true, "and the fix")
                #expect(FileManager.default.fileExists(atPath: path + ".check-failed"))
                // The readable rows are still there to forward; new ones are still taken.
                #expect(try await outbox.lease(after: 0, max: 100).map(\.seq) == Array(1...100))
            }

            // The next start checks first, whatever the size, and moves the file aside.
            let reopened = try Outbox(settings: checkedAfterOpening(path), logger: quietLogger)
            let aside = try #require(reopened.quarantinedPath, "the next start moved the file aside")
            #expect(aside.hasPrefix(path + ".corrupt-"))
            #expect(FileManager.default.fileExists(atPath: aside))
            #expect((FileManager.default.contents(atPath: aside)?.count ?? 0) >= damaged.count, "kept whole for inspection")
            #expect(reopened.integrity == .ok)
            #expect(reopened.boot == 3, "boot goes on above the two before")
            #expect(!FileManager.default.fileExists(atPath: path + ".check-failed"))
        }
    }
}
