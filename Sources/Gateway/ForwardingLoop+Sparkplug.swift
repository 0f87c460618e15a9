// The forwarding loop as a Sparkplug B edge node: births after every connect (once the
// primary host is online, if one is configured), DDATA rendered from committed rows
// with the session's seq, DBIRTH/DDEATH on device changes, NDATA for the health,
// rebirth on NCMD, NDEATH at a clean stop.
import Foundation
import Modbus
import MQTTUplink
import Outbox
import SparkplugB

extension ForwardingLoop {
    /// A new connection: subscribe, then births unless a primary host must say online first.
    func sparkplugConnected(session: Int) async {
        guard var state = sparkplug else { return }
        state.births = .pending
        state.sequence = SparkplugSequence()
        // A primary host must say online on this connection (its retained STATE arrives
        // right after the subscription); the last timestamp stays to order STATEs.
        state.host?.online = false
        sparkplug = state
        outlets.subscribe(state.subscriptions)
        if state.hostAllowsBirth {
            await sendBirths(session: session)
        } else {
            logger.info("waiting for the primary host to be online before NBIRTH", metadata: [
                "primary_host_id": "\(state.edge.settings.primaryHostID ?? "")",
            ])
        }
    }

    /// NBIRTH (seq 0, this session's bdSeq), then a DBIRTH per device with its current
    /// values, then a DDEATH for each device known to be offline. Rows committed so
    /// far are older than these values: they go out as historical DDATA.
    func sendBirths(session: Int) async {
        guard let state = sparkplug else { return }
        guard let bdSeq = state.edge.bdSeq(session: session) else {
            logger.error("no bdSeq recorded for this connection; not sending NBIRTH", metadata: ["session": "\(session)"])
            return
        }
        let node = state.node
        let health = await currentHealth()
        sparkplug?.sequence = SparkplugSequence()
        _ = sparkplug?.sequence.birth()
        let nbirth = MQTTMessage(topic: node.topics.nbirth, payload: node.nbirth(bdSeq: bdSeq, health: health, at: Date()),
                                 qos: 0)
        guard publish(nbirth) != nil else { return }
        for device in node.deviceNames {
            let latest = state.edge.latestReadings(device: device)
            publishSequenced { seq in
                node.dbirth(device: device, latest: latest, boot: self.outbox.boot, seq: seq, at: Date())
                    .map { MQTTMessage(topic: node.topics.dbirth(device: device), payload: $0, qos: 0) }
            }
            if case .some(.some) = announcer.deviceErrors[device] {
                publishSequenced { seq in
                    MQTTMessage(topic: node.topics.ddeath(device: device), payload: node.ddeath(seq: seq, at: Date()), qos: 0)
                }
            }
        }
        let newestCommitted = sparkplug?.newestCommitted ?? 0
        sparkplug?.births = .sent(historicalUpTo: newestCommitted)
        logger.info("Sparkplug births sent", metadata: [
            "bdSeq": "\(bdSeq)", "devices": "\(node.deviceNames.count)", "session": "\(session)",
        ])
    }

    /// The wire form of a committed row and whether it takes a seq. A row of this node's
    /// DDATA gets aliases, the next seq and (committed before the births) is_historical;
    /// any other row (e.g. JSON committed before the format changed) goes out unchanged.
    /// nil when a DDATA row cannot be decoded (it is dropped as a reported gap).
    /// `pollTime`: the corrected poll time of a row measured unsynchronised (ClockCorrection.swift).
    func sparkplugData(_ message: OutboxMessage, pollTime: Date? = nil) -> (MQTTMessage, sequenced: Bool)? {
        guard let state = sparkplug, case let .sent(historicalUpTo) = state.births else { return nil }
        guard let device = state.node.topics.device(in: message.topic, verb: "DDATA") else {
            return (MQTTMessage(topic: message.topic, payload: message.payload, qos: Int(message.qos)), false)
        }
        do {
            let payload = try state.node.wireDData(stored: message.payload, device: device, seq: state.sequence.next,
                                                   historical: message.id <= historicalUpTo, at: Date(),
                                                   pollTime: pollTime)
            return (MQTTMessage(topic: message.topic, payload: payload, qos: Int(message.qos)), true)
        } catch {
            logger.error("cannot render a stored DDATA; dropping it as a gap", metadata: [
                "id": "\(message.id)", "topic": "\(message.topic)", "error": "\(error)",
            ])
            return nil
        }
    }

