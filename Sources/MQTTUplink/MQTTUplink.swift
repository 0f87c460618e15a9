// The MQTT client: libmosquitto behind a Swift API that reports events and never
// exposes C types.
import CMosquitto
import Foundation
import Logging
import Synchronization

/// An MQTT 5 user property (name, value).
public struct MQTTUserProperty: Sendable, Equatable {
    public var name: String
    public var value: String

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

/// One MQTT application message.
public struct MQTTMessage: Sendable, Equatable {
    public var topic: String
    public var payload: [UInt8]
    public var qos: Int
    public var retain: Bool
    /// Sent under MQTT 5 only (3.1.1 has no properties).
    public var userProperties: [MQTTUserProperty] = []
    /// MQTT 5 only: the Message Expiry Interval (whole seconds, rounded up): the broker
    /// drops the message once it has waited that long for a subscriber. `nil`: never.
    public var messageExpiry: Duration? = nil

    public init(topic: String, payload: [UInt8], qos: Int, retain: Bool = false) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
    }
}

/// Where and how to connect.
public struct MQTTUplinkSettings: Sendable {
    /// The first (preferred) broker.
    public var host: String
    public var port: Int
    /// Brokers tried in order after the first fails (`mqtt.servers`); empty for one broker.
    public var failover: [MQTTServerAddress] = []
    /// How long a connection to a later server is kept before the first is tried again.
    public var failbackAfter: Duration = .seconds(300)
    /// MQTT 5 instead of 3.1.1: PUBACK reason codes, so a refused message is reported
    /// as `.refused`, never as `.published`.
    public var mqtt5 = false
    public var clientID: String
    public var keepalive: Duration
    public var maxInflight: Int
    public var reconnectMin: Duration
    public var reconnectMax: Duration
    /// The gateway always starts clean: its outbox, not the broker, holds what is unsent.
    /// With `willDelay` (MQTT 5) a connection resumes the session instead (SessionStart.swift).
    public var cleanSession: Bool
    /// MQTT 5 only: the Will Delay Interval, and a Session Expiry Interval as long, so a
    /// reconnect within it does not publish the Will (SessionStart.swift). `nil`: the Will
    /// is published as soon as the connection is gone, and the session expires with it.
    public var willDelay: Duration? = nil
    /// TLS of the connection; `nil` means plain TCP (see UplinkSecurity.swift).
    public var tls: MQTTTLSOptions? = nil
    /// User name and password sent in CONNECT.
    public var credentials: MQTTCredentials? = nil
    /// Where the TCP connection must come from (`mqtt.bind_interface` / `bind_address`).
    public var sourceBinding: MQTTSourceBinding = .any

    public init(host: String, port: Int, clientID: String, keepalive: Duration = .seconds(30),
                maxInflight: Int = 100, reconnectMin: Duration = .seconds(1), reconnectMax: Duration = .seconds(30),
                cleanSession: Bool = true) {
        self.cleanSession = cleanSession
        self.host = host
        self.port = port
        self.clientID = clientID
        self.keepalive = keepalive
        self.maxInflight = maxInflight
        self.reconnectMin = reconnectMin
        self.reconnectMax = reconnectMax
    }

    public var endpoint: String { "\(host):\(port)" }

    /// Every broker, in the order they are tried.
    public var servers: [MQTTServerAddress] { [MQTTServerAddress(host: host, port: port)] + failover }

    /// These settings aimed at `server` (the TLS, credential and binding settings stay).
    func aimed(at server: MQTTServerAddress) -> MQTTUplinkSettings {
        var settings = self
        settings.host = server.host
        settings.port = server.port
        settings.failover = []
        return settings
    }
}

/// What the uplink reports. `session` numbers each connection; events of an
/// older session are about a connection that is gone.
public enum MQTTEvent: Sendable {
    /// CONNACK accepted: the session may publish.
    case connected(session: Int)
    /// A connect attempt failed (TCP, DNS, or the broker refused); a retry follows after `retryIn`.
    case connectFailed(reason: String, retryIn: Duration)
    /// An established connection ended.
    case disconnected(session: Int, reason: String)
    /// The broker acknowledged message `mid` (PUBACK for QoS 1, PUBCOMP for QoS 2),
    /// or a QoS 0 message was handed to the socket.
    case published(session: Int, mid: Int32)
    /// MQTT 5: the broker answered message `mid` with a failure reason code (not
    /// authorised, quota exceeded, …): it was not delivered.
    case refused(session: Int, mid: Int32, reason: String)
    /// A message arrived on a subscription.
    case message(MQTTMessage)
}

/// Why an MQTT call failed.
public struct MQTTError: Error, Sendable, CustomStringConvertible {
    /// What failed and why, for logs.
    public var message: String
    /// libmosquitto's return code (`MOSQ_ERR_*`) when a libmosquitto call failed:
    /// e.g. `MOSQ_ERR_NO_CONN` (not connected), `MOSQ_ERR_PAYLOAD_SIZE`,
    /// `MOSQ_ERR_MALFORMED_UTF8` (a bad topic), `MOSQ_ERR_NOMEM`.
    public var code: Int32?
    /// What `code` means: `mosquitto_strerror`, or errno's text for `MOSQ_ERR_ERRNO`.
    public var meaning: String?

