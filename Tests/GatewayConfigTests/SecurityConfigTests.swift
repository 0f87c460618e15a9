// mqtt.tls, the MQTT credentials and payload: in gateway.yaml, with real files.
import Foundation
import Sealing
import Testing
import TestSupport
@testable import GatewayConfig

/// A directory of files the configuration refers to, removed at deinit.
private final class Files {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "security-config-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Writes `text` to `name` with `mode` and returns its path.
    @discardableResult
    func write(_ name: String, _ text: String, mode: Int = 0o600) throws -> String {
        let file = path + "/" + name
        try text.write(toFile: file, atomically: false, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: file)
        return file
    }
}

private func document(mqtt: String, payload: String = "") -> String {
    """
    gateway: { id: gw-01 }
    mqtt:
      host: broker.example
    \(mqtt.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
    \(payload)
    devices:
      - name: d
        tcp: { host: 127.0.0.1 }
        tags: [{ name: t, table: input, address: 1, type: int16 }]
    """
}

@Suite struct SecurityConfigTests {
    @Test func tlsWithCAClientCertificateAndEncryptedKey() async throws {
        let files = try Files()
        let pki = try await TestCertificates.make(in: files.path)
        let ca = pki.caCertificate
        let cert = pki.clientCertificate
        let key = pki.clientEncryptedKey
        let passphrase = try files.write("client-key.pass", TestCertificates.passphrase + "\n")
        let config = try ConfigurationLoader.parse(yaml: document(mqtt: """
        tls:
          ca_file: \(ca)
          cert_file: \(cert)
          key_file: \(key)
          key_password_file: \(passphrase)
          min_version: tls1.3
          ciphers: ECDHE+AESGCM
          alpn: mqtt
        """))
        let tls = try #require(config.mqtt.tls)
        #expect(tls.trust == .caFile(ca))
        #expect(tls.certFile == cert && tls.keyFile == key)
        #expect(tls.keyPassword?.value == TestCertificates.passphrase, "the trailing newline is not part of the passphrase")
        #expect(tls.minimumVersion == .tls13 && tls.ciphers == "ECDHE+AESGCM" && tls.alpn == "mqtt")
        #expect(!tls.insecureSkipVerify)
        #expect(config.mqtt.port == 8883, "TLS without port: means 8883")
        #expect(config.warnings.isEmpty)
        #expect("\(tls.keyPassword!)" == "<redacted>")
    }

    @Test func tlsTrueUsesTheSystemStoreAndVerifies() throws {
        let config = try ConfigurationLoader.parse(yaml: document(mqtt: "port: 9999\ntls: true"))
        #expect(config.mqtt.tls == MQTTTLSSettings(trust: .systemStore, minimumVersion: .tls12))
        #expect(config.mqtt.port == 9999)
        #expect(try ConfigurationLoader.parse(yaml: document(mqtt: "tls: false")).mqtt.tls == nil)
    }

    @Test func insecureSkipVerifyIsAcceptedWithAWarning() throws {
        let config = try ConfigurationLoader.parse(yaml: document(mqtt: "tls: { insecure_skip_verify: true }"))
        #expect(config.mqtt.tls?.insecureSkipVerify == true)
        #expect(config.warnings.map(\.path) == ["mqtt.tls.insecure_skip_verify"])
    }

