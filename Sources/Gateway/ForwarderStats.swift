// The stats topic: the outbox's counters, the forwarder's and the pollers', every
// `gateway.stats_interval`.
import Foundation
import GatewayClock
import GatewayConfig
import Modbus
import MQTTUplink
import Outbox

/// When stats are due, and their payload.
struct StatsSchedule {
    let interval: Duration
    /// How long due stats wait for the messages in flight to be acknowledged.
    static let emptyWindowWait: Duration = .milliseconds(250)

    /// Stats are either scheduled, or due and waiting for the inflight window to empty.
    /// The wait matters: polls and stats both run on schedules from the gateway's start,
    /// so with a poll interval that divides the stats interval every stats message would
    /// otherwise be taken just after a poll's commit, with that poll in flight, and never
    /// report the empty backlog a central monitor judges losses on.
    enum State: Equatable {
        case scheduled(at: ContinuousClock.Instant)
        case waitingForEmptyWindow(until: ContinuousClock.Instant)
    }
    private(set) var state: State

    init(interval: Duration, now: ContinuousClock.Instant) {
        self.interval = interval
        state = .scheduled(at: now + interval)
    }

    /// When the loop must look again: the scheduled time, or the end of the wait.
    var next: ContinuousClock.Instant {
        switch state {
        case let .scheduled(at): at
        case let .waitingForEmptyWindow(until): until
        }
    }

    /// True (and the next one scheduled) when stats are to be published at `now`: once due,
    /// as soon as nothing is in flight, or when the wait for that is over.
    mutating func due(now: ContinuousClock.Instant, inflight: Int) -> Bool {
        switch state {
        case let .scheduled(at):
            guard now >= at else { return false }
            if inflight > 0 {
                state = .waitingForEmptyWindow(until: now + Self.emptyWindowWait)
                return false
            }
        case let .waitingForEmptyWindow(until):
            guard inflight == 0 || now >= until else { return false }
        }
        state = .scheduled(at: now + interval)
        return true
    }

    /// The clock's part of the stats.
    struct Clock {
        var status: ClockStatus
        /// Data messages sent with a corrected `ts` since start.
        var corrected: Int64
        /// Wall clock steps (more than `TimestampCorrector.stepThreshold`) seen since start.
        var steps: Int64
    }

    /// The stats message (QoS 0, not retained).
    static func message(identity: GatewayIdentity, boot: Int64, outbox buffered: OutboxStatistics,
                        forwarder: ForwarderCounters, polls: PollCounters.Snapshot, at date: Date = Date(),
                        clock: Clock? = nil, commands: CommandCounters.Snapshot? = nil) -> MQTTMessage {
        let oldest = buffered.oldestAge.map { Int64($0 / .milliseconds(1)) }
        var fields: [(String, Int64?)] = [
            ("buffered_messages", Int64(buffered.bufferedMessages)),
            ("buffered_bytes", buffered.bufferedBytes),
            ("oldest_age_ms", oldest),
            ("dropped", buffered.dropped),
            ("seq_committed", buffered.seqCommitted),
            ("published", forwarder.published),
            ("refused", forwarder.refused),
            ("inflight", Int64(forwarder.inflight)),
            ("polls_ok", polls.pollsOK),
            ("polls_failed", polls.pollsFailed),
            ("poll_overruns", polls.overruns),
            ("polls_unchanged", polls.pollsUnchanged),
            ("modbus_requests", polls.requests),
            // 1 once the background integrity check found the file damaged (see Outbox.integrity).
            ("outbox_corrupt", buffered.integrity.map { if case .corrupt = $0 { 1 } else { 0 } }),
        ]
        if let clock {
            fields += [("ts_corrected", clock.corrected), ("clock_steps", clock.steps),
                       ("clock_maxerror_ms", clock.status.maxErrorMilliseconds)]
        }
        if let commands {
            fields += [("commands_received", commands.received), ("commands_executed", commands.executed),
                       ("commands_refused", commands.refused), ("commands_failed", commands.failed)]
        }
        let payload = MessageEncoding.counters(fields, gateway: identity.id, boot: boot, at: date,
                                               sync: clock?.status.sync, server: forwarder.server)
        return MQTTMessage(topic: identity.statsTopic, payload: payload, qos: 0)
    }
}
