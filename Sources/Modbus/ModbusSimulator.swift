// A Modbus slave on libmodbus' own server side (TCP, or RTU on a serial port or
// pty): the demo device behind `edge-gateway simulate`, and the device the
// integration tests and benchmarks talk to. Over TCP one simulator can serve many
// ports (one simulated device each) from one thread.
import CModbus
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A Modbus slave serving coils, discrete inputs, holding and input registers
/// from memory. Over TCP it answers every unit id (except silenced ones); over
/// RTU it answers one unit id and ignores frames for the others, like a real
/// slave on a shared line. Its loop runs on its own thread until `stop()`; over
/// TCP that one thread serves every port (epoll), so a thousand simulated devices
/// cost one thread, not a thousand.
public final class ModbusSimulator: @unchecked Sendable {
    public static let registerCount = 10_000

    /// How the simulator misbehaves, for fault tests. Each wrong answer to a read
    /// (FC1–FC4) is well framed and differs from the right one in the one field named.
    public enum Behaviour: Sendable, Equatable {
        /// Answers correctly.
        case normal
        /// Answers every read with two data bytes more than asked for (and a byte count saying so).
        case garbage
        /// Answers every read from another unit id (unit + 1).
        case wrongUnit
        /// TCP: answers every read with another transaction id (request's + 1).
        case wrongTransaction
        /// TCP: answers every read with protocol id 1 instead of 0 (Modbus).
        case wrongProtocol
        /// TCP: answers every read with an MBAP length field two bytes longer than what follows.
        case wrongLength
        /// Answers every read with the other read function of its kind (FC3 ↔ FC4, FC1 ↔ FC2).
        case wrongFunction

        /// A fault of the MBAP header, which RTU frames do not have (RTU answers correctly).
        var isTCPOnly: Bool { self == .wrongTransaction || self == .wrongProtocol || self == .wrongLength }
    }

    public let host: String
    /// The TCP port (0 in RTU mode); the first of `ports`.
    public let port: Int
    /// The TCP ports asked for (0: any free port, see `listeningPorts`); empty in RTU mode.
    public let ports: [Int]
    /// The serial device in RTU mode.
    public let rtuPath: String?
    /// The unit id answered in RTU mode.
    public let rtuUnit: Int
    // Invariant: `mapping` is only read or written while holding `lock`; the
    // server thread replies under the lock, setters write under it.
    private let lock = NSLock()
    private let mapping: UnsafeMutablePointer<modbus_mapping_t>
    private let running = Atomic<Bool>(false)
    private let requests = Atomic<Int>(0)
    private let perFunction = Mutex<[Int: Int]>([:])
    private let finished = DispatchSemaphore(value: 0)
    private let animate: Bool
    private let silent = Mutex<Set<Int>>([])
    private let behaviour = Mutex(Behaviour.normal)
    private let rejections = Mutex<[(functionCode: Int, addresses: Range<Int>, exception: Int)]>([])
    private let bound = Mutex<[Int]>([])

    /// A Modbus TCP slave on `host:port`.
    /// - Parameter animate: change the demo registers over time (see `demoRegisterMap`).
    public convenience init(host: String = "127.0.0.1", port: Int, animate: Bool = false) throws(ModbusError) {
        try self.init(host: host, ports: [port], animate: animate)
    }

    /// Modbus TCP slaves on each of `ports` of `host` (0: a port the kernel picks),
    /// all answering from the same registers.
    public init(host: String = "127.0.0.1", ports: [Int], animate: Bool = false) throws(ModbusError) {
        precondition(!ports.isEmpty, "a simulator serves at least one port")
        self.host = host
        self.port = ports[0]
        self.ports = ports
        self.rtuPath = nil
        self.rtuUnit = 0
        self.animate = animate
        self.mapping = try Self.newMapping()
        if animate { updateDemoRegisters(at: Date()) }
    }

    /// A Modbus RTU slave with unit id `unit` on the serial device (or pty) at `rtuPath`.
    public init(rtuPath: String, unit: Int = 1, animate: Bool = false) throws(ModbusError) {
        self.host = ""
        self.port = 0
        self.ports = []
        self.rtuPath = rtuPath
        self.rtuUnit = unit
        self.animate = animate
        self.mapping = try Self.newMapping()
        if animate { updateDemoRegisters(at: Date()) }
    }

