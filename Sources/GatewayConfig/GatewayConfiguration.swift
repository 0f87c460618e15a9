// The model of gateway.yaml: plain Sendable values with their defaults.
// Loading and validation live in ConfigurationLoader.swift.

import Modbus

/// Everything the gateway needs to run, as read from `gateway.yaml`.
public struct GatewayConfiguration: Sendable, Equatable {
    /// Identity of this gateway on the wire: `<topicPrefix>/<id>/...`.
    public var gateway: GatewayIdentity
    public var mqtt: MQTTSettings
    public var buffer: BufferSettings
    public var replay: ReplaySettings
    public var devices: [DeviceConfiguration]
    public var logLevel: LogLevel
    /// Sealing of data payloads (`payload:`); off by default.
    public var payload = PayloadSettings()
    /// The `sparkplug:` section; set exactly when `mqtt.format` is `sparkplug`.
    public var sparkplug: SparkplugSettings?
    /// Guarded writes to `writable` tags (`commands:`); off by default.
    public var commands = CommandSettings()
    /// Things the loader accepted but an operator should change (e.g. a password
    /// written in gateway.yaml). Logged at startup, printed by `check-config`.
    public var warnings: [ConfigProblem] = []

    public init(
        gateway: GatewayIdentity,
        mqtt: MQTTSettings,
        buffer: BufferSettings = BufferSettings(),
        replay: ReplaySettings = ReplaySettings(),
        devices: [DeviceConfiguration],
        logLevel: LogLevel = .info
    ) {
        self.gateway = gateway
        self.mqtt = mqtt
        self.buffer = buffer
        self.replay = replay
        self.devices = devices
        self.logLevel = logLevel
    }
}

public struct GatewayIdentity: Sendable, Equatable {
    /// The gateway id: one MQTT topic level, unique in the plant.
    public var id: String
    /// First topic level of everything this gateway publishes. Default `edge`.
    public var topicPrefix: String
    /// How often the stats topic is published.
    public var statsInterval: Duration

    public init(id: String, topicPrefix: String = "edge", statsInterval: Duration = .seconds(60)) {
        self.id = id
        self.topicPrefix = topicPrefix
        self.statsInterval = statsInterval
    }

    /// `<prefix>/<gw>/status`: retained birth, Last Will and clean-stop status.
    public var statusTopic: String { "\(topicPrefix)/\(id)/status" }
    /// `<prefix>/<gw>/stats`: periodic counters.
    public var statsTopic: String { "\(topicPrefix)/\(id)/stats" }
    /// `<prefix>/<gw>/gaps`: records of data the outbox had to drop.
    public var gapsTopic: String { "\(topicPrefix)/\(id)/gaps" }
    /// `<prefix>/<gw>/<device>/data`
    public func dataTopic(device: String) -> String { "\(topicPrefix)/\(id)/\(device)/data" }
    /// `<prefix>/<gw>/<device>/status`
    public func deviceStatusTopic(device: String) -> String { "\(topicPrefix)/\(id)/\(device)/status" }
    /// `<prefix>/<gw>/<device>/meta`: retained description of the device's tags (types, units).
    public func deviceMetaTopic(device: String) -> String { "\(topicPrefix)/\(id)/\(device)/meta" }
}

/// `mqtt.protocol`: the MQTT version spoken to the broker.
public enum MQTTProtocolVersion: String, Sendable, Equatable, CaseIterable {
    case v311 = "3.1.1"
    /// Reason codes on PUBACK: a broker's refusal of a message is seen (and the row kept).
    case v5 = "5"
}

/// One broker of `mqtt.servers`.
public struct MQTTServer: Sendable, Equatable {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var endpoint: String { "\(host):\(port)" }
}

