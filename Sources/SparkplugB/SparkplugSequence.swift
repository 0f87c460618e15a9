// The message sequence number of a Sparkplug edge node's session.

/// `seq` of Sparkplug B: 0 on the NBIRTH, then +1 on every NDATA, DBIRTH, DDATA and
/// DDEATH, wrapping from 255 to 0 (tck-id-topics-ndata-seq-num and the others).
public struct SparkplugSequence: Sendable, Equatable {
    /// The seq the next message takes.
    public private(set) var next: UInt8 = 0

    public init() {}

    /// Starts over for an NBIRTH: returns 0.
    public mutating func birth() -> UInt8 {
        next = 1
        return 0
    }

    /// The seq of the next message after the NBIRTH.
    public mutating func take() -> UInt8 {
        defer { next &+= 1 }
        return next
    }
}
