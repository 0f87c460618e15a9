// The polling loop of one field bus: a drift-free schedule over the poll groups
// of the devices that share the bus, with backoff for unreachable devices.
import Foundation
import GatewayClock
import Logging
import Synchronization

/// The outcome of one poll of one device (one poll group of it).
public struct DevicePoll: Sendable {
    public struct Reading: Sendable {
        public var tag: String
        public var value: Result<TagValue, TagError>

        public init(tag: String, value: Result<TagValue, TagError>) {
            self.tag = tag
            self.value = value
        }
    }

    public var device: String
    /// When the poll started (wall clock): the `ts` of the data message.
    public var timestamp: Date { clock.wall }
    /// The clocks when the poll started: wall, boottime, kernel boot id, sync status.
    public var clock: ClockReading
    /// The tags of the poll group, in the order of the device's tags.
    public var readings: [Reading]

    public init(device: String, clock: ClockReading, readings: [Reading]) {
        self.device = device
        self.clock = clock
        self.readings = readings
    }

    /// A poll with only a wall time: marked unsynchronised, of no known kernel boot.
    public init(device: String, timestamp: Date, readings: [Reading]) {
        self.init(device: device, clock: ClockReading(wall: timestamp, boottime: 0, bootID: "", sync: .unsynchronised),
                  readings: readings)
    }
}

/// What pollers report to the rest of the gateway.
public enum PollEvent: Sendable {
    /// A poll to publish (with `publish: on_change`, only polls that changed).
    case poll(DevicePoll)
    /// The device answered again after being offline (or for the first time).
    case deviceOnline(device: String)
    /// The device is unreachable; `error` says why.
    case deviceOffline(device: String, error: String)
}

/// Counters shared by all buses, read by the stats publisher.
public final class PollCounters: Sendable {
    public struct Snapshot: Sendable, Equatable {
        public var pollsOK: Int64 = 0
        public var pollsFailed: Int64 = 0
        /// Poll slots skipped because a poll (or the bus) ran late.
        public var overruns: Int64 = 0
        /// Polls not published because nothing changed (`publish: on_change`).
        public var pollsUnchanged: Int64 = 0
        /// Modbus requests sent (retries included).
        public var requests: Int64 = 0
    }

    private let state = Mutex(Snapshot())

    public init() {}

    public var snapshot: Snapshot { state.withLock { $0 } }

    func record(ok: Bool) {
        state.withLock { ok ? ($0.pollsOK += 1) : ($0.pollsFailed += 1) }
    }

    func recordOverruns(_ count: Int64) {
        state.withLock { $0.overruns += count }
    }

    func recordUnchanged() {
        state.withLock { $0.pollsUnchanged += 1 }
    }

    func recordRequests(_ count: Int64) {
        state.withLock { $0.requests += count }
    }
}

/// Polls every device of one bus in turn, one request at a time. Run it with a
/// `BusExecutor` as task executor preference: its libmodbus calls block.
public struct BusPoller: Sendable {
    public let busKey: String
    public let devices: [DeviceConfiguration]
    public let counters: PollCounters
    /// Longest wait between retries of an unreachable device.
    public var maxBackoff: Duration = .seconds(30)
    /// Told before each blocking libmodbus call how long it can last at most (its
    /// deadline), and `nil` once the bus thread is back: the watchdog counts a bus
    /// waiting inside a bounded request as alive until that deadline. Also told, before
    /// the bus sleeps, when the next poll is due: an idle bus is alive until then, so no
    /// timer has to wake it only to say so.
    public var requestWatch: @Sendable (_ deadline: ContinuousClock.Instant?) -> Void = { _ in }
    /// Where each poll's wall time, boottime, boot id and sync status come from.
    public var timeSource: any TimeSource = KernelClock()
    /// Stops the bus from another thread (see `abandon()`).
    public let abandonment = BusAbandonment()
    /// Commanded writes for this bus (BusWrites.swift); `nil` when commands are off.
    public var writes: BusWriteQueue?
    /// The executor `run()` runs on, when it is a `BusExecutor` of its own: the
    /// wait for the next poll then blocks that thread (`BusExecutor.sleep(until:)`),
    /// one wake-up per poll instead of a timer thread's and then the bus's.
    public var executor: BusExecutor?
    /// Runs on the bus thread after each poll was reported and the bus's next poll was
    /// scheduled (its due time is the argument), outside the abandonment lock (so
    /// `abandon()` never waits for it): the gateway commits the polls in hand here
    /// (`IngestService.commitOnBusThread`), which blocks this bus for a commit.
    public var afterPollReported: @Sendable (_ nextPollDue: ContinuousClock.Instant) -> Void = { _ in }
    private let emit: @Sendable (PollEvent) -> Void
    let logger: Logger