    public init(_ message: String, code: Int32? = nil, meaning: String? = nil) {
        self.message = message
        self.code = code
        self.meaning = meaning
    }

    public var description: String { message }

    /// Whether the call failed because there is no live connection (as opposed
    /// to something wrong with the message itself).
    public var isNotConnected: Bool {
        code == MOSQ_ERR_NO_CONN.rawValue || code == MOSQ_ERR_CONN_LOST.rawValue
    }

    /// Converts a libmosquitto result; `errno` is the one captured right after the call
    /// (libmosquitto reports system errors as MOSQ_ERR_ERRNO).
    static func mosquitto(_ code: Int32, errno: Int32, _ action: String) -> MQTTError {
        let meaning = code == MOSQ_ERR_ERRNO.rawValue
            ? String(cString: strerror(errno))
            : String(cString: mosquitto_strerror(code))
        return MQTTError("\(action): \(meaning)", code: code, meaning: meaning)
    }
}

private let libraryInitialised: Bool = {
    mosquitto_lib_init()
    return true
}()

/// A long-lived MQTT connection to one broker, kept up by its own network thread.
///
/// The network thread is also a serial `TaskExecutor` (`executor`): a task that prefers
/// it runs between the thread's socket turns, so what a callback's event resumes (the
/// forwarder answering a PUBACK with the next publish) runs on this thread, without
/// waking another, and what it publishes is written right after it, in the same turn.
///
/// Each connection attempt uses a fresh libmosquitto handle, so nothing queued
/// inside libmosquitto outlives a connection: the outbox stays the only queue, and
/// what was in flight when a link died is sent again from there.
///
/// Why not `mosquitto_loop_start`: its thread gives up for good after TLS, auth
/// or DNS errors; a gateway must retry those forever, with backoff. The thread here
/// runs libmosquitto's loop and reconnects on every error. It drives the loop itself
/// (`mosquitto_loop_read` / `_write` / `_misc` after its own `poll`), so jobs queued for
/// `executor` from other threads can wake it.
public final class MQTTUplink: Sendable {
    public let settings: MQTTUplinkSettings
    let logger: Logger
    private let onEvent: @Sendable (MQTTEvent) -> Void
    /// Built before every connection attempt for that attempt's session number (the
    /// one its `.connected` event carries), so its `ts` is fresh.
    private let makeWill: @Sendable (_ session: Int) -> MQTTMessage?
    private let current = Mutex<ConnectionHandle?>(nil)
    private let stopRequested = Atomic<Bool>(false)
    /// The network thread: runs the tasks that prefer it between its socket turns, and
    /// sleeps in its `wait` (woken by a packet, a job, a stop, a reconnect).
    public let executor = UplinkExecutor()
    private let networkThread = Mutex(NetworkThreadState())
    private let started = Atomic<Bool>(false)
    /// The broker of the live connection and its session.
    private let connectedServer = Mutex<(session: Int, server: MQTTServerAddress)?>(nil)

    /// Whether the network thread has ended, and who waits for it (`stop`).
    private struct NetworkThreadState {
        var finished = false
        var waiters: [StopWaiter] = []
    }

    public init(settings: MQTTUplinkSettings, logger: Logger,
                will: @escaping @Sendable (_ session: Int) -> MQTTMessage? = { _ in nil },
                onEvent: @escaping @Sendable (MQTTEvent) -> Void) {
        _ = libraryInitialised
        self.settings = settings
        self.logger = logger
        self.makeWill = will
        self.onEvent = onEvent
    }

