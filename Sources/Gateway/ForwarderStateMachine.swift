// The forwarder's life cycle and its inflight window: every transition in one place,
// no I/O. `ForwardingLoop` feeds it events and does what it answers.
import DequeModule
import GatewayConfig
import Outbox

/// One MQTT connection as the forwarder sees it: what is in flight and what is
/// leased ahead, waiting for a window slot.
struct ForwarderSession {
    var id: Int
    /// Highest outbox id leased in this session from the live side (everything for
    /// `oldest_first`).
    var liveCursor: Int64
    /// `live_first` only: the backlog is ids `backlogCursor + 1 ... backlogEnd`.
    var backlogCursor: Int64 = 0
    var backlogEnd: Int64 = 0
    /// mid → outbox id of data messages awaiting PUBACK.
    var inflight: [Int32: Int64] = [:]
    /// mid → gap record awaiting PUBACK.
    var gapsInflight: [Int32: OutboxGap] = [:]
    /// Rows leased ahead, not yet published (the cursors are past them); `live` goes first.
    var live: Deque<OutboxMessage> = []
    var backlog: Deque<OutboxMessage> = []
    /// A lease request is out; its answer comes as `.leased`.
    var leasing = false

    /// Nothing leased is waiting and nothing more is known to be committed.
    func drained(newestCommitted: Int64) -> Bool {
        live.isEmpty && backlog.isEmpty && !leasing && liveCursor >= newestCommitted
            && backlogCursor >= backlogEnd
    }
}

/// The forwarder's state, with its transitions. Pure: no clock (instants are passed
/// in), no uplink, no outbox.
struct ForwarderStateMachine {
    enum State {
        /// No connection: the uplink is connecting or waiting to retry. `problem`
        /// says why the last attempt failed or the last connection ended.
        case disconnected(problem: String?)
        /// Connected: data flows in the session's window (`session`).
        case connected
        /// Shutting down: nothing new is sent; the offline status went out as
        /// `offlineStatusMid` and its PUBACK is awaited until `deadline`. `session` is
        /// the connection's.
        case stopping(offlineStatusMid: Int32, deadline: ContinuousClock.Instant)
        /// Done: the forwarder returns.
        case stopped
    }

    /// What the caller does after a connection came up.
    enum ConnectedAction: Equatable {
        /// Announce the gateway (birth, device statuses, meta) on `session`, then fill.
        case announce(session: Int)
        case none
    }

    /// What a PUBACK was for.
    enum Acknowledged: Equatable {
        /// A data message: its outbox row may be deleted.
        case data(outboxID: Int64)
        /// A gap record: mark it reported.
        case gap(OutboxGap)
        /// The offline status at shutdown: everything sent before it is acknowledged
        /// too (one connection delivers in order); stop.
        case offlineStatus
        /// Of another session, or already counted.
        case unknown
    }

    /// What the caller does at shutdown.
    enum ShutdownAction: Equatable {
        /// Send what the window takes, then the offline status on `session`.
        case sendOfflineStatus(session: Int)
        /// Not connected: stop at once (the Will, if any, already speaks for the gateway).
        case stop
        /// The offline status is out already; keep waiting for its PUBACK.
        case alreadyStopping
    }

    private(set) var state: State = .disconnected(problem: nil) {
        didSet {
            switch state {
            case .connected, .stopping: break
            case .disconnected, .stopped: session = nil
            }
        }
    }
    /// The connection's window: set while `state` is `.connected` or `.stopping`, nil
    /// otherwise. Kept outside the enum so every PUBACK and publish changes it in place:
    /// an enum payload is copied out and put back, and its dictionaries copied with it.
    private var session: ForwarderSession?
    let order: ReplaySettings.Order
    let maxInflight: Int
    /// The newest outbox id known committed.
    private(set) var newestCommitted: Int64

    init(order: ReplaySettings.Order, maxInflight: Int, newestCommitted: Int64) {
        self.order = order
        self.maxInflight = maxInflight
        self.newestCommitted = newestCommitted
    }

    // MARK: - Connection

    mutating func connected(session id: Int) -> ConnectedAction {
        switch state {
        case .disconnected, .connected:
            var fresh = ForwarderSession(id: id, liveCursor: 0)
            if order == .liveFirst {
                // What is committed now is the backlog; whatever comes after goes first.
                fresh.liveCursor = newestCommitted
                fresh.backlogEnd = newestCommitted
            }
            session = fresh
            state = .connected
            return .announce(session: id)
        case .stopping, .stopped:
            return .none
        }
    }

