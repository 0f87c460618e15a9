// The replay bench's target baseline: libmosquitto itself publishing from memory with the
// forwarder's window, so that a change to MQTTUplink cannot move the baseline.
//
//   One dedicated thread (Foundation Thread) with a RawMosquittoClient (libmosquitto
//   without its thread, MQTT 3.1.1 and TCP_NODELAY, as MQTTUplink sets them for the
//   gateway's default settings), max inflight = the window. It connects to the same
//   broker, publishes the first `window` messages (the forwarder bench's topic and
//   payload, QoS 1), and in the on_publish callback (a PUBACK) publishes the next one
//   until `total` were published, driving `mosquitto_loop` on that same thread until all
//   `total` are acknowledged.
//   Timed from the first publish to the last PUBACK (ContinuousClock, as the other rounds).
//   Any failing call ends the run with a BaselineFailure naming the step; no figure is
//   made from a failed run.
import Foundation

/// The replay on the calling thread: connect, publish `total` with `window` inflight, wait
/// for every PUBACK. Returns the time from the first publish to the last PUBACK.
private func rawReplay(port: Int, total: Int, window: Int, topic: String) throws(BaselineFailure) -> Duration {
    let clock = ContinuousClock()
    let client = try RawMosquittoClient(id: "bench-raw-baseline", port: port, baseline: .replay)
    try client.connect(maxInflight: window)
    var published = 0
    // Called from this thread and from on_publish (inside `loop`, on this thread too).
    func publishNext(_ client: RawMosquittoClient) throws(BaselineFailure) {
        guard published < total else { return }
        try client.publish(topic, payload)
        published += 1
    }
    client.onAcknowledged = publishNext
    let start = clock.now
    for _ in 0..<min(window, total) { try publishNext(client) }
    try client.loop(until: { client.acknowledged >= total }, timeout: .seconds(300), waitingFor: "\(total) PUBACKs")
    return clock.now - start
}

/// Runs `rawReplay` on its own thread and hands back its time or its failure.
func replayRawBaseline(port: Int, total: Int, window: Int, topic: String) async throws -> Duration {
    RawMosquittoClient.initialiseLibrary()
    return try await onBaselineThread(named: "bench-raw-replay") {
        try rawReplay(port: port, total: total, window: window, topic: topic)
    }
}
