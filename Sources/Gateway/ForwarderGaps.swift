// Gap reporting: the outbox's records of dropped ranges go out on the gaps topic,
// and are marked reported once the broker acknowledged them.
import Foundation
import GatewayConfig
import MQTTUplink
import Outbox

/// When gap records are read, and which ones the broker acknowledged.
///
/// Records are read when there may be something new: at the start, after a connect,
/// after the outbox wrote records (`Outbox.whenGapsRecorded`), after reported records
/// were marked (a record that grew keeps its tail), after a failed read; never on a
/// timer otherwise, and at most every `interval`.
struct GapSchedule {
    /// Gap records are read at most this often (a drop episode extends its record).
    static let interval = Duration.seconds(1)

    /// Acknowledged by the broker, to be marked reported in the outbox.
    private(set) var acknowledged: [OutboxGap] = []
    /// Records may exist that were not read since they were written.
    private(set) var pending = true
    private var nextCheck: ContinuousClock.Instant

    init(now: ContinuousClock.Instant) { nextCheck = now }

    mutating func reported(_ gap: OutboxGap) { acknowledged.append(gap) }

    /// The acknowledged records are marked: what grew since is read again.
    mutating func markedReported() {
        acknowledged.removeAll()
        pending = true
    }

    /// The outbox wrote gap records: read them when the interval allows.
    mutating func recorded() { pending = true }

    /// Read the records again at the next chance (after a connect).
    mutating func checkSoon(now: ContinuousClock.Instant) {
        pending = true
        nextCheck = now
    }

    /// True (and the next check scheduled) when the records are due to be read.
    mutating func due(now: ContinuousClock.Instant) -> Bool {
        guard pending, now >= nextCheck else { return false }
        nextCheck = now + Self.interval
        pending = false
        return true
    }

    /// The read failed: try again after the interval.
    mutating func readFailed() { pending = true }

    /// When records are due to be read, nil while none may be waiting.
    var wake: ContinuousClock.Instant? { pending ? nextCheck : nil }

    static func message(_ gap: OutboxGap, identity: GatewayIdentity) -> MQTTMessage {
        MQTTMessage(topic: identity.gapsTopic,
                    payload: MessageEncoding.gap(gateway: identity.id, boot: gap.boot, firstSeq: gap.firstSeq,
                                                 lastSeq: gap.lastSeq, count: gap.count, reason: gap.reason.rawValue, at: Date()),
                    qos: 1)
    }
}
