// Whether every bus can get a connection select() can wait on: libmodbus waits with
// select(), which takes descriptors 0...1023 only (`SelectRange.limit`).
import Descriptors

/// The descriptors below 1024 one gateway needs: its own that cannot move above (stdio,
/// libdispatch's, the outbox's SQLite connections, signal and timer descriptors), checked
/// at start once the outbox and the uplink are open, plus one per bus, plus `margin`.
public struct DescriptorBudget: Sendable, Equatable {
    /// Descriptors below 1024 the gateway holds before any bus connects.
    public var ownBelowLimit: Int
    public var buses: Int
    /// The background integrity check was running when `ownBelowLimit` was counted: its
    /// connection may be in the count already, so the margin does not hold it twice.
    public var integrityCheckRunning: Bool

    /// The background integrity check's SQLite connection (database and WAL).
    public static let integrityCheckDescriptors = 2
    /// Opened later or for a while beside the buses' connections: the integrity check's
    /// connection, the MQTT socket and libmosquitto's socket pair (3), and 3 for the rest
    /// (a SQLite temporary file, a name lookup's socket during a reconnect).
    public static let margin = integrityCheckDescriptors + 3 + 3

    public init(ownBelowLimit: Int, buses: Int, integrityCheckRunning: Bool = false) {
        self.ownBelowLimit = ownBelowLimit
        self.buses = buses
        self.integrityCheckRunning = integrityCheckRunning
    }

    public var needed: Int {
        ownBelowLimit + buses + Self.margin - (integrityCheckRunning ? Self.integrityCheckDescriptors : 0)
    }
    public var fits: Bool { needed <= Int(SelectRange.limit) }

    /// The budget of this process now, for `buses` buses; nil when /proc/self/fd cannot be read.
    public static func current(buses: Int, integrityCheckRunning: Bool) -> DescriptorBudget? {
        SelectRange.openBelowLimit().map {
            DescriptorBudget(ownBelowLimit: $0, buses: buses, integrityCheckRunning: integrityCheckRunning)
        }
    }

    /// Throws when the buses would not fit below 1024.
    public func check() throws(DescriptorBudgetError) {
        guard !fits else { return }
        throw DescriptorBudgetError(budget: self)
    }
}

/// The gateway would run out of descriptors select() can wait on.
public struct DescriptorBudgetError: Error, CustomStringConvertible {
    public var budget: DescriptorBudget

    public var description: String {
        "\(budget.buses) buses do not fit in the \(SelectRange.limit) file descriptors libmodbus can wait on with select(): "
            + "the gateway holds \(budget.ownBelowLimit) of them itself and keeps \(DescriptorBudget.margin) spare, "
            + "so at most \(Int(SelectRange.limit) - budget.needed + budget.buses) buses fit. "
            + "Poll fewer buses with this gateway (split the devices over two gateways)"
    }
}
