// The client side of libmodbus: one `modbus_t` per bus, used only on that bus's thread.
import CModbus
import GatewayConfig
#if canImport(Glibc)
import Glibc
#endif

/// Everything that can go wrong talking to a Modbus device.
public struct ModbusError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The device answered with a Modbus exception code (1 = illegal function, 2 = illegal data address, …).
        case exception(code: Int)
        /// No (complete) answer within the response timeout.
        case timeout
        /// The connection could not be made or broke.
        case connection
        /// The answer was malformed (CRC, wrong length, wrong unit, wrong transaction id).
        case invalidResponse
        /// libmodbus refused the call's arguments or could not allocate.
        case setup
    }

    public var kind: Kind
    public var message: String

    public init(kind: Kind, message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }

    /// True when the device itself is unreachable, as opposed to rejecting one request.
    public var takesDeviceOffline: Bool {
        switch kind {
        case .exception, .invalidResponse: return false
        case .timeout, .connection, .setup: return true
        }
    }

    /// Converts libmodbus' errno right after a failed call.
    static func fromErrno(_ code: Int32, context: String) -> ModbusError {
        let text = String(cString: modbus_strerror(code))
        let base = Int32(MODBUS_ENOBASE)
        // libmodbus' own codes follow its exception codes; the C macros are
        // expressions Swift does not import, so they are spelled out here.
        let lastException = base + Int32(MODBUS_EXCEPTION_GATEWAY_TARGET)
        let badCRC = lastException + 1, badData = lastException + 2, badException = lastException + 3
        let unknownException = lastException + 4, tooMuchData = lastException + 5, badSlave = lastException + 6
        if code > base && code <= lastException {
            let exception = Int(code - base)
            return ModbusError(kind: .exception(code: exception),
                               message: "modbus exception \(exception): \(text.lowercased())")
        }
        switch code {
        case ETIMEDOUT:
            return ModbusError(kind: .timeout, message: "\(context): timed out waiting for a response")
        case ECONNREFUSED, ECONNRESET, EPIPE, ENOTCONN, EHOSTUNREACH, ENETUNREACH, EBADF, EINVAL, ECONNABORTED:
            return ModbusError(kind: .connection, message: "\(context): \(text.lowercased())")
        case badCRC, badData, badException, unknownException, tooMuchData, badSlave:
            return ModbusError(kind: .invalidResponse, message: "\(context): invalid response: \(text.lowercased())")
        default:
            return ModbusError(kind: .connection, message: "\(context): \(text.lowercased()) (errno \(code))")
        }
    }
}

/// Owns one libmodbus client context. Not thread-safe by design: a bus uses it
/// from its own thread only (see `BusExecutor`).
public final class ModbusConnection {
    private let context: OpaquePointer
    /// `host:port` or the serial port, for messages.
    public let endpoint: String
    public private(set) var isConnected = false
    private let serial: SerialSettings?
    /// Lets another thread abandon this connection (see `BusAbandonment`).
    private let abandonment: BusAbandonment

    public init(transport: ModbusTransport, abandonment: BusAbandonment = BusAbandonment()) throws(ModbusError) {
        self.abandonment = abandonment
        switch transport {
        case let .tcp(host, port):
            endpoint = "\(host):\(port)"
            serial = nil
            guard let context = modbus_new_tcp_pi(host, String(port)) else {
                throw ModbusError.fromErrno(errno, context: "modbus tcp \(endpoint)")
            }
            self.context = context
        case let .rtu(settings):
            endpoint = settings.port
            serial = settings
            let parity: CChar = switch settings.parity {
            case .none: CChar(UInt8(ascii: "N"))
            case .even: CChar(UInt8(ascii: "E"))
            case .odd: CChar(UInt8(ascii: "O"))
            }
            guard let context = modbus_new_rtu(settings.port, Int32(settings.baud), parity,
                                               Int32(settings.dataBits), Int32(settings.stopBits)) else {
                throw ModbusError.fromErrno(errno, context: "modbus rtu \(settings.port) \(settings.summary)")
            }
            self.context = context
        }
    }

    /// True for a serial line (Modbus RTU).
    public var isSerial: Bool { serial != nil }

    /// Longest silence between two bytes of one answer.
    public func setByteTimeout(_ timeout: Duration) {
        let (seconds, attoseconds) = timeout.components
        modbus_set_byte_timeout(context, UInt32(clamping: seconds), UInt32(clamping: attoseconds / 1_000_000_000_000))
    }

    /// After a malformed answer: bytes of it may still be on the wire. A serial
    /// line is flushed; a TCP connection is closed (reopened by the next request).
    public func resynchronise() {
        if isSerial { flush() } else { close() }
    }

