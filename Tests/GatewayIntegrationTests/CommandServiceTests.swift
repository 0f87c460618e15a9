// The command service's last check, made on the bus thread right before writing:
// the connection the command came on must still be up, and the command still fresh.
// In process, with the real guard, envelope and write queue; the bus is played by the test.
import Foundation
@testable import Gateway
import GatewayConfig
import Logging
@testable import Modbus
import MQTTUplink
import Sealing
import Synchronization
import Testing

@Suite struct CommandServiceTests {
    final class Locked<Value: Sendable>: Sendable {
        private let state: Mutex<Value>
        init(_ value: Value) { state = Mutex(value) }
        func withLock<T>(_ body: (inout Value) -> T) -> T { state.withLock { body(&$0) } }
    }

    final class Rig: Sendable {
        let key: SealingKey
        let identity = GatewayIdentity(id: "gw-01")
        let queue = BusWriteQueue()
        let published = Locked<[MQTTMessage]>([])
        let clock = Locked(Date())
        let service: CommandService

        init() throws {
            key = try SealingKey(id: "ops1", bytes: Array(repeating: 7, count: 32))
            var tag = TagConfiguration(name: "setpoint", table: .holding, address: 40, type: .uint16)
            tag.writable = true
            let device = DeviceConfiguration(name: "boiler-1", transport: .tcp(host: "127.0.0.1", port: 1), tags: [tag])
            let published = published, clock = clock
            service = try CommandService(
                identity: identity, settings: CommandSettings(enabled: true, keys: [key]), devices: [device],
                queues: ["boiler-1": queue],
                uplink: .init(publish: { message in published.withLock { $0.append(message) } }, subscribe: { _ in }),
                counters: CommandCounters(), logger: Logger(label: "test"), wallClock: { clock.withLock { $0 } })
        }

        func send(id: String) throws {
            let command = CommandMessage(id: id, gateway: "gw-01", device: "boiler-1", issued: clock.withLock { $0 },
                                         nonce: "nonce-of-\(id)-0123456789", values: [("setpoint", .integer(5))])
            let topic = identity.commandTopic(device: "boiler-1")
            let envelope = try Sealer(algorithm: .hmacSHA256, key: key).seal(command.payload(), topic: topic)
            service.handle(.message(MQTTMessage(topic: topic, payload: envelope, qos: 1)))
        }

        var lastResult: [String: Any] {
            published.withLock { $0.last }.flatMap { try? JSONSerialization.jsonObject(with: Data($0.payload)) as? [String: Any] } ?? [:]
        }
    }

    @Test func aCommandWhoseConnectionIsGoneIsRefusedAsUplinkDown() throws {
        let rig = try Rig()
        rig.service.handle(.connected(session: 1))
        try rig.send(id: "c-1")
        // Still the same connection: the bus may write.
        var requests = rig.queue.takeAll()
        #expect(requests.count == 1)
        #expect(requests.first?.preflight() == nil)

        try rig.send(id: "c-2")
        rig.service.handle(.disconnected(session: 1, reason: "broker gone"))
        rig.service.handle(.connected(session: 2))  // back, but the command came on session 1
        requests = rig.queue.takeAll()
        let veto = try #require(requests.first?.preflight())
        #expect((veto as? CommandRefusal)?.reason == .uplinkDown)
        requests[0].complete(.failure(.vetoed(veto)))
        #expect(rig.lastResult["id"] as? String == "c-2")
        #expect(rig.lastResult["reason"] as? String == "uplink_down")
    }

    @Test func aCommandThatWaitedPastMaxAgeIsRefusedAsTooOld() throws {
        let rig = try Rig()
        rig.service.handle(.connected(session: 1))
        try rig.send(id: "c-1")
        rig.clock.withLock { $0 += 11 }  // max_age 10 s passes while it waits for the bus
        let requests = rig.queue.takeAll()
        let veto = try #require(requests.first?.preflight())
        #expect((veto as? CommandRefusal)?.reason == .tooOld)
    }
}
