// Guarded writes (`commands:` in gateway.yaml): off by default; commands are
// authenticated with their own keys, bounded in age and rate. Read by CommandsLoader.swift.
import Sealing

/// `commands:`. With `enabled` false (the default) the gateway subscribes to no
/// command topic and writes nothing to any device.
public struct CommandSettings: Sendable, Equatable {
    /// Most commands per `per` for the whole gateway (`rate: 5/s`).
    public struct Rate: Sendable, Equatable, CustomStringConvertible {
        public var count: Int
        public var per: Duration

        public init(count: Int, per: Duration) {
            self.count = count
            self.per = per
        }

        /// `5/s`, `30/m`, `1/10s`.
        public var description: String {
            let per = DurationSyntax.format(per)
            return "\(count)/" + (per.hasPrefix("1") && per.dropFirst().allSatisfy(\.isLetter) ? String(per.dropFirst()) : per)
        }
    }

    public var enabled: Bool
    /// Command keys, each read and checked at load; separate from the payload keys.
    public var keys: [SealingKey]
    /// Older commands are refused; also how long a nonce is remembered.
    public var maxAge: Duration
    /// How far a command's issue time may lie ahead of the gateway's clock.
    public var maxSkew: Duration
    public var rate: Rate
    /// `sparkplug_unsigned: true`: with `mqtt.format: sparkplug`, DCMD writes are run
    /// although Sparkplug carries no signature (only the broker's ACLs say who sent
    /// them). Required for commands with Sparkplug; refused with the JSON scheme.
    public var sparkplugUnsigned: Bool

    public init(enabled: Bool = false, keys: [SealingKey] = [], maxAge: Duration = .seconds(10),
                maxSkew: Duration = .seconds(2), rate: Rate = Rate(count: 5, per: .seconds(1)),
                sparkplugUnsigned: Bool = false) {
        self.enabled = enabled
        self.keys = keys
        self.maxAge = maxAge
        self.maxSkew = maxSkew
        self.rate = rate
        self.sparkplugUnsigned = sparkplugUnsigned
    }
}

extension GatewayIdentity {
    /// `<prefix>/<gw>/<device>/cmd`: signed or sealed commands for the device (subscribed only with commands enabled).
    public func commandTopic(device: String) -> String { "\(topicPrefix)/\(id)/\(device)/cmd" }
    /// `<prefix>/<gw>/<device>/cmd/result`: the outcome of every command (QoS 1, not retained).
    public func commandResultTopic(device: String) -> String { "\(topicPrefix)/\(id)/\(device)/cmd/result" }
}
