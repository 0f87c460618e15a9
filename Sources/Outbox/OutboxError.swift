/// The one error the Outbox module throws. It says what failed, on which file, and what to do.
public struct OutboxError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure this is, for callers that react differently.
    public enum Kind: Sendable, Equatable {
        /// The directory for the outbox file does not exist and could not be created.
        case cannotCreateDirectory
        /// The file or its directory cannot be read or written by this process.
        case permissionDenied
        /// There is no outbox file at the path (read-only access only).
        case notFound
        /// The file is a database, but not an outbox (read-only access only).
        case notAnOutbox
        /// The disk is full: nothing of the batch could be committed. The loss is counted and
        /// recorded as a gap; appending works again once space is available.
        case diskFull
        /// The storage reported an I/O error: nothing of the batch could be committed.
        case ioError
        /// The file is corrupt and could not be moved aside.
        case corrupt
        /// Another process holds the outbox (its lock file); the message names its pid.
        case inUse
        /// Any other SQLite failure.
        case database
    }

    /// What kind of failure this is.
    public var kind: Kind
    /// The outbox file concerned.
    public var path: String
    /// What failed, in words.
    public var what: String
    /// What the operator can do about it.
    public var remedy: String
    /// The underlying error (SQLite, errno), if any, as text.
    public var underlying: String?

    /// An error of `kind` on `path`.
    public init(_ kind: Kind, path: String, what: String, remedy: String, underlying: String? = nil) {
        self.kind = kind
        self.path = path
        self.what = what
        self.remedy = remedy
        self.underlying = underlying
    }

    public var description: String {
        var text = "outbox \(path): \(what)"
        if let underlying { text += " (\(underlying))" }
        text += ". \(remedy)"
        return text
    }
}
