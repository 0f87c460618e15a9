// `replay.max_rate`: a token bucket over an injected time, so tests count publishes
// per virtual second.

/// Allows at most `rate` messages per second, in bursts of at most a quarter second's worth.
struct TokenBucket {
    /// Messages per second; 0 means unlimited.
    let rate: Int
    private var tokens: Double = 0
    private var updated: ContinuousClock.Instant

    init(rate: Int, now: ContinuousClock.Instant) {
        self.rate = rate
        updated = now
    }

    /// How many of `wanted` messages may go now (all of them when unlimited).
    mutating func allowance(_ wanted: Int, now: ContinuousClock.Instant) -> Int {
        guard rate > 0 else { return wanted }
        let elapsed = Double((now - updated) / .microseconds(1)) / 1_000_000
        updated = now
        tokens = min(tokens + elapsed * Double(rate), max(1, Double(rate) / 4))
        return max(0, min(wanted, Int(tokens)))
    }

    /// One message went out.
    mutating func spend() {
        guard rate > 0 else { return }
        tokens -= 1
    }
}
