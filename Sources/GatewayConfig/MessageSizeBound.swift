// How many bytes one data message can count against `buffer.max_bytes`, from
// the configuration alone, so a limit that cannot hold one message is refused
// at load time instead of dropping every message at run time.

import Modbus
import Sealing

enum MessageSizeBound {
    /// Room for one error text per tag (Modbus errors are a few dozen bytes).
    static let errorText = 256
    /// Smallest `max_bytes` accepted whatever the messages: room for a backlog,
    /// not for a single message only.
    static let floor: Int64 = 64 * 1024

    /// An upper bound of payload plus topic bytes of one data message of `device`
    /// (`{"gateway":…,"device":…,"ts":…,"boot":…,"seq":…,"values":{…},"errors":{…}}`),
    /// sealed when `sealing` is set. Every tag is counted with its widest value
    /// and an error text.
    static func dataMessage(of device: DeviceConfiguration, identity: GatewayIdentity,
                            sealing: SealAlgorithm?) -> Int64 {
        // Names are topic levels ([A-Za-z0-9_.-]), so JSON never escapes them.
        var payload = 160 + identity.id.utf8.count + device.name.utf8.count
        for tag in device.tags {
            let value: Int
            switch tag.type {
            // Two characters per register; each may need a six-byte \u escape.
            case .string: value = 2 + tag.length * 2 * 6
            case .bool: value = 5
            // The longest number JSON gets: -1.7976931348623157e+308.
            default: value = 24
            }
            // "name":value, in values and "name":"error", in errors.
            payload += (tag.name.utf8.count + 4 + value) + (tag.name.utf8.count + 6 + errorText)
        }
        switch sealing {
        case nil: break
        // Base64 of ciphertext and tag, the iv and the envelope's fields.
        case .aes256GCM?: payload = (payload + 16 + 2) / 3 * 4 + 120
        // Base64 of the payload and the signature, and the envelope's fields.
        case .hmacSHA256?: payload = (payload + 2) / 3 * 4 + 120
        }
        return Int64(payload + identity.dataTopic(device: device.name).utf8.count)
    }

    /// The smallest workable `max_bytes` for messages up to `largestMessage` bytes:
    /// four of them (so one can be sent while others are committed), at least `floor`.
    static func minimumMaxBytes(largestMessage: Int64) -> Int64 {
        max(floor, 4 * largestMessage)
    }
}
