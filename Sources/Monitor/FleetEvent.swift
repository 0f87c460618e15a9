// The decoded facts the fleet model is fed with. Decoding (topics, JSON, envelopes)
// lives in FleetMessageDecoder.swift; the model never sees raw bytes.
import Foundation

/// Which of a gateway's three status messages.
public enum StatusKind: String, Sendable, Codable {
    case birth
    /// The Last Will: `state:"offline", reason:"connection lost"`.
    case will
    /// A clean stop: `state:"offline", reason:"shutdown"`.
    case shutdown
}

/// A gateway's retained `<prefix>/<gw>/status`.
public struct GatewayStatus: Sendable, Equatable {
    public var kind: StatusKind
    public var boot: Int64
    /// The connection counter within the boot; `nil` from gateways that predate it.
    public var session: Int64?
    public var statsIntervalMs: Int64?
    public var previousBoot: Int64?
    public var previousBootLastSeq: Int64?
    /// Delivered from the broker's retained store (on subscribe), not live.
    public var retained: Bool
    /// The birth says the gateway started a new outbox file (`outbox_quarantined`),
    /// so its boot counter started again.
    public var outboxReset: Bool = false

    public init(kind: StatusKind, boot: Int64, session: Int64?, statsIntervalMs: Int64? = nil,
                previousBoot: Int64? = nil, previousBootLastSeq: Int64? = nil, retained: Bool = false) {
        self.kind = kind
        self.boot = boot
        self.session = session
        self.statsIntervalMs = statsIntervalMs
        self.previousBoot = previousBoot
        self.previousBootLastSeq = previousBootLastSeq
        self.retained = retained
    }
}

/// The fields of `<prefix>/<gw>/stats` the monitor uses.
public struct GatewayStats: Sendable, Equatable {
    public var boot: Int64
    public var bufferedMessages: Int64
    public var bufferedBytes: Int64
    public var oldestAgeMs: Int64?
    public var dropped: Int64?
    public var pollsFailed: Int64?
    /// Highest seq committed in `boot`; `nil` from gateways that predate it.
    public var seqCommitted: Int64?

    public init(boot: Int64, bufferedMessages: Int64, bufferedBytes: Int64 = 0, oldestAgeMs: Int64? = nil,
                dropped: Int64? = nil, pollsFailed: Int64? = nil, seqCommitted: Int64? = nil) {
        self.boot = boot
        self.bufferedMessages = bufferedMessages
        self.bufferedBytes = bufferedBytes
        self.oldestAgeMs = oldestAgeMs
        self.dropped = dropped
        self.pollsFailed = pollsFailed
        self.seqCommitted = seqCommitted
    }
}

/// One record of `<prefix>/<gw>/gaps`: seqs `first...last` of `boot` were dropped.
public struct GapRecord: Sendable, Equatable {
    public var boot: Int64
    public var first: Int64
    public var last: Int64
    public var reason: String

    public init(boot: Int64, first: Int64, last: Int64, reason: String) {
        self.boot = boot
        self.first = first
        self.last = last
        self.reason = reason
    }
}

/// Why a message from the fleet was not used (counted per reason, never fatal).
public enum IgnoredReason: String, Sendable, CaseIterable, Codable {
    case notJSON = "not_json"
    case missingField = "missing_field"
    case tooLarge = "too_large"
    case unknownTopic = "unknown_topic"
    case seqBackwards = "seq_backwards"
    case gatewayMismatch = "gateway_mismatch"
    case badEnvelope = "bad_envelope"
}

/// One fact about the fleet, as the model consumes it.
public enum FleetEvent: Sendable, Equatable {
    case status(gateway: String, GatewayStatus)
    case deviceStatus(gateway: String, device: String, online: Bool, error: String?)
    case stats(gateway: String, GatewayStats)
    case gap(gateway: String, GapRecord)
    case data(gateway: String, device: String, boot: Int64, seq: Int64)
    /// An AES-GCM-sealed data message and no key to open it: its seq cannot be read.
    case unreadableSealed(gateway: String, keyID: String)
    /// A sealed data message that did not open or verify with the configured keys.
    case sealFailure(gateway: String, keyID: String, reason: String)
    /// A sealed data message opened with `keyID` (closes a failure episode).
    case sealOpened(gateway: String, keyID: String)
    /// Input that does not fit the contract.
    case ignored(IgnoredReason, topic: String, detail: String)
}
