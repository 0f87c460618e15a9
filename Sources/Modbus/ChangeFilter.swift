// Report by exception: which polls of a poll group become data messages.

/// Decides per poll of one poll group whether it is published.
///
/// With `PublishPolicy.onChange(maxInterval:)` a poll is published when, compared
/// with the group's last published poll, a tag's value moved beyond its deadband
/// (numbers), changed at all (bools, strings, integer↔number), or its error
/// appeared, changed or cleared; or when `maxInterval` passed since the last
/// published poll (heartbeat). The first poll is always published. A published
/// poll carries every tag of the group, and those values become the reference
/// for the next comparison: a consumer's last value of a tag is always within
/// its deadband of what was last read.
public struct ChangeFilter: Sendable {
    public let policy: PublishPolicy
    /// Per reading, in the order of the group's readings.
    public let deadbands: [Deadband]
    private var reference: [Result<TagValue, TagError>]?
    private var lastPublished: ContinuousClock.Instant?

    public init(policy: PublishPolicy, deadbands: [Deadband]) {
        self.policy = policy
        self.deadbands = deadbands
    }

    /// True when `readings` (taken at `now`) should be published; remembers them if so.
    public mutating func admit(_ readings: [DevicePoll.Reading], at now: ContinuousClock.Instant) -> Bool {
        switch policy {
        case .always:
            return true
        case let .onChange(maxInterval):
            let publish: Bool
            if let reference, let lastPublished, reference.count == readings.count {
                publish = now - lastPublished >= maxInterval
                    || readings.indices.contains { changed(from: reference[$0], to: readings[$0].value, deadbands[$0]) }
            } else {
                publish = true
            }
            if publish {
                reference = readings.map(\.value)
                lastPublished = now
            }
            return publish
        }
    }

    func changed(from old: Result<TagValue, TagError>, to new: Result<TagValue, TagError>,
                 _ deadband: Deadband) -> Bool {
        switch (old, new) {
        case let (.failure(before), .failure(after)): return before != after
        case (.failure, .success), (.success, .failure): return true
        case let (.success(before), .success(after)):
            guard let a = before.numeric, let b = after.numeric else { return before != after }
            let difference = abs(b - a)
            switch deadband {
            case .none: return a != b
            case let .absolute(amount): return difference > amount
            case let .percent(percent): return a == 0 ? b != a : difference > abs(a) * percent / 100
            }
        }
    }
}

extension TagValue {
    /// The value as a number, for deadbands; nil for bools and strings.
    var numeric: Double? {
        switch self {
        case let .integer(integer): return Double(integer)
        case let .number(number): return number
        case .bool, .string: return nil
        }
    }
}
