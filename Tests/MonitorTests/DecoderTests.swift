import Foundation
import Sealing
import Testing
@testable import Monitor

@Suite struct FleetMessageDecoderTests {
    let decoder = FleetMessageDecoder(topicPrefix: "plant/edge", maxPayloadBytes: 4096)

    func decode(_ topic: String, _ json: String, retained: Bool = false) -> [FleetEvent] {
        decoder.decode(topic: topic, payload: Array(json.utf8), retained: retained)
    }

    @Test func statusBirthWillShutdown() {
        #expect(decode("plant/edge/gw-01/status",
                       #"{"state":"online","session":3,"stats_interval_ms":10000,"previous_boot":11,"previous_boot_last_seq":4711,"gateway":"gw-01","boot":12,"ts":"2026-11-24T02:00:00.000Z"}"#,
                       retained: true)
                == [.status(gateway: "gw-01", GatewayStatus(kind: .birth, boot: 12, session: 3, statsIntervalMs: 10000,
                                                            previousBoot: 11, previousBootLastSeq: 4711, retained: true))])
        #expect(decode("plant/edge/gw-01/status", #"{"state":"offline","reason":"connection lost","gateway":"gw-01","boot":12,"session":3,"connected_at":"2026-11-24T01:59:00.000Z"}"#)
                == [.status(gateway: "gw-01", GatewayStatus(kind: .will, boot: 12, session: 3))])
        #expect(decode("plant/edge/gw-01/status", #"{"state":"offline","reason":"shutdown","gateway":"gw-01","boot":12}"#)
                == [.status(gateway: "gw-01", GatewayStatus(kind: .shutdown, boot: 12, session: nil))])
    }

    @Test func statsGapsDataAndDevices() {
        #expect(decode("plant/edge/gw-01/stats",
                       #"{"gateway":"gw-01","boot":12,"ts":"x","buffered_messages":5,"buffered_bytes":900,"oldest_age_ms":null,"dropped":0,"polls_failed":2,"seq_committed":40}"#)
                == [.stats(gateway: "gw-01", GatewayStats(boot: 12, bufferedMessages: 5, bufferedBytes: 900, oldestAgeMs: nil,
                                                          dropped: 0, pollsFailed: 2, seqCommitted: 40))])
        #expect(decode("plant/edge/gw-01/gaps", #"{"gateway":"gw-01","boot":12,"first_seq":40,"last_seq":47,"count":8,"reason":"outbox full","ts":"x"}"#)
                == [.gap(gateway: "gw-01", GapRecord(boot: 12, first: 40, last: 47, reason: "outbox full"))])
        #expect(decode("plant/edge/gw-01/boiler-1/data", #"{"gateway":"gw-01","device":"boiler-1","ts":"x","boot":12,"seq":4711,"values":{},"errors":{}}"#)
                == [.data(gateway: "gw-01", device: "boiler-1", boot: 12, seq: 4711)])
        #expect(decode("plant/edge/gw-01/boiler-1/status", #"{"state":"offline","error":"timeout","gateway":"gw-01","boot":12}"#)
                == [.deviceStatus(gateway: "gw-01", device: "boiler-1", online: false, error: "timeout")])
    }

    @Test(arguments: [
        ("plant/edge/gw-01/status", "not json", IgnoredReason.notJSON),
        ("plant/edge/gw-01/status", #"{"state":"online"}"#, .missingField),
        ("plant/edge/gw-01/boiler-1/data", #"{"gateway":"gw-01","boot":1}"#, .missingField),
        ("plant/edge/gw-01/boiler-1/data", #"{"gateway":"gw-02","boot":1,"seq":2}"#, .gatewayMismatch),
        ("plant/edge/gw-01/boiler-1/meta/x", #"{}"#, .unknownTopic),
        ("other/gw-01/status", #"{}"#, .unknownTopic),
        ("plant/edge/gw-01/gaps", #"{"boot":1,"first_seq":9,"last_seq":3}"#, .missingField),
        ("plant/edge/gw-01/boiler-1/data", #"{"v":1,"alg":"XX","kid":"k1"}"#, .badEnvelope),
    ])
    func badInputIsIgnoredWithAReason(topic: String, payload: String, reason: IgnoredReason) {
        let events = decode(topic, payload)
        guard case let .ignored(found, _, _)? = events.first else {
            Issue.record("expected ignored(\(reason)), got \(events)")
            return
        }
        #expect(found == reason)
    }

    @Test func hugePayloadsAreIgnored() {
        let events = decoder.decode(topic: "plant/edge/gw-01/stats", payload: Array(repeating: 0x20, count: 5000))
        guard case .ignored(.tooLarge, _, _)? = events.first else { Issue.record("got \(events)"); return }
    }

    // MARK: sealed

    let key = try! SealingKey(id: "k1", bytes: Array(0..<32))
    let otherKey = try! SealingKey(id: "k2", bytes: Array(repeating: 7, count: 32))
    let topic = "plant/edge/gw-01/boiler-1/data"
    let plain = Array(#"{"gateway":"gw-01","device":"boiler-1","ts":"x","boot":3,"seq":9,"values":{},"errors":{}}"#.utf8)

    @Test func sealedDataOpensWithTheKey() throws {
        let sealed = try Sealer(algorithm: .aes256GCM, key: key).seal(plain, topic: topic)
        let withKey = FleetMessageDecoder(topicPrefix: "plant/edge", opener: try Opener(keys: [key]))
        #expect(withKey.decode(topic: topic, payload: sealed)
                == [.sealOpened(gateway: "gw-01", keyID: "k1"), .data(gateway: "gw-01", device: "boiler-1", boot: 3, seq: 9)])
    }

    @Test func aTamperedOrWronglyKeyedMessageIsASealFailure() throws {
        var sealed = try Sealer(algorithm: .aes256GCM, key: key).seal(plain, topic: topic)
        // Flip one base64 character of the ciphertext (it stays valid base64).
        let marker = Array(#""ct":""#.utf8)
        let start = (0...(sealed.count - marker.count)).first { Array(sealed[$0..<($0 + marker.count)]) == marker }!
        let offset = start + marker.count + 2
        sealed[offset] = sealed[offset] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        let withKey = FleetMessageDecoder(topicPrefix: "plant/edge", opener: try Opener(keys: [key]))
        guard case let .sealFailure("gw-01", "k1", reason)? = withKey.decode(topic: topic, payload: sealed).first else {
            Issue.record("a tampered message must fail"); return
        }
        #expect(reason.contains("bad tag"))
        let otherSealed = try Sealer(algorithm: .hmacSHA256, key: otherKey).seal(plain, topic: topic)
        guard case .sealFailure("gw-01", "k2", _)? = withKey.decode(topic: topic, payload: otherSealed).first else {
            Issue.record("a message sealed with another key must fail"); return
        }
    }

    @Test func withoutKeysSignedIsReadableAndEncryptedIsUnknown() throws {
        let signed = try Sealer(algorithm: .hmacSHA256, key: key).seal(plain, topic: topic)
        #expect(decoder.decode(topic: topic, payload: signed) == [.data(gateway: "gw-01", device: "boiler-1", boot: 3, seq: 9)])
        let encrypted = try Sealer(algorithm: .aes256GCM, key: key).seal(plain, topic: topic)
        #expect(decoder.decode(topic: topic, payload: encrypted) == [.unreadableSealed(gateway: "gw-01", keyID: "k1")])
    }
}
