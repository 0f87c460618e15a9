// From the outbox to the broker: the forwarder service. It owns the MQTT uplink,
// turns everything that happens into `ForwarderEvent`s for its `ForwardingLoop`,
// and runs the reader and the deleter beside it.
import Foundation
import GatewayClock
import GatewayConfig
import Logging
import Modbus
import MQTTUplink
import Outbox
import Sealing
import ServiceLifecycle
import Synchronization

/// Everything the forwarder reacts to, in one stream.
enum ForwarderEvent: Sendable {
    /// Any MQTT event but PUBACKs, which arrive through `PubackQueue`.
    case mqtt(MQTTEvent)
    /// `PubackQueue` went from empty to not empty.
    case pubacks
    /// The reader's answer to a `LeaseRequest`.
    case leased(LeaseResult)
    /// Rows up to this outbox id are committed; `rows` are the ones this commit wrote
    /// (taken without a read when the live side is caught up).
    case outboxCommitted(newestID: Int64, rows: [OutboxMessage] = [])
    /// Acknowledged ids went through an outbox transaction: their rows are gone.
    case deleted
    case deviceStatus(device: String, error: String?)
    /// A Sparkplug DCMD wrote these tags of `device`; the values read back after (a DDATA).
    case readBack(device: String, values: [(tag: String, value: Result<TagValue, TagError>)])
    /// The outbox wrote gap records (`Outbox.whenGapsRecorded`).
    case gapsRecorded
    /// Housekeeping when the loop asked for it (`ForwardingLoop.nextWake`): stats, gap
    /// checks, retries (rate limit, publish, outbox writes), read backoff, deadlines.
    case tick
    case shutdown
}

/// Counters the forwarder keeps for the stats topic.
public struct ForwarderCounters: Sendable, Equatable {
    /// Data messages the broker acknowledged since start.
    public var published: Int64 = 0
    public var inflight: Int = 0
    public var connected = false
    /// Why the last connection attempt failed or the last connection ended; nil while connected.
    public var uplinkProblem: String?
    /// The broker (`host:port`) of the live or last connection.
    public var server: String?
    /// MQTT 5: data messages the broker refused with a failure reason code (kept in
    /// the outbox, sent again after the next connect).
    public var refused: Int64 = 0
}

/// `ForwarderCounters` shared between the forwarding task (writes) and readers
/// (the watchdog's status line, stats).
final class ForwarderCounterState: Sendable {
    private let state = Mutex(ForwarderCounters())

    var value: ForwarderCounters { state.withLock { $0 } }

    func update(_ change: (inout ForwarderCounters) -> Void) {
        state.withLock { change(&$0) }
    }
}

/// Owns the MQTT uplink. Announces the gateway (birth, Last Will, clean offline
/// status), republishes device statuses after every connect, forwards outbox rows
/// and deletes them once acknowledged, reports gaps, publishes stats.
public final class ForwarderService: Service, Sendable {
    /// When cancelled (the graceful period ran out): how long the offline status's
    /// PUBACK is awaited before DISCONNECT, and how long the network thread then gets.
    static let cancellationBound = Duration.milliseconds(250)
    static let stopBoundWhenCancelled = Duration.milliseconds(150)

    let settings: ForwardingLoop.Settings
    let outbox: Outbox
    let pollCounters: PollCounters
    let logger: Logger
    let uplink: MQTTUplink
    let counterState = ForwarderCounterState()
    /// Wall time, boottime, boot id and sync status: for corrections, the birth, the stats.
    let timeSource: any TimeSource
    private let events: AsyncStream<ForwarderEvent>
    private let eventSink: AsyncStream<ForwarderEvent>.Continuation
    /// Acknowledged ids handed to the outbox and not yet deleted.
    private let acknowledged = AcknowledgedIDs()
    private let leaseRequests: AsyncStream<LeaseRequest>
    private let leaseSink: AsyncStream<LeaseRequest>.Continuation
    private let pubacks = PubackQueue()
    /// Devices whose retained meta topic is published after every connect.
    private let announcedDevices = Mutex<[DeviceConfiguration]>([])
    /// Busy while the forwarding loop handles an event, idle between events (see `WatchdogService`).
    public let heartbeat = Heartbeat(name: "forwarder")
    /// The uplink's events for the command service (CommandService.swift), when commands are on.
    public let commandEvents = CommandEventRelay()