    private static func newMapping() throws(ModbusError) -> UnsafeMutablePointer<modbus_mapping_t> {
        let count = Int32(registerCount)
        guard let mapping = modbus_mapping_new(count, count, count, count) else {
            throw ModbusError(kind: .setup, message: "cannot allocate the simulator's register map")
        }
        return mapping
    }

    deinit {
        stop()
        modbus_mapping_free(mapping)
    }

    /// Unit ids that get no answer at all, like a dead slave behind a TCP gateway.
    public func silence(units: Set<Int>) {
        silent.withLock { $0 = units }
    }

    /// Switches between correct and malformed answers.
    public func setBehaviour(_ new: Behaviour) {
        behaviour.withLock { $0 = new }
    }

    /// Reads with function code `functionCode` that touch `addresses` get exception
    /// `exception` (2 = illegal data address), like a device with unmapped holes.
    public func reject(functionCode: Int, addresses: Range<Int>, exception: Int = 2) {
        rejections.withLock { $0.append((functionCode, addresses, exception)) }
    }

    /// The TCP ports listened on, in the order of `ports`, once `start()` returned.
    public var listeningPorts: [Int] { bound.withLock { $0 } }

    /// Modbus requests answered so far (exceptions and garbage included).
    public var requestCount: Int { requests.load(ordering: .relaxed) }

    /// Requests answered so far with function code `functionCode` (1...4 for the reads).
    public func requestCount(functionCode: Int) -> Int {
        perFunction.withLock { $0[functionCode, default: 0] }
    }

    public func setHoldingRegisters(_ address: Int, _ words: [UInt16]) {
        lock.withLock {
            for (offset, word) in words.enumerated() { mapping.pointee.tab_registers[address + offset] = word }
        }
    }

    /// The holding registers as the server holds them now (what a write left there).
    public func holdingRegisters(_ address: Int, count: Int) -> [UInt16] {
        lock.withLock { (0..<count).map { mapping.pointee.tab_registers[address + $0] } }
    }

    /// The coils as the server holds them now.
    public func coils(_ address: Int, count: Int) -> [Bool] {
        lock.withLock { (0..<count).map { mapping.pointee.tab_bits[address + $0] != 0 } }
    }

    public func setInputRegisters(_ address: Int, _ words: [UInt16]) {
        lock.withLock {
            for (offset, word) in words.enumerated() { mapping.pointee.tab_input_registers[address + offset] = word }
        }
    }

    public func setCoils(_ address: Int, _ bits: [Bool]) {
        lock.withLock {
            for (offset, bit) in bits.enumerated() { mapping.pointee.tab_bits[address + offset] = bit ? 1 : 0 }
        }
    }

    public func setDiscreteInputs(_ address: Int, _ bits: [Bool]) {
        lock.withLock {
            for (offset, bit) in bits.enumerated() { mapping.pointee.tab_input_bits[address + offset] = bit ? 1 : 0 }
        }
    }

    /// Binds (TCP) or opens the serial device (RTU) and starts serving.
    public func start() throws(ModbusError) {
        let server: ServerContext
        if let rtuPath {
            let created = modbus_new_rtu(rtuPath, 9600, CChar(UInt8(ascii: "N")), 8, 1)
            let createErrno = errno
            guard let context = created else {
                throw ModbusError.fromErrno(createErrno, context: "simulator on \(rtuPath)")
            }
            modbus_set_slave(context, Int32(rtuUnit))
            let connected = modbus_connect(context)
            let code = errno
            if connected == -1 {
                modbus_free(context)
                throw ModbusError(kind: .setup,
                                  message: "cannot open \(rtuPath): \(String(cString: modbus_strerror(code)))")
            }
            server = ServerContext(context: context, listeners: [])
        } else {
            let created = modbus_new_tcp(host, Int32(port))
            let createErrno = errno
            guard let context = created else {
                throw ModbusError.fromErrno(createErrno, context: "simulator on \(host):\(port)")
            }
            var listeners: [Int32] = []
            bound.withLock { $0 = [] }
            do throws(ModbusError) {
                for port in ports {
                    let listener = try Self.listen(host: host, port: port)
                    listeners.append(listener.descriptor)
                    bound.withLock { $0.append(listener.port) }
                }
            } catch {
                for listener in listeners { Glibc.close(listener) }
                modbus_free(context)
                throw error
            }
            server = ServerContext(context: context, listeners: listeners)
        }
        running.store(true, ordering: .releasing)
        let thread = Thread { [self] in
            if rtuPath != nil { serveSerial(server) } else { serveTCP(server) }
        }
        thread.name = "modbus-simulator-\(rtuPath ?? String(listeningPorts[0]))"
        thread.start()
    }

