// docs/COMMANDS.md's worked example is what the gateway's code and the documented
// Python client produce, and what the gateway accepts as a command.
import Foundation
@testable import Gateway
import Modbus
import Sealing
import Testing
import TestSupport

@Suite struct CommandDocumentationTests {
    static func document() throws -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        return try String(contentsOf: root.appendingPathComponent("docs/COMMANDS.md"), encoding: .utf8)
    }

    static func value(_ label: String, in document: String) throws -> String {
        let line = try #require(document.split(separator: "\n").first { $0.hasPrefix(label) }, "no '\(label)' line")
        return String(line.dropFirst(label.count).drop { $0 == " " })
    }

    static func envelope(_ alg: String, in document: String) throws -> String {
        let prefix = #"{"v":1,"alg":""# + alg + #"","kid":"ops1""#
        return String(try #require(document.split(separator: "\n").first { $0.hasPrefix(prefix) }, "no \(alg) example"))
    }

    static func bytes(hex: String) -> [UInt8] {
        stride(from: 0, to: hex.count, by: 2).map {
            UInt8(hex[hex.index(hex.startIndex, offsetBy: $0)..<hex.index(hex.startIndex, offsetBy: $0 + 2)], radix: 16)!
        }
    }

    @Test func theWorkedExampleIsWhatTheGatewayBuildsAndOpens() throws {
        let document = try Self.document()
        let key = try SealingKey(id: try Self.value("key id:", in: document),
                                 bytes: Self.bytes(hex: try Self.value("key (hex):", in: document)))
        let topic = try Self.value("topic:", in: document)
        let text = try Self.value("command:", in: document)
        #expect(document.contains("the command is the \(text.utf8.count) bytes"))
        // The gateway's own encoder gives the same command bytes.
        let (_, parsed) = CommandMessage.parse(Array(text.utf8))
        let command = try parsed.get()
        #expect(command.id == "c-0001" && command.device == "boiler-1" && command.values.count == 1)
        #expect(String(decoding: command.payload(), as: UTF8.self) == text)
        let iv = Self.bytes(hex: try Self.value("iv (hex):", in: document))
        let hs = try Sealer(algorithm: .hmacSHA256, key: key).seal(Array(text.utf8), topic: topic)
        #expect(String(decoding: hs, as: UTF8.self) == (try Self.envelope("HS256", in: document)))
        let gcm = try Sealer(algorithm: .aes256GCM, key: key).seal(Array(text.utf8), topic: topic, nonce: iv)
        #expect(String(decoding: gcm, as: UTF8.self) == (try Self.envelope("A256GCM", in: document)))
        // The float32 registers stated for 72.5.
        #expect(document.contains("`[17041, 0]`"))
        #expect(RegisterEncoding.words(bits: UInt64(Float(72.5).bitPattern), type: .float32, order: .abcd) == [17041, 0])
    }

    @Test func theDocumentedPythonClientMakesTheWorkedExample() async throws {
        let document = try Self.document()
        let directory = try TemporaryDirectory("cmd-doc")
        defer { directory.remove() }
        let client = try await PythonCommandClient(directory: directory)
        for (alg, extra) in [("HS256", [String: Any]()), ("A256GCM", ["iv_hex": try Self.value("iv (hex):", in: document)])] {
            var request: [String: Any] = [
                "key_hex": try Self.value("key (hex):", in: document), "kid": "ops1", "gateway": "gw-01",
                "device": "boiler-1", "set": ["setpoint": 72.5], "command_id": "c-0001",
                "issued": "2026-11-24T01:00:00+00:00", "nonce": "AAECAwQFBgcICQoLDA0ODw==", "alg": alg,
            ]
            for (key, value) in extra { request[key] = value }
            let (topic, envelope) = try await client.envelope(request)
            #expect(topic == (try Self.value("topic:", in: document)))
            #expect(envelope == (try Self.envelope(alg, in: document)), "\(alg)")
        }
    }
}
