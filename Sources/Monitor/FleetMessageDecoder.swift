// Turns one MQTT message from the fleet into model events: topic scheme, JSON
// payloads, sealed envelopes. Bad input becomes `.ignored`, never an error.
import Foundation
import Sealing

/// Decodes `<prefix>/<gw>/status`, `<prefix>/<gw>/stats`, `<prefix>/<gw>/gaps`,
/// `<prefix>/<gw>/<device>/status` and `<prefix>/<gw>/<device>/data`.
public struct FleetMessageDecoder: Sendable {
    public let topicPrefix: String
    /// Opens sealed data messages; `nil` when no central keys are configured.
    public let opener: Opener?
    /// Larger payloads are ignored (`too_large`): no gateway message comes near it.
    public let maxPayloadBytes: Int

    public init(topicPrefix: String, opener: Opener? = nil, maxPayloadBytes: Int = 256 * 1024) {
        self.topicPrefix = topicPrefix
        self.opener = opener
        self.maxPayloadBytes = maxPayloadBytes
    }

    /// The MQTT filters that cover the scheme.
    public var subscriptions: [String] {
        ["\(topicPrefix)/+/status", "\(topicPrefix)/+/stats", "\(topicPrefix)/+/gaps",
         "\(topicPrefix)/+/+/status", "\(topicPrefix)/+/+/data"]
    }

    private enum Kind { case status, stats, gaps, deviceStatus(String), data(String) }

    public func decode(topic: String, payload: [UInt8], retained: Bool = false) -> [FleetEvent] {
        func ignored(_ reason: IgnoredReason, _ detail: String) -> [FleetEvent] {
            [.ignored(reason, topic: topic, detail: detail)]
        }
        guard topic.hasPrefix(topicPrefix + "/") else {
            return ignored(.unknownTopic, "not under the prefix '\(topicPrefix)/'")
        }
        let levels = topic.dropFirst(topicPrefix.count + 1).split(separator: "/", omittingEmptySubsequences: false)
        let kind: Kind
        switch (levels.count, levels.last) {
        case (2, "status"): kind = .status
        case (2, "stats"): kind = .stats
        case (2, "gaps"): kind = .gaps
        case (3, "status"): kind = .deviceStatus(String(levels[1]))
        case (3, "data"): kind = .data(String(levels[1]))
        default: return ignored(.unknownTopic, "does not fit <prefix>/<gw>/{status,stats,gaps} or <prefix>/<gw>/<device>/{status,data}")
        }
        let gateway = String(levels[0])
        guard !gateway.isEmpty else { return ignored(.unknownTopic, "empty gateway level") }
        guard payload.count <= maxPayloadBytes else {
            return ignored(.tooLarge, "\(payload.count) bytes, more than \(maxPayloadBytes)")
        }
        // A retained status cleared with an empty payload: nothing to apply.
        if payload.isEmpty, case .status = kind { return [] }
        if payload.isEmpty, case .deviceStatus = kind { return [] }
        let fields: Fields
        do {
            fields = try JSONDecoder().decode(Fields.self, from: Data(payload))
        } catch {
            return ignored(.notJSON, "payload is not a JSON object")
        }
        if let named = fields.gateway, named != gateway, fields.alg == nil {
            return ignored(.gatewayMismatch, "payload names gateway '\(named)', the topic '\(gateway)'")
        }
        switch kind {
        case .status:
            guard let state = fields.state, let boot = fields.boot else {
                return ignored(.missingField, "a gateway status needs state and boot")
            }
            let statusKind: StatusKind
            switch (state, fields.reason) {
            case ("online", _): statusKind = .birth
            case ("offline", "shutdown"): statusKind = .shutdown
            case ("offline", _): statusKind = .will
            default: return ignored(.missingField, "state '\(state)' is neither online nor offline")
            }
            var status = GatewayStatus(
                kind: statusKind, boot: boot, session: fields.session, statsIntervalMs: fields.stats_interval_ms,
                previousBoot: fields.previous_boot, previousBootLastSeq: fields.previous_boot_last_seq, retained: retained)
            status.outboxReset = fields.outbox_quarantined != nil
            return [.status(gateway: gateway, status)]
        case .stats:
            guard let boot = fields.boot, let buffered = fields.buffered_messages else {
                return ignored(.missingField, "stats need boot and buffered_messages")
            }
            return [.stats(gateway: gateway, GatewayStats(
                boot: boot, bufferedMessages: buffered, bufferedBytes: fields.buffered_bytes ?? 0,
                oldestAgeMs: fields.oldest_age_ms, dropped: fields.dropped, pollsFailed: fields.polls_failed,
                seqCommitted: fields.seq_committed))]
        case .gaps:
            guard let boot = fields.boot, let first = fields.first_seq, let last = fields.last_seq else {
                return ignored(.missingField, "a gap record needs boot, first_seq and last_seq")
            }
            guard first >= 1, first <= last else {
                return ignored(.missingField, "gap first_seq \(first) ... last_seq \(last) is not a range")
            }
            return [.gap(gateway: gateway, GapRecord(boot: boot, first: first, last: last, reason: fields.reason ?? ""))]
        case let .deviceStatus(device):
            guard let state = fields.state else { return ignored(.missingField, "a device status needs state") }
            return [.deviceStatus(gateway: gateway, device: device, online: state == "online", error: fields.error)]
        case let .data(device):
            if fields.alg != nil || fields.v != nil {
                return openEnvelope(payload, fields: fields, topic: topic, gateway: gateway, device: device)
            }
            return dataEvent(fields, topic: topic, gateway: gateway, device: device)
        }
    }

