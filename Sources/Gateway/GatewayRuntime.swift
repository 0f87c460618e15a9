// Wiring: from a configuration to the running system (its services, their order and
// the stop limits). `edge-gateway run` builds it; the integration tests run that
// binary as a process, and StopBoundTests holds the unit's TimeoutStopSec to `stopBound`.
import Descriptors
import GatewayClock
import GatewayConfig
import Logging
import Modbus
import MQTTUplink
import Outbox
import Sealing
import ServiceLifecycle

/// The gateway's services, wired from one configuration.
///
/// Start order: forwarder, ingest, pollers. Graceful shutdown runs in reverse:
/// pollers stop, ingest commits what is in hand, the forwarder publishes the
/// offline status and disconnects.
public struct GatewayRuntime: Sendable {
    public let configuration: GatewayConfiguration
    public let outbox: Outbox
    public let forwarder: ForwarderService
    public let ingest: IngestService
    public let pollers: [PollingService]
    public let pollCounters: PollCounters
    /// Guarded writes; nil unless `commands.enabled` (then nothing subscribes).
    public let commands: CommandService?
    private let logger: Logger

    /// Opens the outbox (bumping the boot counter) and builds every service. Nothing runs yet.
    ///
    /// - Parameter timeSource: every timestamp, boottime, boot id and sync status comes
    ///   from it (the kernel's clocks; tests may pass a `ClockFile`).
    public init(configuration: GatewayConfiguration, logger: Logger,
                timeSource: any TimeSource = KernelClock()) throws {
        self.configuration = configuration
        self.logger = logger
        // Room above 1023 for the descriptors the gateway moves out of select()'s range.
        if case let .failure(failure) = SelectRange.raiseOpenFileLimit() {
            logger.warning("descriptors stay below 1024", metadata: [
                "error": "\(failure)", "fix": "raise LimitNOFILE of the unit (or ulimit -n)",
            ])
        }
        let buffer = configuration.buffer
        outbox = try Outbox(
            settings: OutboxSettings(path: buffer.path, synchronous: buffer.sync == .full ? .full : .normal,
                                     maxMessages: buffer.maxMessages, maxBytes: buffer.maxBytes,
                                     maxAge: buffer.maxAge,
                                     dropPolicy: buffer.dropPolicy == .dropOldest ? .dropOldest : .dropNewest),
            logger: logger,
            measuring: {
                let now = timeSource.now()
                return MeasuredAt(boottime: now.boottime, kernelBootID: now.bootID,
                                  synchronised: now.sync == .synchronised)
            })
        let pollCounters = PollCounters()
        self.pollCounters = pollCounters
        let outbox = outbox
        let sparkplug = configuration.sparkplug.map { settings in
            SparkplugEdge(settings: settings, identity: configuration.gateway, devices: configuration.devices,
                          logger: logger, commands: configuration.commands.enabled,
                          nextBdSeq: { try outbox.nextSparkplugBdSeq() })
        }
        let sealer = Self.sealer(configuration.payload)
        // With mqtt.format: sparkplug the loader allows commands only with
        // commands.sparkplug_unsigned (DCMD writes); without commands DCMD is refused.
        let commandsOn = configuration.commands.enabled
        let commandCounters = commandsOn ? CommandCounters() : nil
        let forwarder = ForwarderService(identity: configuration.gateway, mqtt: configuration.mqtt,
                                         replay: configuration.replay, outbox: outbox,
                                         pollCounters: pollCounters, logger: logger,
                                         sealer: sealer, timeSource: timeSource, commandCounters: commandCounters,
                                         sparkplug: sparkplug)
        let ingest = IngestService(identity: configuration.gateway, qos: configuration.mqtt.qos, outbox: outbox,
                                   logger: logger, sealer: sealer,
                                   sparkplug: sparkplug?.node, devices: configuration.devices,
                                   onCommit: { forwarder.outboxCommitted($0) })
        self.forwarder = forwarder
        self.ingest = ingest
        // The outbox and the uplink are open: what is left below 1024 is the buses'.
        let busCount = Set(configuration.devices.map(\.transport.busKey)).count
        if let budget = DescriptorBudget.current(buses: busCount, integrityCheckRunning: outbox.integrity == .checking) {
            try budget.check()
            logger.debug("descriptor budget", metadata: [
                "own_below_1024": "\(budget.ownBelowLimit)", "buses": "\(busCount)", "margin": "\(DescriptorBudget.margin)",
            ])
        }
        forwarder.announce(devices: configuration.devices)

        // One bus per transport endpoint, in the order devices first name it.
        var buses: [String: [DeviceConfiguration]] = [:]
        var order: [String] = []
        for device in configuration.devices {
            let key = device.transport.busKey
            if buses[key] == nil { order.append(key) }
            buses[key, default: []].append(device)
        }
        // One wind-down for all buses at shutdown, however many are stuck.
        let stopDeadline = BusStopDeadline(windDown: Self.busWindDown)
        var writeQueues: [String: BusWriteQueue] = [:]
        pollers = order.map { key in
            var busLogger = logger
            busLogger[metadataKey: "bus"] = "\(key)"
            var poller = BusPoller(devices: buses[key]!, counters: pollCounters, logger: busLogger) { event in
                switch event {
                case let .poll(poll):
                    sparkplug?.note(poll)  // a DBIRTH's current values
                    ingest.queue(poll)  // committed right after, by `afterPollReported`
                case let .deviceOnline(device): forwarder.deviceStatusChanged(device: device, error: nil)
                case let .deviceOffline(device, error): forwarder.deviceStatusChanged(device: device, error: error)
                }
            }
            // On the bus thread, outside the abandonment lock: the poll just queued is
            // committed here, on this thread, unless a commit is under way or is not expected
            // to end before the bus's next poll (IngestCommitter, CommitTimeEstimate).
            poller.afterPollReported = { ingest.commitOnBusThread(nextPollDue: $0) }
            poller.timeSource = timeSource
            if commandsOn {
                let queue = BusWriteQueue()
                poller.writes = queue
                for device in buses[key]! { writeQueues[device.name] = queue }
            }
            return PollingService(poller: poller, stopDeadline: stopDeadline, logger: busLogger)
        }
        commands = try commandCounters.map { counters in
            var commandLogger = logger
            commandLogger[metadataKey: "audit"] = "command"
            let uplink = forwarder.uplink
            let service = try CommandService(
                identity: configuration.gateway, settings: configuration.commands, devices: configuration.devices,
                queues: writeQueues,
                uplink: .init(publish: { message throws(MQTTPublishError) in _ = try uplink.publish(message) },
                              subscribe: { topic throws(MQTTError) in try uplink.subscribe(topic, qos: 1) }),
                counters: counters, logger: commandLogger,
                channel: sparkplug.map { edge in
                    .sparkplug(node: edge.node, readBack: { device, values in
                        forwarder.sparkplugReadBack(device: device, values: values)
                    })
                } ?? .json)
            forwarder.commandEvents.attach(service.handle)
            return service
        }
    }

