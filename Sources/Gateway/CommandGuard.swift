// Every check a command passes before anything is written: its envelope, its
// topic, its age, its nonce, the rate, and each tag and value. Pure state, no I/O.
import Foundation
import GatewayConfig
import Modbus
import MQTTUplink
import Sealing

/// Decides on commands; owned by `CommandService` under its lock.
struct CommandGuard {
    /// What the checks found out about one message, as far as they got.
    struct Verdict {
        var device: String?
        var kid: String?
        var command: CommandMessage?
        /// The command's id, also when the rest of it could not be read.
        var id: String?
        var outcome: Result<[TagWrite], CommandRefusal>
    }

    let identity: GatewayIdentity
    let settings: CommandSettings
    /// Command topic → device.
    private let devices: [String: DeviceConfiguration]
    private let opener: Opener
    /// Commands issued before this are refused: nonces seen before the process started are unknown.
    let started: Date
    /// Nonce → when it may be forgotten (its command is too old by then).
    private var nonces: [String: Date] = [:]
    private var bucket: CommandRateLimit
    /// Most nonces remembered; beyond it commands are refused as over the rate.
    static let maxNonces = 100_000

    init(identity: GatewayIdentity, settings: CommandSettings, devices: [DeviceConfiguration], started: Date,
         now: ContinuousClock.Instant) throws(SealingError) {
        self.identity = identity
        self.settings = settings
        self.devices = Dictionary(devices.map { (identity.commandTopic(device: $0.name), $0) }, uniquingKeysWith: { a, _ in a })
        opener = try Opener(keys: settings.keys)
        // Issue times carry milliseconds: the start, cut to the same, so a command
        // issued in the very millisecond the gateway started is not refused.
        self.started = Date(timeIntervalSince1970: (started.timeIntervalSince1970 * 1000).rounded(.down) / 1000)
        bucket = CommandRateLimit(count: settings.rate.count, per: settings.rate.per, now: now)
    }

    /// The topics to subscribe to: one per device.
    var topics: [String] { devices.keys.sorted() }

    /// The largest command read at all; a 64-tag command is a few KiB.
    static let maxPayload = 64 * 1024

