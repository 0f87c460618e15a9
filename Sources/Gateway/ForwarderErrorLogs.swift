// Errors the forwarder meets again and again, logged once per episode: publish
// errors once per distinct cause per connection, outbox errors once per failure run,
// never once per message or per tick.
import Logging
import MQTTUplink

/// Which publish errors were logged in the current episode (one connection).
struct PublishErrorLog {
    private struct Cause: Hashable {
        var code: Int32?
        /// Set for messages that can never be published: each topic is named once.
        var topic: String?
    }

    private var logged: Set<Cause> = []
    /// Messages skipped in this episode because this broker refuses them.
    private(set) var skipped = 0

    /// A new connection: causes are logged again.
    mutating func newEpisode() {
        logged.removeAll()
        skipped = 0
    }

    /// Logs `error` unless its cause was logged in this episode.
    mutating func note(_ error: MQTTPublishError, logger: Logger) {
        if error.kind == .brokerLimit { skipped += 1 }
        let perTopic = error.kind == .unpublishable || error.kind == .brokerLimit
        guard logged.insert(Cause(code: error.code, topic: perTopic ? error.topic : nil)).inserted else { return }
        let metadata: Logger.Metadata = [
            "topic": "\(error.topicForLog)", "topic_bytes": "\(error.topic.utf8.count)",
            "payload_bytes": "\(error.payloadBytes)", "cause": "\(error.cause)",
        ]
        switch error.kind {
        case .unpublishable:
            logger.error("a message can never be published; dropping it (counted, reported on the gaps topic)",
                         metadata: metadata.merging([
                             "hint": "fix the gateway id, device name or topic_prefix that make this topic; edge-gateway check-config validates topics",
                         ]) { $1 })
        case .brokerLimit:
            logger.error("the broker refuses a message; skipping it on this connection", metadata: metadata.merging([
                "hint": "it stays in the outbox and is tried again after the next connect; check the broker's limits (max_packet_size, max_qos)",
            ]) { $1 })
        case .transient:
            logger.warning("publish failed; retrying", metadata: metadata)
        case .notConnected:
            logger.debug("publish failed: the connection is gone", metadata: metadata)
        }
    }
}

/// Outbox operations the forwarder retries until they work (reading gap records,
/// marking them reported, dropping unpublishable messages, reading statistics):
/// a failing one is logged when it starts failing and when it works again, not
/// on every attempt.
struct OutboxErrorLog {
    enum Operation: String, Hashable {
        case readGaps = "read gap records"
        case markGapsReported = "mark gap records reported"
        case dropUnpublishable = "drop unpublishable messages"
        case readStatistics = "read outbox statistics"
    }

    private var failing: [Operation: Int] = [:]

    mutating func failed(_ operation: Operation, _ error: any Error, logger: Logger) {
        failing[operation, default: 0] += 1
        guard failing[operation] == 1 else { return }
        logger.error("cannot \(operation.rawValue); retrying, logged again once it works",
                     metadata: ["error": "\(error)"])
    }

    mutating func succeeded(_ operation: Operation, logger: Logger) {
        guard let failures = failing.removeValue(forKey: operation) else { return }
        logger.info("the outbox works again: \(operation.rawValue)", metadata: ["failed_attempts": "\(failures)"])
    }
}

/// MQTT 5 PUBACKs with a failure reason code: logged once per reason per connection
/// (the count is in the stats as `refused`).
struct BrokerRefusalLog {
    private var logged: Set<String> = []

    /// A new connection: reasons are logged again.
    mutating func newEpisode() { logged.removeAll() }

    mutating func note(_ reason: String, outboxID: Int64?, logger: Logger) {
        guard logged.insert(reason).inserted else { return }
        var metadata: Logger.Metadata = [
            "reason": "\(reason)",
            "hint": "the message stays in the outbox and is sent again after the next connect; check the broker's ACL and quotas for this client",
        ]
        if let outboxID { metadata["outbox_id"] = "\(outboxID)" }
        logger.error("the broker refused a message (PUBACK with a failure reason code): not delivered, kept", metadata: metadata)
    }
}