    public init(
        devices: [DeviceConfiguration],
        counters: PollCounters,
        logger: Logger,
        emit: @escaping @Sendable (PollEvent) -> Void
    ) {
        precondition(!devices.isEmpty, "a bus has at least one device")
        self.busKey = devices[0].transport.busKey
        self.devices = devices
        self.counters = counters
        self.logger = logger
        self.emit = emit
    }

    /// Reachability of one device, shared by its poll groups.
    private struct DeviceState {
        var online: Bool?
        var lastError: String?
        /// The last failure's `ModbusError.episodeKey`: the outage is logged again when it changes.
        var lastEpisode: String?
        var failures = 0
    }

    /// One poll group of one device on the schedule.
    private struct Slot {
        var device: Int
        var interval: Duration
        var tagIndices: [Int]
        var plan: RegisterPlan
        var filter: ChangeFilter
        var nextDue: ContinuousClock.Instant
        /// The values of the last poll by tag index (see `poll`): kept, so a poll does not
        /// allocate this array anew.
        var results: [Result<TagValue, TagError>] = []
    }

    /// The plans the poller starts with: per device, per poll group (shortest interval first).
    public static func plans(for device: DeviceConfiguration) -> [(interval: Duration, plan: RegisterPlan)] {
        device.pollGroups.map { group in
            (group.interval, RegisterPlan(tags: device.tags, maxGap: device.maxGap, indices: group.tagIndices))
        }
    }

    /// Stops the bus for good, from any thread, without waiting for it: a request
    /// blocked on a TCP socket returns at once, no request starts after, and the
    /// bus reports nothing more (see `BusAbandonment`). Cancel the task of `run()` too.
    public func abandon() {
        abandonment.abandon()
    }

    /// Hands `event` on unless the bus was abandoned; returns whether it did.
    @discardableResult
    private func report(_ event: PollEvent) -> Bool {
        abandonment.unlessAbandoned { emit(event) }
    }

