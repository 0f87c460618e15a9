// The model of gateway.yaml: plain Sendable values with their defaults.
// Loading and validation live in ConfigurationLoader.swift.

/// Everything the gateway needs to run, as read from `gateway.yaml`.
public struct GatewayConfiguration: Sendable, Equatable {
    /// Identity of this gateway on the wire: `<topicPrefix>/<id>/...`.
    public var gateway: GatewayIdentity
    public var mqtt: MQTTSettings
    public var buffer: BufferSettings
    public var replay: ReplaySettings
    public var devices: [DeviceConfiguration]
    public var logLevel: LogLevel

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
}

public struct MQTTSettings: Sendable, Equatable {
    public var host: String
    public var port: Int
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
    /// `bind_interface`: connect only through this interface (e.g. the VPN's `wg0`);
    /// while it is missing or down, buffer instead of taking another route.
    public var bindInterface: String?
    /// `bind_address`: connect only from this local address.
    public var bindAddress: String?

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

/// One Modbus device (a unit id behind a transport) and the tags read from it.
public struct DeviceConfiguration: Sendable, Equatable {
    /// Device name: one MQTT topic level.
    public var name: String
    public var transport: ModbusTransport
    public var unitID: Int
    public var pollInterval: Duration
    /// Response timeout of one Modbus request.
    public var timeout: Duration
    /// Word order used by tags that do not name their own.
    public var byteOrder: ByteOrder
    public var tags: [TagConfiguration]

    public init(
        name: String,
        transport: ModbusTransport,
        unitID: Int = 1,
        pollInterval: Duration = .seconds(1),
        timeout: Duration = .milliseconds(500),
        byteOrder: ByteOrder = .abcd,
        tags: [TagConfiguration]
    ) {
        self.name = name
        self.transport = transport
        self.unitID = unitID
        self.pollInterval = pollInterval
        self.timeout = timeout
        self.byteOrder = byteOrder
        self.tags = tags
    }
}

public enum ModbusTransport: Sendable, Equatable, Hashable {
    case tcp(host: String, port: Int)

    /// Devices with the same bus key share one connection and one thread.
    public var busKey: String {
        switch self {
        case let .tcp(host, port): return "tcp://\(host):\(port)"
        }
    }
}

public enum RegisterTable: String, Sendable, Equatable, CaseIterable {
    /// FC3, read/write 16-bit registers.
    case holding
    /// FC4, read-only 16-bit registers.
    case input
}

public enum ValueType: String, Sendable, Equatable, CaseIterable {
    case int16, uint16, int32, uint32, float32

    /// How many 16-bit registers one value occupies.
    public var registerCount: Int {
        switch self {
        case .int16, .uint16: return 1
        case .int32, .uint32, .float32: return 2
        }
    }
}

/// Order of the bytes of a multi-register value, named after the big-endian
/// value `A B C D`: `abcd` is Modbus' own big-endian order, `cdab` swaps the
/// words, `badc` swaps the bytes in each word, `dcba` is fully little-endian.
public enum ByteOrder: String, Sendable, Equatable, CaseIterable {
    case abcd, cdab, badc, dcba
}

public struct TagConfiguration: Sendable, Equatable {
    /// Key of the value in the data message's `values` object.
    public var name: String
    public var table: RegisterTable
    /// Zero-based protocol address (register 40001 is address 0 of `holding`).
    public var address: Int
    public var type: ValueType
    /// `nil` means the device's byte order.
    public var byteOrder: ByteOrder?
    /// Published value = raw × scale + offset.
    public var scale: Double
    public var offset: Double

    public init(
        name: String,
        table: RegisterTable,
        address: Int,
        type: ValueType,
        byteOrder: ByteOrder? = nil,
        scale: Double = 1,
        offset: Double = 0
    ) {
        self.name = name
        self.table = table
        self.address = address
        self.type = type
        self.byteOrder = byteOrder
        self.scale = scale
        self.offset = offset
    }
}
