// The model as the API shows it: `/api/fleet` and `/api/gateways/<id>` JSON, shared
// by the HTTP server and `edge-monitor status`. Field names follow the contract.
import Foundation
import Gateway

/// An immutable copy of the model, taken at `takenAt`. Readers compute views from it
/// without touching the live model.
public struct FleetSnapshot: Sendable {
    public let model: FleetModel
    public let takenAt: Date
    /// Counts the snapshots one monitor publishes: a reader may keep what it derived
    /// from a snapshot (e.g. rendered bytes) for as long as the generation is the same.
    public let generation: UInt64

    public init(model: FleetModel, takenAt: Date, generation: UInt64 = 0) {
        self.model = model
        self.takenAt = takenAt
        self.generation = generation
    }

    public var gatewayIDs: [String] { model.gateways.keys.sorted() }

    public func fleet() -> FleetView {
        var totals = FleetView.Totals()
        var views: [GatewayView] = []
        views.reserveCapacity(model.gateways.count)
        for id in gatewayIDs {
            guard let view = gateway(id) else { continue }
            views.append(view)
            totals.gateways += 1
            switch view.state {
            case .online: totals.online += 1
            case .offlineConnectionLost, .offlineShutdown: totals.offline += 1
            case .stale: totals.stale += 1
            case .unknown: totals.unknown += 1
            }
            totals.lost += view.lost
        }
        return FleetView(generatedAt: takenAt, totals: totals, gateways: views)
    }

    public func gateway(_ id: String) -> GatewayView? {
        guard let record = model.gateways[id] else { return nil }
        let state = model.state(of: record, at: takenAt)
        let lostRanges = (model.ledgers[id] ?? [:]).values.sorted { $0.boot < $1.boot }.flatMap { ledger in
            ledger.lost.ranges.map { LostRange(boot: ledger.boot, first: $0.lowerBound, last: $0.upperBound) }
        }
        return GatewayView(
            id: id, state: state, since: record.since, lastSeen: record.lastSeen, boot: record.boot, session: record.session,
            backlog: .init(messages: record.backlogMessages, bytes: record.backlogBytes,
                           oldestAgeSeconds: record.oldestAgeMs.map { Double($0) / 1000 },
                           drainRatePerSecond: model.drainRate(of: record), etaSeconds: model.eta(of: record)),
            replaying: state == .online && record.backlogMessages > 0,
            dropped: record.dropped, lost: record.lost, lostRanges: lostRanges, duplicates: record.duplicates,
            sealFailures: record.sealFailures.values.reduce(0, +), sealFailuresByKey: record.sealFailures,
            continuity: record.continuity, pollsFailed: record.pollsFailed,
            devices: record.devices.keys.sorted().map { name in
                let device = record.devices[name]!
                return DeviceView(name: name, state: device.online ? "online" : "offline", error: device.error, since: device.since)
            })
    }

    public func detail(_ id: String) -> GatewayDetailView? {
        guard let view = gateway(id) else { return nil }
        let history = (model.history[id] ?? []).reversed().map {
            HistoryView(ts: $0.at, kind: $0.kind.rawValue, detail: $0.detail)
        }
        let boots = (model.ledgers[id] ?? [:]).values.sorted { $0.boot > $1.boot }.map { ledger in
            BootView(boot: ledger.boot, received: ledger.received.pairs, highestCommitted: ledger.reportedCommitted,
                     judgedThrough: ledger.judgedThrough, gaps: ledger.dropped.pairs, lost: ledger.lost.pairs, unobserved: ledger.unobserved.pairs,
                     duplicates: ledger.duplicates)
        }
        return GatewayDetailView(gateway: view, history: Array(history), boots: boots)
    }

    /// The JSON encoder for every API view (ISO 8601 UTC with milliseconds).
    public static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(MessageEncoding.timestamp(date))
        }
        encoder.outputFormatting = []
        return encoder
    }

    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            guard let date = formatter.date(from: text) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a timestamp: \(text)"))
            }
            return date
        }
        return decoder
    }
}

