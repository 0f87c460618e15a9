// Sparkplug's report by exception for devices with `publish: on_change`.
import GatewayConfig
import Modbus

/// Cuts a poll of an `on_change` device down to the tags whose value (or error) differs
/// from the last one committed for that tag, so a DDATA carries only what changed
/// (tck-id-topics-ddata-payload). The poller already decided (deadbands, max_interval)
/// that the poll is published; a poll where nothing differs is a heartbeat and keeps
/// every tag. Devices with `publish: always` pass unchanged.
public struct SparkplugReportByException: Sendable {
    private let onChangeDevices: Set<String>
    /// Device → tag → the last value committed.
    private var last: [String: [String: Result<TagValue, TagError>]] = [:]

    public init(devices: [DeviceConfiguration]) {
        onChangeDevices = Set(devices.compactMap { device in
            if case .onChange = device.publish { return device.name }
            return nil
        })
    }

    /// The part of `poll` to commit; remembers its values as the last committed.
    public mutating func changes(in poll: DevicePoll) -> DevicePoll {
        guard onChangeDevices.contains(poll.device) else { return poll }
        var previous = last[poll.device] ?? [:]
        let changed = poll.readings.filter { previous[$0.tag] != $0.value }
        for reading in poll.readings { previous[reading.tag] = reading.value }
        last[poll.device] = previous
        guard !changed.isEmpty else { return poll }
        return DevicePoll(device: poll.device, timestamp: poll.timestamp, readings: changed)
    }

    /// After a failed commit: the next poll of every device goes out whole.
    public mutating func forget() {
        last = [:]
    }
}