    /// Polls until the task is cancelled or the bus is abandoned.
    public func run() async {
        // However the bus ends (also when it cannot be set up), queued writes are refused, never left waiting.
        defer { writes?.close() }
        let clock = ContinuousClock()
        let connection: ModbusConnection
        do {
            connection = try ModbusConnection(transport: devices[0].transport, abandonment: abandonment)
        } catch {
            for device in devices {
                report(.deviceOffline(device: device.name, error: error.message))
            }
            logger.error("cannot set up bus", metadata: ["bus": "\(busKey)", "error": "\(error.message)"])
            return
        }
        let start = clock.now
        var states = [DeviceState](repeating: DeviceState(), count: devices.count)
        var slots: [Slot] = []
        for (deviceIndex, device) in devices.enumerated() {
            for group in device.pollGroups {
                slots.append(Slot(
                    device: deviceIndex, interval: group.interval, tagIndices: group.tagIndices,
                    plan: RegisterPlan(tags: device.tags, maxGap: device.maxGap, indices: group.tagIndices),
                    filter: ChangeFilter(policy: device.publish, deadbands: group.tagIndices.map { device.tags[$0].deadband }),
                    nextDue: start))
            }
        }

        while !Task.isCancelled && !abandonment.isAbandoned {
            let index = slots.indices.min { slots[$0].nextDue < slots[$1].nextDue }!
            if let writes {
                // Writes go first, between two polls; a new one cuts the wait short.
                runWrites(writes.takeAll(), connection: connection) { (states[$0].online == true, states[$0].lastError) }
                if clock.now < slots[index].nextDue {
                    requestWatch(slots[index].nextDue)  // idle until then, alive (see `requestWatch`)
                    await writes.wait(until: slots[index].nextDue)
                    if Task.isCancelled { return }
                    continue
                }
            } else {
                do {
                    if clock.now < slots[index].nextDue {
                        requestWatch(slots[index].nextDue)  // idle until then, alive (see `requestWatch`)
                    }
                    if let executor {
                        try await executor.sleep(until: slots[index].nextDue)
                    } else {
                        try await Task.sleep(until: slots[index].nextDue, clock: clock)
                    }
                } catch {
                    return  // cancelled: shutdown
                }
            }
            let deviceIndex = slots[index].device
            let device = devices[deviceIndex]
            connection.setResponseTimeout(device.timeout)
            if let byteTimeout = device.byteTimeout { connection.setByteTimeout(byteTimeout) }
            let stamp = timeSource.now()
            let outcome = poll(device, slot: &slots[index], connection: connection)
            // Abandoned meanwhile: the outcome (likely the shut-down socket's error) is nobody's business.
            if abandonment.isAbandoned { return }
            // Stopping (the task is cancelled): a poll the stop cut short says nothing about the device.
            if Task.isCancelled, case .failure = outcome { return }
            switch outcome {
            case let .success((readings, answersMalformed)):
                // A malformed answer is a tag error (the device answered), and a failed poll in the stats.
                counters.record(ok: !answersMalformed)
                if states[deviceIndex].online != true {
                    logger.info("device online", metadata: ["device": "\(device.name)", "bus": "\(busKey)"])
                    report(.deviceOnline(device: device.name))
                }
                states[deviceIndex].online = true
                states[deviceIndex].lastError = nil
                states[deviceIndex].lastEpisode = nil
                var reported = false
                if slots[index].filter.admit(readings, at: clock.now) {
                    reported = report(.poll(DevicePoll(device: device.name, clock: stamp, readings: readings)))
                } else {
                    counters.recordUnchanged()
                }
                // After the schedule below (the end of this case): a commit longer than the
                // interval then delays the next poll instead of counting it as an overrun.
                defer { if reported { afterPollReported(slots.lazy.map(\.nextDue).min()!) } }
                if states[deviceIndex].failures > 0 {
                    // Back from an outage: every group of the device on a new phase starting now.
                    states[deviceIndex].failures = 0
                    let now = clock.now
                    for other in slots.indices where slots[other].device == deviceIndex {
                        slots[other].nextDue = other == index ? now + slots[other].interval : now
                    }
                } else {
                    slots[index].nextDue = nextSlot(after: slots[index].nextDue,
                                                    interval: slots[index].interval, now: clock.now)
                }
            case let .failure(error):
                counters.record(ok: false)
                states[deviceIndex].failures += 1
                let backoff = backoff(failures: states[deviceIndex].failures, interval: device.pollInterval)
                if states[deviceIndex].online != false || states[deviceIndex].lastEpisode != error.episodeKey {
                    logger.warning("device offline", metadata: [
                        "device": "\(device.name)", "bus": "\(busKey)", "error": "\(error.message)",
                        "retry_in": "\(backoff)",
                    ])
                    report(.deviceOffline(device: device.name, error: error.message))
                }
                states[deviceIndex].online = false
                states[deviceIndex].lastError = error.message
                states[deviceIndex].lastEpisode = error.episodeKey
                // Out of the rotation: no group of this device is due before the backoff ends.
                let retry = clock.now + backoff
                for other in slots.indices where slots[other].device == deviceIndex {
                    slots[other].nextDue = retry
                }
            }
        }
    }

    /// The next slot on the original phase; slots already past are counted as overruns.
    private func nextSlot(after due: ContinuousClock.Instant, interval: Duration,
                          now: ContinuousClock.Instant) -> ContinuousClock.Instant {
        var next = due + interval
        if next <= now {
            let missed = Int64((now - next) / interval) + 1
            next = next + interval * missed
            counters.recordOverruns(missed)
        }
        return next
    }

    private func backoff(failures: Int, interval: Duration) -> Duration {
        let doubled = Duration.seconds(1) * (1 << min(failures - 1, 16))
        return min(max(doubled, interval), max(maxBackoff, interval))
    }

    private enum Answer {
        case registers([UInt16])
        case bits([Bool])
    }

    /// One request with the device's retries after timeouts.
    private func read(_ block: RegisterBlock, device: DeviceConfiguration,
                      connection: ModbusConnection) -> Result<Answer, ModbusError> {
        var attempt = 0
        while true {
            attempt += 1
            // Stopping: no new request (an abandoned connection refuses anyway).
            if Task.isCancelled || abandonment.isAbandoned {
                return .failure(ModbusError(kind: .connection, message: "\(connection.endpoint): the bus is stopping"))
            }
            counters.recordRequests(1)
            requestWatch(.now + Self.longestAttempt(block, device: device, connection: connection))
            defer { requestWatch(nil) }
            do {
                try connection.connect()
                if block.table.holdsBits {
                    return .success(.bits(try connection.readBits(
                        unit: device.unitID, table: block.table, address: block.address, count: block.count)))
                }
                return .success(.registers(try connection.readRegisters(
                    unit: device.unitID, table: block.table, address: block.address, count: block.count)))
            } catch {
                switch error.kind {
                case .timeout, .invalidResponse:
                    // A late or partial answer would be taken for the next request's: start clean.
                    connection.resynchronise()
                case .exception, .connection, .setup:
                    break
                }
                if error.kind == .timeout, attempt <= device.retries { continue }
                return .failure(error)
            }
        }
    }

