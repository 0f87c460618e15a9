// Guarded writes end to end: commands arrive on the uplink's network thread, are
// checked (CommandGuard), run on the device's bus thread (BusWriteQueue), and
// answered on `<prefix>/<gw>/<device>/cmd/result`. Nothing of a command touches
// the outbox: a command is run once, now, or never.
import Foundation
import GatewayConfig
import Logging
import Modbus
import MQTTUplink
import Sealing
import Synchronization

/// Counters of the stats topic's `commands_*` keys.
public final class CommandCounters: Sendable {
    public struct Snapshot: Sendable, Equatable {
        /// Every message on a command topic.
        public var received: Int64 = 0
        /// Written (and read back) without a Modbus error.
        public var executed: Int64 = 0
        /// Refused before anything was written.
        public var refused: Int64 = 0
        /// Sent to the device, which answered with an exception or not at all.
        public var failed: Int64 = 0
    }

    private let state = Mutex(Snapshot())

    public init() {}

    public var snapshot: Snapshot { state.withLock { $0 } }

    func update(_ change: (inout Snapshot) -> Void) { state.withLock { change(&$0) } }
}

/// Hands the uplink's events to the command service, once it is attached; the
/// forwarder owns the uplink and calls `relay` from its network thread.
public final class CommandEventRelay: Sendable {
    private let handler = Mutex<(@Sendable (MQTTEvent) -> Void)?>(nil)

    public init() {}

    func attach(_ handle: @escaping @Sendable (MQTTEvent) -> Void) { handler.withLock { $0 = handle } }

    /// Passes `event` on; true when it was a message (commands are the gateway's
    /// only subscription, so nobody else needs it).
    func relay(_ event: MQTTEvent) -> Bool {
        guard let handle = handler.withLock({ $0 }) else { return false }
        handle(event)
        if case .message = event { return true }
        return false
    }
}

public final class CommandService: Sendable {
    /// Where results go and subscriptions are made: the forwarder's uplink.
    public struct Uplink: Sendable {
        public var publish: @Sendable (MQTTMessage) throws(MQTTPublishError) -> Void
        public var subscribe: @Sendable (String) throws(MQTTError) -> Void

        public init(publish: @escaping @Sendable (MQTTMessage) throws(MQTTPublishError) -> Void,
                    subscribe: @escaping @Sendable (String) throws(MQTTError) -> Void) {
            self.publish = publish
            self.subscribe = subscribe
        }
    }

    private let identity: GatewayIdentity
    private let settings: CommandSettings
    private let queues: [String: BusWriteQueue]
    private let uplink: Uplink
    private let logger: Logger
    public let counters: CommandCounters
    private let checks: Mutex<CommandGuard>
    /// The live MQTT session (0: none); a command runs only while the session it came on lives.
    private let session = Atomic<Int>(0)
    private let wallClock: @Sendable () -> Date

    /// - Parameter queues: the write queue of each device's bus, by device name.
    public init(identity: GatewayIdentity, settings: CommandSettings, devices: [DeviceConfiguration],
                queues: [String: BusWriteQueue], uplink: Uplink, counters: CommandCounters, logger: Logger,
                wallClock: @escaping @Sendable () -> Date = { Date() }) throws(SealingError) {
        self.identity = identity
        self.settings = settings
        self.queues = queues
        self.uplink = uplink
        self.counters = counters
        self.logger = logger
        self.wallClock = wallClock
        checks = Mutex(try CommandGuard(identity: identity, settings: settings, devices: devices,
                                        started: wallClock(), now: .now))
    }

    /// Reacts to the uplink: subscribes after every connect, handles command messages.
    public func handle(_ event: MQTTEvent) {
        switch event {
        case let .connected(id):
            session.store(id, ordering: .releasing)
            for topic in checks.withLock({ $0.topics }) {
                do {
                    try uplink.subscribe(topic)
                    logger.info("subscribed to commands", metadata: ["topic": "\(topic)"])
                } catch {
                    logger.error("cannot subscribe to commands", metadata: ["topic": "\(topic)", "error": "\(error)"])
                }
            }
        case .disconnected, .connectFailed:
            session.store(0, ordering: .releasing)
        case let .message(message):
            received(message)
        case .published, .refused:
            break  // the forwarder's: data messages' acknowledgements
        }
    }

