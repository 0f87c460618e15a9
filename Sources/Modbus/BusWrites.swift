// Writes on a bus: queued from any thread, run on the bus thread between polls,
// ahead of the polls that are due, never interleaved with a read.
import Foundation
import Logging
import Synchronization

/// One tag to write and what to write to it.
public struct TagWrite: Sendable, Equatable {
    public var tag: TagConfiguration
    public var payload: WritePayload

    public init(tag: TagConfiguration, payload: WritePayload) {
        self.tag = tag
        self.payload = payload
    }
}

/// What happened to one tag of a write.
public struct TagWriteResult: Sendable {
    public enum Outcome: Sendable {
        /// Written; the value read back afterwards (or why it could not be read).
        case written(readBack: Result<TagValue, TagError>)
        /// The device refused or did not answer; nothing more of the request was written.
        case failed(ModbusError)
        /// An earlier tag of the request failed, so this one was not sent.
        case notAttempted
    }

    public var write: TagWrite
    public var outcome: Outcome
}

/// Why a write request was not executed at all.
public enum BusWriteSkip: Error, Sendable {
    /// The device is not answering polls (or was never polled yet).
    case deviceOffline(lastError: String?)
    /// The request's own last check, right before writing, said no.
    case vetoed(any Error & Sendable)
    /// The bus is stopping (or could not be set up).
    case busStopped
}

/// A request to write tags of one device.
public struct BusWriteRequest: Sendable {
    public var device: String
    public var writes: [TagWrite]
    /// Asked on the bus thread immediately before the first byte goes out; an
    /// error cancels the request (e.g. the command expired or the uplink is down).
    public var preflight: @Sendable () -> (any Error & Sendable)?
    /// Called once, on the bus thread (or the submitting thread for a stopped bus).
    public var complete: @Sendable (Result<[TagWriteResult], BusWriteSkip>) -> Void

    public init(device: String, writes: [TagWrite], preflight: @escaping @Sendable () -> (any Error & Sendable)?,
                complete: @escaping @Sendable (Result<[TagWriteResult], BusWriteSkip>) -> Void) {
        self.device = device
        self.writes = writes
        self.preflight = preflight
        self.complete = complete
    }
}

/// The write requests waiting for one bus, and the bus's wait between polls,
/// which a new request cuts short.
public final class BusWriteQueue: Sendable {
    private struct State {
        var pending: [BusWriteRequest] = []
        /// The bus waiting for its next poll; `token` tells its timer from a later wait's.
        var waiter: (token: Int, continuation: CheckedContinuation<Void, Never>)?
        var nextToken = 0
        var closed = false
    }

    private let state = Mutex(State())

    public init() {}

    /// Queues `request` and wakes the bus. On a stopped bus it completes at once as `.busStopped`.
    public func submit(_ request: BusWriteRequest) {
        let (accepted, waiter) = state.withLock { state -> (Bool, CheckedContinuation<Void, Never>?) in
            guard !state.closed else { return (false, nil) }
            state.pending.append(request)
            defer { state.waiter = nil }
            return (true, state.waiter?.continuation)
        }
        guard accepted else {
            request.complete(.failure(.busStopped))
            return
        }
        waiter?.resume()
    }

    /// Everything queued, oldest first (bus thread).
    func takeAll() -> [BusWriteRequest] {
        state.withLock { state in
            defer { state.pending.removeAll() }
            return state.pending
        }
    }

    /// Refuses what is queued and all later requests: the bus is gone.
    func close() {
        let dropped = state.withLock { state in
            state.closed = true
            defer { state.pending.removeAll() }
            return state.pending
        }
        for request in dropped { request.complete(.failure(.busStopped)) }
    }

    /// Returns at `deadline`, when a request arrives, or when the task is cancelled,
    /// whichever is first. Suspends without blocking the bus thread's executor.
    func wait(until deadline: ContinuousClock.Instant) async {
        let token = state.withLock { state in
            state.nextToken += 1
            return state.nextToken
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = ContinuousClock.now
                let ready = state.withLock { state -> Bool in
                    if !state.pending.isEmpty || state.closed || deadline <= now || Task.isCancelled { return true }
                    state.waiter = (token, continuation)
                    return false
                }
                if ready {
                    continuation.resume()
                    return
                }
                let delay = deadline - now
                DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(delay / .nanoseconds(1)))) {
                    self.wake(token: token)
                }
            }
        } onCancel: {
            wake(token: nil)
        }
    }

    /// Resumes the waiting bus if it is still the wait of `token` (nil: whichever waits).
    private func wake(token: Int?) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter, token == nil || waiter.token == token else { return nil }
            state.waiter = nil
            return waiter.continuation
        }
        waiter?.resume()
    }
}

