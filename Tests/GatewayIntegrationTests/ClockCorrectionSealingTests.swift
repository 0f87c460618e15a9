// Sealed payloads whose `ts` is corrected at publish time: opened, corrected and sealed
// again in the same envelope, which the gateway's opener and Python's `cryptography`
// (an independent implementation, as in docs/SEALING.md) both open.
import Foundation
@testable import Gateway
import GatewayClock
import Modbus
import Outbox
import Sealing
import Testing
import TestSupport

@Suite struct ClockCorrectionSealingTests {
    static let topic = "edge/gw-01/boiler-1/data"
    static let key = try! SealingKey(id: "k1", bytes: Array(0..<32))

    /// A poll measured unsynchronised (boottime 40 s, kernel boot "a"), sealed as the ingest commits it.
    static func committed(_ sealer: Sealer) throws -> (OutboxMessage, plain: [UInt8]) {
        let reading = ClockReading(wall: Date(timeIntervalSince1970: 1_000_000), boottime: 40_000_000_000, bootID: "a",
                                   sync: .unsynchronised)
        let poll = DevicePoll(device: "boiler-1", clock: reading,
                              readings: [.init(tag: "temperature", value: .success(.number(71.5)))])
        let plain = MessageEncoding.dataMessage(gateway: "gw-01", poll: poll, boot: 12, seq: 4711)
        let sealed = try sealer.seal(plain, topic: topic)
        return (OutboxMessage(id: 1, boot: 12, seq: 4711, topic: topic, qos: 1, payload: sealed, createdAt: Date(),
                              measured: MeasuredAt(boottime: reading.boottime, kernelBootID: "a", synchronised: false)),
                plain)
    }

    /// The corrector after NTP answered: wall − boottime = 1_795_000_000 s.
    static func synchronisedCorrector() -> TimestampCorrector {
        var corrector = TimestampCorrector()
        _ = corrector.observe(ClockReading(wall: Date(timeIntervalSince1970: 1_795_000_100), boottime: 100_000_000_000,
                                           bootID: "a", sync: .synchronised))
        return corrector
    }

    @Test(arguments: [SealAlgorithm.aes256GCM, .hmacSHA256])
    func aCorrectedSealedPayloadIsResealedInTheSameEnvelope(algorithm: SealAlgorithm) async throws {
        let sealer = Sealer(algorithm: algorithm, key: Self.key)
        let (message, plain) = try Self.committed(sealer)
        var corrector = Self.synchronisedCorrector()
        let published = corrector.payload(for: message, sealer: sealer)
        #expect(published != message.payload)
        #expect(corrector.corrected == 1)
        let opened = try Opener(keys: [Self.key]).open(published, topic: Self.topic)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(opened)) as? [String: Any])
        #expect(object["ts"] as? String == "2026-11-18T11:07:20.000Z", "\(object)")
        #expect(object["ts_source"] as? String == "corrected")
        #expect(opened == MessageEncoding.correctingTimestamp(plain, to: Date(timeIntervalSince1970: 1_795_000_040)))
        #expect(throws: SealingError.self, "still bound to its topic") {
            try Opener(keys: [Self.key]).open(published, topic: "edge/gw-01/other/data")
        }
        let envelope = try #require(try JSONSerialization.jsonObject(with: Data(published)) as? [String: Any])
        #expect(Set(envelope.keys) == (algorithm == .aes256GCM ? ["v", "alg", "kid", "iv", "ct"] : ["v", "alg", "kid", "msg", "sig"]))

        // Python's cryptography opens it with the documented consumer.
        let directory = try TemporaryDirectory("reseal")
        defer { directory.remove() }
        try Data(published).write(to: URL(fileURLWithPath: directory.file("sealed.json")))
        guard let python = try await Self.pythonWithCryptography(in: directory) else {
            Issue.record("Python's cryptography package is missing, so the re-sealed envelope cannot be cross-checked: run `make deps` (Debian package python3-cryptography)")
            return
        }
        let script = """
        import base64, hashlib, hmac, json
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        key = bytes(range(32))
        topic = "\(Self.topic)".encode()
        e = json.load(open("\(directory.file("sealed.json"))"))
        if e["alg"] == "A256GCM":
            plain = AESGCM(key).decrypt(base64.b64decode(e["iv"]), base64.b64decode(e["ct"]), topic)
        else:
            msg = base64.b64decode(e["msg"])
            mac = hmac.new(key, topic + b"\\0" + msg, hashlib.sha256).digest()
            assert hmac.compare_digest(mac, base64.b64decode(e["sig"])), "bad signature"
            plain = msg
        print(plain.decode())
        """
        let child = try ChildProcess(python, ["-c", script], log: directory.file("python.log"))
        #expect(try await child.waitForExit(timeout: .seconds(30)) == 0, "\(child.output)")
        #expect(child.output.trimmingCharacters(in: .whitespacesAndNewlines) == String(decoding: opened, as: UTF8.self))
    }

    /// A row sealed with a key no longer configured cannot be re-sealed: it goes out as committed.
    @Test func aRowSealedWithARetiredKeyGoesOutUnchanged() throws {
        let retired = Sealer(algorithm: .aes256GCM, key: try SealingKey(id: "k0", bytes: Array(repeating: 7, count: 32)))
        let (message, _) = try Self.committed(retired)
        var corrector = Self.synchronisedCorrector()
        #expect(corrector.payload(for: message, sealer: Sealer(algorithm: .aes256GCM, key: Self.key)) == message.payload)
        #expect(corrector.corrected == 0)
    }

    static func pythonWithCryptography(in directory: TemporaryDirectory) async throws -> String? {
        for python in ["/usr/bin/python3", "/usr/local/bin/python3"] where FileManager.default.isExecutableFile(atPath: python) {
            let child = try ChildProcess(python, ["-c", "import cryptography.hazmat.primitives.ciphers.aead"],
                                         log: directory.file("probe.log"))
            if try await child.waitForExit(timeout: .seconds(30)) == 0 { return python }
        }
        return nil
    }
}