public struct FleetView: Codable, Sendable {
    public struct Totals: Codable, Sendable {
        public var gateways = 0, online = 0, offline = 0, stale = 0, unknown = 0
        public var lost: Int64 = 0
    }
    public var generatedAt: Date
    public var totals: Totals
    public var gateways: [GatewayView]

    enum CodingKeys: String, CodingKey {
        case generatedAt = "generated_at", totals, gateways
    }
}

public struct LostRange: Codable, Sendable, Equatable {
    public var boot: Int64
    public var first: Int64
    public var last: Int64
}

public struct DeviceView: Codable, Sendable {
    public var name: String
    public var state: String
    public var error: String?
    public var since: Date
}

public struct GatewayView: Codable, Sendable {
    public struct Backlog: Codable, Sendable {
        public var messages: Int64
        public var bytes: Int64
        public var oldestAgeSeconds: Double?
        public var drainRatePerSecond: Double?
        public var etaSeconds: Double?
        enum CodingKeys: String, CodingKey {
            case messages, bytes, oldestAgeSeconds = "oldest_age_s", drainRatePerSecond = "drain_rate_per_s", etaSeconds = "eta_s"
        }
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(messages, forKey: .messages)
            try c.encode(bytes, forKey: .bytes)
            try c.encode(oldestAgeSeconds, forKey: .oldestAgeSeconds)  // null, not absent
            try c.encode(drainRatePerSecond, forKey: .drainRatePerSecond)
            try c.encode(etaSeconds, forKey: .etaSeconds)
        }
    }
    public var id: String
    public var state: GatewayState
    public var since: Date
    public var lastSeen: Date
    public var boot: Int64?
    public var session: Int64?
    public var backlog: Backlog
    public var replaying: Bool
    public var dropped: Int64
    public var lost: Int64
    public var lostRanges: [LostRange]
    public var duplicates: Int64
    public var sealFailures: Int64
    public var sealFailuresByKey: [String: Int64]
    public var continuity: Continuity
    public var pollsFailed: Int64
    public var devices: [DeviceView]

    enum CodingKeys: String, CodingKey {
        case id, state, since, lastSeen = "last_seen", boot, session, backlog, replaying, dropped, lost
        case lostRanges = "lost_ranges", duplicates, sealFailures = "seal_failures"
        case sealFailuresByKey = "seal_failures_by_key", continuity, pollsFailed = "polls_failed", devices
    }
}

public struct HistoryView: Codable, Sendable {
    public var ts: Date
    public var kind: String
    public var detail: String
}

public struct BootView: Codable, Sendable {
    public var boot: Int64
    public var received: [[Int64]]
    public var highestCommitted: Int64
    /// Every seq up to here is accounted for: received, dropped, unobserved or lost.
    public var judgedThrough: Int64
    public var gaps: [[Int64]]
    public var lost: [[Int64]]
    public var unobserved: [[Int64]]
    public var duplicates: Int64
    enum CodingKeys: String, CodingKey {
        case boot, received, highestCommitted = "highest_committed", judgedThrough = "judged_through"
        case gaps, lost, unobserved, duplicates
    }
}

/// `/api/gateways/<id>`: the gateway object plus `history` and `boots`.
public struct GatewayDetailView: Codable, Sendable {
    public var gateway: GatewayView
    public var history: [HistoryView]
    public var boots: [BootView]

    enum CodingKeys: String, CodingKey { case history, boots }

    public init(gateway: GatewayView, history: [HistoryView], boots: [BootView]) {
        self.gateway = gateway
        self.history = history
        self.boots = boots
    }

    public init(from decoder: any Decoder) throws {
        gateway = try GatewayView(from: decoder)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        history = try c.decode([HistoryView].self, forKey: .history)
        boots = try c.decode([BootView].self, forKey: .boots)
    }

    public func encode(to encoder: any Encoder) throws {
        try gateway.encode(to: encoder)
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(history, forKey: .history)
        try c.encode(boots, forKey: .boots)
    }
}
