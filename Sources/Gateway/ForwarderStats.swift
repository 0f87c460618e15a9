// The stats topic: the outbox's counters, the forwarder's and the pollers', every
// `gateway.stats_interval`.
import Foundation
import GatewayConfig
import Modbus
import MQTTUplink
import Outbox

/// When stats are due, and their payload.
struct StatsSchedule {
    let interval: Duration
    private var next: ContinuousClock.Instant

    init(interval: Duration, now: ContinuousClock.Instant) {
        self.interval = interval
        next = now + interval
    }

    /// True (and the next one scheduled) when stats are due at `now`.
    mutating func due(now: ContinuousClock.Instant) -> Bool {
        guard now >= next else { return false }
        next = now + interval
        return true
    }

    /// The stats message (QoS 0, not retained).
    static func message(identity: GatewayIdentity, boot: Int64, outbox buffered: OutboxStatistics,
                        forwarder: ForwarderCounters, polls: PollCounters.Snapshot,
                        commands: CommandCounters.Snapshot? = nil) -> MQTTMessage {
        let oldest = buffered.oldestAge.map { Int64($0 / .milliseconds(1)) }
        var fields: [(String, Int64?)] = [
            ("buffered_messages", Int64(buffered.bufferedMessages)),
            ("buffered_bytes", buffered.bufferedBytes),
            ("oldest_age_ms", oldest),
            ("dropped", buffered.dropped),
            ("seq_committed", buffered.seqCommitted),
            ("published", forwarder.published),
            ("inflight", Int64(forwarder.inflight)),
            ("polls_ok", polls.pollsOK),
            ("polls_failed", polls.pollsFailed),
            ("poll_overruns", polls.overruns),
            ("polls_unchanged", polls.pollsUnchanged),
            ("modbus_requests", polls.requests),
        ]
        if let commands {
            fields += [("commands_received", commands.received), ("commands_executed", commands.executed),
                       ("commands_refused", commands.refused), ("commands_failed", commands.failed)]
        }
        let payload = MessageEncoding.counters(fields, gateway: identity.id, boot: boot, at: Date())
        return MQTTMessage(topic: identity.statsTopic, payload: payload, qos: 0)
    }
}