    /// - Parameter sparkplug: set with `mqtt.format: sparkplug`: NDEATH is the Will, births
    ///   and data follow Sparkplug B.
    public init(identity: GatewayIdentity, mqtt: MQTTSettings, replay: ReplaySettings = ReplaySettings(),
                outbox: Outbox, pollCounters: PollCounters, logger: Logger, shutdownGrace: Duration = .seconds(2),
                sealer: Sealer? = nil, timeSource: any TimeSource = KernelClock(),
                commandCounters: CommandCounters? = nil, sparkplug: SparkplugEdge? = nil) {
        settings = ForwardingLoop.Settings(identity: identity, replay: replay, maxInflight: mqtt.maxInflight,
                                           shutdownGrace: shutdownGrace, commandCounters: commandCounters, sealer: sealer,
                                           sparkplug: sparkplug, messageExpiry: mqtt.messageExpiry)
        self.timeSource = timeSource
        self.outbox = outbox
        self.pollCounters = pollCounters
        self.logger = logger
        let (events, sink) = AsyncStream.makeStream(of: ForwarderEvent.self)
        self.events = events
        self.eventSink = sink
        (leaseRequests, leaseSink) = AsyncStream.makeStream(of: LeaseRequest.self)
        let boot = outbox.boot
        uplink = MQTTUplink(
            settings: MQTTUplinkSettings(host: mqtt.host, port: mqtt.port, clientID: mqtt.clientID,
                                         keepalive: mqtt.keepalive, maxInflight: mqtt.maxInflight,
                                         reconnectMin: mqtt.reconnectMin, reconnectMax: mqtt.reconnectMax)
                .failingOver(as: mqtt)
                .delayingWill(as: mqtt)
                .secured(by: mqtt)
                .bound(interface: mqtt.bindInterface, address: mqtt.bindAddress),
            logger: logger,
            will: { session in
                sparkplug?.will(session: session) ?? StatusAnnouncer.will(identity: identity, boot: boot, session: session)
            },
            onEvent: { [pubacks, commandEvents] event in
                if commandEvents.relay(event) { return }
                // PUBACKs come in bursts: queue them and wake the forwarder once per
                // burst instead of once per message.
                guard case let .published(session, mid) = event else {
                    sink.yield(.mqtt(event))
                    return
                }
                if pubacks.append(session: session, mid: mid) { sink.yield(.pubacks) }
            })
    }

    public var counters: ForwarderCounters { counterState.value }

    /// Publishes (retained, after every connect) `<prefix>/<gw>/<device>/meta` for each device.
    public func announce(devices: [DeviceConfiguration]) {
        announcedDevices.withLock { $0 = devices }
    }

    /// `rows` (in id order) were just committed: publish them if the window allows,
    /// without reading them back when nothing older waits to be read.
    public func outboxCommitted(_ rows: [OutboxMessage]) {
        guard let newest = rows.last?.id else { return }
        eventSink.yield(.outboxCommitted(newestID: newest, rows: rows))
    }

    /// A device's status changed: `error` nil means online.
    public func deviceStatusChanged(device: String, error: String?) {
        eventSink.yield(.deviceStatus(device: device, error: error))
    }

    /// A Sparkplug DCMD was written: `values` read back from `device` go out as a DDATA.
    public func sparkplugReadBack(device: String, values: [(tag: String, value: Result<TagValue, TagError>)]) {
        eventSink.yield(.readBack(device: device, values: values))
    }

    public func run() async throws {
        let newestCommitted = try await outbox.newestID()
        uplink.start()
        // The forwarding runs on the uplink's network thread, between its socket turns: a
        // PUBACK's event and the publishes it frees need no other thread, and a publish
        // is written at once instead of waking the network thread. Everything the loop
        // awaits (the outbox) suspends; nothing on it blocks. The stop is awaited after
        // the preference ends (it may start on that thread: it only asks the thread to end
        // and suspends; jobs enqueued once the thread is gone run on the global executor).
        await withTaskExecutorPreference(uplink.executor) {
            await forward(newestCommitted: newestCommitted)
        }
        await uplink.stop(timeout: Task.isCancelled ? Self.stopBoundWhenCancelled : .seconds(2))
    }

