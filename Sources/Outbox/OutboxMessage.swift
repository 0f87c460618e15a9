// The values that go in and out of the outbox.

import Foundation

/// A message about to be committed.
///
/// `render` builds the payload bytes once `boot` and `seq` are known (they are embedded
/// in the JSON payload). It is called exactly once, inside the committing transaction,
/// so it must be quick and must not touch the outbox.
public struct OutboxDraft: Sendable {
    /// MQTT topic the message is published to.
    public var topic: String
    /// MQTT QoS the message is published with (0, 1 or 2).
    public var qos: UInt8
    /// Builds the payload from the boot and seq the outbox assigns.
    public var render: @Sendable (_ boot: Int64, _ seq: Int64) -> [UInt8]
    /// When the message was measured, kept beside the payload (nil: not known).
    public var measured: MeasuredAt?

    /// A draft for `topic` whose payload `render` builds.
    public init(topic: String, qos: UInt8, measured: MeasuredAt? = nil,
                render: @escaping @Sendable (Int64, Int64) -> [UInt8]) {
        self.topic = topic
        self.qos = qos
        self.measured = measured
        self.render = render
    }
}

/// When a message was measured on the clock that is never set, stored with the row:
/// nanoseconds since the kernel booted (CLOCK_BOOTTIME), which kernel boot, and
/// whether the wall clock (the payload's `ts`) was synchronised then.
public struct MeasuredAt: Sendable, Equatable {
    public var boottime: Int64
    public var kernelBootID: String
    public var synchronised: Bool

    public init(boottime: Int64, kernelBootID: String, synchronised: Bool) {
        self.boottime = boottime
        self.kernelBootID = kernelBootID
        self.synchronised = synchronised
    }
}

/// A committed message, as stored until the broker acknowledges it.
public struct OutboxMessage: Sendable, Equatable {
    /// Row id: strictly increasing in commit order and never reused, also after deletes.
    public var id: Int64
    /// Boot counter of the gateway run that committed the message.
    public var boot: Int64
    /// Sequence number within `boot`, consecutive from 1.
    public var seq: Int64
    /// MQTT topic.
    public var topic: String
    /// MQTT QoS.
    public var qos: UInt8
    /// The payload as rendered at commit.
    public var payload: [UInt8]
    /// Commit time, stored with millisecond precision (milliseconds since 1970, UTC).
    public var createdAt: Date
    /// When it was measured (boottime, kernel boot, sync); nil for rows without it.
    public var measured: MeasuredAt?

    /// A message value; the outbox creates these, tests and callers may too.
    public init(id: Int64, boot: Int64, seq: Int64, topic: String, qos: UInt8, payload: [UInt8], createdAt: Date,
                measured: MeasuredAt? = nil) {
        self.id = id
        self.boot = boot
        self.seq = seq
        self.topic = topic
        self.qos = qos
        self.payload = payload
        self.createdAt = createdAt
        self.measured = measured
    }

    /// Bytes the message counts against `maxBytes`: payload plus UTF-8 topic.
    public var accountedBytes: Int64 { Int64(payload.count + topic.utf8.count) }
}

/// The counters of an outbox, as shown in the stats topic and by `edge-gateway status`.
///
/// All counters are stored in the outbox file and updated in the same transaction as the
/// change they count, so they are exact and survive a crash. The "this boot" counters
/// belong to the boot in `boot` (the running one, or the last one if read while stopped).
public struct OutboxStatistics: Sendable, Equatable {
    /// Messages committed and not yet acknowledged or dropped. `Outbox.statistics()` first
    /// deletes the acknowledged rows waiting for the next append, so they are not counted;
    /// `Outbox.readStatistics(path:)` (another process, read-only) cannot see that queue (it
    /// is in the running gateway's memory) and counts them for the few seconds they wait
    /// (`Outbox.use(path:)` tells whether a gateway runs).
    public var bufferedMessages: Int
    /// Payload plus topic bytes of the buffered messages.
    public var bufferedBytes: Int64
    /// Age of the oldest buffered message; `nil` when the outbox is empty.
    public var oldestAge: Duration?
    /// Messages dropped since the file was created (capacity, age, disk full).
    public var dropped: Int64
    /// Messages dropped during `boot`.
    public var droppedThisBoot: Int64
    /// Messages committed during `boot`.
    public var committedThisBoot: Int64
    /// Messages acknowledged by the broker (published) during `boot`.
    public var acknowledgedThisBoot: Int64
    /// Messages acknowledged by the broker since the file was created.
    public var acknowledged: Int64
    /// The boot the "this boot" counters belong to.
    public var boot: Int64
    /// The highest seq `boot` has assigned in a committed transaction (0 when none yet).
    /// Every seq up to it is either in the outbox, acknowledged, or in a gap record
    /// (dropped). Read in the same transaction as the other counters.
    public var seqCommitted: Int64 = 0
    /// What the integrity check of the open file found (nil when read by another process).
    public var integrity: OutboxIntegrity? = nil
}

