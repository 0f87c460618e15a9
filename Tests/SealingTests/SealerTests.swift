// Sealing: round trips, known answers cross-checked with the openssl command line
// and Python's `cryptography`, tampering, nonces, key files, the CLI.
import Foundation
@testable import Sealing
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

private let topic = "edge/gw-01/boiler-1/data"
private let payload = Array(#"{"gateway":"gw-01","device":"boiler-1","seq":1,"values":{"t":71.5}}"#.utf8)

private func key(_ id: String = "k1", byte: UInt8 = 0) throws -> SealingKey {
    try SealingKey(id: id, bytes: (0..<32).map { UInt8($0) &+ byte })
}

private func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

private func envelope(_ bytes: [UInt8]) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
}

/// `envelope` with `field` replaced by `change` applied to its decoded bytes.
private func tampered(_ sealed: [UInt8], _ field: String, _ change: (inout [UInt8]) -> Void) throws -> [UInt8] {
    var object = try envelope(sealed)
    var bytes = try #require(Base64.decode(Array((object[field] as? String ?? "").utf8)))
    change(&bytes)
    object[field] = Base64.encode(bytes)
    return [UInt8](try JSONSerialization.data(withJSONObject: object))
}

/// Runs a tool to completion and returns its output (stdout and stderr).
private func run(_ tool: String, _ arguments: [String], in directory: TemporaryDirectory) async throws -> (Int32, String) {
    let child = try ChildProcess(tool, arguments, log: directory.file("tool-\(UUID().uuidString.prefix(6)).log"))
    let status = try await child.waitForExit(timeout: .seconds(30))
    return (status, child.output)
}

@Suite struct SealerTests {
    @Test(arguments: [SealAlgorithm.aes256GCM, .hmacSHA256], [0, 1, 200, 4096])
    func roundTrips(algorithm: SealAlgorithm, size: Int) throws {
        let plain = (0..<size).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let sealed = try Sealer(algorithm: algorithm, key: key()).seal(plain, topic: topic)
        #expect(try Opener(keys: [key("old", byte: 9), key()]).open(sealed, topic: topic) == plain)
    }

    @Test func envelopesHaveTheDocumentedShape() throws {
        let gcm = String(decoding: try Sealer(algorithm: .aes256GCM, key: key()).seal(payload, topic: topic), as: UTF8.self)
        #expect(gcm.wholeMatch(of: /\{"v":1,"alg":"A256GCM","kid":"k1","iv":"[A-Za-z0-9+\/]{16}","ct":"[A-Za-z0-9+\/=]+"\}/) != nil, "\(gcm)")
        let hs = String(decoding: try Sealer(algorithm: .hmacSHA256, key: key()).seal(payload, topic: topic), as: UTF8.self)
        #expect(hs.wholeMatch(of: /\{"v":1,"alg":"HS256","kid":"k1","msg":"[A-Za-z0-9+\/=]+","sig":"[A-Za-z0-9+\/]{43}="\}/) != nil, "\(hs)")
        // The GCM ciphertext is the payload's length plus the 16-byte tag.
        let ct = try #require(Base64.decode(Array((try envelope(Array(gcm.utf8))["ct"] as? String ?? "").utf8)))
        #expect(ct.count == payload.count + 16)
    }

