// One tag list in memory for every device of one type.
import Modbus

/// Devices of one type (a YAML anchor, or the same tags written out again) read equal
/// tag lists; `share(_:)` makes them all use the first one's array, so the model costs
/// one list per device type instead of one per device. A `TagConfiguration` takes about
/// 170 bytes: at 1,000 devices of the same 100 tags that is one 17 KB list instead of 17 MB.
enum SharedTagLists {
    /// `devices` unchanged in value; equal tag lists share one array buffer.
    static func share(_ devices: [DeviceConfiguration]) -> [DeviceConfiguration] {
        var lists = Set<[TagConfiguration]>()
        return devices.map { device in
            var device = device
            // The list already in the set when an equal one was read before.
            device.tags = lists.insert(device.tags).memberAfterInsert
            return device
        }
    }
}
