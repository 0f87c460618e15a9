// The fleet model: a pure state machine fed by decoded events and the clock.
// No I/O: the monitor actor feeds it, logs its notes, stores its changes and
// hands copies of it to readers as snapshots.
import Foundation

/// How long a gateway may stay silent (no stats, no data) before it is `stale`.
public enum StaleAfter: Sendable, Equatable {
    /// 3 × the stats interval its birth announces (3 × 60 s when it announces none).
    case auto
    case fixed(Duration)
}

/// A line the model wants logged.
public struct ModelNote: Sendable, Equatable {
    public enum Level: Sendable { case debug, info, warning, error }
    public var level: Level
    public var message: String
    public var metadata: [String: String]
}

/// What changed since the last `takeChanges()`: what the store must write.
public struct ModelChanges: Sendable {
    public var gateways: [GatewayRecord] = []
    public var ledgers: [(gateway: String, ledger: ContinuityLedger)] = []
    /// Gateways whose stored ledgers are deleted first (before `ledgers` are written).
    public var removedLedgers: [String] = []
    public var history: [HistoryEntry] = []
    public var ignored: [IgnoredReason: Int64] = [:]
    public var isEmpty: Bool {
        gateways.isEmpty && ledgers.isEmpty && removedLedgers.isEmpty && history.isEmpty && ignored.isEmpty
    }
}

/// The monitor's whole knowledge of the fleet. A value: copying it is a snapshot.
public struct FleetModel: Sendable {
    public var staleAfter: StaleAfter
    public var historyLimit: Int
    public private(set) var gateways: [String: GatewayRecord] = [:]
    public private(set) var ledgers: [String: [Int64: ContinuityLedger]] = [:]
    /// Per gateway, oldest first, at most `historyLimit`.
    public private(set) var history: [String: [HistoryEntry]] = [:]
    public private(set) var ignored: [IgnoredReason: Int64] = [:]
    /// Boot whose birth arrived live (not retained) on the current connection:
    /// the monitor saw that boot from its start.
    private var liveBirthBoot: [String: Int64] = [:]
    private var dirtyGateways: Set<String> = []
    private var dirtyLedgers: Set<LedgerKey> = []
    /// Gateways whose stored ledgers must all go (their outbox was replaced).
    private var removedLedgers: Set<String> = []
    private var newHistory: [HistoryEntry] = []
    private var ignoredChanged = false

    struct LedgerKey: Hashable { var gateway: String; var boot: Int64 }

    public static let defaultStatsInterval: Duration = .seconds(60)
    public static let drainWindow: TimeInterval = 60

    public init(staleAfter: StaleAfter = .auto, historyLimit: Int = 200) {
        self.staleAfter = staleAfter
        self.historyLimit = historyLimit
    }

    /// A model restored from the state file. With `graceFromNow` the gateways get one
    /// full `stale_after` from `now` before they can turn stale. Every ledger opens
    /// a blind window: what was published while the monitor was down is
    /// "unobserved", never "lost".
    public init(staleAfter: StaleAfter, historyLimit: Int, restoring records: [GatewayRecord],
                ledgers: [(gateway: String, ledger: ContinuityLedger)], history: [HistoryEntry],
                ignored: [IgnoredReason: Int64], at now: Date, graceFromNow: Bool = true) {
        self.init(staleAfter: staleAfter, historyLimit: historyLimit)
        for var record in records {
            if graceFromNow { record.lastActivity = max(record.lastActivity, now) }
            gateways[record.id] = record
        }
        for (gateway, ledger) in ledgers { self.ledgers[gateway, default: [:]][ledger.boot] = ledger }
        for entry in history { self.history[entry.gateway, default: []].append(entry) }
        for (key, entries) in self.history where entries.count > historyLimit {
            self.history[key] = Array(entries.suffix(historyLimit))
        }
        self.ignored = ignored
        connectionEstablished()
    }

    // MARK: - Inputs

    /// The monitor (re)subscribed: messages published meanwhile may be missing.
    public mutating func connectionEstablished() {
        liveBirthBoot = [:]
        for (gateway, boots) in ledgers {
            for boot in boots.keys { updateLedger(gateway, boot) { $0.beginBlindWindow() } }
        }
    }

