// A Modbus TCP server on libmodbus' own server side: the demo device behind
// `edge-gateway simulate`, and the device the integration tests talk to.
import CModbus
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A Modbus TCP slave serving holding and input registers from memory. It answers
/// every unit id. Its loop runs on its own thread until `stop()`.
public final class ModbusSimulator: @unchecked Sendable {
    public static let registerCount = 10_000

    public let host: String
    public let port: Int
    // Invariant: `mapping` is only read or written while holding `lock`; the
    // server thread replies under the lock, setters write under it.
    private let lock = NSLock()
    private let mapping: UnsafeMutablePointer<modbus_mapping_t>
    private let running = Atomic<Bool>(false)
    private let requests = Atomic<Int>(0)
    private let finished = DispatchSemaphore(value: 0)
    private let animate: Bool
    private let silent = Mutex<Set<Int>>([])

    /// - Parameter animate: change the demo registers over time (see `demoRegisterMap`).
    public init(host: String = "127.0.0.1", port: Int, animate: Bool = false) throws(ModbusError) {
        guard let mapping = modbus_mapping_new(0, 0, Int32(Self.registerCount), Int32(Self.registerCount)) else {
            throw ModbusError(kind: .setup, message: "cannot allocate the simulator's register map")
        }
        self.host = host
        self.port = port
        self.mapping = mapping
        self.animate = animate
        if animate { updateDemoRegisters(at: Date()) }
    }

    deinit {
        stop()
        modbus_mapping_free(mapping)
    }

    /// Unit ids that get no answer at all, like a dead slave behind a TCP gateway.
    public func silence(units: Set<Int>) {
        silent.withLock { $0 = units }
    }

    /// Modbus requests answered so far.
    public var requestCount: Int { requests.load(ordering: .relaxed) }

    public func setHoldingRegisters(_ address: Int, _ words: [UInt16]) {
        lock.withLock {
            for (offset, word) in words.enumerated() { mapping.pointee.tab_registers[address + offset] = word }
        }
    }

    public func setInputRegisters(_ address: Int, _ words: [UInt16]) {
        lock.withLock {
            for (offset, word) in words.enumerated() { mapping.pointee.tab_input_registers[address + offset] = word }
        }
    }

    /// Binds and starts serving. Throws when the port cannot be bound.
    public func start() throws(ModbusError) {
        guard let context = modbus_new_tcp(host, Int32(port)) else {
            throw ModbusError.fromErrno(errno, context: "simulator on \(host):\(port)")
        }
        let listener = modbus_tcp_listen(context, 16)
        if listener == -1 {
            let code = errno
            modbus_free(context)
            throw ModbusError(kind: .setup,
                              message: "cannot listen on \(host):\(port): \(String(cString: strerror(code))); pick another --port")
        }
        running.store(true, ordering: .releasing)
        let server = ServerContext(context: context, listener: listener)
        let thread = Thread { self.serve(server) }
        thread.name = "modbus-simulator-\(port)"
        thread.start()
    }

    /// Stops serving and closes every connection; returns once the port is free.
    public func stop() {
        guard running.exchange(false, ordering: .acquiringAndReleasing) else { return }
        finished.wait()
    }

    /// Owns the server-side libmodbus context for the serving thread.
    private final class ServerContext: @unchecked Sendable {
        let context: OpaquePointer
        let listener: Int32
        init(context: OpaquePointer, listener: Int32) {
            self.context = context
            self.listener = listener
        }
    }

    private func serve(_ server: ServerContext) {
        var clients: [Int32] = []
        var query = [UInt8](repeating: 0, count: Int(MODBUS_TCP_MAX_ADU_LENGTH))
        modbus_set_indication_timeout(server.context, 1, 0)
        while running.load(ordering: .acquiring) {
            var pollFDs = [pollfd(fd: server.listener, events: Int16(POLLIN), revents: 0)]
            pollFDs += clients.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let ready = Glibc.poll(&pollFDs, nfds_t(pollFDs.count), 100)
            if animate { updateDemoRegisters(at: Date()) }
            guard ready > 0 else { continue }
            if pollFDs[0].revents & Int16(POLLIN) != 0 {
                let client = accept(server.listener, nil, nil)
                if client >= 0 { clients.append(client) }
            }
            for entry in pollFDs.dropFirst() where entry.revents != 0 {
                modbus_set_socket(server.context, entry.fd)
                let length = query.withUnsafeMutableBufferPointer { modbus_receive(server.context, $0.baseAddress) }
                // Byte 6 of a Modbus TCP request (after the MBAP header's first 6) is the unit id.
                if length > 6, silent.withLock({ $0.contains(Int(query[6])) }) {
                    continue
                }
                if length > 0 {
                    lock.withLock { _ = modbus_reply(server.context, query, length, mapping) }
                    requests.add(1, ordering: .relaxed)
                } else if length == -1 {
                    Glibc.close(entry.fd)
                    clients.removeAll { $0 == entry.fd }
                }
            }
        }
        for client in clients { Glibc.close(client) }
        Glibc.close(server.listener)
        modbus_free(server.context)
        finished.signal()
    }

    /// The registers of the demo device, as mapped in the repository's gateway.yaml.
    public static let demoRegisterMap = """
        holding 0      int16    temperature ×0.1 °C, a slow sine around 70 °C
        holding 1      uint16   pump_on, 0/1, toggles every 30 s
        holding 2..3   float32  flow m³/h (ABCD)
        holding 4..5   uint32   energy counter, +1 per second
        input   0      uint16   pressure ×0.01 bar
        """

    private func updateDemoRegisters(at date: Date) {
        let t = date.timeIntervalSince1970
        let temperature = Int16(700 + 15 * sin(t / 20))
        let flow = Float(12.5 + 2 * sin(t / 7))
        let energy = UInt32(truncatingIfNeeded: Int(t) % 1_000_000)
        let pressure = UInt16(250 + Int(10 * cos(t / 11)))
        lock.withLock {
            let holding = mapping.pointee.tab_registers!
            holding[0] = UInt16(bitPattern: temperature)
            holding[1] = (Int(t) / 30) % 2 == 0 ? 1 : 0
            holding[2] = UInt16(flow.bitPattern >> 16)
            holding[3] = UInt16(flow.bitPattern & 0xFFFF)
            holding[4] = UInt16(energy >> 16)
            holding[5] = UInt16(energy & 0xFFFF)
            mapping.pointee.tab_input_registers[0] = pressure
        }
    }
}
