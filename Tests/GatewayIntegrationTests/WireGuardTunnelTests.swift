// The path the gateway takes in the field, for real: two network namespaces joined
// by a veth pair, a WireGuard tunnel over it (wireguard-go, userspace), the Modbus
// simulator and the gateway (bound to the tunnel interface) on the field side,
// mosquitto listening only on its tunnel address and a subscriber on the central
// side. The underlay is cut silently, the broker must publish the Last Will, and
// after the link is back the gateway must announce itself again and replay the gap.
import Foundation
import Outbox
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Why the lab could not be built or a command in it failed.
struct LabError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Two namespaces, a veth pair, a WireGuard tunnel and the processes in them.
/// `tearDown()` removes all of it, also after a failure.
final class WireGuardLab: @unchecked Sendable {
    let tag = String(UInt32.random(in: 0..<0xFFFF_FF), radix: 16)
    var field: String { "egw-field-\(tag)" }
    var central: String { "egw-central-\(tag)" }
    var fieldVeth: String { "egwf\(tag)" }
    var centralVeth: String { "egwc\(tag)" }
    /// Tunnel interfaces; unique names, because wireguard-go's control socket
    /// (/var/run/wireguard/<name>.sock) is shared by all network namespaces.
    var fieldTunnel: String { "wgf\(tag)" }
    var centralTunnel: String { "wgc\(tag)" }
    let fieldAddress = "10.8.0.2", centralAddress = "10.8.0.1"
    let directory: TemporaryDirectory
    let ip: String, wg: String, wireguardGo: String, mosquitto: String, mosquittoSub: String
    private var children: [ChildProcess] = []
    private var namespacesMade = false

    init() throws {
        // In CI every missing piece fails the test with its name.
        ip = try requireTool("ip", package: "iproute2")
        wg = try requireTool("wg", package: "wireguard-tools")
        wireguardGo = try requireTool("wireguard-go", package: "wireguard-go")
        mosquitto = try requireTool("mosquitto", package: "mosquitto")
        mosquittoSub = try requireTool("mosquitto_sub", package: "mosquitto-clients")
        guard getuid() == 0 else {
            throw LabError("the WireGuard test needs root (network namespaces, tun devices)")
        }
        guard FileManager.default.fileExists(atPath: "/dev/net/tun") else {
            throw LabError("/dev/net/tun is missing: wireguard-go needs the tun driver")
        }
        directory = try TemporaryDirectory("wireguard")
    }

    /// Runs a command to its end and throws with its output when it fails.
    @discardableResult
    func run(_ executable: String, _ arguments: [String]) async throws -> String {
        let result = try await runCommand(executable, arguments, in: directory)
        guard result.status == 0 else {
            throw LabError("\(executable) \(arguments.joined(separator: " ")) failed (\(result.status)): \(result.output)")
        }
        return result.output
    }

    /// Starts a long-running process inside a namespace (`ip netns exec` execs, so
    /// the child's pid is the process's own).
    func spawn(in namespace: String, _ arguments: [String], log: String,
               environment: [String: String] = [:]) throws -> ChildProcess {
        let child = try ChildProcess(ip, ["netns", "exec", namespace] + arguments, log: directory.file(log),
                                     environment: environment)
        children.append(child)
        return child
    }