    /// Applies one event received at `now`; returns what to log.
    @discardableResult
    public mutating func apply(_ event: FleetEvent, at now: Date) -> [ModelNote] {
        switch event {
        case let .status(gateway, status): return applyStatus(gateway, status, now)
        case let .deviceStatus(gateway, device, online, error):
            return applyDevice(gateway, device, online: online, error: error, now)
        case let .stats(gateway, stats): return applyStats(gateway, stats, now)
        case let .gap(gateway, gap): return applyGap(gateway, gap, now)
        case let .data(gateway, _, boot, seq): return applyData(gateway, boot: boot, seq: seq, now)
        case let .unreadableSealed(gateway, keyID):
            return touch(gateway, now, activity: true) { record in
                guard record.continuity == .tracked else { return [] }
                record.continuity = .unknown
                return [ModelNote(level: .warning, message: "sealed data cannot be read without a key: continuity unknown",
                                  metadata: ["gateway": gateway, "key_id": keyID,
                                             "fix": "add the gateway's key under keys: in monitor.yaml"])]
            }
        case let .sealFailure(gateway, keyID, reason):
            var record = record(gateway, now, activity: true)
            record.sealFailures[keyID, default: 0] += 1
            let opensEpisode = record.sealEpisodes.insert(keyID).inserted
            store(record)
            guard opensEpisode else { return [] }
            addHistory(gateway, now, .sealFailure, "key \(keyID): \(reason)")
            return [ModelNote(level: .error, message: "sealed data message failed to open",
                              metadata: ["gateway": gateway, "key_id": keyID, "error": reason])]
        case let .sealOpened(gateway, keyID):
            return touch(gateway, now, activity: false) { record in
                guard record.sealEpisodes.remove(keyID) != nil else { return [] }
                return [ModelNote(level: .info, message: "sealed data messages open again",
                                  metadata: ["gateway": gateway, "key_id": keyID])]
            }
        case let .ignored(reason, topic, detail):
            ignored[reason, default: 0] += 1
            ignoredChanged = true
            return [ModelNote(level: .debug, message: "message ignored",
                              metadata: ["reason": reason.rawValue, "topic": topic, "detail": detail])]
        }
    }

    /// Re-evaluates what depends on time (stale). Returns what to log.
    @discardableResult
    public mutating func tick(at now: Date) -> [ModelNote] {
        var notes: [ModelNote] = []
        for (id, record) in gateways where record.status == .birth {
            let stale = isStale(record, at: now)
            guard stale != record.markedStale else { continue }
            var changed = record
            changed.markedStale = stale
            changed.since = now
            gateways[id] = changed
            dirtyGateways.insert(id)
            if stale {
                let silent = Int(now.timeIntervalSince(record.lastActivity).rounded())
                addHistory(id, now, .stale, "no stats or data for \(silent) s")
                notes.append(ModelNote(level: .warning, message: "gateway stale: online but silent",
                                       metadata: ["gateway": id, "silent_s": "\(silent)"]))
            }
        }
        return notes
    }

    /// Hands over what changed since the last call (for the store).
    public mutating func takeChanges() -> ModelChanges {
        var changes = ModelChanges()
        changes.gateways = dirtyGateways.compactMap { gateways[$0] }
        changes.ledgers = dirtyLedgers.compactMap { key in ledgers[key.gateway]?[key.boot].map { (key.gateway, $0) } }
        changes.history = newHistory
        changes.removedLedgers = Array(removedLedgers)
        if ignoredChanged { changes.ignored = ignored }
        removedLedgers = []
        dirtyGateways = []
        dirtyLedgers = []
        newHistory = []
        ignoredChanged = false
        return changes
    }

    // MARK: - Derived state

    /// The stale limit of one gateway.
    public func staleLimit(_ record: GatewayRecord) -> Duration {
        switch staleAfter {
        case let .fixed(duration): return duration
        case .auto:
            let interval = record.statsIntervalMs.map { Duration.milliseconds($0) } ?? Self.defaultStatsInterval
            return interval * 3
        }
    }

