// Every check a Sparkplug DCMD passes before anything is written: its topic, the
// payload, each metric resolved by name or alias against the DBIRTH with its datatype,
// then the same rate and tag checks as a signed JSON command (WriteValidator). A DCMD
// has no signature, nonce or issue time: only the broker's ACLs say who sent it, which
// is why `commands.sparkplug_unsigned: true` must allow it. Pure state, no I/O.
import Foundation
import GatewayConfig
import Modbus
import MQTTUplink
import SparkplugB

/// Decides on DCMD messages; owned by `CommandService` under its lock.
struct SparkplugCommandGuard {
    let node: SparkplugNode
    private let devices: [String: DeviceConfiguration]
    private var validator: WriteValidator

    init(node: SparkplugNode, identity: GatewayIdentity, settings: CommandSettings, devices: [DeviceConfiguration],
         now: ContinuousClock.Instant) {
        self.node = node
        self.devices = Dictionary(devices.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        validator = WriteValidator(gateway: identity.id, rate: settings.rate, now: now)
    }

    /// True for a DCMD topic of this node (the messages this guard decides on).
    func isCommand(_ topic: String) -> Bool { node.topics.device(in: topic, verb: "DCMD") != nil }

    mutating func check(_ message: MQTTMessage, now: Date, monotonic: ContinuousClock.Instant) -> CommandVerdict {
        var verdict = CommandVerdict(outcome: .success([]))
        func refuse(_ reason: CommandRefusal.Reason, _ text: String) -> CommandVerdict {
            verdict.outcome = .failure(CommandRefusal(reason, text))
            return verdict
        }
        guard let name = node.topics.device(in: message.topic, verb: "DCMD"), let device = devices[name] else {
            return refuse(.topicMismatch, "'\(message.topic)' is not the DCMD topic of a device of edge node \(node.topics.node) "
                          + "in group \(node.topics.group)")
        }
        verdict.device = device.name
        // The broker delivered it to this node's subscription; nothing more is known of the sender.
        verdict.authenticated = true
        verdict.issued = now
        guard message.payload.count <= CommandGuard.maxPayload else {
            return refuse(.malformed, "the DCMD has \(message.payload.count) bytes; a command has at most \(CommandGuard.maxPayload)")
        }
        let payload: SparkplugPayload
        switch SparkplugNode.parseCommand(message.payload) {
        case let .success(parsed): payload = parsed
        case let .failure(problem): return refuse(.malformed, problem.message)
        }
        if message.retain {
            return refuse(.retained, "the DCMD came from the broker's retained store; a stored command is never run "
                          + "(publish DCMD with retain off, and clear the retained one: mosquitto_pub -r -n -t '\(message.topic)')")
        }
        if let refusal = validator.admit(now: monotonic) {
            verdict.outcome = .failure(refusal)
            return verdict
        }
        switch node.commandValues(payload, device: device.name) {
        case let .success(values):
            verdict.values = values
            verdict.outcome = WriteValidator.writes(values, device: device)
        case let .failure(problem):
            switch problem.kind {
            case .malformed: return refuse(.malformed, problem.message)
            case .unknownMetric: return refuse(.unknownTag, problem.message)
            case .gatewayMetric: return refuse(.notWritable, problem.message)
            case .wrongType: return refuse(.wrongType, problem.message)
            }
        }
        return verdict
    }
}
