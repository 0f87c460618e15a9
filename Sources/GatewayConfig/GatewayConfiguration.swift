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
    /// Most unused addresses (registers or bits) a merged read may span between two tags.
    public var maxGap: Int
    /// Longest silence between two bytes of one answer; `nil` keeps libmodbus' default (500 ms).
    public var byteTimeout: Duration?
    /// Extra attempts of a request that timed out before the device counts as unreachable.
    public var retries: Int
    /// When a poll becomes a data message.
    public var publish: PublishPolicy

    public init(
        name: String,
        transport: ModbusTransport,
        unitID: Int = 1,
        pollInterval: Duration = .seconds(1),
        timeout: Duration = .milliseconds(500),
        byteOrder: ByteOrder = .abcd,
        tags: [TagConfiguration],
        maxGap: Int = 0,
        byteTimeout: Duration? = nil,
        retries: Int = 0,
        publish: PublishPolicy = .always
    ) {
        self.name = name
        self.transport = transport
        self.unitID = unitID
        self.pollInterval = pollInterval
        self.timeout = timeout
        self.byteOrder = byteOrder
        self.tags = tags
        self.maxGap = maxGap
        self.byteTimeout = byteTimeout
        self.retries = retries
        self.publish = publish
    }

    /// The poll interval of `tag`: its own, or the device's.
    public func pollInterval(of tag: TagConfiguration) -> Duration {
        tag.pollInterval ?? pollInterval
    }

    /// The device's poll groups: tag indices by poll interval, shortest interval first.
    public var pollGroups: [(interval: Duration, tagIndices: [Int])] {
        var groups: [Duration: [Int]] = [:]
        for (index, tag) in tags.enumerated() { groups[pollInterval(of: tag), default: []].append(index) }
        return groups.keys.sorted().map { ($0, groups[$0]!) }
    }
}

/// Whether every poll is published, or only changes (report by exception).
public enum PublishPolicy: Sendable, Equatable {
    /// Every poll becomes a data message.
    case always
    /// A poll becomes a data message when a value of its group moved beyond its
    /// deadband, a tag's error appeared, changed or cleared, or `maxInterval`
    /// passed since the group's last message.
    case onChange(maxInterval: Duration)
}

/// Settings of one serial line (Modbus RTU).
public struct SerialSettings: Sendable, Equatable, Hashable {
    public enum Parity: String, Sendable, Equatable, Hashable, CaseIterable {
        case none, even, odd
    }

    /// How the adapter's RTS line is driven around a request (RS-485 direction control).
    public enum RTS: String, Sendable, Equatable, Hashable, CaseIterable {
        /// Not touched.
        case none
        /// RTS high while sending.
        case up
        /// RTS low while sending.
        case down
    }

    /// The serial device, e.g. `/dev/ttyUSB0`.
    public var port: String
    public var baud: Int
    public var parity: Parity
    public var dataBits: Int
    public var stopBits: Int
    /// Switch the port to RS-485 mode (TIOCSRS485) on open.
    public var rs485: Bool
    public var rts: RTS

    public init(port: String, baud: Int = 9600, parity: Parity = .none, dataBits: Int = 8, stopBits: Int = 1,
                rs485: Bool = false, rts: RTS = .none) {
        self.port = port
        self.baud = baud
        self.parity = parity
        self.dataBits = dataBits
        self.stopBits = stopBits
        self.rs485 = rs485
        self.rts = rts
    }

    /// `9600 8N1`, for messages.
    public var summary: String {
        "\(baud) \(dataBits)\(parity.rawValue.prefix(1).uppercased())\(stopBits)\(rs485 ? " rs485" : "")"
    }
}

public enum ModbusTransport: Sendable, Equatable, Hashable {
    case tcp(host: String, port: Int)
    /// Modbus RTU on a serial line; every device on the same port shares it.
    case rtu(SerialSettings)

    /// Devices with the same bus key share one connection and one thread:
    /// `tcp://host:port`, or the serial port's path.
    public var busKey: String {
        switch self {
        case let .tcp(host, port): return "tcp://\(host):\(port)"
        case let .rtu(serial): return serial.port
        }
    }
}

public enum RegisterTable: String, Sendable, Equatable, CaseIterable {
    /// FC3, read/write 16-bit registers.
    case holding
    /// FC4, read-only 16-bit registers.
    case input
    /// FC1, read/write single bits.
    case coils
    /// FC2, read-only single bits.
    case discreteInputs = "discrete_inputs"

    /// True for the bit tables (coils, discrete inputs).
    public var holdsBits: Bool { self == .coils || self == .discreteInputs }

    /// The Modbus function code that reads this table.
    public var functionCode: Int {
        switch self {
        case .coils: return 1
        case .discreteInputs: return 2
        case .holding: return 3
        case .input: return 4
        }
    }
}

public enum ValueType: String, Sendable, Equatable, CaseIterable {
    case int16, uint16, int32, uint32, float32
    /// A coil or discrete input, or one bit (`bit:`) of a register.
    case bool
    case int64, uint64, float64
    /// ASCII text in `length` registers, two characters per register.
    case string

    /// How many 16-bit registers one value occupies (a string: per register of its length).
    public var registerCount: Int {
        switch self {
        case .int16, .uint16, .bool, .string: return 1
        case .int32, .uint32, .float32: return 2
        case .int64, .uint64, .float64: return 4
        }
    }
}

/// Order of the bytes of a multi-register value, named after the big-endian
/// value `A B C D`: `abcd` is Modbus' own big-endian order, `cdab` swaps the
/// words, `badc` swaps the bytes in each word, `dcba` is fully little-endian.
/// For 64-bit values the same names extend to four words: `abcd` = ABCDEFGH,
/// `cdab` = GHEFCDAB (words reversed), `badc` = BADCFEHG, `dcba` = HGFEDCBA.
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
    /// For `bool` tags of a register table: the bit (0 = least significant).
    public var bit: Int?
    /// For `string` tags: how many registers the text occupies.
    public var length: Int
    /// Engineering unit (`°C`, `m³/h`), published in the device's meta topic.
    public var unit: String?
    /// Own poll interval (a poll group); `nil` polls with the device.
    public var pollInterval: Duration?
    /// Report by exception: change needed before a new value is published.
    public var deadband: Deadband
    /// `writable: true`: commands may set it (holding registers and coils only).
    public var writable = false
    /// Bounds of a commanded value (published units, after scale and offset); `nil`: the type's range.
    public var minimum: Double? = nil
    public var maximum: Double? = nil

    public init(
        name: String,
        table: RegisterTable,
        address: Int,
        type: ValueType,
        byteOrder: ByteOrder? = nil,
        scale: Double = 1,
        offset: Double = 0,
        bit: Int? = nil,
        length: Int = 1,
        unit: String? = nil,
        pollInterval: Duration? = nil,
        deadband: Deadband = .none
    ) {
        self.name = name
        self.table = table
        self.address = address
        self.type = type
        self.byteOrder = byteOrder
        self.scale = scale
        self.offset = offset
        self.bit = bit
        self.length = length
        self.unit = unit
        self.pollInterval = pollInterval
        self.deadband = deadband
    }

    /// Registers (or bits, in a bit table) the tag occupies.
    public var width: Int {
        if table.holdsBits { return 1 }
        return type == .string ? length : type.registerCount
    }
}

/// How far a numeric value must move from the last published one to count as a change.
public enum Deadband: Sendable, Equatable {
    /// Any change counts.
    case none
    /// `|new − published| > amount`.
    case absolute(Double)
    /// `|new − published| > |published| × percent / 100`.
    case percent(Double)
}
