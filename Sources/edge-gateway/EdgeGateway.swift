import ArgumentParser
import CMalloc
import Foundation
import Gateway
import GatewayClock
import GatewayConfig
import Logging
import Modbus
import Outbox
import UnixSignals

@main
struct EdgeGateway: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edge-gateway",
        abstract: "Polls Modbus devices and forwards their readings to MQTT, buffered in a local outbox.",
        version: "0.1.0",
        subcommands: [Run.self, CheckConfig.self, Status.self, Simulate.self, Open.self, Keygen.self, Command.self],
        defaultSubcommand: Run.self)
}

/// EX_CONFIG from sysexits.h: the configuration is wrong.
let exitConfigurationError: Int32 = 78

struct ConfigOption: ParsableArguments {
    @Option(name: [.short, .long], help: "Path of gateway.yaml.")
    var config: String = "/etc/edge-gateway/gateway.yaml"
}

/// Loads the configuration or prints every problem and exits with EX_CONFIG.
func loadConfiguration(_ path: String) throws -> GatewayConfiguration {
    do {
        return try ConfigurationLoader.load(file: path)
    } catch let error as ConfigurationError {
        FileHandle.standardError.write(Data("\(error)\n".utf8))
        throw ExitCode(exitConfigurationError)
    }
}

extension Logger.Level {
    init(_ level: LogLevel) {
        self = Logger.Level(rawValue: level.rawValue) ?? .info
    }
}

/// glibc gives threads that allocate at the same time arenas of their own (up to eight per
/// core), and with one thread per bus every arena soon exists, each keeping its own free
/// pages: at 1,000 TCP devices the gateway's heap held about 43 MB in 16 arenas for
/// 28 MB at its peak in use, and about 33 MB in two (VmRSS 94 -> 85 MB,
/// `edge-gateway-bench scale`). Most allocations of a bus thread come from its own cache
/// (tcache) without an arena's lock: `perf` shows no lock wait at 100 or 1,000 buses.
/// Called before the gateway starts its threads (glibc fixes the cap once eight exist).
private func limitMallocArenas() {
    _ = cmalloc_limit_arenas(2)
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the gateway until SIGTERM or SIGINT.")

    @OptionGroup var options: ConfigOption

    func run() async throws {
        limitMallocArenas()
        let configuration = try loadConfiguration(options.config)
        let logger = Logging.makeLogger(level: Logger.Level(configuration.logLevel))
        logConfigurationWarnings(configuration, logger: logger)
        let timeSource: any TimeSource
        do {
            // Before the outbox: a refused test clock leaves no boot behind.
            timeSource = try TimeSources.fromEnvironment(ProcessInfo.processInfo.environment)
        } catch {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(exitConfigurationError)
        }
        let runtime: GatewayRuntime
        do {
            runtime = try GatewayRuntime(configuration: configuration, logger: logger, timeSource: timeSource)
        } catch let error as DescriptorBudgetError {
            // Too many buses for one gateway: a restart cannot help, so EX_CONFIG.
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(exitConfigurationError)
        } catch let error as OutboxError where error.kind == .inUse {
            // Another gateway runs on this outbox: restarting cannot help until someone
            // stops one of them, so EX_CONFIG, which the unit does not restart.
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(exitConfigurationError)
        } catch {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
        try await runtime.run()
    }
}

struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate gateway.yaml and print every problem with its place; exit 78 on error.")

    @Argument(help: "Path of gateway.yaml.")
    var file: String = "/etc/edge-gateway/gateway.yaml"

    @Flag(help: "Print the request plan of every device: each read with its table, address, count and tags.")
    var explain = false

    func run() throws {
        let configuration = try loadConfiguration(file)
        let tags = configuration.devices.reduce(0) { $0 + $1.tags.count }
        let buses = Set(configuration.devices.map(\.transport.busKey)).count
        print("\(file): OK")
        if let sparkplug = configuration.sparkplug {
            print("  Sparkplug B edge node \(configuration.gateway.id) in group \(sparkplug.groupID): spBv1.0/\(sparkplug.groupID)/…/\(configuration.gateway.id)"
                  + (sparkplug.primaryHostID.map { ", waits for primary host \($0)" } ?? ""))
        } else {
            print("  gateway \(configuration.gateway.id), topics under \(configuration.gateway.topicPrefix)/\(configuration.gateway.id)/")
        }
        let mqtt = configuration.mqtt
        let brokers = mqtt.servers.map(\.endpoint).joined(separator: ", then ")
        print("  broker \(brokers) as \(mqtt.clientID), MQTT \(mqtt.protocolVersion.rawValue), QoS \(mqtt.qos)"
              + (mqtt.failover.isEmpty ? "" : ", back to the first after \(mqtt.failbackAfter)"))
        print("  \(configuration.devices.count) device(s) on \(buses) bus(es), \(tags) tag(s)")
        for device in configuration.devices {
            let plans = BusPoller.plans(for: device)
            let requests = plans.reduce(0) { $0 + $1.plan.blocks.count }
            print("    \(device.name): \(device.transport.busKey) unit \(device.unitID), every \(device.pollInterval), "
                  + "\(device.tags.count) tag(s) in \(requests) request(s)")
            guard explain else { continue }
            for (interval, plan) in plans {
                let per = plan.blocks.count == 1 ? "request" : "requests"
                print("      every \(interval): \(plan.blocks.count) \(per) (max_gap \(device.maxGap))")
                for line in plan.explain(tags: device.tags) { print("        \(line)") }
            }
        }
        print("  outbox \(configuration.buffer.path) (sync \(configuration.buffer.sync.rawValue))")
        printSecurity(configuration)
    }
}