/// Where a boot ended: the last seq it committed. Every seq `1...lastSeq` of `boot`
/// was committed (or dropped and recorded as a gap).
public struct OutboxBootEnd: Sendable, Equatable {
    public var boot: Int64
    public var lastSeq: Int64

    public init(boot: Int64, lastSeq: Int64) {
        self.boot = boot
        self.lastSeq = lastSeq
    }
}

/// A range of messages that was dropped, to be reported upstream so consumers can tell a
/// known, counted loss from an unexplained gap in `seq`.
///
/// Every seq in `firstSeq...lastSeq` of `boot` was dropped (`count == lastSeq - firstSeq + 1`).
public struct OutboxGap: Sendable, Equatable {
    /// Row id of the gap record, used by ``Outbox/markGapsReported(_:)``.
    public var id: Int64
    /// Boot of the dropped messages.
    public var boot: Int64
    /// First dropped seq.
    public var firstSeq: Int64
    /// Last dropped seq.
    public var lastSeq: Int64
    /// Number of dropped messages.
    public var count: Int64
    /// Why they were dropped; its raw value is the text stored in the gap record and sent upstream.
    public var reason: DropReason

    /// A gap value; the outbox creates these.
    public init(id: Int64, boot: Int64, firstSeq: Int64, lastSeq: Int64, count: Int64, reason: DropReason) {
        self.id = id
        self.boot = boot
        self.firstSeq = firstSeq
        self.lastSeq = lastSeq
        self.count = count
        self.reason = reason
    }
}

/// Why messages were dropped. The raw value is the text stored in the `gap` table's
/// `reason` column and sent upstream in the gap report (`max_messages`, `max_bytes`,
/// `max_age`, `disk_full`, `io_error`, `unpublishable`, `shutting_down`).
public enum DropReason: RawRepresentable, Sendable, Hashable {
    case maxMessages
    case maxBytes
    case maxAge
    case diskFull
    case ioError
    /// MQTT cannot carry the message (a topic or payload beyond the protocol's limits).
    case unpublishable
    /// Read from a device while the gateway was shutting down, after its ingest had ended,
    /// and not committed: nobody could commit it any more.
    case shuttingDown
    /// A stored reason this version does not know (a record written by another version of
    /// the gateway into the same outbox file). The outbox never records it; it reads such a
    /// record as it is, so the counted loss is still reported upstream with its original text
    /// instead of blocking every gap report behind one unreadable row.
    case unrecognized(String)

    /// Every reason the outbox records, i.e. all but ``unrecognized(_:)``.
    public static let recorded: [DropReason] = [
        .maxMessages, .maxBytes, .maxAge, .diskFull, .ioError, .unpublishable, .shuttingDown,
    ]

    /// The reason for a stored or sent text; never fails (unknown text is ``unrecognized(_:)``).
    public init(rawValue: String) {
        self = Self.recorded.first { $0.rawValue == rawValue } ?? .unrecognized(rawValue)
    }

    public var rawValue: String {
        switch self {
        case .maxMessages: "max_messages"
        case .maxBytes: "max_bytes"
        case .maxAge: "max_age"
        case .diskFull: "disk_full"
        case .ioError: "io_error"
        case .unpublishable: "unpublishable"
        case .shuttingDown: "shutting_down"
        case let .unrecognized(text): text
        }
    }
}
