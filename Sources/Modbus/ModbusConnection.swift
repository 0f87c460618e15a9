// The client side of libmodbus: one `modbus_t` per bus, used only on that bus's thread.
import CModbus
import Descriptors
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
        /// The answer was malformed or not the request's: CRC, length, unit id, function code,
        /// or over TCP the transaction id, protocol id or MBAP length.
        case invalidResponse
        /// libmodbus refused the call's arguments or could not allocate.
        case setup
    }

    public var kind: Kind
    public var message: String
    /// What stays the same while the error repeats, when the message does not (it
    /// names a descriptor number, say): a bus logs an outage again only when this changes.
    public var episodeKey: String { episode ?? message }
    private var episode: String?

    public init(kind: Kind, message: String, episode: String? = nil) {
        self.kind = kind
        self.message = message
        self.episode = episode
    }

    public var description: String { message }

    /// True when the device itself is unreachable, as opposed to rejecting one request.
    public var takesDeviceOffline: Bool {
        switch kind {
        case .exception, .invalidResponse: return false
        case .timeout, .connection, .setup: return true
        }
    }

    /// Converts libmodbus' errno, captured right after a failed call.
    static func fromErrno(_ code: Int32, context: String) -> ModbusError {
        let text = String(cString: modbus_strerror(code))
        let exception = cmodbus_exception_of_errno(code)
        if exception != 0 {
            return ModbusError(kind: .exception(code: Int(exception)),
                               message: "modbus exception \(exception): \(text.lowercased())")
        }
        switch code {
        case ETIMEDOUT:
            return ModbusError(kind: .timeout, message: "\(context): timed out waiting for a response")
        case ECONNREFUSED, ECONNRESET, EPIPE, ENOTCONN, EHOSTUNREACH, ENETUNREACH, EBADF, EINVAL, ECONNABORTED:
            return ModbusError(kind: .connection, message: "\(context): \(text.lowercased())")
        case cmodbus_errno_bad_crc(), cmodbus_errno_bad_data(), cmodbus_errno_bad_exception(),
             cmodbus_errno_unknown_exception(), cmodbus_errno_too_much_data(), cmodbus_errno_bad_slave():
            return ModbusError(kind: .invalidResponse, message: "\(context): invalid response: \(text.lowercased())")
        default:
            return ModbusError(kind: .connection, message: "\(context): \(text.lowercased()) (errno \(code))")
        }
    }

    /// A Modbus TCP answer that is not the answer to the request sent.
    static func mismatch(_ mismatch: TCPReadFrame.Mismatch, context: String) -> ModbusError {
        ModbusError(kind: .invalidResponse, message: "\(context): invalid response: \(mismatch)")
    }
}

/// Owns one libmodbus client context. Not thread-safe by design: a bus uses it
/// from its own thread only (see `BusExecutor`).
///
/// Over RTU the reads are libmodbus' own (it checks the unit id and the CRC).
/// Over TCP the gateway frames each read itself, with its own transaction ids,
/// and checks the whole MBAP header of the answer (see `TCPReadFrame`) before
/// decoding it; libmodbus still connects and reads the answer's bytes.
public final class ModbusConnection {
    /// Used on the bus thread only (ModbusWrites.swift writes through it too).
    let context: OpaquePointer
    /// `host:port` or the serial port, for messages.
    public let endpoint: String
    public private(set) var isConnected = false
    private let transport: ModbusTransport
    private let serial: SerialSettings?
    /// libmodbus' default until `setResponseTimeout`; it also bounds a TCP connect.
    private var responseTimeout: Duration = .milliseconds(500)
    /// The last transaction id sent over TCP.
    private var transactionID: UInt16 = 0
    /// Where `modbus_receive_confirmation` puts a TCP answer (reused: one request at a time).
    private var answer = [UInt8](repeating: 0, count: Int(MODBUS_TCP_MAX_ADU_LENGTH))
    /// Lets another thread abandon this connection (see `BusAbandonment`).
    private let abandonment: BusAbandonment