    /// Starts connecting in the background. Events arrive through `onEvent`.
    public func start() {
        guard !started.exchange(true, ordering: .acquiringAndReleasing) else { return }
        // Linux keeps 15 bytes of a thread name and refuses a longer one; Foundation's
        // `Thread.name` does not reach the kernel here (`/proc/.../comm`, perf, top -H).
        let kernelName = String(String.UnicodeScalarView("mqtt-\(settings.clientID)".unicodeScalars.prefix(15)))
        let thread = Thread {
            self.executor.adoptCurrentThread()
            let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
            if fd >= 0 {
                _ = Array(kernelName.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                close(fd)
            }
            self.networkLoop()
        }
        thread.name = "mqtt-\(settings.clientID)"
        thread.start()
    }

    /// Queues a message on the live connection. Returns the session and message id
    /// that a later `.published` event acknowledges.
    ///
    /// - Throws: `MQTTPublishError` saying whether the connection is gone, the message
    ///   can never be published (a topic or payload beyond MQTT's limits), or a retry may work.
    public func publish(_ message: MQTTMessage) throws(MQTTPublishError) -> (session: Int, mid: Int32) {
        try current.withLock { handle throws(MQTTPublishError) in
            guard let handle, handle.context.isConnected.load(ordering: .acquiring) else {
                throw MQTTPublishError(kind: .notConnected, code: nil, cause: "not connected to \(settings.endpoint)",
                                       topic: message.topic, payloadBytes: message.payload.count)
            }
            guard message.payload.count <= mqttMaxPayload else {
                // Int32(count) below would trap; MQTT cannot carry it anyway.
                throw MQTTPublishError.mosquitto(MOSQ_ERR_PAYLOAD_SIZE.rawValue, errno: 0, topic: message.topic,
                                                 payloadBytes: message.payload.count)
            }
            var mid: Int32 = 0
            var properties: OpaquePointer? = nil
            if settings.mqtt5 {
                for property in message.userProperties {
                    let rc = mosquitto_property_add_string_pair(&properties, Int32(MQTT_PROP_USER_PROPERTY.rawValue),
                                                                property.name, property.value)
                    let code = errno
                    guard rc == MOSQ_ERR_SUCCESS.rawValue else {
                        mosquitto_property_free_all(&properties)
                        throw MQTTPublishError.mosquitto(rc, errno: code, topic: message.topic,
                                                         payloadBytes: message.payload.count)
                    }
                }
                if let expiry = message.messageExpiry {
                    let seconds = MQTTInterval.seconds(expiry) ?? UInt32.max
                    let rc = mosquitto_property_add_int32(&properties, Int32(MQTT_PROP_MESSAGE_EXPIRY_INTERVAL.rawValue),
                                                          seconds)
                    let code = errno
                    guard rc == MOSQ_ERR_SUCCESS.rawValue else {
                        mosquitto_property_free_all(&properties)
                        throw MQTTPublishError.mosquitto(rc, errno: code, topic: message.topic,
                                                         payloadBytes: message.payload.count)
                    }
                }
            }
            // libmosquitto copies the properties: they are freed here either way.
            defer { mosquitto_property_free_all(&properties) }
            let (rc, savedErrno) = message.payload.withUnsafeBytes { bytes in
                let rc = properties == nil
                    ? mosquitto_publish(handle.raw, &mid, message.topic, Int32(bytes.count), bytes.baseAddress,
                                        Int32(message.qos), message.retain)
                    : mosquitto_publish_v5(handle.raw, &mid, message.topic, Int32(bytes.count), bytes.baseAddress,
                                           Int32(message.qos), message.retain, properties)
                return (rc, errno)
            }
            guard rc == MOSQ_ERR_SUCCESS.rawValue else {
                throw MQTTPublishError.mosquitto(rc, errno: savedErrno, topic: message.topic,
                                                 payloadBytes: message.payload.count)
            }
            if message.qos == 2 { handle.context.qos2Awaiting.withLock { _ = $0.insert(mid) } }
            wakeIfElsewhere()
            return (handle.context.session, mid)
        }
    }

    /// The broker that connection `session` is (or was last) on, while it is the newest one.
    public func server(ofSession session: Int) -> MQTTServerAddress? {
        connectedServer.withLock { current in current.flatMap { $0.session == session ? $0.server : nil } }
    }

    /// Subscribes on the live connection (used by monitors and tests).
    public func subscribe(_ filter: String, qos: Int = 1) throws(MQTTError) {
        try current.withLock { handle throws(MQTTError) in
            guard let handle, handle.context.isConnected.load(ordering: .acquiring) else {
                throw MQTTError("not connected to \(settings.endpoint)")
            }
            let rc = mosquitto_subscribe(handle.raw, nil, filter, Int32(qos))
            let code = errno
            guard rc == MOSQ_ERR_SUCCESS.rawValue else { throw MQTTError.mosquitto(rc, errno: code, "subscribe to \(filter)") }
            wakeIfElsewhere()
        }
    }

    /// A packet is only queued (threaded mode, see `runSession`); the network thread
    /// writes it after the job that queued it, or, queued from another thread, once woken.
    private func wakeIfElsewhere() {
        if !executor.isCurrentThread { executor.wake() }
    }

    /// Sends DISCONNECT (so the broker discards the Last Will), stops the network
    /// thread and waits for it to end, at most `timeout`. Messages published before
    /// go out before the DISCONNECT (libmosquitto sends in order). Suspends without
    /// blocking a thread: the network thread (or a timer) resumes the caller.
    public func stop(timeout: Duration = .seconds(2)) async {
        requestStop()
        guard started.load(ordering: .acquiring) else { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let waiter = StopWaiter(continuation)
            let finished = networkThread.withLock { state in
                if !state.finished { state.waiters.append(waiter) }
                return state.finished
            }
            if finished {
                waiter.resume()
            } else {
                DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(timeout / .nanoseconds(1)))) {
                    waiter.resume()
                }
            }
        }
    }

    /// Sends DISCONNECT and tells the network thread to end, without waiting for it.
    /// Ends the current connection with a DISCONNECT (the broker discards its Will) and
    /// connects again after `reconnectMin`, with a new session and a new Will: what a
    /// Sparkplug edge node does when its primary host goes offline. Messages queued
    /// before go out first, on the same connection.
    /// The DISCONNECT is sent by the network thread (it owns the socket, which libmosquitto
    /// closes once DISCONNECT is written).
    public func reconnect() {
        current.withLock { handle in handle?.context.disconnectRequested.store(true, ordering: .releasing) }
        executor.wake()
    }

    public func requestStop() {
        guard !stopRequested.exchange(true, ordering: .acquiringAndReleasing) else { return }
        executor.wake()
    }

    // MARK: - Network thread

    private func networkLoop() {
        defer {
            // Jobs from now on run on the global executor: the stop waiters' too.
            executor.end()
            let waiters = networkThread.withLock { state in
                state.finished = true
                defer { state.waiters = [] }
                return state.waiters
            }
            waiters.forEach { $0.resume() }
        }
        var session = 0
        var backoff = ReconnectBackoff(minimum: settings.reconnectMin, maximum: settings.reconnectMax)
        let servers = settings.servers
        var rotation = ServerRotation(count: servers.count)
        while !stopRequested.load(ordering: .acquiring) {
            session += 1
            let server = servers[rotation.index]
            let failback = rotation.onLaterServer ? settings.failbackAfter : nil
            let outcome = runSession(session, settings: settings.aimed(at: server), failbackAfter: failback)
            if stopRequested.load(ordering: .acquiring) { break }
            let delay: Duration
            switch outcome {
            case let .failedToConnect(reason):
                let roundFailed = rotation.failed()
                delay = roundFailed ? backoff.ended(.failedToConnect) : .zero
                logger.warning("cannot connect to broker", metadata: [
                    "broker": "\(server.endpoint)", "error": "\(reason)", "retry_in": "\(delay)",
                    "next_broker": "\(servers[rotation.index].endpoint)",
                ])
                onEvent(.connectFailed(reason: reason, retryIn: delay))
            case let .lost(lost):
                rotation.ended()
                delay = backoff.ended(.lost(lasted: lost.lasted, cause: lost.cause))
                let reason = Self.explain(lost, backoff: backoff, clientID: settings.clientID)
                logger.warning("connection to broker lost", metadata: [
                    "broker": "\(server.endpoint)", "error": "\(reason)", "retry_in": "\(delay)",
                    "connected_for": "\(lost.lasted)",
                ])
                onEvent(.disconnected(session: session, reason: reason))
            case .leftForFailback:
                rotation.ended()
                delay = .zero
                let reason = "left \(server.endpoint) after \(Self.seconds(settings.failbackAfter)) (failback_after) "
                    + "to try \(servers[0].endpoint) again"
                logger.notice("failing back to the first broker", metadata: [
                    "broker": "\(server.endpoint)", "first_broker": "\(servers[0].endpoint)",
                ])
                onEvent(.disconnected(session: session, reason: reason))
            }
            // Jobs keep running while disconnected (the forwarder books commits offline).
            let retryAt = ContinuousClock.now + delay
            while !stopRequested.load(ordering: .acquiring), case let left = retryAt - .now, left > .zero {
                _ = executor.wait(socket: -1, wantWrite: false, timeout: left)
                executor.runJobs()
            }
        }
    }

    /// The longest one loop turn of a connected session waits. libmosquitto checks the
    /// keepalive (`mosquitto_loop_misc`: sends PINGREQ, notices a missing PINGRESP) only
    /// when a turn ends, so a turn of a quarter keepalive sends PINGREQ by 1.25 ×
    /// keepalive of silence, inside the broker's 1.5 ×. Packets, jobs, and `reconnect`,
    /// `requestStop` and a half-written `publish` or `subscribe` from other threads
    /// (`UplinkExecutor.wake`), end a turn at once: an idle connection wakes only for this.
    static func loopTurn(keepalive: Duration) -> Duration {
        keepalive > .zero ? max(keepalive / 4, .seconds(1)) : .seconds(60)
    }

    /// How long CONNACK is awaited: three quarters of the keepalive (libmosquitto
    /// closes a connection silent for a whole keepalive), at least one second.
    static func connackWait(keepalive: Duration) -> Duration {
        max(keepalive * 3 / 4, .seconds(1))
    }

    /// `duration` as "N s" for messages.
    static func seconds(_ duration: Duration) -> String {
        let milliseconds = duration / .milliseconds(1)
        return milliseconds.truncatingRemainder(dividingBy: 1000) == 0
            ? "\(Int(milliseconds / 1000)) s" : "\(Double(Int(milliseconds)) / 1000) s"
    }

    private enum SessionOutcome {
        case failedToConnect(String)
        case lost(LostSession)
        /// Connected to a later server for `failback_after`: the connection was ended
        /// the way a failure ends it (no DISCONNECT), so that broker publishes the
        /// Last Will and its retained status does not say online for ever.
        case leftForFailback
    }

    /// An established connection that ended.
    struct LostSession {
        /// libmosquitto's error, with the broker's address.
        var error: String
        /// From CONNACK to the end.
        var lasted: Duration
        var cause: LossCause
    }

    /// The reason a lost connection is reported with: the cause in words where the
    /// uplink can name one.
    static func explain(_ lost: LostSession, backoff: ReconnectBackoff, clientID: String) -> String {
        switch lost.cause {
        case .qos2AnsweredWithPUBACK:
            return "the broker does not support QoS 2 (answered PUBACK): use qos: 1 (\(lost.error))"
        case .closedByBroker where backoff.closedRightAfterCONNACK >= ReconnectBackoff.closedRightAfterCONNACKWorthNaming:
            return "the broker closed the connection \(backoff.closedRightAfterCONNACK) times right after CONNACK: "
                + "another client with the same client id (\(clientID))? (\(lost.error))"
        case .closedByBroker, .other:
            return lost.error
        }
    }

    /// One connection attempt and, if it connects, the connection, to the broker that
    /// `settings` (this attempt's, shadowing the uplink's) names.
    private func runSession(_ session: Int, settings: MQTTUplinkSettings, failbackAfter: Duration?) -> SessionOutcome {
        connectedServer.withLock { $0 = (session, MQTTServerAddress(host: settings.host, port: settings.port)) }
        let context = CallbackContext(session: session, onEvent: onEvent)
        let retained = Unmanaged.passRetained(context)
        let start = SessionStart(settings)
        let created = mosquitto_new(settings.clientID, settings.cleanSession && start.cleanStart, retained.toOpaque())
        let createErrno = errno
        guard let raw = created else {
            _ = retained.takeRetainedValue()
            return .failedToConnect("cannot create an MQTT client: \(String(cString: strerror(createErrno)))")
        }
        let handle = ConnectionHandle(raw: raw, context: context)
        defer {
            current.withLock { $0 = nil }
            mosquitto_destroy(raw)
            _ = retained.takeRetainedValue()
        }
        // Threaded mode: every packet is only queued (libmosquitto 2.0.11, lib/packet_mosq.c
        // `packet__queue`), and this thread alone writes the socket (`flushQueued` after the
        // jobs, `mosquitto_loop_write` when it polls writable). Without it a publish outside
        // a callback is written by the calling thread at once: from the forwarder on this
        // thread that would be fine, but the command service publishes from other threads,
        // and a TLS connection's SSL object must not be written by one thread while this
        // one reads it. `packet__queue` also writes a byte to libmosquitto's socket pair
        // (made non-blocking in `mosquitto_reinitialise`), which only `mosquitto_loop`
        // reads: nobody waits on it here, and once its buffer is full the write fails with
        // EAGAIN, which libmosquitto ignores.
        mosquitto_threaded_set(raw, true)
        // Under MQTT 5 libmosquitto also applies what CONNACK announces: the server's
        // receive maximum (it holds back publishes beyond it), maximum packet size
        // (publish fails with MOSQ_ERR_OVERSIZE_PACKET: a broker limit) and keepalive.
        // No topic alias is ever sent, so the server's topic alias maximum cannot be exceeded.
        // The session expiry interval stays 0 (no property) unless a Will delay needs a
        // session that outlives the connection (SessionStart.swift): the outbox is the only queue.
        _ = mosquitto_int_option(raw, MOSQ_OPT_PROTOCOL_VERSION, settings.mqtt5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311)
        _ = mosquitto_max_inflight_messages_set(raw, UInt32(settings.maxInflight))
        // Nagle's algorithm off: a small publish or PUBACK behind an unacknowledged
        // segment would otherwise wait for the peer's delayed ACK (up to 40 ms on Linux).
        // libmosquitto still writes each packet whole, so this adds no tiny segments.
        _ = mosquitto_int_option(raw, MOSQ_OPT_TCP_NODELAY, 1)
        mosquitto_connect_v5_callback_set(raw, onConnectCallback)
        // The v5 callback also serves 3.1.1 (reason code always 0 there).
        mosquitto_publish_v5_callback_set(raw, onPublishCallback)
        mosquitto_message_callback_set(raw, onMessageCallback)
        if let problem = configureSecurity(raw, context: context, settings: settings, logger: logger) {
            return .failedToConnect(problem)
        }
        if let will = makeWill(session) {
            var properties: OpaquePointer?
            do { properties = try start.willProperties() } catch { return .failedToConnect(error.message) }
            let (rc, code) = will.payload.withUnsafeBytes { bytes in
                (mosquitto_will_set_v5(raw, will.topic, Int32(bytes.count), bytes.baseAddress, Int32(will.qos), will.retain,
                                       properties), errno)
            }
            if rc != MOSQ_ERR_SUCCESS.rawValue {
                // libmosquitto owns the properties only when the call succeeds.
                mosquitto_property_free_all(&properties)
                return .failedToConnect(MQTTError.mosquitto(rc, errno: code, "set the Last Will on \(will.topic)").message)
            }
        }
        let keepalive = Int32(clamping: settings.keepalive.components.seconds)
        // Source binding (fail closed): no address for this attempt means no attempt.
        let source: String?
        switch settings.sourceBinding.sourceAddress() {
        case let .success(address): source = address
        case let .failure(error): return .failedToConnect(error.message)
        }
        let rc: Int32
        let connectErrno: Int32
        switch start {
        case .clean:
            // Asynchronous, so a connect into a silent link (a VPN whose underlay is
            // down) is abandoned after `connectDeadline` and retried with a fresh SYN,
            // instead of waiting out the kernel's SYN backoff (minutes). Its name lookup
            // (`getaddrinfo`) blocks, for as long as a silent DNS server takes: on a thread
            // of its own, so the jobs (the forwarder) keep running meanwhile.
            let (host, port) = (settings.host, Int32(settings.port))
            (rc, connectErrno) = offThread { () -> (Int32, Int32) in
                let rc = mosquitto_connect_bind_async(handle.raw, host, port, keepalive, source)
                return (rc, errno)
            }
        case .resumableFor:
            // libmosquitto 2.0.11 sends CONNECT properties (the session expiry) only through
            // this call, whose TCP connect blocks: it runs here, on the uplink's own thread.
            // A connect into a silent link then waits out the kernel's SYN retries
            // (net.ipv4.tcp_syn_retries, about 2 minutes) before the next attempt.
            // On a thread of its own, so the jobs (the forwarder) keep running meanwhile.
            var properties: OpaquePointer?
            do { properties = try start.connectProperties() } catch { return .failedToConnect(error.message) }
            let owned = HandedOverProperties(properties)
            let (host, port) = (settings.host, Int32(settings.port))
            (rc, connectErrno) = offThread { () -> (Int32, Int32) in
                var properties = owned.properties
                defer { mosquitto_property_free_all(&properties) }
                let rc = mosquitto_connect_bind_v5(handle.raw, host, port, keepalive, source, properties)
                return (rc, errno)
            }
        }
        // Shorter than the keepalive, so this deadline, which names the cause, fires
        // before libmosquitto's keepalive check closes the socket ("Unknown error").
        let connackWait = Self.connackWait(keepalive: settings.keepalive)
        let connectDeadline = ContinuousClock.now + connackWait
        guard rc == MOSQ_ERR_SUCCESS.rawValue || rc == MOSQ_ERR_CONN_PENDING.rawValue else {
            let from = source.map { " from \($0)" } ?? ""
            return .failedToConnect(describeConnectFailure(
                raw, context: context, settings: settings,
                fallback: MQTTError.mosquitto(rc, errno: connectErrno, "connect to \(settings.endpoint)\(from)").message))
        }
        if let error = settings.sourceBinding.pin(socket: mosquitto_socket(raw)) {
            logger.warning("connection not pinned to its interface", metadata: ["error": "\(error)"])
        }
        current.withLock { $0 = handle }
        var loopRC = MOSQ_ERR_SUCCESS.rawValue
        var loopErrno: Int32 = 0
        let noCONNACK = "no CONNACK from \(settings.endpoint) within \(Self.seconds(connackWait)): "
            + "the broker accepts TCP but does not answer MQTT (a wrong port, a TLS listener, an overloaded broker?)"
        var disconnect = DisconnectRequest.none
        while !stopRequested.load(ordering: .acquiring) || context.isConnected.load(ordering: .acquiring) {
            if disconnect == .none, stopRequested.load(ordering: .acquiring)
                || context.disconnectRequested.load(ordering: .acquiring) {
                // Queued after everything published before, and written in order.
                disconnect = .sent
                _ = mosquitto_disconnect(raw)
            }
            // Short turns before CONNACK, so the deadline is met on time; once connected
            // the thread sleeps until a packet, a job, a stop or the keepalive check.
            let everConnected = context.everConnected.load(ordering: .acquiring)
            var turn = Duration.milliseconds(100)
            if everConnected {
                turn = Self.loopTurn(keepalive: settings.keepalive)
                if let failbackAfter, let connectedAt = context.connectedAt.withLock({ $0 }) {
                    turn = max(.milliseconds(1), min(turn, failbackAfter - (ContinuousClock.now - connectedAt)))
                }
            }
            (loopRC, loopErrno) = runLoopTurn(raw, timeout: turn, connected: everConnected)
            executor.runJobs()
            // Before CONNACK nothing of the jobs' is waiting to be written (publishes need a
            // connection), and a write there could come before the read that reports why
            // the broker closed (see `runLoopTurn`).
            if everConnected, loopRC == MOSQ_ERR_SUCCESS.rawValue { (loopRC, loopErrno) = flushQueued(raw) }
            if !everConnected, context.everConnected.load(ordering: .acquiring) {
                logBrokerLimits(context.brokerLimits.withLock { $0 }, start: start, settings: settings)
            }
            if loopRC != MOSQ_ERR_SUCCESS.rawValue { break }
            if !context.everConnected.load(ordering: .acquiring), ContinuousClock.now > connectDeadline {
                return .failedToConnect(noCONNACK)
            }
            if let failbackAfter, let connectedAt = context.connectedAt.withLock({ $0 }),
               ContinuousClock.now - connectedAt >= failbackAfter, !stopRequested.load(ordering: .acquiring) {
                context.isConnected.store(false, ordering: .releasing)
                // No DISCONNECT: the broker sees the connection drop and publishes the Will.
                _ = shutdown(mosquitto_socket(raw), Int32(SHUT_RDWR))
                return .leftForFailback
            }
            if stopRequested.load(ordering: .acquiring) && !context.isConnected.load(ordering: .acquiring) { break }
        }
        let wasConnected = context.everConnected.load(ordering: .acquiring)
        context.isConnected.store(false, ordering: .releasing)
        if let refusal = context.refusal.withLock({ $0 }) {
            return .failedToConnect(describeRefusal(refusal, settings: settings))
        }
        let reason = MQTTError.mosquitto(loopRC, errno: loopErrno, "connection to \(settings.endpoint)").message
        if wasConnected {
            let connectedAt = context.connectedAt.withLock { $0 } ?? ContinuousClock.now
            let cause: LossCause
            switch loopRC {
            case MOSQ_ERR_PROTOCOL.rawValue where !context.qos2Awaiting.withLock({ $0.isEmpty }):
                cause = .qos2AnsweredWithPUBACK
            case MOSQ_ERR_CONN_LOST.rawValue:
                cause = .closedByBroker
            default:
                cause = .other
            }
            return .lost(LostSession(error: reason, lasted: ContinuousClock.now - connectedAt, cause: cause))
        }
        if loopRC == MOSQ_ERR_KEEPALIVE.rawValue { return .failedToConnect(noCONNACK) }
        if settings.tls == nil, loopRC == MOSQ_ERR_CONN_LOST.rawValue {
            return .failedToConnect(Self.closedBeforeCONNACK(settings: settings))
        }
        if settings.tls != nil, context.security.certificateRejected {
            // A TLS handshake of its own (up to 5 s per step): off this thread, so the
            // forwarder's jobs keep running meanwhile.
            return .failedToConnect(offThread { self.diagnoseCertificateRejection(source: source, fallback: reason) })
        }
        return .failedToConnect(describeConnectFailure(raw, context: context, settings: settings, fallback: reason))
    }
}