    /// How long stopping buses get to wind down before they are abandoned (see `PollingService`).
    static let busWindDown = Duration.milliseconds(500)
    /// The service group's graceful shutdown limit: buses wind down (`busWindDown`),
    /// the ingest service commits, the forwarder waits for the offline status's
    /// PUBACK (`ForwarderService.shutdownGrace`, 2 s). Past it the group cancels.
    static let gracefulShutdownLimit = Duration.seconds(4)
    /// After cancellation, ServiceLifecycle aborts the process past this limit.
    static let cancellationLimit = Duration.milliseconds(500)
    /// The longest a stop can take; `TimeoutStopSec=` of the unit must be above it.
    public static var stopBound: Duration { gracefulShutdownLimit + cancellationLimit }

    /// Runs until SIGTERM or SIGINT (when `handleSignals`) or until the task is cancelled.
    ///
    /// - Parameter notifier: systemd's notification socket (from the environment by
    ///   default): readiness, status, watchdog and stopping go there.
    public func run(handleSignals: Bool = true, notifier: SystemdNotifier? = SystemdNotifier()) async throws {
        // Last in the group, so the first told to stop: STOPPING=1 goes out at once.
        let services: [any Service] = [forwarder, ingest] + pollers.map { $0 as any Service }
            + [makeWatchdogService(notifier: notifier)]
        var group = ServiceGroupConfiguration(services: services.map { .init(service: $0) },
                                              gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [],
                                              logger: logger)
        group.maximumGracefulShutdownDuration = Self.gracefulShutdownLimit
        group.maximumCancellationDuration = Self.cancellationLimit
        logger.info("gateway starting", metadata: [
            "gateway": "\(configuration.gateway.id)", "boot": "\(outbox.boot)",
            "devices": "\(configuration.devices.count)", "buses": "\(pollers.count)",
            "broker": "\(configuration.mqtt.host):\(configuration.mqtt.port)",
        ])
        try await ServiceGroup(configuration: group).run()
        logger.info("gateway stopped", metadata: ["gateway": "\(configuration.gateway.id)"])
    }

    /// The systemd side of the gateway's health: heartbeats of every bus and the forwarder.
    private func makeWatchdogService(notifier: SystemdNotifier?) -> WatchdogService {
        if let watchdog = notifier?.watchdogInterval,
           let slowest = configuration.devices.max(by: { $0.longestRead < $1.longestRead }),
           slowest.longestRead * 2 > watchdog {
            // Not a hang (a bus waiting inside a bounded request is alive), but a hung
            // bus is only told from a slow one after the request's deadline.
            logger.warning("the watchdog interval is short for the slowest device: a hung bus is noticed late", metadata: [
                "watchdog": "\(watchdog)", "device": "\(slowest.name)", "longest_read": "\(slowest.longestRead)",
                "hint": "make WatchdogSec= at least twice the longest timeout × (retries + 1)",
            ])
        }
        let forwarder = forwarder
        let outbox = outbox
        let buses = pollers.count
        return WatchdogService(notifier: notifier, heartbeats: [forwarder.heartbeat] + pollers.map(\.heartbeat),
                               logger: logger) {
            let counters = forwarder.counters
            let endpoint = forwarder.uplink.settings.endpoint
            let uplink = counters.connected
                ? "forwarding to \(endpoint)"
                : "buffering, not connected to \(endpoint)\(counters.uplinkProblem.map { ": \($0)" } ?? "")"
            // Not a full disk, but a full disk later would find no way out: on the status line.
            let reserve = outbox.reserveProblem.map { "; WARNING: outbox has \($0)" } ?? ""
            // Commits failing (a read-only filesystem, a foreign lock, a full disk): not hidden
            // behind "forwarding".
            let dropping = outbox.dropping.map { "; outbox \($0)" } ?? ""
            return "\(uplink); polling \(buses) bus(es); boot \(outbox.boot), \(counters.published) published"
                + "\(dropping)\(reserve)"
        }
    }
}