struct Simulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve a simulated Modbus TCP (or RTU) device whose registers change over time.",
        discussion: "Register map:\n" + ModbusSimulator.demoRegisterMap)

    @Option(help: "Address to listen on.")
    var host: String = "127.0.0.1"

    @Option(help: "TCP port to listen on (0: one the kernel picks).")
    var port: Int = 1502

    @Option(help: "Serve this many TCP devices, on consecutive ports from --port (with --port 0, on ports the kernel picks), all from one thread.")
    var devices: Int = 1

    @Option(help: "Write the TCP ports listened on to this file, one a line, once all listen.")
    var portsFile: String?

    @Option(help: "Serve Modbus RTU on this serial device or pty (e.g. /dev/pts/3) instead of TCP.")
    var rtu: String?

    @Option(help: "With --rtu: the unit id to answer (others on the line get no answer).")
    var unit: Int = 1

    @Flag(help: "Answer every read with a malformed (wrong-length) response.")
    var garbage = false

    func validate() throws {
        guard devices >= 1 else { throw ValidationError("--devices must be at least 1") }
        guard rtu == nil || (devices == 1 && portsFile == nil) else {
            throw ValidationError("--devices and --ports-file are for TCP; remove them with --rtu")
        }
        guard port == 0 || port + devices - 1 <= 65535 else {
            throw ValidationError("--port \(port) with --devices \(devices) runs past port 65535; pick a lower --port")
        }
    }

    func run() async throws {
        let simulator: ModbusSimulator
        if let rtu {
            simulator = try ModbusSimulator(rtuPath: rtu, unit: unit, animate: true)
        } else {
            let ports = port == 0 ? Array(repeating: 0, count: devices) : Array(port..<(port + devices))
            simulator = try ModbusSimulator(host: host, ports: ports, animate: true)
        }
        if garbage { simulator.setBehaviour(.garbage) }
        try simulator.start()
        if let portsFile {
            let lines = simulator.listeningPorts.map { "\($0)\n" }.joined()
            try lines.write(toFile: portsFile, atomically: true, encoding: .utf8)
        }
        let listening = simulator.listeningPorts
        let place = rtu.map { "Modbus RTU device on \($0) (unit \(unit))" }
            ?? (listening.count == 1 ? "Modbus TCP device on \(host):\(listening[0]) (any unit id)"
                : "\(listening.count) Modbus TCP devices on \(host), ports \(listening.first!)…\(listening.last!) (any unit id)")
        FileHandle.standardError.write(Data("simulated \(place)\n".utf8))
        for await _ in await UnixSignalsSequence(trapping: .sigterm, .sigint) { break }
        simulator.stop()
        FileHandle.standardError.write(Data("simulator stopped after \(simulator.requestCount) requests\n".utf8))
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show what the outbox holds (read-only; safe while the gateway runs).")

    @OptionGroup var options: ConfigOption

    @Option(help: "Read this outbox file instead of buffer.path from the configuration.")
    var outbox: String?

    @Flag(help: "Print one JSON object instead of text (also for an error: {\"error\": ...}).")
    var json = false

    /// Reports a failure (as one JSON object on stdout with `--json`, else as text
    /// on stderr); the caller throws the returned exit code.
    private func failure(_ fields: [String: String], exitCode: Int32) -> ExitCode {
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let text = (try? encoder.encode(fields)).map { String(decoding: $0, as: UTF8.self) }
                ?? #"{"error":"cannot encode the error"}"#
            print(text)
        } else {
            FileHandle.standardError.write(Data("\(fields["error"] ?? "")\n".utf8))
        }
        return ExitCode(exitCode)
    }

    func run() throws {
        let path: String
        if let outbox {
            path = outbox
        } else {
            do {
                path = try ConfigurationLoader.load(file: options.config).buffer.path
            } catch let error as ConfigurationError {
                throw failure(["config": options.config, "error": "\(error)"], exitCode: exitConfigurationError)
            }
        }
        let statistics: OutboxStatistics
        do {
            statistics = try Outbox.readStatistics(path: path)
        } catch {
            throw failure(["outbox": path, "error": "\(error)"], exitCode: 1)
        }
        let oldest = statistics.oldestAge.map { Int64($0 / .milliseconds(1)) }
        // A running gateway deletes the rows the broker acknowledged with its next write (or
        // within a few seconds): until then the file, all this command can read, counts them.
        let use = Outbox.use(path: path)
        let lingering = ForwarderService.acknowledgedRowsDeletedWithin
        let lingeringSeconds = Int(lingering / .seconds(1))
        if json {
            struct Report: Encodable {
                var outbox: String, boot: Int64, buffered_messages: Int, buffered_bytes: Int64
                var oldest_age_ms: Int64?, dropped: Int64, dropped_this_boot: Int64
                var published: Int64, published_this_boot: Int64, committed_this_boot: Int64
                /// nil when it cannot be told.
                var gateway_running: Bool?
                var gateway_pid: Int32?
                /// While a gateway may run: the buffered figures may include messages acknowledged this recently.
                var buffered_includes_acknowledged_within_s: Int?
            }
            var report = Report(
                outbox: path, boot: statistics.boot, buffered_messages: statistics.bufferedMessages,
                buffered_bytes: statistics.bufferedBytes, oldest_age_ms: oldest, dropped: statistics.dropped,
                dropped_this_boot: statistics.droppedThisBoot, published: statistics.acknowledged,
                published_this_boot: statistics.acknowledgedThisBoot, committed_this_boot: statistics.committedThisBoot)
            switch use {
            case .notOpen:
                report.gateway_running = false
            case let .open(pid):
                report.gateway_running = true
                report.gateway_pid = pid
                report.buffered_includes_acknowledged_within_s = lingeringSeconds
            case .unknown:
                report.buffered_includes_acknowledged_within_s = lingeringSeconds
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
            return
        }
        print("outbox \(path)")
        let including = "the buffered figures may include messages the broker acknowledged in the last "
            + "\(lingeringSeconds) s, which the gateway deletes with its next write"
        switch use {
        case .notOpen:
            print("  gateway             not running")
        case let .open(pid):
            print("  gateway             running\(pid.map { " (pid \($0))" } ?? ""): \(including)")
        case let .unknown(reason):
            print("  gateway             unknown (\(reason)); if it runs, \(including)")
        }
        print("  boot                \(statistics.boot)")
        print("  buffered messages   \(statistics.bufferedMessages)")
        print("  buffered bytes      \(statistics.bufferedBytes)")
        print("  oldest message age  \(statistics.oldestAge.map { "\($0)" } ?? "-")")
        print("  dropped             \(statistics.dropped) (this boot \(statistics.droppedThisBoot))")
        print("  published (acked)   \(statistics.acknowledged) (this boot \(statistics.acknowledgedThisBoot))")
        print("  committed this boot \(statistics.committedThisBoot)")
    }
}