    /// Reads `count` coils or discrete inputs of `table` starting at `address` from `unit`.
    public func readBits(unit: Int, table: RegisterTable, address: Int, count: Int) throws(ModbusError) -> [Bool] {
        guard modbus_set_slave(context, Int32(unit)) == 0 else {
            throw ModbusError(kind: .setup, message: "unit id \(unit) rejected by libmodbus")
        }
        var bits = [UInt8](repeating: 0, count: count)
        let received = bits.withUnsafeMutableBufferPointer { buffer -> Int32 in
            switch table {
            case .coils: return modbus_read_bits(context, Int32(address), Int32(count), buffer.baseAddress)
            case .discreteInputs: return modbus_read_input_bits(context, Int32(address), Int32(count), buffer.baseAddress)
            case .holding, .input: errno = EINVAL; return -1
            }
        }
        try check(received, expected: count, what: "read \(table.rawValue) \(address)+\(count) from unit \(unit)")
        return bits.map { $0 != 0 }
    }

    private func check(_ received: Int32, expected: Int, what: String) throws(ModbusError) {
        if received == -1 {
            let code = errno
            let error = ModbusError.fromErrno(code, context: "\(what) at \(endpoint)")
            if error.kind == .connection { close() }
            throw error
        }
        guard received == Int32(expected) else {
            throw ModbusError(kind: .invalidResponse, message: "\(what) at \(endpoint): got \(received), expected \(expected)")
        }
    }

    deinit {
        abandonment.closing { modbus_close(context) }
        modbus_free(context)
    }

    /// Response timeout for each request (libmodbus also uses it for the TCP connect).
    public func setResponseTimeout(_ timeout: Duration) {
        let (seconds, attoseconds) = timeout.components
        let microseconds = attoseconds / 1_000_000_000_000
        modbus_set_response_timeout(context, UInt32(clamping: seconds), UInt32(clamping: microseconds))
    }

    public func connect() throws(ModbusError) {
        guard !isConnected else { return }
        guard !abandonment.isAbandoned else { throw Self.abandoned(endpoint) }
        if modbus_connect(context) == -1 {
            let code = errno
            modbus_close(context)
            if let serial {
                throw ModbusError(kind: .connection,
                                  message: "cannot open \(serial.port): \(String(cString: modbus_strerror(code)).lowercased())")
            }
            throw ModbusError.fromErrno(code, context: "connect to \(endpoint)")
        }
        if let serial {
            // Both need the open port (they are ioctls on it).
            if serial.rs485, modbus_rtu_set_serial_mode(context, Int32(MODBUS_RTU_RS485)) == -1 {
                let code = errno
                modbus_close(context)
                throw ModbusError(kind: .setup, message: "\(serial.port) refused RS-485 mode: "
                    + "\(String(cString: modbus_strerror(code)).lowercased()); remove rs485: true if the adapter switches direction itself")
            }
            if serial.rts != .none {
                let mode = serial.rts == .up ? MODBUS_RTU_RTS_UP : MODBUS_RTU_RTS_DOWN
                if modbus_rtu_set_rts(context, Int32(mode)) == -1 {
                    let code = errno
                    modbus_close(context)
                    throw ModbusError(kind: .setup, message: "\(serial.port) refused RTS control: "
                        + "\(String(cString: modbus_strerror(code)).lowercased()); try rts: none")
                }
            }
        }
        guard abandonment.opened(descriptor: modbus_get_socket(context)) else {
            modbus_close(context)
            throw Self.abandoned(endpoint)
        }
        isConnected = true
    }

    private static func abandoned(_ endpoint: String) -> ModbusError {
        ModbusError(kind: .connection, message: "\(endpoint): the bus is stopping")
    }

    public func close() {
        abandonment.closing { modbus_close(context) }
        isConnected = false
    }

    /// Drops bytes still on the wire, e.g. a late answer after a timeout.
    public func flush() {
        _ = modbus_flush(context)
    }

    /// Reads `count` registers of `table` starting at `address` from `unit`.
    public func readRegisters(unit: Int, table: RegisterTable, address: Int, count: Int) throws(ModbusError) -> [UInt16] {
        guard modbus_set_slave(context, Int32(unit)) == 0 else {
            throw ModbusError(kind: .setup, message: "unit id \(unit) rejected by libmodbus")
        }
        var words = [UInt16](repeating: 0, count: count)
        let received = words.withUnsafeMutableBufferPointer { buffer -> Int32 in
            switch table {
            case .holding: return modbus_read_registers(context, Int32(address), Int32(count), buffer.baseAddress)
            case .input: return modbus_read_input_registers(context, Int32(address), Int32(count), buffer.baseAddress)
            case .coils, .discreteInputs: errno = EINVAL; return -1
            }
        }
        try check(received, expected: count, what: "read \(table.rawValue) \(address)+\(count) from unit \(unit)")
        return words
    }
}
