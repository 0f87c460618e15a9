// The polling loop of one field bus: a drift-free schedule over the devices that
// share the bus, with backoff for unreachable ones.
import Foundation
import GatewayConfig
import Logging
import Synchronization

/// The outcome of one poll of one device.
public struct DevicePoll: Sendable {
    public struct Reading: Sendable {
        public var tag: String
        public var value: Result<TagValue, TagError>
    }

    public var device: String
    /// When the poll started (wall clock): the `ts` of the data message.
    public var timestamp: Date
    /// In the order of the device's tags.
    public var readings: [Reading]
}

/// What pollers report to the rest of the gateway.
public enum PollEvent: Sendable {
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
}

/// Polls every device of one bus in turn. Run it with a `BusExecutor` as task
/// executor preference: its libmodbus calls block.
public struct BusPoller: Sendable {
    public let busKey: String
    public let devices: [DeviceConfiguration]
    public let counters: PollCounters
    /// Longest wait between retries of an unreachable device.
    public var maxBackoff: Duration = .seconds(30)
    private let emit: @Sendable (PollEvent) -> Void
    private let logger: Logger

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

    private struct Schedule {
        var device: DeviceConfiguration
        var plan: RegisterPlan
        var nextDue: ContinuousClock.Instant
        var online: Bool?
        var lastError: String?
        var failures = 0
    }

    /// Polls until the task is cancelled.
    public func run() async {
        let clock = ContinuousClock()
        let connection: ModbusConnection
        do {
            connection = try ModbusConnection(transport: devices[0].transport)
        } catch {
            for device in devices {
                emit(.deviceOffline(device: device.name, error: error.message))
            }
            logger.error("cannot set up bus", metadata: ["bus": "\(busKey)", "error": "\(error.message)"])
            return
        }
        let start = clock.now
        var schedules = devices.map { Schedule(device: $0, plan: RegisterPlan(tags: $0.tags), nextDue: start) }

        while !Task.isCancelled {
            let index = schedules.indices.min { schedules[$0].nextDue < schedules[$1].nextDue }!
            do {
                try await Task.sleep(until: schedules[index].nextDue, clock: clock)
            } catch {
                return  // cancelled: shutdown
            }
            let device = schedules[index].device
            connection.setResponseTimeout(device.timeout)
            let timestamp = Date()
            switch poll(device, plan: schedules[index].plan, connection: connection) {
            case let .success(readings):
                counters.record(ok: true)
                if schedules[index].online != true {
                    logger.info("device online", metadata: ["device": "\(device.name)", "bus": "\(busKey)"])
                    emit(.deviceOnline(device: device.name))
                }
                schedules[index].online = true
                schedules[index].lastError = nil
                emit(.poll(DevicePoll(device: device.name, timestamp: timestamp, readings: readings)))
                if schedules[index].failures > 0 {
                    // Back from an outage: a new phase starting now.
                    schedules[index].failures = 0
                    schedules[index].nextDue = clock.now + device.pollInterval
                } else {
                    schedules[index].nextDue = nextSlot(after: schedules[index].nextDue,
                                                        interval: device.pollInterval, now: clock.now)
                }
            case let .failure(error):
                counters.record(ok: false)
                schedules[index].failures += 1
                let backoff = backoff(failures: schedules[index].failures, interval: device.pollInterval)
                if schedules[index].online != false || schedules[index].lastError != error.message {
                    logger.warning("device offline", metadata: [
                        "device": "\(device.name)", "bus": "\(busKey)", "error": "\(error.message)",
                        "retry_in": "\(backoff)",
                    ])
                    emit(.deviceOffline(device: device.name, error: error.message))
                }
                schedules[index].online = false
                schedules[index].lastError = error.message
                schedules[index].nextDue = clock.now + backoff
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

    /// One poll: every block of the plan, decoded per tag. Fails as a whole only
    /// when the device is unreachable; request-level errors become tag errors.
    private func poll(_ device: DeviceConfiguration, plan: RegisterPlan,
                      connection: ModbusConnection) -> Result<[DevicePoll.Reading], ModbusError> {
        do {
            try connection.connect()
        } catch {
            return .failure(error)
        }
        var results = [Result<TagValue, TagError>?](repeating: nil, count: device.tags.count)
        for block in plan.blocks {
            let words: [UInt16]
            do {
                words = try connection.readRegisters(unit: device.unitID, table: block.table,
                                                     address: block.address, count: block.count)
            } catch {
                if error.takesDeviceOffline {
                    // A late answer would be taken for the next request's: start clean.
                    connection.close()
                    return .failure(error)
                }
                for index in block.tagIndices { results[index] = .failure(TagError(error.message)) }
                continue
            }
            for index in block.tagIndices {
                let tag = device.tags[index]
                let first = tag.address - block.address
                results[index] = RegisterDecoding.decode(
                    words[first..<first + tag.type.registerCount], type: tag.type,
                    order: tag.byteOrder ?? device.byteOrder, scale: tag.scale, offset: tag.offset)
            }
        }
        return .success(device.tags.indices.map { index in
            DevicePoll.Reading(tag: device.tags[index].name,
                               value: results[index] ?? .failure(TagError("not read")))
        })
    }
}
