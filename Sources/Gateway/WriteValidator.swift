// The checks a command passes whatever carried it (a signed JSON command or a
// Sparkplug DCMD): the gateway's rate, then for each tag: it exists, it is writable,
// and its value has the tag's type, lies within [min, max] and fits its register.
// Pure state, no I/O; one per command service, used under its lock.
import GatewayConfig
import Modbus

struct WriteValidator {
    let gateway: String
    let rate: CommandSettings.Rate
    private var bucket: CommandRateLimit

    init(gateway: String, rate: CommandSettings.Rate, now: ContinuousClock.Instant) {
        self.gateway = gateway
        self.rate = rate
        bucket = CommandRateLimit(count: rate.count, per: rate.per, now: now)
    }

    /// Takes one command from the gateway's rate; the refusal when it is exceeded.
    mutating func admit(now: ContinuousClock.Instant) -> CommandRefusal? {
        bucket.take(now: now) ? nil : CommandRefusal(.rateExceeded, "more than \(rate) commands for gateway \(gateway)")
    }

    /// The writes for `values` on `device`, or the first reason one of them cannot be written.
    static func writes(_ values: [(tag: String, value: TagValue)],
                       device: DeviceConfiguration) -> Result<[TagWrite], CommandRefusal> {
        var writes: [TagWrite] = []
        for (name, value) in values {
            guard let tag = device.tags.first(where: { $0.name == name }) else {
                return .failure(unknownTag(name, device: device))
            }
            guard tag.writable else {
                return .failure(CommandRefusal(.notWritable, "tag '\(name)' of device '\(device.name)' is not writable "
                                               + "(writable: true in gateway.yaml allows it)"))
            }
            switch RegisterEncoding.encode(value, tag: tag, deviceOrder: device.byteOrder) {
            case let .success(payload): writes.append(TagWrite(tag: tag, payload: payload))
            case let .failure(problem): return .failure(CommandRefusal(problem))
            }
        }
        return .success(writes)
    }

    static func unknownTag(_ name: String, device: DeviceConfiguration) -> CommandRefusal {
        let writable = device.tags.filter(\.writable).map(\.name)
        return CommandRefusal(.unknownTag, "device '\(device.name)' has no tag '\(name)' "
                              + "(writable tags: \(writable.isEmpty ? "none" : writable.joined(separator: ", ")))")
    }
}

/// `count` commands per `per`, refilled continuously; starts full.
struct CommandRateLimit {
    private let capacity: Double
    private let perSecond: Double
    private var tokens: Double
    private var last: ContinuousClock.Instant

    init(count: Int, per: Duration, now: ContinuousClock.Instant) {
        capacity = Double(count)
        perSecond = Double(count) / CommandGuard.seconds(per)
        tokens = capacity
        last = now
    }

    mutating func take(now: ContinuousClock.Instant) -> Bool {
        tokens = min(capacity, tokens + CommandGuard.seconds(now - last) * perSecond)
        last = now
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