    @Test func missingCAFileAndHalfAClientCertificateAreReportedWithPaths() async throws {
        let files = try Files()
        let cert = try await TestCertificates.make(in: files.path).clientCertificate
        let problems = rejectedProblems(document(mqtt: """
        tls:
          ca_file: \(files.path)/nope.pem
          cert_file: \(cert)
          min_version: tls1.1
          verify: false
        """))
        let paths = Set(problems.map(\.path))
        #expect(paths == ["mqtt.tls.ca_file", "mqtt.tls.cert_file", "mqtt.tls.min_version", "mqtt.tls.verify"],
                "\(problems.map(\.description))")
        #expect(problems.first { $0.path == "mqtt.tls.cert_file" }?.hint.contains("key_file") == true)
    }

    @Test func secretFilesReadableByOthersAreRefusedWithTheFix() throws {
        let files = try Files()
        let cert = try files.write("client.pem", "x", mode: 0o644)
        let key = try files.write("client.key", "x", mode: 0o640)
        let password = try files.write("mqtt.pass", "pw", mode: 0o604)
        let problems = rejectedProblems(document(mqtt: """
        username: gw
        password_file: \(password)
        tls: { cert_file: \(cert), key_file: \(key) }
        """))
        let keyProblem = try #require(problems.first { $0.path == "mqtt.tls.key_file" }, "\(problems)")
        #expect(keyProblem.hint == "chmod 600 \(key)")
        #expect(keyProblem.message.contains("readable by other users"))
        let passwordProblem = try #require(problems.first { $0.path == "mqtt.password_file" }, "\(problems)")
        #expect(passwordProblem.hint == "chmod 600 \(password)")
        #expect(passwordProblem.line == 5, "placed at its line: \(passwordProblem)")
    }

    @Test func passwordFromFileEnvironmentOrInlineWithAWarning() throws {
        let files = try Files()
        let password = try files.write("mqtt.pass", "from-file\n")
        let fromFile = try ConfigurationLoader.parse(yaml: document(mqtt: "username: gw\npassword_file: \(password)\ntls: true"))
        #expect(fromFile.mqtt.username == "gw" && fromFile.mqtt.password?.value == "from-file")
        #expect(fromFile.mqtt.passwordSource == .file(password) && fromFile.warnings.isEmpty)

        setenv("EDGE_TEST_MQTT_PASSWORD", "from-env", 1)
        defer { unsetenv("EDGE_TEST_MQTT_PASSWORD") }
        let fromEnvironment = try ConfigurationLoader.parse(yaml: document(
            mqtt: "username: gw\npassword_env: EDGE_TEST_MQTT_PASSWORD\ntls: true"))
        #expect(fromEnvironment.mqtt.password?.value == "from-env")

        let inline = try ConfigurationLoader.parse(yaml: document(mqtt: "username: gw\npassword: hunter2\ntls: true"))
        #expect(inline.mqtt.password?.value == "hunter2")
        #expect(inline.warnings.map(\.path) == ["mqtt.password"])
        #expect(inline.warnings.first?.hint.contains("password_file") == true)

        let unset = rejectedProblems(document(mqtt: "username: gw\npassword_env: EDGE_TEST_NOT_SET_ANYWHERE"))
        #expect(unset.map(\.path) == ["mqtt.password_env"])
        let twice = rejectedProblems(document(mqtt: "username: gw\npassword: a\npassword_file: \(password)"))
        #expect(twice.count == 1 && twice[0].message.contains("more than one"), "\(twice)")
        let noUser = rejectedProblems(document(mqtt: "password_file: \(password)"))
        #expect(noUser.first?.hint.contains("username") == true, "\(noUser)")
    }

    @Test func passwordFilesGiveTheirFirstLineWithoutCRLF() async throws {
        let files = try Files()
        let pki = try await TestCertificates.make(in: files.path)
        // "\r\n" is one Character in Swift: the secret is cut on bytes.
        for (name, content) in [("crlf", "s3cret\r\n"), ("second-line", "s3cret\nsecond line\n"),
                                ("crlf-second-line", "s3cret\r\nold\r\n"), ("no-newline", "s3cret")] {
            let password = try files.write(name + ".pass", content)
            let config = try ConfigurationLoader.parse(yaml: document(mqtt: "username: gw\npassword_file: \(password)\ntls: true"))
            #expect(config.mqtt.password?.value == "s3cret", "\(name)")
            // The encrypted key opens with the first line of its passphrase file, whatever the line ends.
            let passphrase = try files.write(name + "-key.pass",
                                             content.replacingOccurrences(of: "s3cret", with: TestCertificates.passphrase))
            let tls = try ConfigurationLoader.parse(yaml: document(mqtt: """
            tls: { cert_file: \(pki.clientCertificate), key_file: \(pki.clientEncryptedKey), key_password_file: \(passphrase) }
            """)).mqtt.tls
            #expect(tls?.keyPassword?.value == TestCertificates.passphrase, "key_password_file \(name)")
        }
        // A CR inside the line is part of the password; only the line end goes.
        let inner = try files.write("inner.pass", "a\rb\r\n")
        #expect(try ConfigurationLoader.parse(yaml: document(mqtt: "username: gw\npassword_file: \(inner)"))
            .mqtt.password?.value == "a\rb")
        let blank = try files.write("blank.pass", "\r\nsecond\n")
        #expect(rejectedProblems(document(mqtt: "username: gw\npassword_file: \(blank)")).first?.message.contains("is empty") == true)
    }

    @Test func aMalformedKeyFileIsAProblemWithItsPathAndLine() throws {
        let files = try Files()
        let short = try files.write("short.key", "too short")
        let problems = rejectedProblems(document(mqtt: "", payload: """
        payload:
          seal: aes-256-gcm
          keys:
            - id: k1
              file: \(short)
        """))
        let found = try #require(problems.first, "\(problems)")
        #expect(problems.count == 1 && found.path == "payload.keys[0].file" && found.line == 9, "\(found)")
        #expect(found.message.contains("not a 32-byte key") && found.message.contains(short), "\(found)")
    }

    @Test func malformedOrMismatchedTLSFilesAreProblemsAtLoad() async throws {
        let files = try Files()
        let pki = try await TestCertificates.make(in: files.path)
        let notPEM = try files.write("not.pem", "not a certificate\n", mode: 0o644)
        let notKey = try files.write("not.key", "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
        let wrongPass = try files.write("wrong.pass", "not the passphrase\n")
        func problem(_ tls: String) -> ConfigProblem? {
            let problems = rejectedProblems(document(mqtt: "tls: \(tls)"))
            #expect(problems.count == 1, "\(problems)")
            return problems.first
        }
        let ca = problem("{ ca_file: \(notPEM) }")
        #expect(ca?.path == "mqtt.tls.ca_file" && ca?.message.contains("holds no PEM certificate") == true, "\(String(describing: ca))")
        let cert = problem("{ cert_file: \(notPEM), key_file: \(pki.clientKey) }")
        #expect(cert?.path == "mqtt.tls.cert_file" && cert?.line == 4, "\(String(describing: cert))")
        let key = problem("{ cert_file: \(pki.clientCertificate), key_file: \(notKey) }")
        #expect(key?.path == "mqtt.tls.key_file" && key?.message.contains("holds no PEM private key") == true, "\(String(describing: key))")
        let noPassphrase = problem("{ cert_file: \(pki.clientCertificate), key_file: \(pki.clientEncryptedKey) }")
        #expect(noPassphrase?.path == "mqtt.tls.key_file" && noPassphrase?.message.contains("encrypted") == true,
                "\(String(describing: noPassphrase))")
        let wrong = problem("{ cert_file: \(pki.clientCertificate), key_file: \(pki.clientEncryptedKey), key_password_file: \(wrongPass) }")
        #expect(wrong?.path == "mqtt.tls.key_password_file" && wrong?.message.contains("passphrase") == true,
                "\(String(describing: wrong))")
        let mismatch = problem("{ cert_file: \(pki.clientCertificate), key_file: \(pki.serverKey) }")
        #expect(mismatch?.path == "mqtt.tls.key_file" && mismatch?.message.contains("is not the key of cert_file") == true,
                "\(String(describing: mismatch))")
        // And the right files load.
        let good = try ConfigurationLoader.parse(yaml: document(mqtt: """
        tls: { ca_file: \(pki.caCertificate), cert_file: \(pki.clientCertificate), key_file: \(pki.clientKey) }
        """))
        #expect(good.mqtt.tls?.keyFile == pki.clientKey)
    }

    @Test func payloadSealingWithRotatingKeys() throws {
        let files = try Files()
        let k1 = try files.write("k1.key", String(repeating: "ab", count: 32))
        let k2 = try files.write("k2.key", String(repeating: "cd", count: 32))
        let config = try ConfigurationLoader.parse(yaml: document(mqtt: "", payload: """
        payload:
          seal: aes-256-gcm
          keys:
            - { id: k1, file: \(k1) }
            - { id: k2, file: \(k2) }
          seal_key: k2
        """))
        // The seal carries the key it seals with, read from its file.
        #expect(config.payload.seal == .sealed(.aes256GCM, key: try SealingKey(id: "k2", bytes: Array(repeating: 0xCD, count: 32))))
        #expect(config.payload.keys == [PayloadSettings.Key(id: "k1", file: k1), PayloadSettings.Key(id: "k2", file: k2)])

        let single = try ConfigurationLoader.parse(yaml: document(mqtt: "", payload: """
        payload: { seal: hmac-sha256, keys: [{ id: only, file: \(k1) }] }
        """))
        #expect(single.payload.seal == .sealed(.hmacSHA256, key: try SealingKey(id: "only", bytes: Array(repeating: 0xAB, count: 32))),
                "one key seals without naming it")
        #expect(try ConfigurationLoader.parse(yaml: document(mqtt: "")).payload == PayloadSettings())
    }

    @Test func payloadProblemsNameTheirPlace() throws {
        let files = try Files()
        let k1 = try files.write("k1.key", String(repeating: "ab", count: 32))
        let open = try files.write("open.key", "x", mode: 0o644)
        #expect(rejectedProblems(document(mqtt: "", payload: "payload: { seal: aes-256-gcm }")).map(\.path) == ["payload.keys"])
        #expect(rejectedProblems(document(mqtt: "", payload: "payload: { seal: aes256 }")).map(\.path) == ["payload.seal"])
        let problems = rejectedProblems(document(mqtt: "", payload: """
        payload:
          seal: hmac-sha256
          keys:
            - { id: k1, file: \(k1) }
            - { id: k1, file: \(k1) }
            - { id: "bad id", file: \(k1) }
            - { id: k3, file: \(open) }
            - { id: k4, file: \(files.path)/missing.key }
        """))
        #expect(problems.map(\.path) == ["payload.keys[1]", "payload.keys[2].id", "payload.keys[3].file", "payload.keys[4].file"],
                "\(problems.map(\.description))")
        #expect(problems[2].hint == "chmod 600 \(open)")
        let unknown = rejectedProblems(document(mqtt: "", payload: """
        payload: { seal: hmac-sha256, keys: [{ id: k1, file: \(k1) }], seal_key: k2 }
        """))
        #expect(unknown.map(\.path) == ["payload.seal_key"])
        #expect(unknown.first?.hint.contains("k1") == true)
    }
}