    /// A device went offline (DDEATH) or came back (DBIRTH with its current values).
    func sparkplugDeviceChanged(_ device: String, error: String?, previous: String??) {
        guard let state = sparkplug, machine.isConnected, case .sent = state.births else { return }
        let node = state.node
        if error != nil {
            guard previous.flatMap({ $0 }) == nil else { return }  // already dead
            publishSequenced { seq in
                MQTTMessage(topic: node.topics.ddeath(device: device), payload: node.ddeath(seq: seq, at: Date()), qos: 0)
            }
        } else {
            let latest = state.edge.latestReadings(device: device)
            publishSequenced { seq in
                node.dbirth(device: device, latest: latest, boot: self.outbox.boot, seq: seq, at: Date())
                    .map { MQTTMessage(topic: node.topics.dbirth(device: device), payload: $0, qos: 0) }
            }
        }
    }

    /// The values read back after a DCMD write: remembered as the tags' current values
    /// (the next DBIRTH's) and published as a DDATA with the next seq. Not stored in the
    /// outbox: with the uplink down it is not sent (the next poll reports the value).
    func sparkplugReadBack(device: String, values: [(tag: String, value: Result<TagValue, TagError>)]) {
        guard let state = sparkplug else { return }
        let now = Date()
        state.edge.note(device: device, values: values, at: now)
        guard machine.isConnected, case .sent = state.births else {
            logger.info("read-back DDATA not sent: not connected or births pending", metadata: ["device": "\(device)"])
            return
        }
        publishSequenced { seq in
            state.node.readBackDData(device: device, values: values, seq: seq, at: now)
                .map { MQTTMessage(topic: state.node.topics.ddata(device: device), payload: $0, qos: 0) }
        }
    }

    /// NDATA with the health metrics (after the births only).
    func sparkplugStats(_ health: SparkplugNodeHealth) {
        guard let state = sparkplug, case .sent = state.births else { return }
        publishSequenced { seq in
            MQTTMessage(topic: state.node.topics.ndata, payload: state.node.ndata(health: health, seq: seq, at: Date()),
                        qos: 0)
        }
    }

    /// NCMD (rebirth), DCMD (refused: writes are not enabled; with them enabled the
    /// command service takes DCMD before it gets here) and the primary host's STATE.
    func sparkplugReceived(_ message: MQTTMessage) async {
        guard let state = sparkplug else { return }
        let topics = state.node.topics
        if message.topic == topics.ncmd {
            guard SparkplugNode.isRebirthRequest(message.payload) else {
                logger.warning("NCMD ignored: only Node Control/Rebirth is supported", metadata: ["topic": "\(message.topic)"])
                return
            }
            guard let session = machine.sessionID, machine.isConnected, case .sent = state.births else { return }
            logger.info("rebirth requested: sending NBIRTH and every DBIRTH again")
            await sendBirths(session: session)
            await fill()
        } else if let device = topics.device(in: message.topic, verb: "DCMD") {
            logger.warning("DCMD refused: writing to devices is not enabled in this gateway (commands.enabled and commands.sparkplug_unsigned allow it)", metadata: [
                "device": "\(device)", "topic": "\(message.topic)",
            ])
        } else if let host = state.edge.settings.primaryHostID, message.topic == SparkplugTopics.state(host: host) {
            guard let received = PrimaryHostState(payload: message.payload) else {
                logger.warning("primary host STATE is not Sparkplug 3.0 JSON; ignored", metadata: ["topic": "\(message.topic)"])
                return
            }
            guard let applied = sparkplug?.apply(received) else {
                logger.info("primary host STATE older than the last one; ignored", metadata: [
                    "timestamp": "\(received.timestamp)",
                ])
                return
            }
            await primaryHost(applied)
        }
    }