    public init(transport: ModbusTransport, abandonment: BusAbandonment = BusAbandonment()) throws(ModbusError) {
        self.transport = transport
        self.abandonment = abandonment
        switch transport {
        case let .tcp(host, port):
            endpoint = "\(host):\(port)"
            serial = nil
            let created = modbus_new_tcp_pi(host, String(port))
            let code = errno
            guard let created else { throw ModbusError.fromErrno(code, context: "modbus tcp \(endpoint)") }
            context = created
        case let .rtu(settings):
            endpoint = settings.port
            serial = settings
            let parity: CChar = switch settings.parity {
            case .none: CChar(UInt8(ascii: "N"))
            case .even: CChar(UInt8(ascii: "E"))
            case .odd: CChar(UInt8(ascii: "O"))
            }
            let created = modbus_new_rtu(settings.port, Int32(settings.baud), parity,
                                         Int32(settings.dataBits), Int32(settings.stopBits))
            let code = errno
            guard let created else {
                throw ModbusError.fromErrno(code, context: "modbus rtu \(settings.port) \(settings.summary)")
            }
            context = created
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
        if !isSerial {
            let data = try tcpRead(unit: unit, table: table, address: address, count: count)
            return (0..<count).map { data[data.startIndex + $0 / 8] >> UInt8($0 % 8) & 1 == 1 }
        }
        let what = Self.describeRead(unit: unit, table: table, address: address, count: count)
        try selectUnit(unit)
        var bits = [UInt8](repeating: 0, count: count)
        let (received, code) = bits.withUnsafeMutableBufferPointer { buffer -> (Int32, Int32) in
            let received: Int32
            switch table {
            case .coils: received = modbus_read_bits(context, Int32(address), Int32(count), buffer.baseAddress)
            case .discreteInputs: received = modbus_read_input_bits(context, Int32(address), Int32(count), buffer.baseAddress)
            case .holding, .input: return (-1, EINVAL)
            }
            return (received, errno)
        }
        try check(received, errno: code, expected: count, what: what)
        return bits.map { $0 != 0 }
    }

    /// Reads `count` registers of `table` starting at `address` from `unit`.
    public func readRegisters(unit: Int, table: RegisterTable, address: Int, count: Int) throws(ModbusError) -> [UInt16] {
        if !isSerial {
            let data = try tcpRead(unit: unit, table: table, address: address, count: count)
            // `TCPReadFrame.check` lets only two bytes per register through; never read past them.
            guard data.count == 2 * count else {
                throw ModbusError(kind: .invalidResponse, message: "\(Self.describeRead(unit: unit, table: table, address: address, count: count)) "
                    + "at \(endpoint): invalid response: \(data.count) data bytes, expected \(2 * count)")
            }
            return data.withUnsafeBufferPointer { bytes in
                [UInt16](unsafeUninitializedCapacity: count) { words, initialized in
                    for index in 0..<count { words[index] = UInt16(bytes[2 * index]) << 8 | UInt16(bytes[2 * index + 1]) }
                    initialized = count
                }
            }
        }
        let what = Self.describeRead(unit: unit, table: table, address: address, count: count)
        try selectUnit(unit)
        var words = [UInt16](repeating: 0, count: count)
        let (received, code) = words.withUnsafeMutableBufferPointer { buffer -> (Int32, Int32) in
            let received: Int32
            switch table {
            case .holding: received = modbus_read_registers(context, Int32(address), Int32(count), buffer.baseAddress)
            case .input: received = modbus_read_input_registers(context, Int32(address), Int32(count), buffer.baseAddress)
            case .coils, .discreteInputs: return (-1, EINVAL)
            }
            return (received, errno)
        }
        try check(received, errno: code, expected: count, what: what)
        return words
    }

    func selectUnit(_ unit: Int) throws(ModbusError) {
        guard modbus_set_slave(context, Int32(unit)) == 0 else {
            throw ModbusError(kind: .setup, message: "unit id \(unit) rejected by libmodbus")
        }
    }

    /// What a read is, for its error messages.
    static func describeRead(unit: Int, table: RegisterTable, address: Int, count: Int) -> String {
        "read \(table.rawValue) \(address)+\(count) from unit \(unit)"
    }

    /// One read over TCP: sends the request with the next transaction id, reads
    /// the answer with libmodbus (response and byte timeouts apply), and returns
    /// its data bytes once every header field matches the request. The read's
    /// description is only written for an error (every poll makes reads).
    private func tcpRead(unit: Int, table: RegisterTable, address: Int, count: Int) throws(ModbusError) -> ArraySlice<UInt8> {
        var what: String { Self.describeRead(unit: unit, table: table, address: address, count: count) }
        guard (0...255).contains(unit), (0...0xFFFF).contains(address), (1...0xFFFF).contains(count) else {
            throw ModbusError(kind: .setup, message: "\(what): unit id, address or count out of range")
        }
        transactionID &+= 1
        let request = TCPReadFrame(transactionID: transactionID, unit: UInt8(unit), function: UInt8(table.functionCode),
                                   address: UInt16(address), count: UInt16(count))
        let (sent, sendErrno, length) = request.withBytes { frame in
            let sent = send(modbus_get_socket(context), frame.baseAddress, frame.count, Int32(MSG_NOSIGNAL))
            return (sent, errno, frame.count)
        }
        guard sent == length else {
            close()
            if sent == -1 { throw ModbusError.fromErrno(sendErrno, context: "\(what) at \(endpoint)") }
            throw ModbusError(kind: .connection, message: "\(what) at \(endpoint): the request went out incomplete")
        }
        let received = answer.withUnsafeMutableBufferPointer { modbus_receive_confirmation(context, $0.baseAddress) }
        let receiveErrno = errno
        if received == -1 {
            let error = ModbusError.fromErrno(receiveErrno, context: "\(what) at \(endpoint)")
            if error.kind == .connection { close() }
            throw error
        }
        let checked = answer.withUnsafeBufferPointer { request.check($0, length: Int(received)) }
        switch checked {
        case let .success(.data(range)):
            return answer[range]
        case let .success(.exception(code)):
            throw ModbusError.fromErrno(cmodbus_exception_errno(Int32(code)), context: "\(what) at \(endpoint)")
        case let .failure(mismatch):
            throw ModbusError.mismatch(mismatch, context: "\(what) at \(endpoint)")
        }
    }

    func check(_ received: Int32, errno code: Int32, expected: Int, what: String) throws(ModbusError) {
        if received == -1 {
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
        responseTimeout = timeout
        let (seconds, attoseconds) = timeout.components
        let microseconds = attoseconds / 1_000_000_000_000
        modbus_set_response_timeout(context, UInt32(clamping: seconds), UInt32(clamping: microseconds))
    }

    public func connect() throws(ModbusError) {
        guard !isConnected else { return }
        guard !abandonment.isAbandoned else { throw Self.abandoned(endpoint) }
        if case let .tcp(host, port) = transport {
            // Not modbus_connect: it waits for the handshake with select(), which
            // aborts the process for a socket above 1023 (see `selectableLimit`).
            modbus_set_socket(context, try openTCPSocket(host: host, port: port))
        } else if modbus_connect(context) == -1 {
            let code = errno
            modbus_close(context)
            if let serial {
                throw ModbusError(kind: .connection,
                                  message: "cannot open \(serial.port): \(String(cString: modbus_strerror(code)).lowercased())")
            }
            throw connectFailure(code)
        }
        if let serial {
            let descriptor = modbus_get_socket(context)
            guard descriptor < Self.selectableLimit else {
                modbus_close(context)
                throw Self.descriptorTooHigh(descriptor, endpoint: "open \(serial.port)")
            }
            // Both need the open port (they are ioctls on it).
            if serial.rs485 {
                let rc = modbus_rtu_set_serial_mode(context, Int32(MODBUS_RTU_RS485))
                let code = errno
                if rc == -1 {
                    modbus_close(context)
                    throw ModbusError(kind: .setup, message: "\(serial.port) refused RS-485 mode: "
                        + "\(String(cString: modbus_strerror(code)).lowercased()); remove rs485: true if the adapter switches direction itself")
                }
            }
            if serial.rts != .none {
                let mode = serial.rts == .up ? MODBUS_RTU_RTS_UP : MODBUS_RTU_RTS_DOWN
                let rc = modbus_rtu_set_rts(context, Int32(mode))
                let code = errno
                if rc == -1 {
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

    /// libmodbus waits for every answer with select(), whose fd_set holds descriptors
    /// 0...1023 only (glibc's FD_SETSIZE, `SelectRange.limit`): a higher one makes glibc
    /// abort the process ("bit out of range 0 - FD_SETSIZE on fd_set"). A connection above
    /// it is refused.
    static let selectableLimit = SelectRange.limit

    /// The failed connect for a connection that got `descriptor`, at or above `selectableLimit`.
    static func descriptorTooHigh(_ descriptor: Int32, endpoint: String) -> ModbusError {
        ModbusError(kind: .connection, message: "\(endpoint): the connection got file descriptor \(descriptor), "
            + "and libmodbus waits with select(), which cannot wait on a descriptor above \(selectableLimit - 1); "
            + "the gateway has too many files open: poll fewer buses with this gateway (split the devices over two gateways)",
            episode: "\(endpoint): file descriptor above \(selectableLimit - 1)")
    }

    /// Opens the TCP connection as libmodbus' modbus_connect would (the host resolved
    /// at every connect, each address tried in turn; non-blocking, close-on-exec,
    /// TCP_NODELAY and IPTOS_LOWDELAY over IPv4; the handshake bounded by the response
    /// timeout), but waits with poll() and refuses a socket libmodbus could not select on.
    /// Fails with the errno libmodbus would leave (ECONNREFUSED for a name that does
    /// not resolve, EINPROGRESS for a handshake that timed out), for `connectFailure`.
    private func openTCPSocket(host: String, port: Int) throws(ModbusError) -> Int32 {
        var hints = addrinfo()
        hints.ai_flags = AI_ADDRCONFIG
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &list) == 0 else { throw connectFailure(ECONNREFUSED) }
        defer { freeaddrinfo(list) }
        var code = ECONNREFUSED
        var next = list
        while let entry = next {
            next = entry.pointee.ai_next
            let socketType = entry.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
            let descriptor = socket(entry.pointee.ai_family, socketType, entry.pointee.ai_protocol)
            if descriptor == -1 {
                code = errno
                continue
            }
            guard descriptor < Self.selectableLimit else {
                Glibc.close(descriptor)
                throw Self.descriptorTooHigh(descriptor, endpoint: "connect to \(endpoint)")
            }
            if entry.pointee.ai_family == AF_INET {
                var on: Int32 = 1
                setsockopt(descriptor, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
                var lowDelay: Int32 = 0x10  // IPTOS_LOWDELAY (netinet/ip.h, not imported)
                setsockopt(descriptor, Int32(IPPROTO_IP), IP_TOS, &lowDelay, socklen_t(MemoryLayout<Int32>.size))
            }
            let failure = handshake(descriptor, address: entry.pointee.ai_addr, length: entry.pointee.ai_addrlen)
            guard let failure else { return descriptor }
            code = failure
            Glibc.close(descriptor)
        }
        throw connectFailure(code)
    }

    /// Connects the non-blocking `descriptor` to `address`, waiting up to the response
    /// timeout; nil once connected, else the errno (EINPROGRESS when it timed out).
    private func handshake(_ descriptor: Int32, address: UnsafeMutablePointer<sockaddr>?, length: socklen_t) -> Int32? {
        if Glibc.connect(descriptor, address, length) == 0 { return nil }
        let code = errno
        guard code == EINPROGRESS else { return code }
        let deadline = ContinuousClock.now + responseTimeout
        while true {
            let left = deadline - .now
            guard left > .zero else { return EINPROGRESS }
            let (seconds, attoseconds) = left.components
            let milliseconds = Int32(clamping: seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
            var entry = pollfd(fd: descriptor, events: Int16(POLLOUT), revents: 0)
            let ready = poll(&entry, 1, milliseconds)
            let pollErrno = errno
            if ready == -1 {
                if pollErrno == EINTR { continue }
                return pollErrno
            }
            if ready == 0 { continue }
            var result: Int32 = 0
            var resultLength = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(descriptor, SOL_SOCKET, SO_ERROR, &result, &resultLength) == 0 else { return errno }
            return result == 0 ? nil : result
        }
    }

    /// Says what a failed TCP connect was. `openTCPSocket` reports, as libmodbus 3.1.6
    /// does, a name that does not resolve as ECONNREFUSED, and a connect that timed out
    /// as the EINPROGRESS of its non-blocking connect.
    private func connectFailure(_ code: Int32) -> ModbusError {
        let context = "connect to \(endpoint)"
        if code == EINPROGRESS {
            return ModbusError(kind: .connection, message: "\(context): timed out after \(responseTimeout) "
                + "(no answer to the connection request: check the host, the port and firewalls on the way)")
        }
        if code == ECONNREFUSED, case let .tcp(host, port) = transport, let reason = Self.resolutionFailure(host: host, port: port) {
            return ModbusError(kind: .connection, message: "\(context): the host name \"\(host)\" does not resolve "
                + "(\(reason)); check the device's host")
        }
        return ModbusError.fromErrno(code, context: context)
    }

    /// Why `host` does not resolve (looked up as libmodbus does), or nil when it does.
    private static func resolutionFailure(host: String, port: Int) -> String? {
        var hints = addrinfo()
        hints.ai_flags = AI_ADDRCONFIG
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        let code = errno
        if rc == 0 {
            freeaddrinfo(list)
            return nil
        }
        if rc == EAI_SYSTEM { return String(cString: strerror(code)) }
        return String(cString: gai_strerror(rc))
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
}
