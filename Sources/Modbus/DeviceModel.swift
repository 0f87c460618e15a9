// The device/tag model: what the Modbus target polls and writes, as gateway.yaml
// describes it (GatewayConfig's loader builds these values). Plain Sendable values.

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

/// Hashable so that devices of one type can share one tag list (the configuration loader does).
public struct TagConfiguration: Sendable, Hashable {
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
public enum Deadband: Sendable, Hashable {
    /// Any change counts.
    case none
    /// `|new − published| > amount`.
    case absolute(Double)
    /// `|new − published| > |published| × percent / 100`.
    case percent(Double)
}