extension MQTTUplink {
    /// Whether this connection's DISCONNECT was queued (by `requestStop` or `reconnect`).
    fileprivate enum DisconnectRequest { case none, sent }

    /// One turn of libmosquitto's loop, as `mosquitto_loop` (lib/loop.c, 2.0.11) does it
    /// but sleeping in `executor.wait`: read what came, write what waits, check the
    /// keepalive. Returns libmosquitto's result and the errno right after it.
    ///
    /// Until CONNACK (`connected` false) a writable turn reads first even when `poll` saw
    /// nothing to read: a TLS 1.3 broker that refuses the client certificate sends its
    /// alert after the handshake and closes. Read first, OpenSSL reports the alert
    /// (libmosquitto logs it, and the log names the cause); written first, the write
    /// fails with a bare EPROTO (`net__write` clears OpenSSL's errors) and the socket is
    /// closed before the alert is read.
    fileprivate func runLoopTurn(_ raw: OpaquePointer, timeout: Duration, connected: Bool) -> (Int32, Int32) {
        let socket = mosquitto_socket(raw)
        // Closed (a DISCONNECT written ends the connection): what `mosquitto_loop` returns then.
        guard socket >= 0 else { return (MOSQ_ERR_NO_CONN.rawValue, 0) }
        let ready = executor.wait(socket: socket, wantWrite: mosquitto_want_write(raw), timeout: timeout)
        if ready.readable || (!connected && ready.writable) {
            let rc = mosquitto_loop_read(raw, 1)
            let code = errno
            if rc != MOSQ_ERR_SUCCESS.rawValue || mosquitto_socket(raw) < 0 { return (rc, code) }
        }
        if ready.writable {
            var rc = mosquitto_loop_write(raw, 1)
            var code = errno
            if rc != MOSQ_ERR_SUCCESS.rawValue || mosquitto_socket(raw) < 0 { return (rc, code) }
            // Still wanting to write on a writable socket: a TLS handshake under way, which
            // `mosquitto_loop_write` leaves alone and `mosquitto_loop_read` continues
            // (`net__socket_connect_tls` while `want_connect`; `mosquitto_loop` calls it for
            // a writable socket). Otherwise the read finds nothing (EAGAIN) and returns.
            if mosquitto_want_write(raw) {
                rc = mosquitto_loop_read(raw, 1)
                code = errno
                if rc != MOSQ_ERR_SUCCESS.rawValue || mosquitto_socket(raw) < 0 { return (rc, code) }
            }
        }
        let rc = mosquitto_loop_misc(raw)
        return (rc, errno)
    }