    mutating func check(_ message: MQTTMessage, now: Date, monotonic: ContinuousClock.Instant) -> Verdict {
        var verdict = Verdict(device: devices[message.topic]?.name, outcome: .success([]))
        func refuse(_ reason: CommandRefusal.Reason, _ text: String) -> Verdict {
            verdict.outcome = .failure(CommandRefusal(reason, text))
            return verdict
        }
        guard message.payload.count <= Self.maxPayload else {
            return refuse(.malformed, "the message has \(message.payload.count) bytes; a command has at most \(Self.maxPayload)")
        }
        verdict.kid = Self.keyID(message.payload)
        guard let device = devices[message.topic] else {
            return refuse(.topicMismatch, "'\(message.topic)' is not the command topic of a device of gateway \(identity.id)")
        }
        let plain: [UInt8]
        do {
            plain = try opener.open(message.payload, topic: message.topic)
        } catch {
            // The id is echoed (from a readable HS256 envelope) so the sender can match
            // the refusal; the audit line says it was not authenticated.
            verdict.id = Self.unverifiedID(message.payload)
            switch error.kind {
            case .unknownKeyID: return refuse(.unknownKey, error.message)
            case .authenticationFailed: return refuse(.badSignature, error.message)
            case .malformedEnvelope, .badBase64, .badKeyFile, .crypto: return refuse(.malformed, error.message)
            }
        }
        let (id, parsed) = CommandMessage.parse(plain)
        verdict.id = id
        let command: CommandMessage
        switch parsed {
        case let .success(found): command = found
        case let .failure(problem): return refuse(.malformed, problem.message)
        }
        verdict.command = command
        if message.retain {
            return refuse(.retained, "the command came from the broker's retained store; a stored command is never run "
                          + "(publish commands with retain off, and clear the retained one: mosquitto_pub -r -n -t '\(message.topic)')")
        }
        guard command.gateway == identity.id, command.device == device.name else {
            return refuse(.topicMismatch, "the command is for gateway '\(command.gateway)' device '\(command.device)' "
                          + "but arrived on '\(message.topic)' (gateway '\(identity.id)' device '\(device.name)')")
        }
        let age = now.timeIntervalSince(command.issued)
        let maxAge = Self.seconds(settings.maxAge)
        if age > maxAge {
            return refuse(.tooOld, "issued \(Self.format(age)) s ago at \(MessageEncoding.timestamp(command.issued)); "
                          + "commands older than max_age \(Self.format(maxAge)) s are refused (check the sender's clock)")
        }
        if -age > Self.seconds(settings.maxSkew) {
            return refuse(.fromFuture, "issued \(Self.format(-age)) s in the future (\(MessageEncoding.timestamp(command.issued))); "
                          + "at most max_skew \(Self.format(Self.seconds(settings.maxSkew))) s ahead is accepted (check the clocks)")
        }
        if command.issued < started {
            return refuse(.beforeStart, "issued at \(MessageEncoding.timestamp(command.issued)), before this gateway started "
                          + "(\(MessageEncoding.timestamp(started))): a command from before a restart is never run; send a new one")
        }
        nonces = nonces.filter { $0.value > now }
        if nonces[command.nonce] != nil {
            return refuse(.replay, "nonce '\(command.nonce)' was already used within max_age: a replayed command is never run twice")
        }
        guard nonces.count < Self.maxNonces else {
            return refuse(.rateExceeded, "\(Self.maxNonces) commands within max_age; wait")
        }
        nonces[command.nonce] = command.issued.addingTimeInterval(maxAge + Self.seconds(settings.maxSkew))
        guard bucket.take(now: monotonic) else {
            return refuse(.rateExceeded, "more than \(settings.rate) commands for gateway \(identity.id)")
        }
        var writes: [TagWrite] = []
        for (name, value) in command.values {
            guard let tag = device.tags.first(where: { $0.name == name }) else {
                let writable = device.tags.filter(\.writable).map(\.name)
                return refuse(.unknownTag, "device '\(device.name)' has no tag '\(name)' (writable tags: \(writable.isEmpty ? "none" : writable.joined(separator: ", ")))")
            }
            guard tag.writable else {
                return refuse(.notWritable, "tag '\(name)' of device '\(device.name)' is not writable (writable: true in gateway.yaml allows it)")
            }
            switch RegisterEncoding.encode(value, tag: tag, deviceOrder: device.byteOrder) {
            case let .success(payload): writes.append(TagWrite(tag: tag, payload: payload))
            case let .failure(problem): verdict.outcome = .failure(CommandRefusal(problem)); return verdict
            }
        }
        verdict.outcome = .success(writes)
        return verdict
    }

    /// The `id` inside an HS256 envelope that did not verify (nil for A256GCM: unreadable).
    static func unverifiedID(_ payload: [UInt8]) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any],
              let msg = object["msg"] as? String, let plain = Data(base64Encoded: msg),
              let command = try? JSONSerialization.jsonObject(with: plain) as? [String: Any],
              let id = command["id"] as? String, (1...128).contains(id.utf8.count) else { return nil }
        return id
    }

    /// The envelope's `kid`, for the audit line (nil when it has none).
    static func keyID(_ payload: [UInt8]) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any],
              let kid = object["kid"] as? String else { return nil }
        return String(kid.prefix(64))
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    static func format(_ seconds: Double) -> String { String(format: "%.3f", seconds) }
}

/// `count` commands per `per`, refilled continuously; starts full.
struct CommandRateLimit {
    private let capacity: Double
    private let perSecond: Double
    private var tokens: Double
    private var last: ContinuousClock.Instant

    init(count: Int, per: Duration, now: ContinuousClock.Instant) {
        capacity = Double(count)
        perSecond = Double(count) / CommandGuard.seconds(per)
        tokens = capacity
        last = now
    }

    mutating func take(now: ContinuousClock.Instant) -> Bool {
        tokens = min(capacity, tokens + CommandGuard.seconds(now - last) * perSecond)
        last = now
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
