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

    /// Opened later or for a while beside the buses' connections: the background
    /// integrity check's SQLite connection (database and WAL: 2), the MQTT socket and
    /// libmosquitto's socket pair (3), and 3 for the rest (a SQLite temporary file, a
    /// name lookup's socket during a reconnect).
    public static let margin = 8

    public init(ownBelowLimit: Int, buses: Int) {
        self.ownBelowLimit = ownBelowLimit
        self.buses = buses
    }

    public var needed: Int { ownBelowLimit + buses + Self.margin }
    public var fits: Bool { needed <= Int(SelectRange.limit) }

    /// The budget of this process now, for `buses` buses; nil when /proc/self/fd cannot be read.
    public static func current(buses: Int) -> DescriptorBudget? {
        SelectRange.openBelowLimit().map { DescriptorBudget(ownBelowLimit: $0, buses: buses) }
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
            + "so at most \(Int(SelectRange.limit) - budget.ownBelowLimit - DescriptorBudget.margin) buses fit. "
            + "Poll fewer buses with this gateway (split the devices over two gateways)"
    }
}