extension BusPoller {
    /// Runs the queued write requests on `connection`, in order (bus thread).
    func runWrites(_ requests: [BusWriteRequest], connection: ModbusConnection,
                   online: (Int) -> (online: Bool, lastError: String?)) {
        for request in requests {
            guard let deviceIndex = devices.firstIndex(where: { $0.name == request.device }) else {
                request.complete(.failure(.deviceOffline(lastError: "device '\(request.device)' is not on bus \(busKey)")))
                continue
            }
            let state = online(deviceIndex)
            guard state.online else {
                request.complete(.failure(.deviceOffline(lastError: state.lastError)))
                continue
            }
            if let veto = request.preflight() {
                request.complete(.failure(.vetoed(veto)))
                continue
            }
            request.complete(.success(write(request.writes, device: devices[deviceIndex], connection: connection)))
        }
    }

    /// Writes each tag, then reads it back; stops at the first failed write.
    private func write(_ writes: [TagWrite], device: DeviceConfiguration, connection: ModbusConnection) -> [TagWriteResult] {
        connection.setResponseTimeout(device.timeout)
        if let byteTimeout = device.byteTimeout { connection.setByteTimeout(byteTimeout) }
        var results: [TagWriteResult] = []
        var failed = false
        for write in writes {
            if failed || Task.isCancelled || abandonment.isAbandoned {
                results.append(TagWriteResult(write: write, outcome: .notAttempted))
                continue
            }
            let tag = write.tag
            let sent: Result<Void, ModbusError> = guarded(device: device, connection: connection, count: tag.width) { () throws(ModbusError) in
                switch write.payload {
                case let .coil(bit):
                    try connection.writeCoils(unit: device.unitID, address: tag.address, values: [bit])
                case let .registers(words):
                    try connection.writeRegisters(unit: device.unitID, address: tag.address, values: words)
                }
            }
            switch sent {
            case let .failure(error):
                failed = true
                logger.warning("write failed", metadata: [
                    "device": "\(device.name)", "tag": "\(tag.name)", "error": "\(error.message)",
                ])
                results.append(TagWriteResult(write: write, outcome: .failed(error)))
            case .success:
                results.append(TagWriteResult(write: write, outcome: .written(readBack: readBack(tag, device: device, connection: connection))))
            }
        }
        return results
    }

    /// The tag's value as the device now reports it.
    private func readBack(_ tag: TagConfiguration, device: DeviceConfiguration,
                          connection: ModbusConnection) -> Result<TagValue, TagError> {
        let read: Result<TagValue, ModbusError> = guarded(device: device, connection: connection, count: tag.width) { () throws(ModbusError) -> TagValue in
            if tag.table.holdsBits {
                let bits = try connection.readBits(unit: device.unitID, table: tag.table, address: tag.address, count: 1)
                return .bool(bits[0])
            }
            let words = try connection.readRegisters(unit: device.unitID, table: tag.table, address: tag.address, count: tag.width)
            switch RegisterDecoding.decode(words[...], tag: tag, deviceOrder: device.byteOrder) {
            case let .success(value): return value
            case let .failure(problem): throw ModbusError(kind: .invalidResponse, message: problem.message)
            }
        }
        return read.mapError { TagError($0.message) }
    }

    /// One request, counted and watched like a poll's; after a timeout or a
    /// malformed answer the connection starts clean. Never retried: a write is
    /// sent once.
    private func guarded<T>(device: DeviceConfiguration, connection: ModbusConnection, count: Int,
                            _ body: () throws(ModbusError) -> T) -> Result<T, ModbusError> {
        counters.recordRequests(1)
        // The watchdog's deadline: as for reading the tag's registers (a write's answer is no longer).
        let block = RegisterBlock(table: .holding, address: 0, count: max(count, 1), tagIndices: [])
        requestWatch(.now + Self.longestAttempt(block, device: device, connection: connection))
        defer { requestWatch(nil) }
        do {
            try connection.connect()
            return .success(try body())
        } catch {
            switch error.kind {
            case .timeout, .invalidResponse: connection.resynchronise()
            case .exception, .connection, .setup: break
            }
            return .failure(error)
        }
    }
}