    func isStale(_ record: GatewayRecord, at now: Date) -> Bool {
        let limit = staleLimit(record)
        let limitSeconds = Double(limit.components.seconds) + Double(limit.components.attoseconds) / 1e18
        return now.timeIntervalSince(record.lastActivity) > limitSeconds
    }

    /// The state the API, metrics and status command show.
    public func state(of record: GatewayRecord, at now: Date) -> GatewayState {
        switch record.status {
        case nil: return .unknown
        case .will: return .offlineConnectionLost
        case .shutdown: return .offlineShutdown
        case .birth: return isStale(record, at: now) ? .stale : .online
        }
    }

    /// How fast the backlog shrinks (messages/s, > 0 when draining): measured over
    /// the last minute, from its highest point in that minute to now, so a backlog
    /// that rose during an outage shows its drain as soon as the replay starts.
    public func drainRate(of record: GatewayRecord) -> Double? {
        guard let last = record.backlogSamples.last,
              let peak = record.backlogSamples.max(by: { $0.messages < $1.messages || ($0.messages == $1.messages && $0.at > $1.at) })
        else { return nil }
        let seconds = last.at.timeIntervalSince(peak.at)
        guard seconds > 0 else { return last.messages == 0 ? nil : 0 }
        return Double(peak.messages - last.messages) / seconds
    }

    /// Seconds until the backlog is empty at the current drain rate; `nil` when not draining.
    public func eta(of record: GatewayRecord) -> Double? {
        guard record.backlogMessages > 0, let rate = drainRate(of: record), rate > 0 else { return nil }
        return Double(record.backlogMessages) / rate
    }

    // MARK: - Event rules

    private mutating func applyStatus(_ gateway: String, _ status: GatewayStatus, _ now: Date) -> [ModelNote] {
        var record = gateways[gateway] ?? GatewayRecord(id: gateway, at: now)
        record.lastSeen = now
        defer { gateways[gateway] = record; dirtyGateways.insert(gateway) }
        if status.kind == .birth, status.outboxReset, let boot = record.boot, status.boot < boot {
            // A new outbox file (the old one was quarantined): its boots count from 1 again.
            // The old file's ledgers cannot be told apart from the new ones: they go.
            removedLedgers.insert(gateway)
            for known in (ledgers[gateway] ?? [:]).keys { dirtyLedgers.remove(LedgerKey(gateway: gateway, boot: known)) }
            ledgers[gateway] = nil
            record.status = nil
            record.boot = nil
            record.session = nil
            addHistory(gateway, now, .birth, "outbox replaced (the old one was quarantined): boots restart at \(status.boot)")
        }
        if let current = record.status, let boot = record.boot {
            let incoming = (status.boot, status.session ?? -1)
            let known = (boot, record.session ?? -1)
            if incoming < known {
                return [ModelNote(level: .debug, message: "older status ignored",
                                  metadata: ["gateway": gateway, "boot": "\(status.boot)", "session": "\(status.session ?? -1)"])]
            }
            if incoming == known {
                if status.kind == current { return [] }  // the same status again (retained re-delivery)
                // One connection: its Will or shutdown ends it; its birth cannot come after.
                if status.session != nil, status.kind == .birth { return [] }
            }
        }
        let previousBoot = record.boot
        record.status = status.kind
        record.boot = status.boot
        record.session = status.session
        record.since = now
        record.markedStale = false
        var notes: [ModelNote] = []
        var detail = "boot \(status.boot), session \(status.session.map(String.init) ?? "-")"
        switch status.kind {
        case .birth:
            record.lastActivity = now
            if let interval = status.statsIntervalMs, interval > 0 { record.statsIntervalMs = interval }
            if !status.retained { liveBirthBoot[gateway] = status.boot }
            if previousBoot != status.boot { record.backlogSamples = [] }
            if let previous = status.previousBoot, let last = status.previousBootLastSeq,
               ledgers[gateway]?[previous] != nil {
                // Only a boot the monitor followed can be judged.
                updateLedger(gateway, previous) { _ = $0.reportCommitted(last) }
                detail += ", previous boot \(previous) ended at seq \(last)"
            }
            notes.append(ModelNote(level: .info, message: "gateway online", metadata: ["gateway": gateway, "boot": "\(status.boot)"]))
        case .will:
            notes.append(ModelNote(level: .warning, message: "gateway offline: connection lost", metadata: ["gateway": gateway]))
        case .shutdown:
            notes.append(ModelNote(level: .info, message: "gateway offline: shutdown", metadata: ["gateway": gateway]))
        }
        addHistory(gateway, now, HistoryEntry.Kind(status.kind), detail)
        return notes
    }

