// `edge-gateway simulate --devices N`: many simulated Modbus TCP devices, one port
// each, served by one process (what the scale bench polls).
import Foundation
import Modbus
import Testing
import TestSupport

@Suite struct SimulatorDevicesTests {
    /// 1,100 ports: the simulator's listeners alone take its descriptors past
    /// FD_SETSIZE (1024), where libmodbus' select-based `modbus_receive` aborts the
    /// process; devices first, in the middle and last still answer.
    @Test func oneSimulatorProcessServesAThousandDevicesOnTheirOwnPorts() async throws {
        let directory = try TemporaryDirectory("simulator-devices")
        defer { directory.remove() }
        let portsFile = directory.file("ports")
        let simulator = try ChildProcess(try builtProduct("edge-gateway"),
                                         ["simulate", "--port", "0", "--devices", "1100", "--ports-file", portsFile],
                                         log: directory.file("simulator.log"))
        defer { simulator.signal(SIGTERM) }
        try await waitUntil("the simulator's ports file", timeout: .seconds(30)) {
            FileManager.default.fileExists(atPath: portsFile) || !simulator.isRunning
        }
        let ports = try String(contentsOfFile: portsFile, encoding: .utf8).split(separator: "\n").compactMap { Int($0) }
        #expect(ports.count == 1_100, "\(simulator.output.suffix(500))")
        #expect(Set(ports).count == ports.count, "every device its own port")
        // The simulator's 1,100 listeners come first: every client it accepts gets a
        // descriptor above 1,100. (Few clients here: this process uses libmodbus too.)
        for index in [0, 550, 1_099] {
            let connection = try ModbusConnection(transport: .tcp(host: "127.0.0.1", port: ports[index]))
            connection.setResponseTimeout(.seconds(5))
            try connection.connect()
            // The demo device's string registers (holding 10…17, "EG-SIM-01").
            let words = try connection.readRegisters(unit: 1, table: .holding, address: 10, count: 2)
            #expect(words == [0x4547, 0x2D53], "device \(index) on port \(ports[index])")
            connection.close()
        }
        #expect(simulator.isRunning, "the simulator is still up: \(simulator.output.suffix(500))")
        simulator.signal(SIGTERM)
        #expect(try await simulator.waitForExit() == 0)
        #expect(simulator.output.contains("simulator stopped after 3 requests"), "\(simulator.output.suffix(500))")
    }
}
