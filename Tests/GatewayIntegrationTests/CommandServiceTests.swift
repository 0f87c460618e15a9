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
import SparkplugB
import SwiftProtobuf
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

    /// The Sparkplug channel: the service takes DCMD only (NCMD stays the loop's), checks
    /// it with the JSON commands' validator, makes the same last check on the bus thread,
    /// hands the read-back values on (the DDATA), and counts like JSON commands.
    @Test func aSparkplugDCMDTakesTheSamePathAndAnswersWithTheReadBack() throws {
        var setpoint = TagConfiguration(name: "setpoint", table: .holding, address: 40, type: .uint16)
        setpoint.writable = true
        let level = TagConfiguration(name: "level", table: .holding, address: 41, type: .uint16)
        let device = DeviceConfiguration(name: "boiler-1", transport: .tcp(host: "127.0.0.1", port: 1), tags: [setpoint, level])
        let node = SparkplugNode(topics: SparkplugTopics(group: "g", node: "gw-01"), devices: [device], commands: true)
        let queue = BusWriteQueue()
        let counters = CommandCounters()
        let readBacks = Locked<[(device: String, tag: String, value: Result<TagValue, TagError>)]>([])
        let published = Locked<[MQTTMessage]>([])
        let service = try CommandService(
            identity: GatewayIdentity(id: "gw-01"), settings: CommandSettings(enabled: true, sparkplugUnsigned: true),
            devices: [device], queues: ["boiler-1": queue],
            uplink: .init(publish: { message in published.withLock { $0.append(message) } }, subscribe: { _ in }),
            counters: counters, logger: Logger(label: "test"),
            channel: .sparkplug(node: node, readBack: { device, values in
                readBacks.withLock { $0 += values.map { (device, $0.tag, $0.value) } }
            }))
        func dcmd(_ tag: String, _ value: UInt32) throws -> MQTTEvent {
            var metric = SparkplugMetric()
            metric.name = tag
            metric.intValue = value
            var payload = SparkplugPayload()
            payload.metrics = [metric]
            return .message(MQTTMessage(topic: node.topics.dcmd(device: "boiler-1"), payload: try payload.serializedBytes(), qos: 1))
        }
        #expect(service.handle(.connected(session: 1)) == false)
        #expect(service.handle(.message(MQTTMessage(topic: node.topics.ncmd, payload: [], qos: 1))) == false, "NCMD is the loop's")

        #expect(service.handle(try dcmd("setpoint", 5)) == true)
        var requests = queue.takeAll()
        #expect(requests.map(\.writes) == [[TagWrite(tag: setpoint, payload: .registers([5]))]])
        #expect(requests.first?.preflight() == nil)
        requests[0].complete(.success([TagWriteResult(write: requests[0].writes[0], outcome: .written(readBack: .success(.integer(5))))]))
        let readBack = readBacks.withLock { $0 }
        #expect(readBack.count == 1 && readBack.first?.device == "boiler-1" && readBack.first?.tag == "setpoint")
        #expect(try readBack.first?.value.get() == .integer(5))

        // Not writable: refused by the shared validator, nothing queued.
        service.handle(try dcmd("level", 1))
        #expect(queue.takeAll().isEmpty)

        // The connection it came on is gone before the bus got to it: uplink_down.
        service.handle(try dcmd("setpoint", 6))
        service.handle(.disconnected(session: 1, reason: "broker gone"))
        service.handle(.connected(session: 2))
        requests = queue.takeAll()
        let veto = try #require(requests.first?.preflight())
        #expect((veto as? CommandRefusal)?.reason == .uplinkDown)
        requests[0].complete(.failure(.vetoed(veto)))

        #expect(readBacks.withLock { $0.count } == 1, "a refusal has no read-back")
        #expect(published.withLock { $0 }.isEmpty, "no JSON result topic with Sparkplug")
        #expect(counters.snapshot == CommandCounters.Snapshot(received: 3, executed: 1, refused: 2, failed: 0))
    }
}