public struct MQTTSettings: Sendable, Equatable {
    /// The first (preferred) broker: `mqtt.host`/`port` or the first of `mqtt.servers`.
    public var host: String
    public var port: Int
    /// The brokers after the first in `mqtt.servers`, tried in order when those
    /// before them fail; empty for a single broker.
    public var failover: [MQTTServer] = []
    /// `mqtt.failback_after`: how long the gateway stays on a later server before it
    /// tries the first again.
    public var failbackAfter: Duration = .seconds(300)
    /// `mqtt.protocol` (default 3.1.1).
    public var protocolVersion: MQTTProtocolVersion = .v311
    /// `mqtt.will_delay` (MQTT 5 only, whole seconds): the broker publishes the Will this
    /// long after the connection is lost, and not at all when the gateway is back sooner.
    /// `nil`: at once.
    public var willDelay: Duration? = nil
    /// `mqtt.message_expiry` (MQTT 5 only, whole seconds): data messages the broker has
    /// held this long for a subscriber are dropped by the broker. `nil`: never.
    public var messageExpiry: Duration? = nil
    /// MQTT client id; defaults to the gateway id.
    public var clientID: String
    public var keepalive: Duration
    /// QoS of data messages (0, 1 or 2). Status messages always use QoS 1.
    public var qos: Int
    /// Most QoS 1/2 messages in flight before waiting for acknowledgements.
    public var maxInflight: Int
    /// Reconnect backoff: first delay, doubled up to `reconnectMax`.
    public var reconnectMin: Duration
    public var reconnectMax: Duration
    /// TLS of the connection (`mqtt.tls`); `nil` means plain TCP.
    public var tls: MQTTTLSSettings? = nil
    /// MQTT user name (`mqtt.username`).
    public var username: String? = nil
    /// MQTT password, from `password_file`, `password_env` or (with a warning) `password`.
    public var password: Secret? = nil
    /// Where `password` came from.
    public var passwordSource: PasswordSource? = nil
    /// `bind_interface`: connect only through this interface (e.g. the VPN's `wg0`);
    /// while it is missing or down, buffer instead of taking another route.
    public var bindInterface: String?
    /// `bind_address`: connect only from this local address.
    public var bindAddress: String?
    /// `format`: the JSON topics (default) or Sparkplug B (then `GatewayConfiguration.sparkplug` is set).
    public var format: MessageFormat = .json

    public init(
        host: String,
        port: Int = 1883,
        clientID: String,
        keepalive: Duration = .seconds(30),
        qos: Int = 1,
        maxInflight: Int = 100,
        reconnectMin: Duration = .seconds(1),
        reconnectMax: Duration = .seconds(30)
    ) {
        self.host = host
        self.port = port
        self.clientID = clientID
        self.keepalive = keepalive
        self.qos = qos
        self.maxInflight = maxInflight
        self.reconnectMin = reconnectMin
        self.reconnectMax = reconnectMax
    }

    /// Every broker, in the order they are tried.
    public var servers: [MQTTServer] { [MQTTServer(host: host, port: port)] + failover }
}

/// The SQLite store-and-forward outbox.
public struct BufferSettings: Sendable, Equatable {
    public enum Sync: String, Sendable, Equatable, CaseIterable {
        /// fsync at every commit: nothing committed is lost on power loss.
        case full
        /// fsync at WAL checkpoints only: faster and kinder to SD cards; a power
        /// cut may lose the last commits (never corrupts the file).
        case normal
    }

    public enum DropPolicy: String, Sendable, Equatable, CaseIterable {
        case dropOldest = "drop_oldest"
        case dropNewest = "drop_newest"
    }

    /// Path of the SQLite file; its directory is created if missing.
    public var path: String
    public var sync: Sync
    /// Limits; `nil` means no limit of that kind.
    public var maxMessages: Int?
    public var maxBytes: Int64?
    public var maxAge: Duration?
    public var dropPolicy: DropPolicy

    public init(
        path: String = "/var/lib/edge-gateway/outbox.sqlite",
        sync: Sync = .full,
        maxMessages: Int? = 5_000_000,
        maxBytes: Int64? = 1 << 30,
        maxAge: Duration? = nil,
        dropPolicy: DropPolicy = .dropOldest
    ) {
        self.path = path
        self.sync = sync
        self.maxMessages = maxMessages
        self.maxBytes = maxBytes
        self.maxAge = maxAge
        self.dropPolicy = dropPolicy
    }
}

/// How a backlog is sent once the link is back.
public struct ReplaySettings: Sendable, Equatable {
    public enum Order: String, Sendable, Equatable, CaseIterable {
        /// Everything in commit order: the backlog first, then what is new.
        case oldestFirst = "oldest_first"
        /// What is polled now goes first; the backlog drains behind it.
        case liveFirst = "live_first"
    }

    public var order: Order
    /// Most data messages per second while sending; 0 means unlimited (only the
    /// inflight window bounds the burst).
    public var maxRate: Int

    public init(order: Order = .oldestFirst, maxRate: Int = 0) {
        self.order = order
        self.maxRate = maxRate
    }
}

public enum LogLevel: String, Sendable, Equatable, CaseIterable {
    case trace, debug, info, notice, warning, error, critical
}
