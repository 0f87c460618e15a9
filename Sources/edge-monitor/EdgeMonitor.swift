// edge-monitor: the central side. `run` watches the fleet on the central broker and
// serves the page, the JSON API and /metrics; `status` prints the fleet for a
// person, cron or a Nagios-style check.
import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Gateway
import GatewayConfig
import Logging
import Monitor
import MonitorHTTP
import MQTTUplink
import Sealing
import ServiceLifecycle
import UnixSignals
import CMalloc

@main
struct EdgeMonitor: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edge-monitor",
        abstract: "Watches a fleet of edge-gateways on the central broker: liveness, backlog, and proof that their data arrived.",
        version: "0.1.0",
        subcommands: [Run.self, Status.self],
        defaultSubcommand: Run.self)
}

/// EX_CONFIG from sysexits.h: the configuration is wrong.
let exitConfigurationError: Int32 = 78

func loadConfiguration(_ path: String) throws -> MonitorConfiguration {
    do {
        return try MonitorConfigurationLoader.load(file: path)
    } catch let error as ConfigurationError {
        FileHandle.standardError.write(Data("\(error)\n".utf8))
        throw ExitCode(exitConfigurationError)
    }
}

/// glibc gives threads that allocate at the same time arenas of their own (up to eight per
/// core), and each keeps the freed pages of the multi-megabyte /api/fleet and /metrics
/// renders: at 10,000 gateways the monitor sat at about 210 MB with the default and about
/// 130 MB with two arenas (one arena did no better) (`edge-gateway-bench monitor-fleet`).
///
/// A fixed mmap threshold: glibc's default one starts at 128 KB and rises to the size of
/// the largest block freed (up to 32 MB), so after the first 14 MB /metrics buffer was
/// freed, every later render buffer came from the heap, and its freed pages stayed there
/// (the trim threshold rises with it, to twice as much). At 10,000 gateways that made the
/// RSS swing by about 18 MB per /metrics render and set the peak (191 MB beside 114 MB
/// with a fixed 1 MB threshold, the same bench run for run). Called before the monitor
/// starts its threads.
private func tuneMalloc() {
    _ = cmalloc_limit_arenas(2)
    _ = cmalloc_fixed_mmap_threshold(1 << 20)
}