    /// NIST GCM test cases 13, 14 and 16 (AES-256, 96-bit IV), from the GCM specification:
    /// empty plaintext, no AAD, and a 60-byte plaintext with 20 bytes of AAD.
    @Test(arguments: [
        (k: String(repeating: "0", count: 64), p: "", a: "", iv: String(repeating: "0", count: 24),
         c: "", t: "530f8afbc74536b9a963b4f1c4cb738b"),
        (k: String(repeating: "0", count: 64), p: String(repeating: "0", count: 32), a: "", iv: String(repeating: "0", count: 24),
         c: "cea7403d4d606b6e074ec5d3baf39d18", t: "d0d1c8a799996bf0265b98b5d48ab919"),
        (k: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
         p: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
         a: "feedfacedeadbeeffeedfacedeadbeefabaddad2", iv: "cafebabefacedbaddecaf888",
         c: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
         t: "76fc6ece0f4e1768cddf8853bb2d551b"),
    ])
    func nistGCMTestVector(vector: (k: String, p: String, a: String, iv: String, c: String, t: String)) throws {
        func bytes(_ text: String) -> [UInt8] { Hex.decode(Array(text.utf8))! }
        // The production path: the Sealer's keyed context, the one `seal` encrypts with.
        let sealer = Sealer(algorithm: .aes256GCM, key: try SealingKey(id: "nist", bytes: bytes(vector.k)))
        let sealed = try sealer.encryptGCM(bytes(vector.p), nonce: bytes(vector.iv), aad: bytes(vector.a))
        #expect(hex(sealed) == vector.c + vector.t)
        // Twice on the same context: a reused context starts clean for each message.
        #expect(hex(try sealer.encryptGCM(bytes(vector.p), nonce: bytes(vector.iv), aad: bytes(vector.a))) == vector.c + vector.t)
        #expect(try GCM.open(sealed, key: bytes(vector.k), nonce: bytes(vector.iv), aad: bytes(vector.a)) == bytes(vector.p))
    }