    /// Stops serving and closes every connection (or the serial device); returns once it is free.
    public func stop() {
        guard running.exchange(false, ordering: .acquiringAndReleasing) else { return }
        finished.wait()
    }

    /// Owns the server-side libmodbus context for the serving thread.
    // Invariant: created by `start()`, then used by the serving thread alone.
    private final class ServerContext: @unchecked Sendable {
        let context: OpaquePointer
        /// Listening TCP sockets, one per port (none for RTU).
        let listeners: [Int32]
        init(context: OpaquePointer, listeners: [Int32]) {
            self.context = context
            self.listeners = listeners
        }
    }

    /// A listening socket on `host:port` (libmodbus' own listen: SO_REUSEADDR, IPv4)
    /// and the port it got (the kernel's pick for port 0).
    private static func listen(host: String, port: Int) throws(ModbusError) -> (descriptor: Int32, port: Int) {
        guard let context = modbus_new_tcp(host, Int32(port)) else {
            throw ModbusError.fromErrno(errno, context: "simulator on \(host):\(port)")
        }
        // The listening socket is not the context's: freeing the context leaves it open.
        defer { modbus_free(context) }
        let listener = modbus_tcp_listen(context, 16)
        let code = errno
        guard listener != -1 else {
            throw ModbusError(kind: .setup,
                              message: "cannot listen on \(host):\(port): \(String(cString: strerror(code))); pick another --port")
        }
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        let nameErrno = errno
        guard named == 0 else {
            Glibc.close(listener)
            throw ModbusError(kind: .setup, message: "cannot read the port of \(host):\(port): \(String(cString: strerror(nameErrno)))")
        }
        return (listener, Int(UInt16(bigEndian: address.sin_port)))
    }

    /// Serves every listening port and every client connection from one `poll` set.
    /// Requests are answered one at a time, in the order they are found.
    private func serveTCP(_ server: ServerContext) {
        let listenerCount = server.listeners.count
        // Listeners first, then clients; kept between calls, rebuilt only when clients come or go.
        var watched = server.listeners.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        var query = [UInt8](repeating: 0, count: Int(MODBUS_TCP_MAX_ADU_LENGTH))
        var animated = ContinuousClock.now
        while running.load(ordering: .acquiring) {
            let ready = Glibc.poll(&watched, nfds_t(watched.count), 100)
            if animate, ContinuousClock.now - animated >= .milliseconds(100) {
                animated = .now
                updateDemoRegisters(at: Date())
            }
            guard ready > 0 else { continue }
            var accepted: [Int32] = []
            var closed: Set<Int32> = []
            for index in watched.indices where watched[index].revents != 0 {
                let descriptor = watched[index].fd
                watched[index].revents = 0
                if index < listenerCount {
                    let client = accept(descriptor, nil, nil)
                    if client >= 0 {
                        // A request cut short holds the serving thread for a second at most.
                        var limit = timeval(tv_sec: 1, tv_usec: 0)
                        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
                        accepted.append(client)
                    }
                    continue
                }
                modbus_set_socket(server.context, descriptor)  // where modbus_reply sends
                let length = Self.receiveTCPRequest(descriptor, into: &query)
                if length > 0 {
                    answer(query, length: Int(length), headerLength: 7, context: server.context, fd: descriptor)
                } else if length == -1 {
                    Glibc.close(descriptor)
                    closed.insert(descriptor)
                }
            }
            // Accepts come first (listeners lead the array), so no new client reuses a number closed here.
            if !closed.isEmpty { watched.removeAll { closed.contains($0.fd) } }
            watched += accepted.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        }
        for entry in watched { Glibc.close(entry.fd) }
        modbus_free(server.context)
        finished.signal()
    }

