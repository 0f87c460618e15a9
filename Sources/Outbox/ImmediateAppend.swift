/// What ``Outbox/appendOnCallingThread(_:)`` did with a batch.
public enum ImmediateAppend: Sendable {
    /// Committed: the messages now in the outbox, in id order, as ``Outbox/append(_:)`` returns them.
    case committed([OutboxMessage])
    /// Nothing committed, no seq consumed, nothing counted: the outbox needs its recovery
    /// (or the commit failed). Commit the same drafts with ``Outbox/append(_:)``.
    case needsAppend
}
