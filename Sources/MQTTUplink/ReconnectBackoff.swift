// How long the uplink waits before its next connection attempt, and what a run of
// connections that the broker ends right after CONNACK says about its cause. Pure:
// durations are passed in, nothing is read from a clock.

/// How a connection attempt ended, as the backoff sees it.
enum ConnectionEnding: Equatable {
    /// No CONNACK: TCP, DNS, TLS, a refusal, or no answer in time.
    case failedToConnect
    /// A session ended `lasted` after its CONNACK, for `cause`.
    case lost(lasted: Duration, cause: LossCause)
}

/// Why an established connection ended, as far as the uplink can tell.
enum LossCause: Equatable {
    /// The broker closed the socket (or sent DISCONNECT) without a protocol error on our side.
    case closedByBroker
    /// libmosquitto met a protocol error while QoS 2 messages awaited their PUBREC:
    /// the broker answered one with PUBACK (RabbitMQ 3.10 does), which QoS 2 forbids.
    case qos2AnsweredWithPUBACK
    /// Anything else (keepalive, our own socket error, …).
    case other
}

/// Exponential backoff between `minimum` and `maximum` that only resets after a
/// connection proved stable.
///
/// A connection is stable once it has lasted four times the wait before it (at most
/// twice `maximum`). The literal rule "ended within `minimum` of CONNACK" is not
/// enough, nor is "outlived the wait before it": two gateways with one client id each
/// hold the connection until the other's next attempt, so a session lasts the other's
/// wait plus a connect, which while both back off is up to twice one's own wait; at
/// `minimum` both sessions last just over `minimum`, and both would reset and kick
/// each other about once a second for ever. With four times, both delays grow to
/// `maximum` and stay there. The price: after a long wait a connection must last
/// longer before a loss reconnects at `minimum` again (at most `2 × maximum`).
struct ReconnectBackoff {
    let minimum: Duration
    let maximum: Duration
    /// The wait before the next attempt.
    private(set) var delay: Duration
    /// The wait that preceded the current connection attempt.
    private var lastWait: Duration
    /// Sessions in a row that the broker closed before they were stable.
    private(set) var closedRightAfterCONNACK = 0
    /// From this many such sessions in a row on, the uplink names a likely cause.
    static let closedRightAfterCONNACKWorthNaming = 3

    init(minimum: Duration, maximum: Duration) {
        self.minimum = minimum
        self.maximum = max(maximum, minimum)
        delay = minimum
        lastWait = minimum
    }

    /// A connection that lasted at least this long resets the backoff.
    var stableAfter: Duration { min(lastWait * 4, maximum * 2) }

    /// Records how an attempt ended; returns the wait before the next attempt.
    mutating func ended(_ ending: ConnectionEnding) -> Duration {
        switch ending {
        case .failedToConnect:
            closedRightAfterCONNACK = 0
        case let .lost(lasted, cause):
            if lasted >= stableAfter {
                delay = minimum
                closedRightAfterCONNACK = 0
            } else if cause == .closedByBroker {
                closedRightAfterCONNACK += 1
            } else {
                closedRightAfterCONNACK = 0
            }
        }
        let wait = delay
        lastWait = wait
        delay = min(delay * 2, maximum)
        return wait
    }
}