    private mutating func applyDevice(_ gateway: String, _ device: String, online: Bool, error: String?,
                                      _ now: Date) -> [ModelNote] {
        var record = record(gateway, now, activity: false)
        let known = record.devices[device]
        let changed = known?.online != online || known?.error != error
        if changed { record.devices[device] = DeviceRecord(online: online, error: error, since: now) }
        store(record)
        if changed {
            addHistory(gateway, now, .device, "\(device) \(online ? "online" : "offline")" + (error.map { ": \($0)" } ?? ""))
        }
        return []
    }

    private mutating func applyStats(_ gateway: String, _ stats: GatewayStats, _ now: Date) -> [ModelNote] {
        var notes: [ModelNote] = []
        var record = gateways[gateway] ?? GatewayRecord(id: gateway, at: now)
        record.lastSeen = now
        record.lastActivity = now
        if record.boot.map({ stats.boot >= $0 }) ?? true {
            if record.boot != stats.boot { record.backlogSamples = [] }
            record.boot = stats.boot
            record.backlogMessages = stats.bufferedMessages
            record.backlogBytes = stats.bufferedBytes
            record.oldestAgeMs = stats.oldestAgeMs
            record.backlogSamples.append(BacklogSample(at: now, messages: stats.bufferedMessages))
            record.backlogSamples.removeAll { now.timeIntervalSince($0.at) > Self.drainWindow }
            if let failed = stats.pollsFailed { record.pollsFailed = failed }
        }
        // An empty backlog confirms every committed seq reported before this message.
        if stats.bufferedMessages == 0, record.continuity == .tracked {
            for boot in (ledgers[gateway] ?? [:]).keys.sorted() {
                var newlyLost = SeqRanges()
                updateLedger(gateway, boot) { newlyLost = $0.confirm() }
                guard !newlyLost.isEmpty else { continue }
                record.lost += newlyLost.count
                let ranges = Self.describe(newlyLost)
                notes.append(ModelNote(level: .error, message: "DATA LOST: committed messages never arrived",
                                       metadata: ["gateway": gateway, "boot": "\(boot)", "seqs": ranges,
                                                  "count": "\(newlyLost.count)"]))
                addHistory(gateway, now, .lost, "boot \(boot): seq \(ranges) (\(newlyLost.count) messages)")
            }
        }
        gateways[gateway] = record
        dirtyGateways.insert(gateway)
        if let committed = stats.seqCommitted, committed > 0 {
            var accepted = true
            updateLedger(gateway, stats.boot) { accepted = $0.reportCommitted(committed) }
            if !accepted {
                notes += apply(.ignored(.seqBackwards, topic: "\(gateway)/stats",
                                        detail: "seq_committed \(committed) of boot \(stats.boot) is below an earlier report"), at: now)
            }
        }
        return notes
    }