    /// Reads one Modbus TCP request (MBAP header, then the length it gives) into
    /// `buffer`; its length, or -1 when the client left, broke the framing or
    /// stalled (SO_RCVTIMEO). Not libmodbus' `modbus_receive`: its `select` aborts
    /// the process for a descriptor above FD_SETSIZE (1024), and a simulator of a
    /// thousand devices has two thousand.
    static func receiveTCPRequest(_ descriptor: Int32, into buffer: inout [UInt8]) -> Int {
        func receive(_ range: Range<Int>) -> Bool {
            buffer.withUnsafeMutableBytes { bytes in
                recv(descriptor, bytes.baseAddress! + range.lowerBound, range.count, Int32(MSG_WAITALL)) == range.count
            }
        }
        guard receive(0..<7) else { return -1 }
        let following = Int(buffer[4]) << 8 | Int(buffer[5])  // unit id and PDU
        guard following >= 2, 6 + following <= buffer.count, receive(7..<(6 + following)) else { return -1 }
        return 6 + following
    }

    /// Serves the serial line. Frames are cut by silence on the line and checked
    /// here rather than by `modbus_receive`: after a request for another unit id,
    /// libmodbus' RTU server expects that unit's answer next and swallows the
    /// following frame, so a dead slave on the line would take this one down too.
    private func serveSerial(_ server: ServerContext) {
        let fd = modbus_get_socket(server.context)
        var buffer = [UInt8](repeating: 0, count: Int(MODBUS_RTU_MAX_ADU_LENGTH))
        while running.load(ordering: .acquiring) {
            var pollFD = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = Glibc.poll(&pollFD, 1, 100)
            if animate { updateDemoRegisters(at: Date()) }
            guard ready > 0 else { continue }
            var frame: [UInt8] = []
            // A frame ends with a silence (3.5 characters; 5 ms covers 9600 baud).
            repeat {
                let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                guard count > 0 else { break }
                frame += buffer[..<count]
                pollFD.revents = 0
            } while Glibc.poll(&pollFD, 1, 5) > 0 && frame.count < buffer.count
            guard frame.count >= 4 else { continue }
            let crc = Self.crc16(Array(frame.dropLast(2)))
            guard frame[frame.count - 2] == UInt8(crc & 0xFF), frame[frame.count - 1] == UInt8(crc >> 8) else {
                continue  // a broken frame: a real slave ignores it
            }
            guard Int(frame[0]) == rtuUnit else { continue }  // for another slave on the line
            answer(frame, length: frame.count, headerLength: 1, context: server.context, fd: fd)
        }
        modbus_close(server.context)
        modbus_free(server.context)
        finished.signal()
    }

    /// Answers one received request (`headerLength` 7 for TCP's MBAP header, 1 for RTU's address).
    private func answer(_ query: [UInt8], length: Int, headerLength: Int, context: OpaquePointer, fd: Int32) {
        let unit = Int(query[headerLength - 1])
        if headerLength == 7, silent.withLock({ $0.contains(unit) }) { return }
        let function = Int(query[headerLength])
        let address = length > headerLength + 2 ? Int(query[headerLength + 1]) << 8 | Int(query[headerLength + 2]) : 0
        let count = length > headerLength + 4 ? Int(query[headerLength + 3]) << 8 | Int(query[headerLength + 4]) : 1
        requests.add(1, ordering: .relaxed)
        perFunction.withLock { $0[function, default: 0] += 1 }
        let current = behaviour.withLock { $0 }
        if current != .normal, (1...4).contains(function), headerLength == 7 || !current.isTCPOnly {
            sendWrongAnswer(current, to: query, headerLength: headerLength, count: count, fd: fd)
            return
        }
        let touched = address..<(address + max(count, 1))
        if let rejection = rejections.withLock({ $0.first { $0.functionCode == function && $0.addresses.overlaps(touched) } }) {
            _ = query.withUnsafeBufferPointer { modbus_reply_exception(context, $0.baseAddress, UInt32(rejection.exception)) }
            return
        }
        lock.withLock { _ = modbus_reply(context, query, Int32(length), mapping) }
    }