    /// Connection `id` ended. Returns true when the forwarder is to stop (it was
    /// waiting for the offline status's PUBACK on that connection). What was in flight
    /// stays in the outbox and goes again in the next session.
    mutating func disconnected(session id: Int, reason: String) -> Bool {
        switch state {
        case .connected where session?.id == id:
            state = .disconnected(problem: reason)
            return false
        case .stopping where session?.id == id:
            state = .stopped
            return true
        case .stopped:
            return true
        default:
            return false
        }
    }

    mutating func connectFailed(reason: String) {
        if case .disconnected = state { state = .disconnected(problem: reason) }
    }

    var sessionID: Int? { session?.id }

    var isConnected: Bool {
        if case .connected = state { return true }
        return false
    }

    var isStopped: Bool {
        if case .stopped = state { return true }
        return false
    }

    var problem: String? {
        if case let .disconnected(problem) = state { return problem }
        return nil
    }

    var inflightCount: Int { session?.inflight.count ?? 0 }

    // MARK: - Shutdown

    mutating func shutdown() -> ShutdownAction {
        switch state {
        case .connected:
            guard let session else { return .stop }
            return .sendOfflineStatus(session: session.id)
        case .stopping:
            return .alreadyStopping
        case .disconnected, .stopped:
            // Not connected: there is no one to tell (the Will speaks for the gateway).
            state = .stopped
            return .stop
        }
    }

    /// The offline status went out as `mid`: wait for its PUBACK until `deadline`.
    mutating func offlineStatusSent(mid: Int32, deadline: ContinuousClock.Instant) {
        guard case .connected = state else { return }
        state = .stopping(offlineStatusMid: mid, deadline: deadline)
    }

    /// The offline status could not be sent, or there is nothing more to wait for.
    mutating func stop() {
        state = .stopped
    }

    /// Returns true when the shutdown deadline has passed (the forwarder stops).
    mutating func deadlinePassed(now: ContinuousClock.Instant) -> Bool {
        guard case let .stopping(_, deadline) = state, now >= deadline else { return false }
        state = .stopped
        return true
    }

    // MARK: - Acknowledgements

    mutating func acknowledged(session id: Int, mid: Int32) -> Acknowledged {
        if case let .stopping(offlineMid, _) = state, session?.id == id, mid == offlineMid {
            state = .stopped
            return .offlineStatus
        }
        return withSession(id) { session in
            if let gap = session.gapsInflight.removeValue(forKey: mid) { return .gap(gap) }
            if let outboxID = session.inflight.removeValue(forKey: mid) { return .data(outboxID: outboxID) }
            return .unknown
        } ?? .unknown
    }

    /// A gap record went out as `mid`.
    mutating func gapSent(_ gap: OutboxGap, session id: Int, mid: Int32) {
        withSession(id) { $0.gapsInflight[mid] = gap }
    }

    /// Gap records may be read and sent: connected, none awaiting its PUBACK.
    var readyForGaps: Bool {
        guard case .connected = state, let session else { return false }
        return session.gapsInflight.isEmpty
    }

    /// Acknowledgements are worth writing now: the window is empty and nothing more is
    /// known to be coming.
    var idle: Bool {
        guard case .connected = state, let session else { return true }
        return session.inflight.isEmpty && session.drained(newestCommitted: newestCommitted)
    }

    // MARK: - The window

    /// Rows up to `id` are committed; `rows`, if given, are the ones the commit wrote, in
    /// id order. When the live side has read everything committed before and no read is
    /// out, they join the live side as they are (no read: the hop to the database and
    /// back is saved), while at most `aheadAtMost` rows are then waiting; else they are
    /// read later like any other.
    mutating func committed(newestID id: Int64, rows: [OutboxMessage] = [], aheadAtMost: Int = .max) {
        let previous = newestCommitted
        newestCommitted = max(newestCommitted, id)
        guard !rows.isEmpty else { return }
        withConnectedSession { session in
            // A read that is out could return these rows too; rows before them not yet
            // read would be overtaken.
            guard !session.leasing, session.liveCursor >= previous else { return }
            let fresh = rows.drop { $0.id <= session.liveCursor }
            guard let last = fresh.last, session.live.count + fresh.count <= aheadAtMost else { return }
            session.live.append(contentsOf: fresh)
            session.liveCursor = last.id
        }
    }