    /// Writes what the jobs just queued (the publishes a PUBACK freed), without a poll
    /// first: the socket takes it unless its buffer is full (then the next turn polls for
    /// writing). Nothing while no socket is open or a TLS handshake is under way.
    fileprivate func flushQueued(_ raw: OpaquePointer) -> (Int32, Int32) {
        guard mosquitto_socket(raw) >= 0, mosquitto_want_write(raw) else { return (MOSQ_ERR_SUCCESS.rawValue, 0) }
        let rc = mosquitto_loop_write(raw, 1)
        return (rc, errno)
    }

    /// Runs `work` (a blocking libmosquitto call) on a thread of its own and returns its
    /// result; this (network) thread runs the executor's jobs meanwhile.
    fileprivate func offThread<Result: Sendable>(_ work: @escaping @Sendable () -> Result) -> Result {
        let outcome = Outcome<Result>()
        let executor = executor
        let thread = Thread {
            outcome.value.withLock { $0 = work() }
            executor.wake()
        }
        thread.stackSize = 512 * 1024
        thread.start()
        while true {
            if let result = outcome.value.withLock({ $0 }) { return result }
            _ = executor.wait(socket: -1, wantWrite: false, timeout: .seconds(1))
            executor.runJobs()
        }
    }

    /// Logs what an MQTT 5 broker announced in CONNACK, and warns when it shortened
    /// the session below the Will delay.
    fileprivate func logBrokerLimits(_ limits: BrokerLimits?, start: SessionStart, settings: MQTTUplinkSettings) {
        guard settings.mqtt5, let limits else { return }
        var metadata = limits.metadata.mapValues { Logger.MetadataValue.string($0) }
        metadata["broker"] = "\(settings.endpoint)"
        if !limits.metadata.isEmpty { logger.info("broker limits announced in CONNACK", metadata: metadata) }
        if let granted = limits.shortens(start), case let .resumableFor(seconds) = start {
            logger.warning("the broker shortened the session below mqtt.will_delay", metadata: [
                "broker": "\(settings.endpoint)", "session_expiry": "\(granted) s", "will_delay": "\(seconds) s",
                "effect": "the Will is published \(granted) s after a lost connection, not \(seconds) s",
            ])
        }
    }
}

