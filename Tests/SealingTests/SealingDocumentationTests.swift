// docs/SEALING.md's worked example is what the code produces and opens.
import Foundation
@testable import Sealing
import Testing

@Suite struct SealingDocumentationTests {
    /// The document, found from this file's place in the repository.
    static func document() throws -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        return try String(contentsOf: root.appendingPathComponent("docs/SEALING.md"), encoding: .utf8)
    }

    /// The text after `label` up to the end of its line, without leading spaces.
    static func value(_ label: String, in document: String) throws -> String {
        let line = try #require(document.split(separator: "\n").first { $0.hasPrefix(label) }, "no '\(label)' line")
        return String(line.dropFirst(label.count).drop { $0 == " " })
    }

    /// The envelope line starting with `{"v":1,"alg":"<alg>"`.
    static func envelope(_ algorithm: SealAlgorithm, in document: String) throws -> String {
        let prefix = #"{"v":1,"alg":""# + algorithm.rawValue + #"","kid":"k1""#
        return String(try #require(document.split(separator: "\n").first { $0.hasPrefix(prefix) }, "no \(algorithm) example"))
    }

    /// The decoded base64 field `name` of an envelope.
    static func field(_ name: String, of envelope: [UInt8]) throws -> [UInt8] {
        let object = try #require(try JSONSerialization.jsonObject(with: Data(envelope)) as? [String: Any])
        let text = try #require(object[name] as? String)
        return try #require(Base64.decode(Array(text.utf8)))
    }

    @Test func theWorkedExampleIsRight() throws {
        let document = try Self.document()
        let keyHex = try Self.value("key (hex):", in: document)
        let keyBytes = try #require(Hex.decode(Array(keyHex.utf8)))
        #expect(try Self.value("key (base64):", in: document) == Data(keyBytes).base64EncodedString())
        let key = try SealingKey(id: try Self.value("key id:", in: document), bytes: keyBytes)
        let topic = try Self.value("topic:", in: document)
        let payload = Array(try Self.value("payload:", in: document).utf8)
        let nonce = try #require(Hex.decode(Array(try Self.value("iv (hex):", in: document).utf8)))
        #expect(document.contains("the payload is the \(payload.count) bytes"), "the stated payload length")

        let gcm = try Sealer(algorithm: .aes256GCM, key: key).seal(payload, topic: topic, nonce: nonce)
        #expect(String(decoding: gcm, as: UTF8.self) == (try Self.envelope(.aes256GCM, in: document)))
        let ct = try Self.field("ct", of: gcm)
        let tag = Array(ct.suffix(16))
        #expect(document.contains("`\(tag.map { String(format: "%02x", $0) }.joined())`"), "the stated tag")

        let hs = try Sealer(algorithm: .hmacSHA256, key: key).seal(payload, topic: topic)
        #expect(String(decoding: hs, as: UTF8.self) == (try Self.envelope(.hmacSHA256, in: document)))
        let signature = try Self.field("sig", of: hs)
        #expect(document.contains("`\(signature.map { String(format: "%02x", $0) }.joined())`"), "the stated signature")

        let opener = try Opener(keys: [key])
        for example in [try Self.envelope(.aes256GCM, in: document), try Self.envelope(.hmacSHA256, in: document)] {
            #expect(try opener.open(Array(example.utf8), topic: topic) == payload)
        }
    }
}