    /// The envelope `seal` writes carries exactly what the keyed context encrypts,
    /// with the topic as the AAD.
    @Test func sealedEnvelopeCarriesTheContextsCiphertext() throws {
        let sealer = Sealer(algorithm: .aes256GCM, key: try key())
        let nonce: [UInt8] = Array(0..<12)
        let sealed = try envelope(try sealer.seal(payload, topic: topic, nonce: nonce))
        #expect(Base64.decode(Array((sealed["iv"] as? String ?? "").utf8)) == nonce)
        #expect(Base64.decode(Array((sealed["ct"] as? String ?? "").utf8))
                == (try sealer.encryptGCM(payload, nonce: nonce, aad: Array(topic.utf8))))
    }

    @Test func hmacMatchesTheOpenSSLCommandLine() async throws {
        let openssl = try requireTool("openssl", package: "openssl")
        let directory = try TemporaryDirectory("hmac")
        defer { directory.remove() }
        let k = try key(byte: 0x40)
        let input = Array(topic.utf8) + [0] + payload
        try Data(input).write(to: URL(fileURLWithPath: directory.file("input")))
        let (status, output) = try await run(openssl, ["dgst", "-sha256", "-mac", "HMAC", "-macopt", "hexkey:\(hex(k.bytes))",
                                                      directory.file("input")], in: directory)
        #expect(status == 0, "\(output)")
        let expected = try #require(output.split(separator: "=").last?.trimmingCharacters(in: .whitespacesAndNewlines))
        let sealed = try envelope(try Sealer(algorithm: .hmacSHA256, key: k).seal(payload, topic: topic))
        let signature = try #require(Base64.decode(Array((sealed["sig"] as? String ?? "").utf8)))
        #expect(hex(signature) == expected)
        #expect(Base64.decode(Array((sealed["msg"] as? String ?? "").utf8)) == payload)
    }

    /// The Python interpreter with the `cryptography` package: Debian's
    /// `/usr/bin/python3` (where `make deps` installs python3-cryptography) first,
    /// then the `python3` on PATH. `nil` when none has it.
    static func pythonWithCryptography(in directory: TemporaryDirectory) async throws -> String? {
        var candidates = ["/usr/bin/python3"]
        if let onPath = try? requireTool("python3", package: "python3"), onPath != candidates[0] { candidates.append(onPath) }
        for python in candidates where FileManager.default.isExecutableFile(atPath: python) {
            if try await run(python, ["-c", "import cryptography.hazmat.primitives.ciphers.aead"], in: directory).0 == 0 {
                return python
            }
        }
        return nil
    }

    @Test func gcmMatchesPythonCryptography() async throws {
        let directory = try TemporaryDirectory("gcm")
        defer { directory.remove() }
        // A cross-check that cannot run is a failure, never a silent pass.
        guard let python = try await Self.pythonWithCryptography(in: directory) else {
            Issue.record("Python's cryptography package is missing, so AES-GCM cannot be cross-checked: run `make deps` (Debian package python3-cryptography)")
            return
        }
        let k = try key(byte: 0x11)
        let ours = try Sealer(algorithm: .aes256GCM, key: k).seal(payload, topic: topic)
        let fixedNonce: [UInt8] = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0xAA, 0xBB]
        let ourFixed = try Sealer(algorithm: .aes256GCM, key: k).seal(payload, topic: topic, nonce: fixedNonce)
        try Data(ours).write(to: URL(fileURLWithPath: directory.file("sealed.json")))
        let script = """
        import base64, json, sys
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        key = bytes.fromhex("\(hex(k.bytes))")
        topic = "\(topic)".encode()
        e = json.load(open("\(directory.file("sealed.json"))"))
        plain = AESGCM(key).decrypt(base64.b64decode(e["iv"]), base64.b64decode(e["ct"]), topic)
        print("plain=" + plain.hex())
        ct = AESGCM(key).encrypt(bytes.fromhex("\(hex(fixedNonce))"), plain, topic)
        print("fixed=" + base64.b64encode(ct).decode())
        """
        let (status, output) = try await run(python, ["-c", script], in: directory)
        #expect(status == 0, "\(output)")
        let lines = Dictionary(uniqueKeysWithValues: output.split(separator: "\n").compactMap { line -> (String, String)? in
            let parts = line.split(separator: "=", maxSplits: 1)
            return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
        })
        #expect(lines["plain"] == hex(payload), "Python opens what we sealed: \(output)")
        #expect(lines["fixed"] == (try envelope(ourFixed))["ct"] as? String, "same key, nonce, AAD: same bytes")
    }

    /// `make deps` provides the cross-check's Python package through apt: Debian's
    /// system Python refuses `pip install` (externally managed) or has no pip. The only
    /// pip allowed is that of the venvs the Makefile creates under `.build/`.
    @Test func makeDepsInstallsCryptographyWithAptNotPip() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let makefile = try String(contentsOf: root.appendingPathComponent("Makefile"), encoding: .utf8)
        let lines = makefile.split(separator: "\n")
        let start = try #require(lines.firstIndex { $0.hasPrefix("APT_PACKAGES") }, "no APT_PACKAGES in the Makefile")
        var packages: [Substring] = []
        for line in lines[start...] {
            packages += line.split(separator: " ").filter { !$0.contains("=") && $0 != "\\" && $0 != "APT_PACKAGES" }
            if !line.hasSuffix("\\") { break }
        }
        #expect(packages.contains("python3-cryptography"), "\(packages)")
        // pip only as the pip of a venv under .build/ (.build/venv, .build/venv-spb, …).
        let venvPip = try Regex(#"\.build/venv[-a-z]*/bin/(python -m pip|pip) "#)
        let pip = lines.filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("#") && !$0.contains("@#") && $0.contains("pip") }
            .filter { String($0).replacing(venvPip, with: "").contains("pip") }
        #expect(pip.isEmpty, "the Makefile runs pip: \(pip)")
    }

    @Test(arguments: [SealAlgorithm.aes256GCM, .hmacSHA256])
    func anyChangeIsRejected(algorithm: SealAlgorithm) throws {
        let opener = try Opener(keys: [key()])
        let sealed = try Sealer(algorithm: algorithm, key: key()).seal(payload, topic: topic)
        func rejection(_ message: [UInt8], topic: String = topic) -> SealingError.Kind? {
            do {
                _ = try opener.open(message, topic: topic)
                return nil
            } catch {
                return error.kind
            }
        }
        let body = algorithm == .aes256GCM ? "ct" : "msg"
        let tag = algorithm == .aes256GCM ? "ct" : "sig"
        #expect(rejection(try tampered(sealed, body) { $0[0] ^= 0x01 }) == .authenticationFailed, "a bit of the body")
        #expect(rejection(try tampered(sealed, tag) { $0[$0.count - 1] ^= 0x80 }) == .authenticationFailed, "a bit of the tag")
        if algorithm == .aes256GCM {
            #expect(rejection(try tampered(sealed, "iv") { $0[5] ^= 0x04 }) == .authenticationFailed, "a bit of the iv")
            #expect(rejection(try tampered(sealed, "iv") { $0.removeLast() }) == .badBase64, "a short iv")
        }
        #expect(rejection(sealed, topic: "edge/gw-01/boiler-2/data") == .authenticationFailed, "another topic")
        #expect(rejection(sealed, topic: String(topic.dropLast())) == .authenticationFailed, "a shorter topic")

        // A flipped bit in kid: unknown to the opener, or naming another key it has.
        var object = try envelope(sealed)
        object["kid"] = "k0"  // '1' ^ 0x01
        let otherKid = [UInt8](try JSONSerialization.data(withJSONObject: object))
        #expect(rejection(otherKid) == .unknownKeyID)
        let withK0 = try Opener(keys: [key(), key("k0", byte: 1)])
        #expect(throws: SealingError.self) { try withK0.open(otherKid, topic: topic) }
        do {
            _ = try withK0.open(otherKid, topic: topic)
        } catch {
            #expect(error.kind == .authenticationFailed)
        }

        object = try envelope(sealed)
        object[body] = "not base64!"
        #expect(rejection([UInt8](try JSONSerialization.data(withJSONObject: object))) == .badBase64)
        #expect(rejection(payload) == .malformedEnvelope, "a plain payload is not an envelope")
        #expect(rejection(Array("not json".utf8)) == .malformedEnvelope)
        object = try envelope(sealed)
        object["v"] = 2
        #expect(rejection([UInt8](try JSONSerialization.data(withJSONObject: object))) == .malformedEnvelope)
    }

    @Test func rejectionsSayWhatFailed() throws {
        let sealed = try Sealer(algorithm: .aes256GCM, key: key()).seal(payload, topic: topic)
        let wrongKey = try Opener(keys: [key("k2")])
        let right = try Opener(keys: [key()])
        do throws(SealingError) {
            _ = try wrongKey.open(sealed, topic: topic)
            Issue.record("opened with the wrong key id")
        } catch {
            #expect(error.message.contains("wrong key id") && error.message.contains("'k1'") && error.message.contains("'k2'"),
                    "\(error)")
        }
        do throws(SealingError) {
            _ = try right.open(sealed, topic: "elsewhere")
            Issue.record("opened for another topic")
        } catch {
            #expect(error.message.contains("bad tag") && error.message.contains("another topic"), "\(error)")
        }
    }

    @Test func twoMessagesNeverShareANonce() throws {
        let sealer = Sealer(algorithm: .aes256GCM, key: try key())
        var nonces = Set<String>()
        for _ in 0..<20_000 {
            nonces.insert(try envelope(try sealer.seal(payload, topic: topic))["iv"] as? String ?? "")
        }
        #expect(nonces.count == 20_000)
    }

    @Test func base64IsStrict() {
        #expect(Base64.decode(Array("AAECAw==".utf8)) == [0, 1, 2, 3])
        #expect(Base64.decode(Array("AAECAw=".utf8)) == nil)
        #expect(Base64.decode(Array("AAECAx==".utf8)) == nil, "non-zero bits under the padding")
        #expect(Base64.decode(Array("AA-C".utf8)) == nil, "URL-safe alphabet is not base64 here")
        for size in 0..<10 {
            let bytes = (0..<size).map { UInt8($0 * 37 & 0xFF) }
            #expect(Base64.decode(Array(Base64.encode(bytes).utf8)) == bytes)
            #expect(Base64.encode(bytes) == Data(bytes).base64EncodedString())
        }
    }
}

