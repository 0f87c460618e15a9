// The running monitor: subscribes to the fleet, feeds the model from one loop,
// publishes snapshots for readers and hands batches of changes to the store.
import Foundation
import GatewayConfig
import Logging
import MQTTUplink
import Sealing
import ServiceLifecycle
import Synchronization

/// What the monitor needs to run, built from `MonitorConfiguration` (or by tests).
public struct MonitorSettings: Sendable {
    public var uplink: MQTTUplinkSettings
    public var topicPrefix: String
    public var staleAfter: StaleAfter
    public var historyLimit: Int
    public var keys: [SealingKey]
    /// How often time-dependent state (stale) is re-evaluated and changes are stored.
    public var tickInterval: Duration = .milliseconds(500)
    /// Readers see the model at most this old while messages flow.
    public var snapshotInterval: Duration = .milliseconds(200)

    public init(uplink: MQTTUplinkSettings, topicPrefix: String, staleAfter: StaleAfter = .auto,
                historyLimit: Int = 200, keys: [SealingKey] = []) {
        self.uplink = uplink
        self.topicPrefix = topicPrefix
        self.staleAfter = staleAfter
        self.historyLimit = historyLimit
        self.keys = keys
    }
}

/// edge-monitor's core service. Readers call `snapshot`, which never waits for the model.
public final class FleetMonitor: Service, Sendable {
    private enum Input: Sendable {
        case connected
        case events([FleetEvent])
        case tick

        var isTick: Bool { if case .tick = self { true } else { false } }
    }

    public let settings: MonitorSettings
    private let writer: StateWriter?
    private let logger: Logger
    private let decoder: FleetMessageDecoder
    private let latest: Mutex<FleetSnapshot>
    private let initialModel: Mutex<FleetModel?>
    private let inputs: AsyncStream<Input>
    private let continuation: AsyncStream<Input>.Continuation
    private let uplink: Mutex<MQTTUplink?> = Mutex(nil)

    /// Restores the model from `store` (when given) and prepares the subscription.
    public init(settings: MonitorSettings, store: MonitorStore?, logger: Logger) throws {
        self.settings = settings
        writer = store.map { StateWriter(store: $0, historyLimit: settings.historyLimit, logger: logger) }
        self.logger = logger
        let opener = settings.keys.isEmpty ? nil : try Opener(keys: settings.keys)
        decoder = FleetMessageDecoder(topicPrefix: settings.topicPrefix, opener: opener)
        let now = Date()
        var model = FleetModel(staleAfter: settings.staleAfter, historyLimit: settings.historyLimit)
        if let store {
            let contents = try store.load(historyLimit: settings.historyLimit)
            model = FleetModel(staleAfter: settings.staleAfter, historyLimit: settings.historyLimit,
                               restoring: contents.gateways, ledgers: contents.ledgers, history: contents.history,
                               ignored: contents.ignored, at: now)
            _ = model.takeChanges()
            logger.info("state restored", metadata: ["file": "\(store.path)", "gateways": "\(contents.gateways.count)"])
        }
        latest = Mutex(FleetSnapshot(model: model, takenAt: now))
        initialModel = Mutex(model)
        (inputs, continuation) = AsyncStream.makeStream(of: Input.self)
    }

    /// The model as of at most `snapshotInterval` ago. Never blocks on the model.
    public var snapshot: FleetSnapshot { latest.withLock { $0 } }

    public func run() async throws {
        guard var model = initialModel.withLock({ stored -> FleetModel? in
            defer { stored = nil }
            return stored
        }) else { return }
        let client = makeUplink()
        uplink.withLock { $0 = client }
        client.start()
        logger.info("subscribing to the fleet", metadata: [
            "broker": "\(settings.uplink.endpoint)", "topics": "\(decoder.subscriptions.joined(separator: " "))",
        ])
        // The writer outlives the loop: it stores the last batch after the loop ends.
        async let written: Void? = writer?.run()
        await withDiscardingTaskGroup { group in
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: self.settings.tickInterval)
                    self.continuation.yield(.tick)
                }
            }
            await withGracefulShutdownHandler {
                var lastSnapshot = ContinuousClock.now
                var ignoredLogged: [IgnoredReason: ContinuousClock.Instant] = [:]
                for await input in inputs {
                    let now = Date()
                    switch input {
                    case .connected:
                        model.connectionEstablished()
                    case let .events(events):
                        for event in events {
                            log(model.apply(event, at: now), ignoredLogged: &ignoredLogged)
                        }
                    case .tick:
                        log(model.tick(at: now), ignoredLogged: &ignoredLogged)
                        writer?.submit(model.takeChanges())
                    }
                    if input.isTick || ContinuousClock.now - lastSnapshot >= settings.snapshotInterval {
                        // A copy (copy-on-write); the lock is held for a swap only, and the
                        // previous snapshot is released after it.
                        let snapshot = model
                        let previous = latest.withLock { current in
                            defer { current = FleetSnapshot(model: snapshot, takenAt: now, generation: current.generation &+ 1) }
                            return current
                        }
                        _ = previous
                        lastSnapshot = ContinuousClock.now
                    }
                }
            } onGracefulShutdown: {
                self.continuation.finish()
            }
            await client.stop()
            uplink.withLock { $0 = nil }
            writer?.submit(model.takeChanges())
            writer?.finish()
            group.cancelAll()
        }
        _ = await written
        logger.info("monitor stopped")
    }

    private func makeUplink() -> MQTTUplink {
        let decoder = self.decoder
        let continuation = self.continuation
        let logger = self.logger
        // Captures self for `uplink` (cleared when the run ends, which breaks the cycle).
        return MQTTUplink(settings: settings.uplink, logger: logger) { [self] event in
            // The network thread decodes (JSON, envelopes), so the model loop only applies facts.
            switch event {
            case .connected:
                self.uplink.withLock { client in
                    for filter in decoder.subscriptions {
                        do {
                            try client?.subscribe(filter, qos: 1)
                        } catch {
                            logger.error("cannot subscribe", metadata: ["filter": "\(filter)", "error": "\(error)"])
                        }
                    }
                }
                continuation.yield(.connected)
                logger.info("connected to the central broker")
            case let .message(message):
                continuation.yield(.events(decoder.decode(topic: message.topic, payload: message.payload,
                                                          retained: message.retain)))
            case .connectFailed, .disconnected, .published, .refused:
                break  // MQTTUplink logs connection trouble itself
            }
        }
    }

    private func log(_ notes: [ModelNote], ignoredLogged: inout [IgnoredReason: ContinuousClock.Instant]) {
        for note in notes {
            var metadata = Logger.Metadata()
            for (key, value) in note.metadata { metadata[key] = "\(value)" }
            switch note.level {
            case .debug:
                // Ignored input: one line per reason per minute at warning, the rest at debug.
                if let reason = note.metadata["reason"].flatMap(IgnoredReason.init(rawValue:)) {
                    let now = ContinuousClock.now
                    if ignoredLogged[reason].map({ now - $0 >= .seconds(60) }) ?? true {
                        ignoredLogged[reason] = now
                        logger.warning("\(note.message) (further ones this minute at debug)", metadata: metadata)
                        continue
                    }
                }
                logger.debug("\(note.message)", metadata: metadata)
            case .info: logger.info("\(note.message)", metadata: metadata)
            case .warning: logger.warning("\(note.message)", metadata: metadata)
            case .error: logger.error("\(note.message)", metadata: metadata)
            }
        }
    }
}