    /// An answer to a read framed like the right one, with the one field that
    /// `behaviour` names wrong: the client must reject it. Data bytes are 0xA5.
    private func sendWrongAnswer(_ behaviour: Behaviour, to query: [UInt8], headerLength: Int, count: Int, fd: Int32) {
        let requested = query[headerLength]
        let function: UInt8 = behaviour == .wrongFunction ? [0, 2, 1, 4, 3][Int(requested)] : requested
        let unit = query[headerLength - 1] &+ (behaviour == .wrongUnit ? 1 : 0)
        let dataBytes = (requested <= 2 ? (count + 7) / 8 : count * 2) + (behaviour == .garbage ? 2 : 0)
        var pdu: [UInt8] = [function, UInt8(min(dataBytes, 255))]
        pdu += [UInt8](repeating: 0xA5, count: Int(pdu[1]))
        var frame: [UInt8]
        if headerLength == 7 {
            let transaction = (UInt16(query[0]) << 8 | UInt16(query[1])) &+ (behaviour == .wrongTransaction ? 1 : 0)
            let protocolID: UInt8 = behaviour == .wrongProtocol ? 1 : 0
            let length = pdu.count + 1 + (behaviour == .wrongLength ? 2 : 0)
            frame = [UInt8(transaction >> 8), UInt8(transaction & 0xFF), 0, protocolID,
                     UInt8(length >> 8), UInt8(length & 0xFF), unit] + pdu
        } else {
            frame = [unit] + pdu
            let crc = Self.crc16(frame)
            frame += [UInt8(crc & 0xFF), UInt8(crc >> 8)]
        }
        _ = frame.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    }

    /// CRC-16/MODBUS, low byte first on the wire.
    static func crc16(_ bytes: [UInt8]) -> UInt16 {
        var crc: UInt16 = 0xFFFF
        for byte in bytes {
            crc ^= UInt16(byte)
            for _ in 0..<8 {
                crc = crc & 1 == 1 ? (crc >> 1) ^ 0xA001 : crc >> 1
            }
        }
        return crc
    }

    /// The registers of the demo device, as mapped in the repository's gateway.yaml.
    public static let demoRegisterMap = """
        holding 0      int16    temperature ×0.1 °C, a slow sine around 70 °C
        holding 1      uint16   pump_on, 0/1, toggles every 30 s
        holding 2..3   float32  flow m³/h (ABCD)
        holding 4..5   uint32   energy counter, +1 per second
        holding 10..17 string   "EG-SIM-01" (8 registers)
        input   0      uint16   pressure ×0.01 bar
        coils   0      bool     pump_on (same as holding 1)
        discrete_inputs 0 bool  door_open, toggles every 45 s
        """

    private func updateDemoRegisters(at date: Date) {
        let t = date.timeIntervalSince1970
        let temperature = Int16(700 + 15 * sin(t / 20))
        let flow = Float(12.5 + 2 * sin(t / 7))
        let energy = UInt32(truncatingIfNeeded: Int(t) % 1_000_000)
        let pressure = UInt16(250 + Int(10 * cos(t / 11)))
        let name = Array("EG-SIM-01".utf8) + [0]
        lock.withLock {
            let holding = mapping.pointee.tab_registers!
            holding[0] = UInt16(bitPattern: temperature)
            holding[1] = (Int(t) / 30) % 2 == 0 ? 1 : 0
            holding[2] = UInt16(flow.bitPattern >> 16)
            holding[3] = UInt16(flow.bitPattern & 0xFFFF)
            holding[4] = UInt16(energy >> 16)
            holding[5] = UInt16(energy & 0xFFFF)
            for register in 0..<8 {
                let high = register * 2 < name.count ? name[register * 2] : 0
                let low = register * 2 + 1 < name.count ? name[register * 2 + 1] : 0
                holding[10 + register] = UInt16(high) << 8 | UInt16(low)
            }
            mapping.pointee.tab_input_registers[0] = pressure
            mapping.pointee.tab_bits[0] = UInt8(holding[1])
            mapping.pointee.tab_input_bits[0] = (Int(t) / 45) % 2 == 0 ? 0 : 1
        }
    }
}
