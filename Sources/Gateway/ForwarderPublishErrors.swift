// Publish errors, logged with their cause once per distinct cause per connection,
// never once per message.
import Logging
import MQTTUplink

/// Which publish errors were logged in the current episode (one connection).
struct PublishErrorLog {
    private struct Cause: Hashable {
        var code: Int32?
        /// Set for messages that can never be published: each topic is named once.
        var topic: String?
    }

    private static let unpublishableHint = "it stays in the outbox and is tried again after the next connect, "
        + "until the buffer limits drop it; fix the gateway id, device name or topic_prefix "
        + "(edge-gateway check-config validates topics)"

    private var logged: Set<Cause> = []
    /// Messages skipped in this episode because they can never be published.
    private(set) var skipped = 0

    /// A new connection: causes are logged again.
    mutating func newEpisode() {
        logged.removeAll()
        skipped = 0
    }

    /// Logs `error` unless its cause was logged in this episode.
    mutating func note(_ error: MQTTPublishError, logger: Logger) {
        if error.kind == .unpublishable { skipped += 1 }
        let cause = Cause(code: error.code, topic: error.kind == .unpublishable ? error.topic : nil)
        guard logged.insert(cause).inserted else { return }
        switch error.kind {
        case .unpublishable:
            logger.error("a message can never be published; skipping it", metadata: [
                "topic": "\(error.topicForLog)", "topic_bytes": "\(error.topic.utf8.count)",
                "payload_bytes": "\(error.payloadBytes)", "cause": "\(error.cause)",
                "hint": "\(Self.unpublishableHint)",
            ])
        case .transient:
            logger.warning("publish failed; retrying", metadata: [
                "topic": "\(error.topicForLog)", "payload_bytes": "\(error.payloadBytes)", "cause": "\(error.cause)",
            ])
        case .notConnected:
            logger.debug("publish failed: the connection is gone", metadata: [
                "topic": "\(error.topicForLog)", "cause": "\(error.cause)",
            ])
        }
    }
}
