// Gap reporting: the outbox's records of dropped ranges go out on the gaps topic,
// and are marked reported once the broker acknowledged them.
import Foundation
import GatewayConfig
import MQTTUplink
import Outbox

/// When gap records are read, and which ones the broker acknowledged.
struct GapSchedule {
    /// Gap records are read at most this often (a drop episode extends its record).
    static let interval = Duration.seconds(1)

    /// Acknowledged by the broker, to be marked reported in the outbox.
    private(set) var acknowledged: [OutboxGap] = []
    private var nextCheck: ContinuousClock.Instant

    init(now: ContinuousClock.Instant) { nextCheck = now }

    mutating func reported(_ gap: OutboxGap) { acknowledged.append(gap) }

    mutating func markedReported() { acknowledged.removeAll() }

    /// Read the records again at the next chance (after a connect).
    mutating func checkSoon(now: ContinuousClock.Instant) { nextCheck = now }

    /// True (and the next check scheduled) when the records are due to be read.
    mutating func due(now: ContinuousClock.Instant) -> Bool {
        guard now >= nextCheck else { return false }
        nextCheck = now + Self.interval
        return true
    }

    static func message(_ gap: OutboxGap, identity: GatewayIdentity) -> MQTTMessage {
        MQTTMessage(topic: identity.gapsTopic,
                    payload: MessageEncoding.gap(gateway: identity.id, boot: gap.boot, firstSeq: gap.firstSeq,
                                                 lastSeq: gap.lastSeq, count: gap.count, reason: gap.reason.rawValue, at: Date()),
                    qos: 1)
    }
}