    /// The forwarding loop and the reader beside it, until the loop stops.
    private func forward(newestCommitted: Int64) async {
        var loopLogger = logger
        loopLogger[metadataKey: "broker"] = "\(uplink.settings.endpoint)"
        let loop = ForwardingLoop(
            settings: settings, uplink: uplink, outbox: outbox, newestCommitted: newestCommitted,
            pubacks: pubacks, counters: counterState, pollCounters: pollCounters,
            devices: { self.announcedDevices.withLock { $0 } },
            outlets: .init(lease: { [leaseSink] in leaseSink.yield($0) },
                           delete: { [acknowledged, outbox, settings] ids in
                               acknowledged.handedOver(ids.count)
                               outbox.acknowledgeWithNextWrite(ids, flushAt: Self.deleteAtOnce(settings),
                                                               delay: Self.deleteDelay)
                           },
                           subscribe: { [uplink, logger] filters in
                               for filter in filters {
                                   do {
                                       try uplink.subscribe(filter, qos: 1)
                                   } catch {
                                       logger.error("cannot subscribe", metadata: ["filter": "\(filter)", "error": "\(error)"])
                                   }
                               }
                           },
                           reconnect: { [uplink] in uplink.reconnect() },
                           awaitingDelete: { [acknowledged] in acknowledged.outstanding },
                           wakeWhenDeleted: { [acknowledged, outbox] outstanding in
                               // Held back by them: delete them now, not once a tenth of a
                               // window waits (the PUBACKs that would bring it may not come
                               // before the window frees).
                               outbox.deleteQueuedAcknowledgementsSoon()
                               return acknowledged.wakeWhenFinished(whileAtLeast: outstanding)
                           }),
            logger: loopLogger, timeSource: timeSource)
        heartbeat.idle()  // alive: the outbox answered; waiting for events
        let sink = eventSink
        // The one timer: armed for what the loop says is due next, never periodic.
        let alarm = ForwarderAlarm { sink.yield(.tick) }
        defer { alarm.cancel() }
        outbox.whenGapsRecorded { sink.yield(.gapsRecorded) }
        // Rows awaiting deletion share the window with the messages in flight: a loop held
        // back by them is woken when a delete ends.
        outbox.whenAcknowledgementsWritten { [acknowledged] count in
            if acknowledged.finished(count) { sink.yield(.deleted) }
        }
        alarm.arm(at: loop.nextWake(now: .now))
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                // Rows are read ahead beside the forwarding, so a read never stalls the
                // window; acknowledged rows are deleted by the outbox: with the next append,
                // or by themselves (on this thread when the write lock is free) once a tenth
                // of the window waits, when the loop is held back by them, or after a delay.
                group.addTask { await self.readAhead() }
                for await event in events {
                    // Busy from now: a handler stuck on an `await` past the watchdog's
                    // threshold is a hang; between events the loop is idle, not silent.
                    heartbeat.enterRequest(deadline: .now)
                    if await loop.handle(event) == .stop { break }
                    heartbeat.idle()
                    alarm.arm(at: loop.nextWake(now: .now))
                }
                if Task.isCancelled { await lastWord(loop) }
                await outbox.deleteQueuedAcknowledgements()
                leaseSink.finish()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.eventSink.yield(.shutdown)
        }
    }

    /// Cancelled before a clean stop (the graceful period ran out): the retained
    /// status must still say offline (shutdown), not online. Publishes it and waits
    /// for its PUBACK a short, bounded time; the DISCONNECT follows it on the same
    /// connection either way, so the broker stores it before discarding the Will.
    private func lastWord(_ loop: ForwardingLoop) async {
        guard loop.offlineStatusOnCancellation() != nil else { return }
        let deadline = ContinuousClock.now + Self.cancellationBound
        while !loop.offlineStatusAcknowledged() {
            guard ContinuousClock.now < deadline else {
                logger.warning("cancelled: the offline status was sent but not acknowledged in time")
                return
            }
            await pauseIgnoringCancellation(.milliseconds(10))
        }
        logger.info("cancelled: the offline status was acknowledged")
    }

    /// Answers lease requests, one at a time.
    private func readAhead() async {
        for await request in leaseRequests {
            let result: LeaseResult
            do {
                result = request.answer(try await outbox.lease(after: request.cursor, max: request.max))
            } catch {
                result = request.failed(error)  // the loop logs it once and backs off
            }
            eventSink.yield(.leased(result))
        }
    }

    /// Acknowledged rows wait at most about this long for an append to delete them with
    /// (a poll every 10 s or faster never needs a delete of their own). Long enough that
    /// the queue's timer wakes an idle gateway rarely; what it bounds is only how long
    /// an acknowledged row stays in the file, which a crash would send again (at most
    /// `deleteAtOnce` of them).
    static let deleteDelay = Duration.seconds(10)

    /// How long at most a row the broker acknowledged stays in the outbox file while the
    /// gateway runs (the queue checks every `deleteDelay`): `edge-gateway status`, reading
    /// the file from another process, may count such rows for this long.
    public static let acknowledgedRowsDeletedWithin = deleteDelay * 2

    /// This many acknowledged ids waiting are deleted at once, without waiting for an
    /// append (a replay, a burst): what a crash sends again stays about one window, as
    /// when every burst of PUBACKs was deleted at once. A live poll's few ids stay below it.
    static func deleteAtOnce(_ settings: ForwardingLoop.Settings) -> Int {
        max(1, settings.maxInflight / 10)
    }
}

/// Suspends for `duration` also in a cancelled task (where `Task.sleep` returns at
/// once), without blocking a thread: a timer resumes it.
func pauseIgnoringCancellation(_ duration: Duration) async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(duration / .nanoseconds(1)))) {
            continuation.resume()
        }
    }
}