    /// Rows are leased ahead, waiting for a window slot (connected only).
    var hasLeasedRows: Bool {
        guard case .connected = state, let session else { return false }
        return !session.live.isEmpty || !session.backlog.isEmpty
    }

    /// How many more messages the window takes now.
    var room: Int {
        guard case .connected = state, let inflight = session?.inflight.count else { return 0 }
        return max(0, maxInflight - inflight)
    }

    /// The next leased message to publish (live before backlog) and the side it came
    /// from; nil when none is waiting, the window is full, or the forwarder is not
    /// connected (stopping sends nothing new).
    mutating func nextToPublish() -> (message: OutboxMessage, side: LeaseRequest.Side)? {
        // Once per published message: one tag test of `state` and the session changed in
        // place (`room` and `withConnectedSession` each copied the enum out and destroyed it).
        guard case .connected = state, let inflight = session?.inflight.count, inflight < maxInflight else {
            return nil
        }
        if let message = session!.live.popFirst() { return (message, .live) }
        if let message = session!.backlog.popFirst() { return (message, .backlog) }
        return nil
    }

    /// `message` went out on `session` as `mid`.
    mutating func published(_ message: OutboxMessage, session id: Int, mid: Int32) {
        withSession(id) { $0.inflight[mid] = message.id }
    }

    /// `message` could not be published now; it goes first again on its side.
    mutating func putBack(_ message: OutboxMessage, side: LeaseRequest.Side) {
        withConnectedSession { session in
            switch side {
            case .live: session.live.prepend(message)
            case .backlog: session.backlog.prepend(message)
            }
        }
    }

    /// At shutdown: rows read directly (not through the reader) for the room left.
    mutating func leasedForShutdown(_ rows: [OutboxMessage]) {
        withConnectedSession { session in
            session.live.append(contentsOf: rows)
            session.liveCursor = rows.last?.id ?? session.liveCursor
        }
    }

    /// How many rows to read at shutdown, after which id: the room the window has left
    /// beyond what is leased already.
    var shutdownLease: (after: Int64, max: Int)? {
        guard case .connected = state, let session else { return nil }
        let room = maxInflight - session.inflight.count - session.live.count
        return room > 0 ? (session.liveCursor, room) : nil
    }

    /// The next read from the outbox, if one is due: while less than half a batch is
    /// leased ahead on the side that has more to read. Marks the session as leasing.
    mutating func leaseRequest(batch: Int) -> LeaseRequest? {
        let newestCommitted = newestCommitted
        return withConnectedSession { session -> LeaseRequest? in
            guard !session.leasing else { return nil }
            if session.liveCursor < newestCommitted && session.live.count < batch / 2 {
                session.leasing = true
                return LeaseRequest(session: session.id, side: .live, cursor: session.liveCursor,
                                    limit: newestCommitted, max: batch)
            }
            if session.backlogCursor < session.backlogEnd && session.backlog.count < batch / 2 {
                session.leasing = true
                return LeaseRequest(session: session.id, side: .backlog, cursor: session.backlogCursor,
                                    limit: session.backlogEnd, max: batch)
            }
            return nil
        } ?? nil
    }

    /// The reader answered. A failed read leaves the cursors where they were.
    mutating func leased(_ result: LeaseResult) {
        withSession(result.session) { session in
            session.leasing = false
            guard case let .rows(rows, cursor) = result.outcome else { return }
            switch result.side {
            case .live:
                session.liveCursor = cursor
                session.live.append(contentsOf: rows)
            case .backlog:
                session.backlogCursor = cursor
                session.backlog.append(contentsOf: rows)
            }
        }
    }

    // MARK: - Helpers

    /// Runs `body` on the session if it is `id` (connected or stopping), in place.
    @discardableResult
    private mutating func withSession<R>(_ id: Int, _ body: (inout ForwarderSession) -> R) -> R? {
        guard session?.id == id else { return nil }
        return body(&session!)
    }

    /// Runs `body` on the session while connected, in place.
    @discardableResult
    private mutating func withConnectedSession<R>(_ body: (inout ForwarderSession) -> R) -> R? {
        guard case .connected = state, session != nil else { return nil }
        return body(&session!)
    }
}

extension ForwarderStateMachine {
    /// The offline status awaiting its PUBACK while stopping.
    var offlineStatusMid: Int32? {
        if case let .stopping(mid, _) = state { return mid }
        return nil
    }
}
