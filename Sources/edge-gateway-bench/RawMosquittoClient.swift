// The bench's raw libmosquitto client, shared by its two one-thread baselines (the floor
// of `per-message`, the raw replay): `mosquitto_new` without libmosquitto's thread, MQTT
// 3.1.1 and TCP_NODELAY (as MQTTUplink sets them for the gateway's default settings),
// QoS 1 publishes, `mosquitto_loop` driven by the calling thread. Nothing is added to a
// publish or a loop turn beyond the C call, errno and a check of its result.
import CMosquitto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One libmosquitto client on 127.0.0.1, created, used and destroyed on one thread
/// (libmosquitto's callbacks run inside `loop`, on that thread). Every failing call
/// throws a `BaselineFailure` with libmosquitto's or errno's text taken at the call.
final class RawMosquittoClient {
    let baseline: BaselineFailure.Baseline
    /// `127.0.0.1:port`, for the failures.
    let broker: String
    private let port: Int
    private let handle: OpaquePointer
    private var connack: Int32?
    /// PUBACKs received so far.
    private(set) var acknowledged = 0
    /// The mid of the newest PUBACK (0 before the first).
    private(set) var lastAcknowledged: Int32 = 0
    /// Runs inside `loop` after each PUBACK is counted (the raw replay publishes its next
    /// message there); what it throws ends the loop.
    var onAcknowledged: ((RawMosquittoClient) throws(BaselineFailure) -> Void)?
    /// The first failure of `onAcknowledged`, thrown by `loop` once libmosquitto returns.
    private var callbackFailure: BaselineFailure?

    /// Call before the baseline's thread starts, while no libmosquitto client of the bench
    /// runs: `mosquitto_lib_init` is not thread safe (MQTTUplink makes its own call once).
    static func initialiseLibrary() {
        _ = libraryInitialised
    }

    init(id: String, port: Int, baseline: BaselineFailure.Baseline) throws(BaselineFailure) {
        self.baseline = baseline
        self.port = port
        broker = "127.0.0.1:\(port)"
        guard let handle = mosquitto_new(id, true, nil) else {
            let code = errno
            throw BaselineFailure(baseline: baseline, step: "mosquitto_new \(id)", reason: String(cString: strerror(code)))
        }
        self.handle = handle
        // Unretained: the handle, and with it every callback, ends in this object's deinit.
        mosquitto_user_data_set(handle, Unmanaged.passUnretained(self).toOpaque())
        mosquitto_connect_callback_set(handle, rawMosquittoOnConnect)
        mosquitto_publish_callback_set(handle, rawMosquittoOnPublish)
    }

    deinit {
        mosquitto_disconnect(handle)
        mosquitto_destroy(handle)
    }

    /// Sets MQTT 3.1.1, TCP_NODELAY and, if given, the inflight window (else libmosquitto's
    /// default), connects and drives the loop until the CONNACK, which must accept.
    func connect(maxInflight: Int? = nil, timeout: Duration = .seconds(10)) throws(BaselineFailure) {
        try check(mosquitto_int_option(handle, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311), errno,
                  "mosquitto_int_option PROTOCOL_VERSION 3.1.1")
        try check(mosquitto_int_option(handle, MOSQ_OPT_TCP_NODELAY, 1), errno, "mosquitto_int_option TCP_NODELAY")
        if let maxInflight {
            try check(mosquitto_max_inflight_messages_set(handle, UInt32(maxInflight)), errno,
                      "mosquitto_max_inflight_messages_set \(maxInflight)")
        }
        try check(mosquitto_connect(handle, "127.0.0.1", Int32(port), 60), errno, "mosquitto_connect \(broker)")
        try loop(until: { connack != nil }, timeout: timeout, turn: 100, waitingFor: "the CONNACK")
        guard connack == 0 else {
            throw BaselineFailure(baseline: baseline, step: "connecting to \(broker)",
                                  reason: String(cString: mosquitto_connack_string(connack ?? -1)))
        }
    }

    /// Queues `payload` to `topic` at QoS 1 (written at once outside a callback, at the
    /// end of the loop turn inside one); returns its mid.
    @discardableResult
    func publish(_ topic: String, _ payload: [UInt8]) throws(BaselineFailure) -> Int32 {
        var mid: Int32 = 0
        let (rc, code) = payload.withUnsafeBytes { bytes in
            let rc = mosquitto_publish(handle, &mid, topic, Int32(bytes.count), bytes.baseAddress, 1, false)
            return (rc, errno)
        }
        try check(rc, code, "mosquitto_publish to \(topic)")
        return mid
    }

    /// Drives `mosquitto_loop` (up to `turn` ms a call) on the calling thread until `done()`;
    /// fails after `timeout`, or with what `onAcknowledged` threw.
    func loop(until done: () -> Bool, timeout: Duration, turn: Int32 = 1000,
              waitingFor what: @autoclosure () -> String) throws(BaselineFailure) {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while !done() {
            let rc = mosquitto_loop(handle, turn, 1)
            try check(rc, errno, "mosquitto_loop waiting for \(what()) from \(broker)")
            if let callbackFailure { throw callbackFailure }
            guard clock.now < deadline else {
                throw BaselineFailure(baseline: baseline, step: "waiting for \(what()) from \(broker)",
                                      reason: "not within \(timeout) (\(acknowledged) PUBACKs so far)")
            }
        }
    }

    /// `code` is errno read right after the call (the argument after it).
    private func check(_ rc: Int32, _ code: Int32, _ step: @autoclosure () -> String) throws(BaselineFailure) {
        if let failure = BaselineFailure.mosquitto(rc, errno: code, baseline, step()) { throw failure }
    }

    fileprivate func connected(_ rc: Int32) {
        connack = rc
    }

    fileprivate func published(_ mid: Int32) {
        acknowledged += 1
        lastAcknowledged = mid
        guard let onAcknowledged, callbackFailure == nil else { return }
        do {
            try onAcknowledged(self)
        } catch {
            callbackFailure = error
        }
    }
}

private let libraryInitialised: Bool = {
    mosquitto_lib_init()
    return true
}()

private func rawMosquittoOnConnect(_ mosq: OpaquePointer?, _ user: UnsafeMutableRawPointer?, _ rc: Int32) {
    guard let user else { return }
    Unmanaged<RawMosquittoClient>.fromOpaque(user).takeUnretainedValue().connected(rc)
}

private func rawMosquittoOnPublish(_ mosq: OpaquePointer?, _ user: UnsafeMutableRawPointer?, _ mid: Int32) {
    guard let user else { return }
    Unmanaged<RawMosquittoClient>.fromOpaque(user).takeUnretainedValue().published(mid)
}