    private func primaryHost(_ host: PrimaryHostState) async {
        guard let state = sparkplug, let session = machine.sessionID, machine.isConnected else { return }
        switch (host.online, state.births) {
        case (true, .pending):
            logger.info("primary host online: sending births, then the buffered data")
            await sendBirths(session: session)
            await fill()
        case (false, .sent):
            // tck-id-operational-behavior-edge-node-termination-host-offline(-reconnect):
            // NDEATH, disconnect, connect again (new bdSeq) and wait for the host. Data
            // stays in the outbox and goes out as historical after the next births.
            logger.warning("primary host offline: NDEATH and reconnect; holding data in the outbox until it is back")
            let mid = state.edge.bdSeq(session: session).flatMap { bdSeq in
                publish(MQTTMessage(topic: state.node.topics.ndeath,
                                    payload: state.node.ndeath(bdSeq: bdSeq, at: Date()), qos: 1))
            }
            if let mid {
                sparkplug?.births = .closing(ndeath: mid, deadline: now() + Self.ndeathAckWait)
            } else {
                sparkplug?.births = .pending
                outlets.reconnect()
            }
        case (true, .sent), (_, .pending), (_, .closing):
            break
        }
    }

    /// How long the DISCONNECT after a host-offline NDEATH waits for its PUBACK.
    static var ndeathAckWait: Duration { .seconds(2) }

    /// Ends the session of a host-offline NDEATH once its PUBACK (`mid` of `session`)
    /// is in, or its wait ran out (`mid` nil: a tick). Returns true when it reconnected.
    @discardableResult
    func endClosingSession(acknowledged mid: Int32?, session: Int?) -> Bool {
        guard let state = sparkplug, case let .closing(ndeath, deadline) = state.births else { return false }
        if let mid {
            guard mid == ndeath, session == machine.sessionID else { return false }
        } else if now() < deadline {
            return false
        }
        sparkplug?.births = .pending
        outlets.reconnect()
        return true
    }

    /// The message that ends a session cleanly: NDEATH for a Sparkplug node
    /// (tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath), QoS 1
    /// so its PUBACK tells the DISCONNECT may follow; else the JSON offline status.
    func offlineMessage(session: Int) -> MQTTMessage {
        guard let state = sparkplug else { return announcer.offline(session: session) }
        let bdSeq = state.edge.bdSeq(session: session) ?? 0
        return MQTTMessage(topic: state.node.topics.ndeath, payload: state.node.ndeath(bdSeq: bdSeq, at: Date()), qos: 1)
    }

    /// Publishes a message that takes the next seq; the seq is used up only when the
    /// message was queued on the connection.
    @discardableResult
    func publishSequenced(_ make: (UInt8) -> MQTTMessage?) -> Int32? {
        guard let seq = sparkplug?.sequence.next, let message = make(seq) else { return nil }
        let mid = publish(message)
        if mid != nil { _ = sparkplug?.sequence.take() }
        return mid
    }

    private func currentHealth() async -> SparkplugNodeHealth {
        let polls = pollCounters.snapshot
        let buffered = try? await outbox.statistics()
        return SparkplugNodeHealth(boot: outbox.boot, backlog: Int64(buffered?.bufferedMessages ?? 0),
                                   dropped: buffered?.dropped ?? 0, pollsFailed: Int64(polls.pollsFailed),
                                   pollOverruns: polls.overruns,
                                   commands: commandCounts)
    }

    /// The command counters for the node metrics (nil: commands are off).
    var commandCounts: SparkplugCommandCounts? {
        settings.commandCounters.map {
            let counts = $0.snapshot
            return SparkplugCommandCounts(received: counts.received, executed: counts.executed,
                                          refused: counts.refused, failed: counts.failed)
        }
    }
}
