// What the monitor keeps per gateway (besides its ledgers and history), as
// stored in the state file.
import Foundation

/// The liveness state of a gateway, as the API and metrics name it.
public enum GatewayState: String, Sendable, Codable, CaseIterable {
    case online
    case offlineConnectionLost = "offline_connection_lost"
    case offlineShutdown = "offline_shutdown"
    case stale
    /// Seen through stats or data only; no status message yet.
    case unknown
}

/// Whether the monitor can follow a gateway's seqs.
public enum Continuity: String, Sendable, Codable {
    case tracked
    /// Its data is sealed with AES-256-GCM and the monitor has no key to read seqs.
    case unknown
}

/// A device under a gateway, from `<prefix>/<gw>/<device>/status`.
public struct DeviceRecord: Sendable, Equatable, Codable {
    public var online: Bool
    public var error: String?
    public var since: Date
}

/// One gateway's state apart from its ledgers and history.
public struct GatewayRecord: Sendable, Equatable, Codable {
    public var id: String
    /// Online / offline as the status topic says; `stale` is derived from `lastActivity`.
    public var status: StatusKind?
    public var since: Date
    public var lastSeen: Date
    /// Last stats or data (or birth): what `stale` is measured from.
    public var lastActivity: Date
    public var boot: Int64?
    public var session: Int64?
    public var statsIntervalMs: Int64?
    public var backlogMessages: Int64 = 0
    public var backlogBytes: Int64 = 0
    public var oldestAgeMs: Int64?
    /// (time, buffered messages) of the stats of the last minute, for the drain rate.
    public var backlogSamples: [BacklogSample] = []
    public var dropped: Int64 = 0
    public var lost: Int64 = 0
    public var duplicates: Int64 = 0
    public var pollsFailed: Int64 = 0
    public var sealFailures: [String: Int64] = [:]
    /// Key ids whose failure episode is open (logged once until a message opens again).
    public var sealEpisodes: Set<String> = []
    public var continuity: Continuity = .tracked
    public var devices: [String: DeviceRecord] = [:]
    /// Whether the last stale check found it stale (for the history entry on change).
    public var markedStale = false

    public init(id: String, at now: Date) {
        self.id = id
        since = now
        lastSeen = now
        lastActivity = now
    }
}

public struct BacklogSample: Sendable, Equatable, Codable {
    public var at: Date
    public var messages: Int64
}

/// One line of a gateway's history.
public struct HistoryEntry: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable {
        case birth, will, shutdown, gap, device, lost, stale
        case sealFailure = "seal_failure"
    }
    public var gateway: String
    public var at: Date
    public var kind: Kind
    public var detail: String

    public init(gateway: String, at: Date, kind: Kind, detail: String) {
        self.gateway = gateway
        self.at = at
        self.kind = kind
        self.detail = detail
    }
}
