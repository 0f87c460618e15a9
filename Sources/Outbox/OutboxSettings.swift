/// How the outbox stores messages and how far it may grow.
///
/// Maps one to one onto the `buffer:` section of `gateway.yaml`.
public struct OutboxSettings: Sendable, Equatable {
    /// How hard SQLite syncs a commit to disk (`PRAGMA synchronous`).
    public enum Synchronous: String, Sendable {
        /// Every commit is on stable storage before `append` returns (power-loss safe).
        case full
        /// A power loss may roll back the last commits; a process crash loses nothing.
        case normal
    }

    /// What gives way when a capacity limit is reached.
    public enum DropPolicy: String, Sendable {
        /// The oldest buffered messages are deleted to make room for new ones.
        case dropOldest = "drop_oldest"
        /// Incoming messages are rejected while the outbox is full.
        case dropNewest = "drop_newest"
    }

    /// The SQLite file. Its parent directory is created if missing.
    public var path: String
    /// Sync level of every commit; `.full` by default.
    public var synchronous: Synchronous
    /// Most messages the outbox holds; `nil` means no limit.
    public var maxMessages: Int?
    /// Most bytes (payload plus topic, UTF-8) the outbox holds; `nil` means no limit.
    public var maxBytes: Int64?
    /// Messages older than this are dropped (reason `max_age`), whatever the policy; `nil` means no limit.
    public var maxAge: Duration?
    /// What gives way at `maxMessages` / `maxBytes` and when the disk is full; `.dropOldest` by default.
    public var dropPolicy: DropPolicy
    /// Files up to this size (with their WAL) get `PRAGMA quick_check` before opening (a
    /// few milliseconds); bigger ones are checked in the background after opening, so a
    /// big backlog does not hold up the start (see ``Outbox/integrity``). 32 MiB by default.
    public var checkBeforeOpenMaxBytes: Int64 = 32 << 20

    /// Settings with the defaults of the gateway: `synchronous = FULL`, no limits, drop the oldest.
    public init(
        path: String,
        synchronous: Synchronous = .full,
        maxMessages: Int? = nil,
        maxBytes: Int64? = nil,
        maxAge: Duration? = nil,
        dropPolicy: DropPolicy = .dropOldest
    ) {
        self.path = path
        self.synchronous = synchronous
        self.maxMessages = maxMessages
        self.maxBytes = maxBytes
        self.maxAge = maxAge
        self.dropPolicy = dropPolicy
    }
}