    private mutating func applyGap(_ gateway: String, _ gap: GapRecord, _ now: Date) -> [ModelNote] {
        var outcome: (newlyDropped: Int64, wereLost: Int64) = (0, 0)
        updateLedger(gateway, gap.boot) { outcome = $0.applyGap(gap.first...gap.last) }
        var notes: [ModelNote] = []
        var record = record(gateway, now, activity: false)
        record.dropped += outcome.newlyDropped
        record.lost -= outcome.wereLost
        store(record)
        if outcome.newlyDropped > 0 {
            addHistory(gateway, now, .gap, "boot \(gap.boot): seq \(gap.first)-\(gap.last) dropped by the gateway (\(gap.reason))")
            notes.append(ModelNote(level: .warning, message: "gateway dropped messages (reported)",
                                   metadata: ["gateway": gateway, "boot": "\(gap.boot)", "seqs": "\(gap.first)-\(gap.last)",
                                              "reason": gap.reason]))
        }
        if outcome.wereLost > 0 {
            notes.append(ModelNote(level: .warning, message: "seqs declared lost were reported dropped by a late gap record",
                                   metadata: ["gateway": gateway, "count": "\(outcome.wereLost)"]))
        }
        return notes
    }

    private mutating func applyData(_ gateway: String, boot: Int64, seq: Int64, _ now: Date) -> [ModelNote] {
        var arrival = ContinuityLedger.Arrival.new
        var record = gateways[gateway] ?? GatewayRecord(id: gateway, at: now)
        if record.continuity == .unknown {
            // Readable again (a key was added): what came before is unobserved.
            record.continuity = .tracked
            for known in (ledgers[gateway] ?? [:]).keys { updateLedger(gateway, known) { $0.beginBlindWindow() } }
        }
        updateLedger(gateway, boot) { arrival = $0.receive(seq) }
        record.lastSeen = now
        record.lastActivity = now
        var notes: [ModelNote] = []
        switch arrival {
        case .new: break
        case .duplicate: record.duplicates += 1
        case .lateAfterLost:
            record.lost -= 1
            notes.append(ModelNote(level: .warning, message: "a seq declared lost arrived late",
                                   metadata: ["gateway": gateway, "boot": "\(boot)", "seq": "\(seq)"]))
        }
        gateways[gateway] = record
        dirtyGateways.insert(gateway)
        return notes
    }

    // MARK: - Helpers

    /// The record of `gateway` (a new one when first seen), marked seen at `now`.
    private func record(_ gateway: String, _ now: Date, activity: Bool) -> GatewayRecord {
        var record = gateways[gateway] ?? GatewayRecord(id: gateway, at: now)
        record.lastSeen = now
        if activity { record.lastActivity = now }
        return record
    }

    private mutating func store(_ record: GatewayRecord) {
        gateways[record.id] = record
        dirtyGateways.insert(record.id)
    }

    private mutating func touch(_ gateway: String, _ now: Date, activity: Bool,
                                _ change: (inout GatewayRecord) -> [ModelNote]) -> [ModelNote] {
        var record = record(gateway, now, activity: activity)
        let notes = change(&record)
        store(record)
        return notes
    }

    /// Changes one ledger, creating it when new. A new ledger starts blind unless
    /// the monitor saw this boot's birth live: seqs before its first one are unobserved.
    private mutating func updateLedger(_ gateway: String, _ boot: Int64, _ change: (inout ContinuityLedger) -> Void) {
        let blind: Int64? = liveBirthBoot[gateway] == boot ? nil : 0
        // In place: a ledger's ranges are not copied per message.
        change(&ledgers[gateway, default: [:]][boot, default: ContinuityLedger(boot: boot, blindAfter: blind)])
        dirtyLedgers.insert(LedgerKey(gateway: gateway, boot: boot))
    }

    private mutating func addHistory(_ gateway: String, _ now: Date, _ kind: HistoryEntry.Kind, _ detail: String) {
        let entry = HistoryEntry(gateway: gateway, at: now, kind: kind, detail: detail)
        var entries = history[gateway] ?? []
        entries.append(entry)
        if entries.count > historyLimit { entries.removeFirst(entries.count - historyLimit) }
        history[gateway] = entries
        newHistory.append(entry)
    }

    /// `40-47, 52` for the log and history.
    public static func describe(_ ranges: SeqRanges) -> String {
        ranges.ranges.map { $0.lowerBound == $0.upperBound ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }
            .joined(separator: ", ")
    }
}

extension HistoryEntry.Kind {
    init(_ status: StatusKind) {
        switch status {
        case .birth: self = .birth
        case .will: self = .will
        case .shutdown: self = .shutdown
        }
    }
}