/// What a thread of `MQTTUplink.offThread` hands back.
private final class Outcome<Value: Sendable>: Sendable {
    let value = Mutex<Value?>(nil)
}

/// CONNECT properties made on the network thread and freed by the thread that connects.
private struct HandedOverProperties: @unchecked Sendable {
    // Invariant: handed to exactly one thread, which alone uses and frees them.
    let properties: OpaquePointer?
    init(_ properties: OpaquePointer?) { self.properties = properties }
}

/// One caller of `MQTTUplink.stop` waiting for the network thread: resumed once,
/// by the thread's end or by the timeout, whichever comes first.
private final class StopWaiter: Sendable {
    private let continuation: CheckedContinuation<Void, Never>
    private let resumed = Atomic<Bool>(false)

    init(_ continuation: CheckedContinuation<Void, Never>) { self.continuation = continuation }

    func resume() {
        guard !resumed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        continuation.resume()
    }
}

/// A libmosquitto handle and the context its callbacks see. Only used under
/// `MQTTUplink.current`'s lock or on the network thread that owns it.
private final class ConnectionHandle: @unchecked Sendable {
    let raw: OpaquePointer
    let context: CallbackContext
    init(raw: OpaquePointer, context: CallbackContext) {
        self.raw = raw
        self.context = context
    }
}

