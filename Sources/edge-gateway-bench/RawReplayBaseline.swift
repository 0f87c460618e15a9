// The replay bench's target baseline: libmosquitto itself publishing from memory with the
// forwarder's window, so that a change to MQTTUplink cannot move the baseline.
//
//   One dedicated thread (Foundation Thread); `mosquitto_new` without threaded mode,
//   MQTT 3.1.1 and TCP_NODELAY (as MQTTUplink sets them for the gateway's default
//   settings), max inflight = the window. It connects to the same broker, publishes the
//   first `window` messages (the forwarder bench's topic and payload, QoS 1), and in the
//   on_publish callback (a PUBACK) publishes the next one until `total` were published,
//   driving `mosquitto_loop` on that same thread until all `total` are acknowledged.
//   Timed from the first publish to the last PUBACK (ContinuousClock, as the other rounds).
//   Any failing call ends the run with a RawReplayFailure naming the step; no figure is
//   made from a failed run.
import CMosquitto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A replay baseline step that failed: which call, and what the library said.
struct RawReplayFailure: Error, CustomStringConvertible {
    var step: String
    var reason: String
    var description: String { "replay baseline: \(step) failed: \(reason)" }
}

/// The client's state. Created, used and released on the baseline's thread only
/// (libmosquitto's callbacks run inside `mosquitto_loop` on that thread).
private final class RawReplayClient {
    let total: Int
    let topic: String
    var client: OpaquePointer?
    var connack: Int32?
    var published = 0
    var acknowledged = 0
    /// The first failure inside a callback; the loop stops on it.
    var failure: RawReplayFailure?

    init(total: Int, topic: String) {
        self.total = total
        self.topic = topic
    }

    deinit {
        if let client {
            mosquitto_disconnect(client)
            mosquitto_destroy(client)
        }
    }

    /// Publishes the next message (called from the thread and from on_publish).
    func publishNext() {
        guard let client, failure == nil, published < total else { return }
        let (rc, code) = payload.withUnsafeBytes { bytes in
            let rc = mosquitto_publish(client, nil, topic, Int32(bytes.count), bytes.baseAddress, 1, false)
            return (rc, errno)
        }
        if let problem = rawMosquittoFailure(rc, errno: code, "mosquitto_publish to \(topic)") {
            failure = problem
            return
        }
        published += 1
    }
}

private func rawReplayOnConnect(_ mosq: OpaquePointer?, _ user: UnsafeMutableRawPointer?, _ rc: Int32) {
    guard let user else { return }
    Unmanaged<RawReplayClient>.fromOpaque(user).takeUnretainedValue().connack = rc
}

private func rawReplayOnPublish(_ mosq: OpaquePointer?, _ user: UnsafeMutableRawPointer?, _ mid: Int32) {
    guard let user else { return }
    let state = Unmanaged<RawReplayClient>.fromOpaque(user).takeUnretainedValue()
    state.acknowledged += 1
    state.publishNext()
}

private func rawMosquittoFailure(_ rc: Int32, errno code: Int32, _ step: String) -> RawReplayFailure? {
    guard rc != MOSQ_ERR_SUCCESS.rawValue else { return nil }
    return RawReplayFailure(step: step, reason: mosquittoReason(rc, errno: code))
}

/// What a libmosquitto call's result says: errno's text for `MOSQ_ERR_ERRNO`, else
/// libmosquitto's own (the raw baselines' errors; `code` is errno taken at the call).
func mosquittoReason(_ rc: Int32, errno code: Int32) -> String {
    rc == MOSQ_ERR_ERRNO.rawValue ? String(cString: strerror(code)) : String(cString: mosquitto_strerror(rc))
}

/// The replay on the calling thread: connect, publish `total` with `window` inflight, wait
/// for every PUBACK. Returns the time from the first publish to the last PUBACK.
private func rawReplay(port: Int, total: Int, window: Int, topic: String) throws -> Duration {
    let clock = ContinuousClock()
    let state = RawReplayClient(total: total, topic: topic)
    guard let client = mosquitto_new("bench-raw-baseline", true, Unmanaged.passUnretained(state).toOpaque()) else {
        let code = errno
        throw RawReplayFailure(step: "mosquitto_new", reason: String(cString: strerror(code)))
    }
    state.client = client
    if let problem = rawMosquittoFailure(mosquitto_int_option(client, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311),
                                         errno: errno, "mosquitto_int_option PROTOCOL_VERSION 3.1.1") { throw problem }
    if let problem = rawMosquittoFailure(mosquitto_int_option(client, MOSQ_OPT_TCP_NODELAY, 1),
                                         errno: errno, "mosquitto_int_option TCP_NODELAY") { throw problem }
    if let problem = rawMosquittoFailure(mosquitto_max_inflight_messages_set(client, UInt32(window)),
                                         errno: errno, "mosquitto_max_inflight_messages_set \(window)") { throw problem }
    mosquitto_connect_callback_set(client, rawReplayOnConnect)
    mosquitto_publish_callback_set(client, rawReplayOnPublish)
    let broker = "127.0.0.1:\(port)"
    let rc = mosquitto_connect(client, "127.0.0.1", Int32(port), 60)
    if let problem = rawMosquittoFailure(rc, errno: errno, "mosquitto_connect \(broker)") { throw problem }
    let connectDeadline = clock.now + .seconds(10)
    while state.connack == nil {
        let rc = mosquitto_loop(client, 100, 1)
        if let problem = rawMosquittoFailure(rc, errno: errno, "mosquitto_loop waiting for the CONNACK of \(broker)") {
            throw problem
        }
        guard clock.now < connectDeadline else {
            throw RawReplayFailure(step: "waiting for the CONNACK of \(broker)", reason: "none within 10 s")
        }
    }
    guard state.connack == 0 else {
        throw RawReplayFailure(step: "connecting to \(broker)",
                               reason: String(cString: mosquitto_connack_string(state.connack ?? -1)))
    }
    let start = clock.now
    for _ in 0..<min(window, total) { state.publishNext() }
    let deadline = start + .seconds(300)
    while state.acknowledged < total {
        if let failure = state.failure { throw failure }
        let rc = mosquitto_loop(client, 1000, 1)
        if let problem = rawMosquittoFailure(rc, errno: errno,
                                             "mosquitto_loop after \(state.acknowledged) of \(total) PUBACKs") {
            throw problem
        }
        guard clock.now < deadline else {
            throw RawReplayFailure(step: "waiting for \(total) PUBACKs from \(broker)",
                                   reason: "only \(state.acknowledged) within 300 s")
        }
    }
    if let failure = state.failure { throw failure }
    return clock.now - start
}

/// Runs `rawReplay` on its own thread and hands back its time or its failure.
func replayRawBaseline(port: Int, total: Int, window: Int, topic: String) async throws -> Duration {
    // Reference-counted in libmosquitto 2.0 (`init_refcount`): harmless beside MQTTUplink's.
    mosquitto_lib_init()
    return try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            do {
                continuation.resume(returning: try rawReplay(port: port, total: total, window: window, topic: topic))
            } catch {
                continuation.resume(throwing: error)
            }
        }
        thread.name = "bench-raw-replay"
        thread.start()
    }
}