@Suite struct KeyFileTests {
    let directory: TemporaryDirectory

    init() throws { directory = try TemporaryDirectory("keys") }

    private func write(_ name: String, _ bytes: [UInt8], mode: mode_t = 0o600) throws -> String {
        let path = directory.file(name)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        chmod(path, mode)
        return path
    }

    private func loadError(_ path: String) -> String? {
        do {
            _ = try SealingKey.load(id: "k", file: path)
            return nil
        } catch {
            #expect(error.kind == .badKeyFile)
            return error.message
        }
    }

    @Test func rawHexAndBase64KeysLoadAlike() throws {
        let raw = (0..<32).map { UInt8($0 * 3) }
        let forms = [
            try write("raw.key", raw),
            try write("hex.key", Array((hex(raw) + "\n").utf8)),
            try write("HEX.key", Array(("  " + hex(raw).uppercased() + "\r\n").utf8)),
            try write("b64.key", Array((Data(raw).base64EncodedString() + "\n").utf8)),
        ]
        defer { directory.remove() }
        for path in forms {
            #expect(try SealingKey.load(id: "k", file: path).bytes == raw, "\(path)")
        }
    }

    @Test func badKeyFilesAreRefusedWithTheReason() throws {
        defer { directory.remove() }
        let short = try write("short.key", Array(repeating: 1, count: 31))
        #expect(loadError(short)?.contains("not a 32-byte key") == true)
        let longHex = try write("long.key", Array(String(repeating: "ab", count: 33).utf8))
        #expect(loadError(longHex)?.contains("64 hex digits") == true)
        let open = try write("open.key", Array(repeating: 1, count: 32), mode: 0o644)
        #expect(loadError(open)?.contains("chmod 600 \(open)") == true, "\(loadError(open) ?? "")")
        let groupReadable = try write("group.key", Array(repeating: 1, count: 32), mode: 0o640)
        #expect(loadError(groupReadable)?.contains("readable by other users") == true)
        #expect(loadError(directory.file("missing.key"))?.contains("No such file") == true)
        #expect(loadError(directory.path)?.contains("not a regular file") == true)
    }