    private func dataEvent(_ fields: Fields, topic: String, gateway: String, device: String,
                           before: [FleetEvent] = []) -> [FleetEvent] {
        guard let boot = fields.boot, let seq = fields.seq else {
            return before + [.ignored(.missingField, topic: topic, detail: "a data message needs boot and seq")]
        }
        if let named = fields.gateway, named != gateway {
            return before + [.ignored(.gatewayMismatch, topic: topic, detail: "payload names gateway '\(named)', the topic '\(gateway)'")]
        }
        guard seq >= 1, boot >= 0 else {
            return before + [.ignored(.missingField, topic: topic, detail: "seq \(seq) / boot \(boot) out of range")]
        }
        return before + [.data(gateway: gateway, device: device, boot: boot, seq: seq)]
    }

    private func openEnvelope(_ payload: [UInt8], fields: Fields, topic: String, gateway: String,
                              device: String) -> [FleetEvent] {
        guard fields.v == 1, let alg = fields.alg, let kid = fields.kid else {
            return [.ignored(.badEnvelope, topic: topic, detail: "a sealed envelope needs v:1, alg and kid")]
        }
        let plain: [UInt8]
        var before: [FleetEvent] = []
        if let opener {
            do {
                plain = try opener.open(payload, topic: topic)
                before = [.sealOpened(gateway: gateway, keyID: kid)]
            } catch {
                return [.sealFailure(gateway: gateway, keyID: kid, reason: error.message)]
            }
        } else if alg == "HS256", let msg = fields.msg, let bytes = Data(base64Encoded: msg) {
            // Signed, not encrypted: readable (though unverified) without the key.
            plain = [UInt8](bytes)
        } else if alg == "A256GCM" {
            return [.unreadableSealed(gateway: gateway, keyID: kid)]
        } else {
            return [.ignored(.badEnvelope, topic: topic, detail: "unknown alg '\(alg)' or unreadable msg")]
        }
        guard let inner = try? JSONDecoder().decode(Fields.self, from: Data(plain)) else {
            return before + [.ignored(.notJSON, topic: topic, detail: "the opened payload is not a JSON object")]
        }
        return dataEvent(inner, topic: topic, gateway: gateway, device: device, before: before)
    }

    /// Every field any of the topics carries; each topic checks the ones it needs.
    private struct Fields: Decodable {
        var gateway: String?
        var state: String?
        var reason: String?
        var error: String?
        var boot: Int64?
        var session: Int64?
        var seq: Int64?
        var stats_interval_ms: Int64?
        var previous_boot: Int64?
        var previous_boot_last_seq: Int64?
        var buffered_messages: Int64?
        var buffered_bytes: Int64?
        var oldest_age_ms: Int64?
        var dropped: Int64?
        var polls_failed: Int64?
        var seq_committed: Int64?
        var outbox_quarantined: String?
        var first_seq: Int64?
        var last_seq: Int64?
        // Sealed envelope.
        var v: Int?
        var alg: String?
        var kid: String?
        var msg: String?
    }
}
