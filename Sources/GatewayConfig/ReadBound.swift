// How long one read of a silent device can hold its bus, and the limit the
// watchdog sets on it.

import Modbus

extension DeviceConfiguration {
    /// The longest one read of this device keeps its bus waiting when the device is
    /// silent: `timeout × (retries + 1)`.
    public var longestRead: Duration { timeout * (retries + 1) }

    /// The most `longestRead` may be: half the shipped unit's `WatchdogSec=30s`.
    ///
    /// A bus waiting inside a bounded request counts as alive until the request's
    /// deadline; only past it can the watchdog tell a hung bus (a call that never
    /// returns) from one waiting on a silent device. Holding every read to half the
    /// watchdog interval keeps a hang noticed, and the gateway restarted, within
    /// about two watchdog intervals, as `WatchdogSec=` promises; it also bounds how
    /// long a silent device keeps the other devices of its bus waiting.
    public static let longestReadLimit = Duration.seconds(15)
}

extension SchemaReader {
    /// Refuses a device whose `timeout × (retries + 1)` exceeds `longestReadLimit`,
    /// at its `timeout` (or, when only `retries` is set, its `retries`).
    func checkLongestRead(_ device: DeviceConfiguration, index: Int, timeout: YAMLValue?, retries: YAMLValue?,
                          section: YAMLValue) {
        let limit = DeviceConfiguration.longestReadLimit
        guard device.longestRead > limit else { return }
        let format = DurationSyntax.format
        let message = "devices[\(index)] (\(device.name)): timeout \(format(device.timeout)) × (retries \(device.retries) + 1) = "
            + "\(format(device.longestRead)) is longer than \(format(limit)), the most one read of a silent device may take"
        let hint = "lower timeout or retries (most devices answer within 1s): the watchdog (WatchdogSec=30s in the "
            + "shipped unit) can tell a hung bus from one waiting on a silent device only once a read's time is up, "
            + "so a read may take at most half of it"
        if let value = timeout ?? retries {
            value.report(message, hint: hint)
        } else {
            log.report(section.path + ".timeout", at: section.mark, message, hint: hint)
        }
    }
}
