// What the forwarder announces about the gateway and its devices: the birth after
// every connect, the Last Will, the clean offline status, device statuses and meta.
import Foundation
import GatewayClock
import GatewayConfig
import Modbus
import MQTTUplink
import Outbox

/// Builds the retained status messages and remembers each device's last status, so
/// a new connection can announce the current picture.
struct StatusAnnouncer {
    let identity: GatewayIdentity
    let boot: Int64
    let birth: GatewayStatus.Birth
    /// Device → its last error (nil: online), for the devices that reported.
    private(set) var deviceErrors: [String: String?] = [:]

    init(identity: GatewayIdentity, outbox: any OutboxReading) {
        self.identity = identity
        boot = outbox.boot
        birth = GatewayStatus.Birth(statsInterval: identity.statsInterval, previousBoot: outbox.previousBoot,
                                    quarantinedOutbox: outbox.quarantinedPath,
                                    bootRecovery: outbox.bootRecovery)
    }

    /// The Last Will set in the CONNECT of `session`.
    static func will(identity: GatewayIdentity, boot: Int64, session: Int, at date: Date = Date()) -> MQTTMessage {
        MQTTMessage(topic: identity.statusTopic,
                    payload: MessageEncoding.gatewayStatus(.offline(.connectionLost), gateway: identity.id, boot: boot,
                                                           session: session, at: date),
                    qos: 1, retain: true)
    }

    /// The clean offline status (`reason` `shutdown`) on `session`.
    func offline(session: Int) -> MQTTMessage {
        MQTTMessage(topic: identity.statusTopic,
                    payload: MessageEncoding.gatewayStatus(.offline(.shutdown), gateway: identity.id, boot: boot,
                                                           session: session, at: Date()),
                    qos: 1, retain: true)
    }

    /// Everything a new connection announces, in order: the birth, each known device
    /// status, each device's meta, each handed to `send` as soon as it is encoded (not
    /// gathered first: at 1,000 devices of 100 tags the metas alone are about 9 MB).
    /// `clock` and `date` (its wall time) come from the gateway's time source.
    func announce(session: Int, server: String? = nil, devices: [DeviceConfiguration], clock: ClockStatus? = nil,
                  at date: Date = Date(), to send: (MQTTMessage) -> Void) {
        var birth = birth
        birth.clock = clock
        birth.server = server
        send(MQTTMessage(
            topic: identity.statusTopic,
            payload: MessageEncoding.gatewayStatus(.online(birth), gateway: identity.id, boot: boot, session: session,
                                                   at: date),
            qos: 1, retain: true))
        for device in deviceErrors.keys.sorted() {
            send(deviceStatus(device))
        }
        for device in devices {
            send(MQTTMessage(
                topic: identity.deviceMetaTopic(device: device.name),
                payload: MessageEncoding.deviceMeta(device, gateway: identity.id, boot: boot, at: date, clock: clock),
                qos: 1, retain: true))
        }
    }

    /// Records a device's status; returns the message announcing it.
    mutating func deviceChanged(_ device: String, error: String?) -> MQTTMessage {
        deviceErrors[device] = .some(error)
        return deviceStatus(device)
    }

    private func deviceStatus(_ device: String) -> MQTTMessage {
        MQTTMessage(topic: identity.deviceStatusTopic(device: device),
                    payload: MessageEncoding.deviceStatus(error: deviceErrors[device] ?? nil, gateway: identity.id,
                                                          boot: boot, at: Date()),
                    qos: 1, retain: true)
    }
}