/// What a connection's C callbacks need. Passed to libmosquitto as user data
/// (retained for the handle's lifetime, released after `mosquitto_destroy`).
final class CallbackContext: Sendable {
    let session: Int
    let onEvent: @Sendable (MQTTEvent) -> Void
    /// TLS diagnostics and the key passphrase (UplinkSecurity.swift).
    let security = SecurityState()
    let isConnected = Atomic<Bool>(false)
    let everConnected = Atomic<Bool>(false)
    /// When CONNACK came (set once, on the network thread).
    let connectedAt = Mutex<ContinuousClock.Instant?>(nil)
    /// Message ids of QoS 2 publishes not yet completed (PUBCOMP). Inserted after
    /// `mosquitto_publish` returns, so a PUBCOMP could in theory come first and leave
    /// a stale id: the only effect is that a later protocol error on this connection
    /// is blamed on QoS 2; the connection (and the set) ends with that error anyway.
    let qos2Awaiting = Mutex<Set<Int32>>([])
    let refusal = Mutex<String?>(nil)
    /// `MQTTUplink.reconnect`: the network thread sends DISCONNECT on this connection.
    let disconnectRequested = Atomic<Bool>(false)
    /// What CONNACK announced (MQTT 5 properties; all `nil` under 3.1.1), set before `isConnected`.
    let brokerLimits = Mutex<BrokerLimits?>(nil)