    func setUp() async throws {
        try await run(ip, ["netns", "add", field])
        namespacesMade = true
        try await run(ip, ["netns", "add", central])
        try await run(ip, ["link", "add", fieldVeth, "type", "veth", "peer", "name", centralVeth])
        try await run(ip, ["link", "set", fieldVeth, "netns", field])
        try await run(ip, ["link", "set", centralVeth, "netns", central])
        for (namespace, veth, underlay) in [(field, fieldVeth, "192.168.77.1/24"), (central, centralVeth, "192.168.77.2/24")] {
            try await run(ip, ["-n", namespace, "link", "set", "lo", "up"])
            try await run(ip, ["-n", namespace, "addr", "add", underlay, "dev", veth])
            try await run(ip, ["-n", namespace, "link", "set", veth, "up"])
        }
        // Keys as an operator makes them.
        for side in ["field", "central"] {
            try await run("/bin/sh", ["-c", "umask 077; cd \(directory.path) && \(wg) genkey > \(side).key && \(wg) pubkey < \(side).key > \(side).pub"])
        }
        let fieldPublic = try String(contentsOfFile: directory.file("field.pub"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let centralPublic = try String(contentsOfFile: directory.file("central.pub"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        // Userspace WireGuard in the foreground, one per side (it refuses to run
        // beside the kernel module unless told it is wanted).
        let userspace = ["WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"]
        _ = try spawn(in: field, [wireguardGo, "-f", fieldTunnel], log: "wireguard-field.log", environment: userspace)
        _ = try spawn(in: central, [wireguardGo, "-f", centralTunnel], log: "wireguard-central.log", environment: userspace)
        for (namespace, tunnel) in [(field, fieldTunnel), (central, centralTunnel)] {
            try await waitUntil("\(tunnel) in \(namespace)") {
                FileManager.default.fileExists(atPath: "/var/run/wireguard/\(tunnel).sock")
            }
        }
        try await run(ip, ["netns", "exec", field, wg, "set", fieldTunnel, "private-key", directory.file("field.key"),
                           "peer", centralPublic, "endpoint", "192.168.77.2:51820", "allowed-ips", "10.8.0.0/24"])
        try await run(ip, ["netns", "exec", central, wg, "set", centralTunnel, "private-key", directory.file("central.key"),
                           "listen-port", "51820", "peer", fieldPublic, "allowed-ips", "\(fieldAddress)/32"])
        try await run(ip, ["-n", field, "addr", "add", "\(fieldAddress)/24", "dev", fieldTunnel])
        try await run(ip, ["-n", central, "addr", "add", "\(centralAddress)/24", "dev", centralTunnel])
        try await run(ip, ["-n", field, "link", "set", fieldTunnel, "up"])
        try await run(ip, ["-n", central, "link", "set", centralTunnel, "up"])
    }

    /// Drops the underlay without a word: the field side's veth goes down, packets
    /// vanish, no RST or ICMP reaches either TCP endpoint; the tunnel interfaces stay up.
    func cutUnderlay() async throws { try await run(ip, ["-n", field, "link", "set", fieldVeth, "down"]) }

    func restoreUnderlay() async throws { try await run(ip, ["-n", field, "link", "set", fieldVeth, "up"]) }

    /// Kills every process started here and deletes the namespaces (with their
    /// interfaces). Synchronous, so it runs from `defer`.
    func tearDown() {
        for child in children.reversed() where child.isRunning {
            child.signal(SIGKILL)
            while child.isRunning { usleep(10_000) }
        }
        children.removeAll()
        // A killed wireguard-go leaves its control socket behind.
        for tunnel in [fieldTunnel, centralTunnel] { unlink("/var/run/wireguard/\(tunnel).sock") }
        guard namespacesMade else { return }
        for namespace in [field, central] {
            if let child = try? ChildProcess(ip, ["netns", "del", namespace], log: "/dev/null") {
                while child.isRunning { usleep(10_000) }
            }
        }
        namespacesMade = false
        directory.remove()
    }
}

/// One line of `mosquitto_sub -F '%U %t %p'`: arrival time, topic, payload.
struct TimedMessage {
    var arrived: Date
    var topic: String
    var json: [String: Any]

    static func parse(_ log: String) -> [TimedMessage] {
        log.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ", maxSplits: 2)
            guard parts.count == 3, let seconds = Double(parts[0]) else { return nil }
            let json = (try? JSONSerialization.jsonObject(with: Data(parts[2].utf8))) as? [String: Any] ?? [:]
            return TimedMessage(arrived: Date(timeIntervalSince1970: seconds), topic: String(parts[1]), json: json)
        }
    }
}

@Suite(.serialized) struct WireGuardTunnelTests {
    @Test(.enabled(if: isCI || getuid() == 0, "needs root for network namespaces"))
    func willOnSilentCutThenRebirthAndGaplessReplayOverWireGuard() async throws {
        let lab = try WireGuardLab()
        defer { lab.tearDown() }
        try await lab.setUp()
        let gatewayID = "gw-vpn"
        let gatewayBinary = try builtProduct("edge-gateway")

        // Central: the broker listens on the tunnel address only; a subscriber beside it.
        try "listener 1883 \(lab.centralAddress)\nallow_anonymous true\npersistence false\nuser root\n"
            .write(toFile: lab.directory.file("mosquitto.conf"), atomically: true, encoding: .utf8)
        let broker = try lab.spawn(in: lab.central, [lab.mosquitto, "-c", lab.directory.file("mosquitto.conf")], log: "mosquitto.log")
        try await waitUntil("mosquitto on \(lab.centralAddress)") { broker.output.contains("running") }
        let subscriber = try lab.spawn(in: lab.central, [lab.mosquittoSub, "-h", lab.centralAddress, "-q", "1", "-i", "central-sub",
                                                         "-F", "%U %t %p", "-t", "edge/#"], log: "subscriber.log")
        try await waitUntil("the subscriber") { broker.output.contains("as central-sub") }

        // Field: the device and the gateway, which may reach the broker only through the tunnel.
        let modbusPort = 1502
        _ = try lab.spawn(in: lab.field, [gatewayBinary, "simulate", "--host", "127.0.0.1", "--port", "\(modbusPort)"], log: "simulator.log")
        let outbox = lab.directory.file("outbox.sqlite")
        let keepalive = 5
        try """
        gateway: { id: \(gatewayID) }
        mqtt:
          host: \(lab.centralAddress)
          bind_interface: \(lab.fieldTunnel)
          keepalive: \(keepalive)s
          reconnect_min: 100ms
          reconnect_max: 1s
        buffer: { path: \(outbox) }
        devices:
          - name: meter
            tcp: { host: 127.0.0.1, port: \(modbusPort) }
            poll_interval: 100ms
            tags:
              - { name: temperature, table: holding, address: 0, type: int16, scale: 0.1 }
        """.write(toFile: lab.directory.file("gateway.yaml"), atomically: true, encoding: .utf8)
        let gateway = try lab.spawn(in: lab.field, [gatewayBinary, "run", "--config", lab.directory.file("gateway.yaml")],
                                    log: "gateway.log")

        let statusTopic = "edge/\(gatewayID)/status", dataTopic = "edge/\(gatewayID)/meter/data"
        func received() -> [TimedMessage] { TimedMessage.parse(subscriber.output) }
        func statuses() -> [TimedMessage] { received().filter { $0.topic == statusTopic } }
        func seqs() -> [Int] { received().filter { $0.topic == dataTopic }.compactMap { $0.json["seq"] as? Int } }
        func diagnostics() -> String {
            "gateway log:\n\(gateway.output.split(separator: "\n").suffix(40).joined(separator: "\n"))\n"
                + "broker log:\n\(broker.output.split(separator: "\n").suffix(20).joined(separator: "\n"))"
        }

        do {
            try await waitUntil("birth and data through the tunnel", timeout: .seconds(30)) {
                statuses().last?.json["state"] as? String == "online" && seqs().count >= 10
            }

            // Cut the underlay silently, for longer than 1.5 × keepalive: the will must come.
            let deliveredAtCut = seqs().max() ?? 0
            let cut = Date()
            try await lab.cutUnderlay()
            try await waitUntil("the Last Will", timeout: .seconds(Int64(keepalive) * 4)) {
                statuses().last?.json["reason"] as? String == "connection lost"
            }
            let will = statuses().last!
            // The gateway notices too, and keeps polling into its outbox meanwhile.
            try await waitUntil("the gateway to notice", timeout: .seconds(Int64(keepalive) * 4)) {
                gateway.output.contains("connection to broker lost")
            }
            let restore = Date()
            let committedAtRestore = try Outbox.readStatistics(path: outbox).committedThisBoot
            try await lab.restoreUnderlay()

            try await waitUntil("a new birth after the will", timeout: .seconds(60)) {
                statuses().filter { $0.arrived > will.arrived }.contains { $0.json["state"] as? String == "online" }
            }
            let rebirth = statuses().first { $0.arrived > will.arrived && $0.json["state"] as? String == "online" }!
            try await waitUntil("the gap replayed", timeout: .seconds(60)) {
                Set(seqs()).isSuperset(of: 1...Int(committedAtRestore))
            }
            let drained = Date()

            let all = Set(seqs())
            let missing = Set(1...(all.max() ?? 0)).subtracting(all)
            #expect(missing.isEmpty, "seq missing after the tunnel outage: \(missing.sorted())")
            #expect(will.json["boot"] as? Int == 1 && rebirth.json["boot"] as? Int == 1)
            let outage = restore.timeIntervalSince(cut)
            print(String(format: """
                wireguard: keepalive %ds; underlay cut for %.1fs; Last Will after %.1fs (cut → will, 1.5 × keepalive = %.1fs); \
                rebirth %.1fs after restore; gap of %d polls replayed %.1fs after restore
                """, keepalive, outage, will.arrived.timeIntervalSince(cut), Double(keepalive) * 1.5,
                          rebirth.arrived.timeIntervalSince(restore), Int(committedAtRestore) - deliveredAtCut,
                          drained.timeIntervalSince(restore)))
        } catch {
            Issue.record("\(error)\n\(diagnostics())")
        }
    }
}