    @Test func keygenWritesAPrivateKeyAndNeverOverwrites() throws {
        defer { directory.remove() }
        let path = directory.file("new.key")
        let generated = try SealingKey.generate(id: "new", file: path)
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect(try SealingKey.load(id: "new", file: path).bytes == generated.bytes)
        #expect(throws: SealingError.self) { try SealingKey.generate(id: "new", file: path) }
        #expect(try SealingKey.load(id: "new", file: path).bytes == generated.bytes, "the key is unchanged")
        #expect(throws: SealingError.self) { try SealingKey(id: "bad id", bytes: generated.bytes) }
    }
}

@Suite struct OpenCommandTests {
    @Test func openPrintsThePlainPayloadOrAClearRejection() async throws {
        let directory = try TemporaryDirectory("open-cli")
        defer { directory.remove() }
        let binary = try builtProduct("edge-gateway")
        let keyPath = directory.file("site.key")
        let siteKey = try SealingKey.generate(id: "site", file: keyPath)
        let sealed = try Sealer(algorithm: .aes256GCM, key: siteKey).seal(payload, topic: topic)
        try Data(sealed).write(to: URL(fileURLWithPath: directory.file("message")))
        func open(_ arguments: String) async throws -> (Int32, String) {
            try await run("/bin/sh", ["-c", "'\(binary)' open \(arguments) < '\(directory.file("message"))'"], in: directory)
        }
        let (status, output) = try await open("--key \(keyPath) --topic \(topic)")
        #expect(status == 0 && output == String(decoding: payload, as: UTF8.self), "\(output)")
        let otherKey = directory.file("other.key")
        _ = try SealingKey.generate(id: "other", file: otherKey)
        let (wrongKeyStatus, wrongKey) = try await open("--key \(otherKey) --topic \(topic)")
        #expect(wrongKeyStatus == 65 && wrongKey.contains("wrong key id"), "\(wrongKey)")
        let (wrongTopicStatus, wrongTopic) = try await open("--key site=\(keyPath) --topic other/topic")
        #expect(wrongTopicStatus == 65 && wrongTopic.contains("bad tag"), "\(wrongTopic)")
    }
}
