// Which broker of a failover list the uplink tries next. Pure: no clock, no I/O.

/// One broker the uplink may connect to.
public struct MQTTServerAddress: Sendable, Equatable {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var endpoint: String { "\(host):\(port)" }
}

/// The order of connection attempts over `mqtt.servers`: every round starts at the
/// first server and goes down the list until one connects; only a round in which
/// every server failed waits the backoff. A connection that ends (or is left for
/// failback) starts a new round at the first server.
struct ServerRotation {
    let count: Int
    /// The server the next attempt goes to.
    private(set) var index = 0

    init(count: Int) {
        self.count = max(count, 1)
    }

    /// The attempt on `index` did not connect. Returns true when that ended a round
    /// (every server failed): wait the backoff before the next attempt.
    mutating func failed() -> Bool {
        index += 1
        guard index == count else { return false }
        index = 0
        return true
    }

    /// The connection on `index` ended: the next round starts at the first server.
    mutating func ended() {
        index = 0
    }

    /// Whether a connection on `index` is on a later server, to be left for the first
    /// one after `failback_after`.
    var onLaterServer: Bool { index > 0 }
}