    private func received(_ message: MQTTMessage) {
        counters.update { $0.received += 1 }
        let arrivedOn = session.load(ordering: .acquiring)
        let verdict = checks.withLock { $0.check(message, now: wallClock(), monotonic: .now) }
        let writes: [TagWrite]
        switch verdict.outcome {
        case let .failure(refusal):
            finish(verdict, topic: message.topic, outcome: .refused(refusal))
            return
        case let .success(found):
            writes = found
        }
        guard let device = verdict.device, let command = verdict.command, let queue = queues[device] else {
            finish(verdict, topic: message.topic, outcome: .refused(CommandRefusal(.deviceOffline, "device has no bus")))
            return
        }
        let maxAge = settings.maxAge
        queue.submit(BusWriteRequest(device: device, writes: writes, preflight: { [self] in
            // Right before the first byte: still the connection it came on, still fresh.
            if session.load(ordering: .acquiring) != arrivedOn || arrivedOn == 0 {
                return CommandRefusal(.uplinkDown, "the connection the command arrived on is gone; it is not run later")
            }
            let age = wallClock().timeIntervalSince(command.issued)
            if age > CommandGuard.seconds(maxAge) {
                return CommandRefusal(.tooOld, "waited for the bus until \(CommandGuard.format(age)) s after it was issued, beyond max_age")
            }
            return nil
        }, complete: { [self] result in
            switch result {
            case let .success(results):
                finish(verdict, topic: message.topic, outcome: .ran(results))
            case let .failure(.deviceOffline(lastError)):
                finish(verdict, topic: message.topic, outcome: .refused(CommandRefusal(
                    .deviceOffline, "device '\(device)' is offline" + (lastError.map { ": \($0)" } ?? " (not answered yet)"))))
            case let .failure(.vetoed(error)):
                let refusal = error as? CommandRefusal ?? CommandRefusal(.uplinkDown, "\(error)")
                finish(verdict, topic: message.topic, outcome: .refused(refusal))
            case .failure(.busStopped):
                finish(verdict, topic: message.topic, outcome: .refused(CommandRefusal(.gatewayStopping, "the gateway is stopping")))
            }
        }))
    }

    /// Counts, logs (the audit line) and publishes the outcome.
    private func finish(_ verdict: CommandGuard.Verdict, topic: String, outcome: CommandOutcome) {
        let ok = outcome.ok
        counters.update { counters in
            switch outcome {
            case .refused: counters.refused += 1
            case .ran: if ok { counters.executed += 1 } else { counters.failed += 1 }
            }
        }
        var metadata: Logger.Metadata = [
            "id": "\(verdict.id ?? "-")", "key": "\(verdict.kid ?? "-")", "device": "\(verdict.device ?? "-")",
            "topic": "\(topic)", "outcome": "\(ok ? "ok" : outcome.reason ?? "failed")",
        ]
        if verdict.command == nil, verdict.id != nil { metadata["id_authenticated"] = "false" }
        if let command = verdict.command {
            metadata["set"] = "\(command.values.map { "\($0.tag)=\(CommandResultEncoding.text($0.value))" }.joined(separator: ","))"
            metadata["issued"] = "\(MessageEncoding.timestamp(command.issued))"
        }
        if let error = outcome.error { metadata["error"] = "\(error)" }
        if case let .ran(results) = outcome {
            metadata["read_back"] = "\(results.map { "\($0.write.tag.name)=\(CommandResultEncoding.readBackText($0.outcome))" }.joined(separator: ","))"
        }
        if ok {
            logger.notice("command executed", metadata: metadata)
        } else {
            logger.warning("command \(outcome.isRefusal ? "refused" : "failed")", metadata: metadata)
        }
        guard let device = verdict.device else { return }  // no topic of ours to answer on
        let payload = CommandResultEncoding.payload(id: verdict.id, gateway: identity.id, device: device,
                                                     kid: verdict.kid, outcome: outcome, at: wallClock())
        do {
            try uplink.publish(MQTTMessage(topic: identity.commandResultTopic(device: device), payload: payload, qos: 1))
        } catch {
            logger.warning("command result not published", metadata: [
                "id": "\(verdict.id ?? "-")", "device": "\(device)", "error": "\(error)",
            ])
        }
    }
}
