// Every check a signed JSON command passes before anything is written: its envelope,
// its topic, its age, its nonce; then the rate and each tag and value (WriteValidator,
// shared with Sparkplug DCMD). Pure state, no I/O.
import Foundation
import GatewayConfig
import Modbus
import MQTTUplink
import Sealing

/// What the checks found out about one command message, as far as they got.
struct CommandVerdict {
    var device: String?
    var kid: String?
    /// The command's id, also when the rest of it could not be read.
    var id: String?
    /// Set once the sender is known: the envelope verified (JSON), or the broker
    /// delivered it (Sparkplug, whose DCMD carries no signature).
    var authenticated = false
    /// The tags and values asked for (empty until they could be read).
    var values: [(tag: String, value: TagValue)] = []
    /// What the command's age counts from (its issue time; a DCMD's arrival).
    var issued: Date?
    var outcome: Result<[TagWrite], CommandRefusal>
}

/// Decides on JSON commands; owned by `CommandService` under its lock.
struct CommandGuard {
    typealias Verdict = CommandVerdict

    let identity: GatewayIdentity
    let settings: CommandSettings
    /// Command topic → device.
    private let devices: [String: DeviceConfiguration]
    private let opener: Opener
    /// Commands issued before this are refused: nonces seen before the process started are unknown.
    let started: Date
    /// Nonce → when it may be forgotten (its command is too old by then).
    private var nonces: [String: Date] = [:]
    private var validator: WriteValidator
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
        validator = WriteValidator(gateway: identity.id, rate: settings.rate, now: now)
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
        verdict.authenticated = true
        verdict.values = command.values
        verdict.issued = command.issued
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
        if let refusal = validator.admit(now: monotonic) {
            verdict.outcome = .failure(refusal)
            return verdict
        }
        verdict.outcome = WriteValidator.writes(command.values, device: device)
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