private let bootstrapLogging: Void = {
    LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
}()

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the monitor until SIGTERM or SIGINT.")

    @Option(name: [.short, .long], help: "Path of monitor.yaml.")
    var config: String = "/etc/edge-monitor/monitor.yaml"

    func run() async throws {
        tuneMalloc()
        let configuration = try loadConfiguration(config)
        bootstrapLogging
        var logger = Logger(label: "edge-monitor")
        logger.logLevel = Logger.Level(rawValue: configuration.logLevel.rawValue) ?? .info
        let monitor: FleetMonitor
        do {
            let keys = try configuration.keys.map { key throws(SealingError) in try SealingKey.load(id: key.id, file: key.file) }
            let uplink = MonitorSettings.uplink(for: configuration.mqtt)
            let staleAfter: StaleAfter = switch configuration.staleAfter {
            case .auto: .auto
            case let .fixed(duration): .fixed(duration)
            }
            let settings = MonitorSettings(uplink: uplink, topicPrefix: configuration.topicPrefix, staleAfter: staleAfter,
                                           historyLimit: configuration.historyLimit, keys: keys)
            monitor = try FleetMonitor(settings: settings, store: MonitorStore(path: configuration.statePath), logger: logger)
        } catch {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode(1)
        }
        let http = MonitorHTTPServer.application(host: configuration.listenHost, port: configuration.listenPort,
                                                 snapshot: { monitor.snapshot }, logger: logger)
        logger.info("edge-monitor starting", metadata: [
            "listen": "\(configuration.listenHost):\(configuration.listenPort)", "state": "\(configuration.statePath)",
            "brokers": "\(configuration.mqtt.servers.map(\.endpoint).joined(separator: ", "))", "prefix": "\(configuration.topicPrefix)",
        ])
        var group = ServiceGroupConfiguration(services: [.init(service: monitor), .init(service: http)],
                                              gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        group.maximumGracefulShutdownDuration = .seconds(5)
        try await ServiceGroup(configuration: group).run()
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the fleet; exit 2 when a gateway is offline, stale or has lost data (1 when nothing can be read).",
        discussion: "Asks the running monitor at --url; when it does not answer, reads the state file named in --config.")

    @Option(name: [.short, .long], help: "Path of monitor.yaml (for the state file when the monitor does not answer).")
    var config: String = "/etc/edge-monitor/monitor.yaml"

    @Option(help: "The running monitor's address.")
    var url: String = "http://127.0.0.1:9470"

    @Flag(help: "Print the fleet as /api/fleet JSON.")
    var json = false

    func run() async throws {
        let fleet: FleetView
        var source = "monitor at \(url)"
        if let live = await fetchFleet() {
            fleet = live
        } else {
            let configuration = try loadConfiguration(config)
            guard FileManager.default.fileExists(atPath: configuration.statePath) else {
                FileHandle.standardError.write(Data("edge-monitor status: no monitor answers at \(url) and the state file \(configuration.statePath) does not exist; start the monitor (edge-monitor run --config \(config))\n".utf8))
                throw ExitCode(1)
            }
            do {
                let store = try MonitorStore(path: configuration.statePath)
                let contents = try store.load(historyLimit: configuration.historyLimit)
                let staleAfter: StaleAfter = switch configuration.staleAfter {
                case .auto: .auto
                case let .fixed(duration): .fixed(duration)
                }
                let model = FleetModel(staleAfter: staleAfter, historyLimit: configuration.historyLimit,
                                       restoring: contents.gateways, ledgers: contents.ledgers, history: contents.history,
                                       ignored: contents.ignored, at: Date(), graceFromNow: false)
                fleet = FleetSnapshot(model: model, takenAt: Date()).fleet()
                source = "state file \(configuration.statePath) (the monitor at \(url) did not answer)"
            } catch {
                FileHandle.standardError.write(Data("edge-monitor status: \(error)\n".utf8))
                throw ExitCode(1)
            }
        }
        if json {
            print(String(decoding: try FleetSnapshot.encoder().encode(fleet), as: UTF8.self))
        } else {
            print(StatusTable.render(fleet, source: source))
        }
        // Offline (either way), stale, or lost data; `unknown` (no status yet) alone is not trouble.
        let troubled = fleet.gateways.filter { [.offlineConnectionLost, .offlineShutdown, .stale].contains($0.state) || $0.lost > 0 }
        if !troubled.isEmpty { throw ExitCode(2) }
    }

    private func fetchFleet() async -> FleetView? {
        guard let endpoint = URL(string: url.hasSuffix("/") ? url + "api/fleet" : url + "/api/fleet") else { return nil }
        var request = URLRequest(url: endpoint)
        request.timeoutInterval = 5
        guard let (data, response) = try? await URLSession.shared.data(for: request),
              (response as? HTTPURLResponse)?.statusCode == 200 else { return nil }
        return try? FleetSnapshot.decoder().decode(FleetView.self, from: data)
    }
}

enum StatusTable {
    static func render(_ fleet: FleetView, source: String) -> String {
        var lines = ["from \(source): \(fleet.totals.gateways) gateway(s), \(fleet.totals.online) online, "
                     + "\(fleet.totals.offline) offline, \(fleet.totals.stale) stale, \(fleet.totals.lost) lost"]
        let header = ["GATEWAY", "STATE", "SINCE", "BOOT", "BACKLOG", "OLDEST", "ETA", "DROPPED", "LOST", "DEVICES"]
        var rows = [header]
        for gateway in fleet.gateways {
            let devicesDown = gateway.devices.filter { $0.state != "online" }.map(\.name)
            rows.append([
                gateway.id, gateway.state.rawValue, MessageEncoding.timestamp(gateway.since),
                gateway.boot.map(String.init) ?? "-", "\(gateway.backlog.messages)",
                gateway.backlog.oldestAgeSeconds.map { String(format: "%.0fs", $0) } ?? "-",
                gateway.backlog.etaSeconds.map { String(format: "%.0fs", $0) } ?? "-",
                "\(gateway.dropped)", gateway.lost > 0 ? "\(gateway.lost) !" : "0",
                devicesDown.isEmpty ? "\(gateway.devices.count) ok" : "down: " + devicesDown.joined(separator: ","),
            ])
        }
        let widths = header.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        for row in rows {
            lines.append(row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }
                .joined(separator: "  ").trimmingCharacters(in: .whitespaces))
        }
        for gateway in fleet.gateways where !gateway.lostRanges.isEmpty {
            let ranges = gateway.lostRanges.map { "boot \($0.boot) seq \($0.first)-\($0.last)" }.joined(separator: ", ")
            lines.append("LOST \(gateway.id): \(ranges)")
        }
        return lines.joined(separator: "\n")
    }
}