    /// libmodbus' default silence allowed between two bytes of an answer.
    static let defaultByteTimeout = Duration.milliseconds(500)

    /// How long glibc's resolver can take for one name with default options: 5 s per
    /// try, 2 tries, up to 3 name servers. The host is resolved at every connect.
    static let nameResolutionAllowance = Duration.seconds(30)

    /// The longest one attempt of `block` can keep the bus thread in libmodbus: a
    /// TCP connect (resolving a host name, then the handshake bounded by the response
    /// timeout), then the response timeout for the first byte and the byte timeout
    /// for each further byte of the answer.
    static func longestAttempt(_ block: RegisterBlock, device: DeviceConfiguration,
                               connection: ModbusConnection) -> Duration {
        let payload = block.table.holdsBits ? (block.count + 7) / 8 : block.count * 2
        // MBAP header (7) or address + CRC (3), function code and byte count (2).
        let answerBytes = payload + (connection.isSerial ? 5 : 9)
        var connect = Duration.zero
        if !connection.isConnected, case let .tcp(host, _) = device.transport {
            connect = device.timeout + (isNumericAddress(host) ? .zero : nameResolutionAllowance)
        }
        return connect + device.timeout + (device.byteTimeout ?? defaultByteTimeout) * (answerBytes - 1)
    }

    private static func isNumericAddress(_ host: String) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 16)
        return inet_pton(AF_INET, host, &buffer) == 1 || inet_pton(AF_INET6, host, &buffer) == 1
    }

    /// One poll of a group: every block of its plan, decoded per tag. Fails as a
    /// whole only when the device is unreachable; request-level errors become tag
    /// errors (`malformed` when one was an answer that did not fit the request).
    /// A merged block the device rejects with exception 2 is split (remembered in
    /// the slot's plan) and read again at once.
    private func poll(_ device: DeviceConfiguration, slot: inout Slot, connection: ModbusConnection)
        -> Result<(readings: [DevicePoll.Reading], malformed: Bool), ModbusError> {
        // By tag index; every tag of the group's plan is set, the rest stay "not read". Not
        // optional: asking an optional of this enum for its case is a runtime call per tag.
        // The slot's array from the last poll, its group's tags reset: no allocation per poll.
        var results: [Result<TagValue, TagError>] = []
        swap(&results, &slot.results)
        defer { swap(&results, &slot.results) }
        let notRead = Result<TagValue, TagError>.failure(TagError("not read"))
        if results.count == device.tags.count {
            for index in slot.tagIndices { results[index] = notRead }
        } else {
            results = Array(repeating: notRead, count: device.tags.count)
        }
        var malformed = false
        var queue = slot.plan.blocks[...]
        var plan: [RegisterBlock] = []
        var replanned = false
        while let block = queue.popFirst() {
            switch read(block, device: device, connection: connection) {
            case let .failure(error):
                if error.takesDeviceOffline { return .failure(error) }
                if error.kind == .exception(code: 2) {
                    let parts = RegisterPlan.split(block, tags: device.tags)
                    if !parts.isEmpty {
                        logger.notice("device rejected a merged read; splitting it", metadata: [
                            "device": "\(device.name)", "table": "\(block.table.rawValue)",
                            "address": "\(block.address)", "count": "\(block.count)", "into": "\(parts.count)",
                        ])
                        replanned = true
                        queue = (parts + queue)[...]
                        continue
                    }
                }
                if error.kind == .invalidResponse { malformed = true }
                plan.append(block)
                for index in block.tagIndices { results[index] = .failure(TagError(error.message)) }
            case let .success(answer):
                plan.append(block)
                switch answer {
                case let .bits(bits):
                    for index in block.tagIndices {
                        results[index] = .success(.bool(bits[device.tags[index].address - block.address]))
                    }
                case let .registers(words):
                    RegisterDecoding.decode(block: words, startingAt: block.address, tags: device.tags,
                                            indices: block.tagIndices, deviceOrder: device.byteOrder, into: &results)
                }
            }
        }
        if replanned { slot.plan = RegisterPlan(blocks: plan) }
        let readings = slot.tagIndices.map { index in
            DevicePoll.Reading(tag: device.tags[index].name, value: results[index])
        }
        return .success((readings, malformed))
    }
}
