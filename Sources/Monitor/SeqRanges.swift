// A set of sequence numbers kept as sorted, disjoint, non-adjacent closed ranges:
// its size grows with the number of holes, not with the number of seqs.

/// Sorted disjoint closed ranges of seqs (`[1...4711]` for an unbroken stream).
public struct SeqRanges: Sendable, Equatable, Codable {
    public private(set) var ranges: [ClosedRange<Int64>] = []

    public init() {}
    public init(_ ranges: [ClosedRange<Int64>]) {
        for range in ranges { insert(range) }
    }

    public var isEmpty: Bool { ranges.isEmpty }
    /// How many seqs the set holds.
    public var count: Int64 { ranges.reduce(0) { $0 + ($1.upperBound - $1.lowerBound + 1) } }
    public var upperBound: Int64? { ranges.last?.upperBound }

    /// Index of the first range whose upper bound is ≥ `value` (binary search).
    private func firstIndex(notBelow value: Int64) -> Int {
        var low = 0, high = ranges.count
        while low < high {
            let mid = (low + high) / 2
            if ranges[mid].upperBound < value { low = mid + 1 } else { high = mid }
        }
        return low
    }

    public func contains(_ value: Int64) -> Bool {
        let index = firstIndex(notBelow: value)
        return index < ranges.count && ranges[index].contains(value)
    }

    /// Adds one seq. Returns `false` when it was already there (a duplicate).
    @discardableResult
    public mutating func insert(_ value: Int64) -> Bool {
        // Fast path: the next seq of an unbroken stream.
        if let last = ranges.last {
            if last.upperBound + 1 == value {
                ranges[ranges.count - 1] = last.lowerBound...value
                return true
            }
            if last.contains(value) { return false }
        }
        if contains(value) { return false }
        insert(value...value)
        return true
    }

    /// Adds every seq of `range`, merging with neighbours.
    public mutating func insert(_ range: ClosedRange<Int64>) {
        var low = range.lowerBound, high = range.upperBound
        // Ranges that overlap or touch [low, high] are merged into one.
        let start = firstIndex(notBelow: low == .min ? low : low - 1)
        var end = start
        while end < ranges.count, ranges[end].lowerBound <= (high == .max ? high : high + 1) {
            low = min(low, ranges[end].lowerBound)
            high = max(high, ranges[end].upperBound)
            end += 1
        }
        ranges.replaceSubrange(start..<end, with: [low...high])
    }

    public mutating func formUnion(_ other: SeqRanges) {
        for range in other.ranges { insert(range) }
    }

    /// Removes every seq of `range`.
    public mutating func remove(_ range: ClosedRange<Int64>) {
        var result: [ClosedRange<Int64>] = []
        result.reserveCapacity(ranges.count + 1)
        for existing in ranges {
            if existing.upperBound < range.lowerBound || existing.lowerBound > range.upperBound {
                result.append(existing)
                continue
            }
            if existing.lowerBound < range.lowerBound { result.append(existing.lowerBound...(range.lowerBound - 1)) }
            if existing.upperBound > range.upperBound { result.append((range.upperBound + 1)...existing.upperBound) }
        }
        ranges = result
    }

    public mutating func subtract(_ other: SeqRanges) {
        for range in other.ranges { remove(range) }
    }

    /// The seqs of `range` that this set does not hold.
    public func missing(in range: ClosedRange<Int64>) -> SeqRanges {
        var result = SeqRanges(); result.insert(range)
        let start = firstIndex(notBelow: range.lowerBound)
        var index = start
        while index < ranges.count, ranges[index].lowerBound <= range.upperBound {
            result.remove(ranges[index])
            index += 1
        }
        return result
    }

    /// `[[first,last],…]`, the JSON form of the API.
    public var pairs: [[Int64]] { ranges.map { [$0.lowerBound, $0.upperBound] } }

    public init(from decoder: any Decoder) throws {
        let pairs = try decoder.singleValueContainer().decode([[Int64]].self)
        self.init()
        for pair in pairs where pair.count == 2 && pair[0] <= pair[1] { insert(pair[0]...pair[1]) }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(pairs)
    }
}
