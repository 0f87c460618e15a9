import Foundation
import Testing
import Outbox

/// Prints throughput figures; runs only with `OUTBOX_BENCH=1` and asserts no times.
/// `OUTBOX_BENCH=1 swift test -c release --filter OutboxBenchmark`
@Suite(.enabled(if: ProcessInfo.processInfo.environment["OUTBOX_BENCH"] != nil, "set OUTBOX_BENCH=1 to run"))
struct OutboxBenchmark {
    @Test(arguments: [OutboxSettings.Synchronous.full, .normal])
    func appendLeaseAcknowledge(synchronous: OutboxSettings.Synchronous) async throws {
        try await withTemporaryDirectory { dir in
            let outbox = try Outbox(
                settings: .init(path: dir.file("bench.sqlite"), synchronous: synchronous), logger: quietLogger)
            let total = 200_000
            let batch = drafts(1000)
            let clock = ContinuousClock()
            let appendTime = try await clock.measure {
                for _ in 0..<(total / 1000) { _ = try await outbox.append(batch) }
            }
            var last: Int64 = 0
            let drainTime = try await clock.measure {
                while true {
                    let leased = try await outbox.lease(after: last, max: 300)
                    guard let tail = leased.last else { break }
                    try await outbox.acknowledge(leased.map(\.id))
                    last = tail.id
                }
            }
            func rate(_ duration: Duration) -> Int {
                Int(Double(total) / (Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18))
            }
            print("outbox bench sync=\(synchronous.rawValue): append \(rate(appendTime)) msg/s (batches of 1000, 200 B), "
                + "lease+ack \(rate(drainTime)) msg/s (batches of 300)")
            #expect(try await outbox.statistics().bufferedMessages == 0)
        }
    }
}