    init(session: Int, onEvent: @escaping @Sendable (MQTTEvent) -> Void) {
        self.session = session
        self.onEvent = onEvent
    }

    static func from(_ pointer: UnsafeMutableRawPointer?) -> CallbackContext {
        Unmanaged<CallbackContext>.fromOpaque(pointer!).takeUnretainedValue()
    }
}

// The callbacks run on the network thread inside its loop turn (in threaded mode only
// that thread writes the socket, so only it completes a publish); they only hand events on.

private func onConnectCallback(_ mosq: OpaquePointer?, _ user: UnsafeMutableRawPointer?, _ rc: Int32,
                               _ flags: Int32, _ properties: OpaquePointer?) {
    let context = CallbackContext.from(user)
    if rc == 0 {
        // The log lines serve only to name why a connect (TLS) failed. Connected, no more
        // are needed: without a callback libmosquitto formats none (it formatted a debug
        // line for every packet sent and received, a malloc and a vsnprintf each).
        mosquitto_log_callback_set(mosq, nil)
        context.brokerLimits.withLock { $0 = BrokerLimits(properties: properties) }
        context.connectedAt.withLock { $0 = ContinuousClock.now }
        context.isConnected.store(true, ordering: .releasing)
        context.everConnected.store(true, ordering: .releasing)
        context.onEvent(.connected(session: context.session))
    } else {
        context.refusal.withLock { $0 = String(cString: mosquitto_connack_string(rc)) }
    }
}

private func onPublishCallback(_ mosq: OpaquePointer?, _ user: UnsafeMutableRawPointer?, _ mid: Int32,
                               _ reasonCode: Int32, _ properties: OpaquePointer?) {
    let context = CallbackContext.from(user)
    context.qos2Awaiting.withLock { _ = $0.remove(mid) }
    // MQTT 5 §3.4.2.1: reason codes 0x80 and above are failures; the message was not accepted.
    if reasonCode >= 0x80 {
        let meaning = String(cString: mosquitto_reason_string(reasonCode))
        context.onEvent(.refused(session: context.session, mid: mid, reason: "\(meaning) (reason code 0x\(String(reasonCode, radix: 16)))"))
    } else {
        context.onEvent(.published(session: context.session, mid: mid))
    }
}

private func onMessageCallback(_ mosq: OpaquePointer?, _ user: UnsafeMutableRawPointer?,
                               _ message: UnsafePointer<mosquitto_message>?) {
    guard let message = message?.pointee else { return }
    let context = CallbackContext.from(user)
    let payload: [UInt8]
    if let bytes = message.payload, message.payloadlen > 0 {
        payload = Array(UnsafeRawBufferPointer(start: bytes, count: Int(message.payloadlen)))
    } else {
        payload = []
    }
    let topic = String(cString: message.topic)
    context.onEvent(.message(MQTTMessage(topic: topic, payload: payload, qos: Int(message.qos), retain: message.retain)))
}
