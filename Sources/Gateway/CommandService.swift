// Guarded writes end to end: commands arrive on the uplink's network thread, are
// checked (CommandGuard for signed JSON commands, SparkplugCommandGuard for DCMD; both
// end in WriteValidator), run on the device's bus thread (BusWriteQueue), and
// answered on `<prefix>/<gw>/<device>/cmd/result` (JSON) or by a DDATA of the values
// read back (Sparkplug). Nothing of a command touches the outbox: a command is run
// once, now, or never.
import Foundation
import GatewayConfig
import Logging
import Modbus
import MQTTUplink
import Sealing
import SparkplugB
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
    private let handler = Mutex<(@Sendable (MQTTEvent) -> Bool)?>(nil)

    public init() {}

    /// `handle` returns true for a message it took (nobody else needs it).
    func attach(_ handle: @escaping @Sendable (MQTTEvent) -> Bool) { handler.withLock { $0 = handle } }

    /// Passes `event` on; true when it was a command message the service took.
    func relay(_ event: MQTTEvent) -> Bool {
        guard let handle = handler.withLock({ $0 }) else { return false }
        return handle(event)
    }
}

public final class CommandService: Sendable {
    /// Which commands the service takes and how it answers them.
    public enum Channel: Sendable {
        /// Signed or sealed JSON commands on `<prefix>/<gw>/<device>/cmd`, each answered on `…/cmd/result`.
        case json
        /// Sparkplug DCMD on `spBv1.0/<group>/DCMD/<node>/<device>` (unsigned: `commands.sparkplug_unsigned`;
        /// the forwarder subscribes). A write is answered by `readBack`, which publishes the
        /// values read back as a DDATA; a refusal is logged and counted only.
        case sparkplug(node: SparkplugNode,
                       readBack: @Sendable (_ device: String, _ values: [(tag: String, value: Result<TagValue, TagError>)]) -> Void)
    }

    /// The checks of the channel.
    private enum Checks {
        case json(CommandGuard)
        case sparkplug(SparkplugCommandGuard)

        var topics: [String] {
            switch self {
            case let .json(checks): checks.topics
            case .sparkplug: []  // the forwarder subscribes to DCMD with NCMD
            }
        }

        func takes(_ topic: String) -> Bool {
            switch self {
            case .json: true  // the gateway's only subscription
            case let .sparkplug(checks): checks.isCommand(topic)
            }
        }

        mutating func check(_ message: MQTTMessage, now: Date, monotonic: ContinuousClock.Instant) -> CommandVerdict {
            switch self {
            case var .json(checks):
                defer { self = .json(checks) }
                return checks.check(message, now: now, monotonic: monotonic)
            case var .sparkplug(checks):
                defer { self = .sparkplug(checks) }
                return checks.check(message, now: now, monotonic: monotonic)
            }
        }
    }

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
    private let checks: Mutex<Checks>
    private let channel: Channel
    /// The live MQTT session (0: none); a command runs only while the session it came on lives.
    private let session = Atomic<Int>(0)
    private let wallClock: @Sendable () -> Date

    /// - Parameter queues: the write queue of each device's bus, by device name.
    public init(identity: GatewayIdentity, settings: CommandSettings, devices: [DeviceConfiguration],
                queues: [String: BusWriteQueue], uplink: Uplink, counters: CommandCounters, logger: Logger,
                channel: Channel = .json, wallClock: @escaping @Sendable () -> Date = { Date() }) throws(SealingError) {
        self.identity = identity
        self.settings = settings
        self.queues = queues
        self.uplink = uplink
        self.counters = counters
        self.logger = logger
        self.wallClock = wallClock
        self.channel = channel
        switch channel {
        case .json:
            checks = Mutex(.json(try CommandGuard(identity: identity, settings: settings, devices: devices,
                                                  started: wallClock(), now: .now)))
        case let .sparkplug(node, _):
            checks = Mutex(.sparkplug(SparkplugCommandGuard(node: node, identity: identity, settings: settings,
                                                             devices: devices, now: .now)))
        }
    }

    /// Reacts to the uplink: subscribes after every connect, handles command messages.
    /// Returns true for a message it took as a command.
    @discardableResult
    public func handle(_ event: MQTTEvent) -> Bool {
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
            guard checks.withLock({ $0.takes(message.topic) }) else { return false }
            received(message)
            return true
        case .published, .refused:
            break  // the forwarder's: data messages' acknowledgements
        }
        return false
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
        guard let device = verdict.device, let issued = verdict.issued, let queue = queues[device] else {
            finish(verdict, topic: message.topic, outcome: .refused(CommandRefusal(.deviceOffline, "device has no bus")))
            return
        }
        let maxAge = settings.maxAge
        let since = if case .sparkplug = channel { "received" } else { "issued" }
        queue.submit(BusWriteRequest(device: device, writes: writes, preflight: { [self] in
            // Right before the first byte: still the connection it came on, still fresh.
            if session.load(ordering: .acquiring) != arrivedOn || arrivedOn == 0 {
                return CommandRefusal(.uplinkDown, "the connection the command arrived on is gone; it is not run later")
            }
            let age = wallClock().timeIntervalSince(issued)
            if age > CommandGuard.seconds(maxAge) {
                return CommandRefusal(.tooOld, "waited for the bus until \(CommandGuard.format(age)) s after it was "
                                      + "\(since), beyond max_age")
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

    /// Counts, logs (the audit line) and answers: the result message of a JSON command,
    /// the read-back DDATA of a Sparkplug write.
    private func finish(_ verdict: CommandVerdict, topic: String, outcome: CommandOutcome) {
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
        if !verdict.authenticated, verdict.id != nil { metadata["id_authenticated"] = "false" }
        if case .sparkplug = channel { metadata["sender"] = "unsigned DCMD (broker ACL only)" }
        if !verdict.values.isEmpty {
            metadata["set"] = "\(verdict.values.map { "\($0.tag)=\(CommandResultEncoding.text($0.value))" }.joined(separator: ","))"
        }
        if let issued = verdict.issued, case .json = channel { metadata["issued"] = "\(MessageEncoding.timestamp(issued))" }
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
        switch channel {
        case .json:
            let payload = CommandResultEncoding.payload(id: verdict.id, gateway: identity.id, device: device,
                                                         kid: verdict.kid, outcome: outcome, at: wallClock())
            do {
                try uplink.publish(MQTTMessage(topic: identity.commandResultTopic(device: device), payload: payload, qos: 1))
            } catch {
                logger.warning("command result not published", metadata: [
                    "id": "\(verdict.id ?? "-")", "device": "\(device)", "error": "\(error)",
                ])
            }
        case let .sparkplug(_, readBack):
            // Sparkplug answers a write with the new values as data; a refusal has no message.
            guard case let .ran(results) = outcome else { return }
            let values = results.compactMap { result -> (tag: String, value: Result<TagValue, TagError>)? in
                guard case let .written(value) = result.outcome else { return nil }
                return (result.write.tag.name, value)
            }
            if !values.isEmpty { readBack(device, values) }
        }
    }
}
