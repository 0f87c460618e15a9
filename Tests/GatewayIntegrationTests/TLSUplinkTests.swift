// TLS and mutual TLS against a real mosquitto with certificates made by openssl:
// the right setup connects and delivers; each wrong one is refused with its own
// message, and the gateway keeps its data buffered until a correct setup connects.
import Foundation
import Logging
import Modbus
import MQTTUplink
import Outbox
import Sealing
import Synchronization
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A mosquitto with a plain listener (for the test subscriber), a TLS listener
/// for `localhost`, one whose certificate names a wrong host, a mutual-TLS
/// listener, and a TLS listener that wants a user name and password.
final class TLSBroker: @unchecked Sendable {
    let directory: TemporaryDirectory
    let certificates: TestCertificates
    let plainPort = freeLoopbackPort()
    let tlsPort = freeLoopbackPort()
    let wrongHostPort = freeLoopbackPort()
    let mutualPort = freeLoopbackPort()
    let passwordPort = freeLoopbackPort()
    let broker: MosquittoBroker
    static let username = "gw-user"
    static let password = "s3cret-pw"

    init() async throws {
        directory = try TemporaryDirectory("tls")
        certificates = try await TestCertificates.make(in: directory.path)
        let passwd = try requireTool("mosquitto_passwd", package: "mosquitto")
        let passwordFile = directory.file("broker.passwd")
        let child = try ChildProcess(passwd, ["-c", "-b", passwordFile, Self.username, Self.password],
                                     log: directory.file("passwd.log"))
        #expect(try await child.waitForExit() == 0, "\(child.output)")
        let c = certificates
        broker = try MosquittoBroker(port: mutualPort, configuration: """
        per_listener_settings true
        persistence false
        log_dest stderr
        listener \(plainPort) 127.0.0.1
        allow_anonymous true
        listener \(tlsPort) 127.0.0.1
        allow_anonymous true
        cafile \(c.caCertificate)
        certfile \(c.serverCertificate)
        keyfile \(c.serverKey)
        listener \(wrongHostPort) 127.0.0.1
        allow_anonymous true
        cafile \(c.caCertificate)
        certfile \(c.wrongHostCertificate)
        keyfile \(c.wrongHostKey)
        listener \(passwordPort) 127.0.0.1
        allow_anonymous false
        password_file \(passwordFile)
        cafile \(c.caCertificate)
        certfile \(c.serverCertificate)
        keyfile \(c.serverKey)
        listener \(mutualPort) 127.0.0.1
        allow_anonymous true
        cafile \(c.caCertificate)
        certfile \(c.serverCertificate)
        keyfile \(c.serverKey)
        require_certificate true
        """)
        try await broker.start()
        for port in [plainPort, tlsPort, wrongHostPort, passwordPort] {
            try await waitUntil("mosquitto listening on \(port)") { isListening(port: port) }
        }
    }

    deinit { directory.remove() }

    /// What an uplink reports first: `.success` on CONNACK, the failure text otherwise.
    func firstOutcome(port: Int, host: String = "localhost", tls: MQTTTLSOptions?,
                      credentials: MQTTCredentials? = nil) async throws -> Result<Void, UplinkFailure> {
        let outcome = Mutex<Result<Void, UplinkFailure>?>(nil)
        var settings = MQTTUplinkSettings(host: host, port: port, clientID: "tls-test-\(UUID().uuidString.prefix(6))",
                                          reconnectMin: .milliseconds(50), reconnectMax: .milliseconds(200))
        settings.tls = tls
        settings.credentials = credentials
        var logger = Logger(label: "tls-test")
        logger.logLevel = .critical
        let uplink = MQTTUplink(settings: settings, logger: logger) { event in
            switch event {
            case .connected: outcome.withLock { $0 = $0 ?? .success(()) }
            case let .connectFailed(reason, _): outcome.withLock { $0 = $0 ?? .failure(UplinkFailure(reason: reason)) }
            default: break
            }
        }
        uplink.start()
        defer { uplink.requestStop() }
        try await waitUntil("the uplink to connect or fail") { outcome.withLock { $0 != nil } }
        return outcome.withLock { $0! }
    }

    var log: String { broker.log }
}

struct UplinkFailure: Error, CustomStringConvertible {
    var reason: String
    var description: String { reason }
}

extension Result where Success == Void, Failure == UplinkFailure {
    var failureReason: String? {
        if case let .failure(failure) = self { return failure.reason }
        return nil
    }
}

@Suite(.serialized) struct TLSUplinkTests {
    @Test func verifiedTLSAndMutualTLSConnect() async throws {
        let tls = try await TLSBroker()
        let c = tls.certificates
        let verified = try await tls.firstOutcome(port: tls.tlsPort, tls: MQTTTLSOptions(trust: .caFile(c.caCertificate)))
        #expect(verified.failureReason == nil, "\(verified)")
        // The CA as a hashed directory works as well as a file.
        let hashed = tls.directory.file("ca-dir")
        try FileManager.default.createDirectory(atPath: hashed, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: c.caCertificate, toPath: hashed + "/ca.pem")
        let rehash = try ChildProcess(try requireTool("openssl", package: "openssl"), ["rehash", hashed],
                                      log: tls.directory.file("rehash.log"))
        #expect(try await rehash.waitForExit() == 0, "\(rehash.output)")
        let byDirectory = try await tls.firstOutcome(port: tls.tlsPort, tls: MQTTTLSOptions(trust: .caDirectory(hashed)))
        #expect(byDirectory.failureReason == nil, "\(byDirectory)")

        let mutual = try await tls.firstOutcome(port: tls.mutualPort, tls: MQTTTLSOptions(
            trust: .caFile(c.caCertificate), certFile: c.clientCertificate, keyFile: c.clientKey, minimumVersion: "tlsv1.3"))
        #expect(mutual.failureReason == nil, "\(mutual)")
        // An encrypted key opens with its passphrase (handed over by the callback).
        let encrypted = try await tls.firstOutcome(port: tls.mutualPort, tls: MQTTTLSOptions(
            trust: .caFile(c.caCertificate), certFile: c.clientCertificate, keyFile: c.clientEncryptedKey,
            keyPassphrase: TestCertificates.passphrase))
        #expect(encrypted.failureReason == nil, "\(encrypted)")
        let credentials = try await tls.firstOutcome(
            port: tls.passwordPort, tls: MQTTTLSOptions(trust: .caFile(c.caCertificate)),
            credentials: MQTTCredentials(username: TLSBroker.username, password: TLSBroker.password))
        #expect(credentials.failureReason == nil, "\(credentials)")
    }

    @Test func eachWrongSetupIsRefusedWithItsOwnMessage() async throws {
        let tls = try await TLSBroker()
        let c = tls.certificates
        let trusted = MQTTTLSOptions(trust: .caFile(c.caCertificate))

        let wrongCA = try await tls.firstOutcome(port: tls.tlsPort, tls: MQTTTLSOptions(trust: .caFile(c.otherCACertificate)))
        let wrongCAReason = try #require(wrongCA.failureReason)
        #expect(wrongCAReason.contains("unknown CA") && wrongCAReason.contains("localhost:\(tls.tlsPort)"), "\(wrongCAReason)")

        let wrongHost = try await tls.firstOutcome(port: tls.wrongHostPort, tls: trusted)
        let wrongHostReason = try #require(wrongHost.failureReason)
        #expect(wrongHostReason.contains("hostname mismatch") && wrongHostReason.contains("localhost:\(tls.wrongHostPort)"),
                "\(wrongHostReason)")

        let missing = try await tls.firstOutcome(port: tls.mutualPort, tls: trusted)
        let missingReason = try #require(missing.failureReason)
        #expect(missingReason.contains("missing client certificate") && missingReason.contains("localhost:\(tls.mutualPort)"),
                "\(missingReason)")

        let expired = try await tls.firstOutcome(port: tls.mutualPort, tls: MQTTTLSOptions(
            trust: .caFile(c.caCertificate), certFile: c.expiredClientCertificate, keyFile: c.expiredClientKey))
        let expiredReason = try #require(expired.failureReason)
        #expect(expiredReason.contains("expired certificate") && expiredReason.contains(c.expiredClientCertificate),
                "\(expiredReason)")

        let badPassword = try await tls.firstOutcome(
            port: tls.passwordPort, tls: trusted,
            credentials: MQTTCredentials(username: TLSBroker.username, password: "wrong"))
        let badPasswordReason = try #require(badPassword.failureReason)
        #expect(badPasswordReason.contains("bad credentials") && badPasswordReason.contains(TLSBroker.username),
                "\(badPasswordReason)")

        // Plain MQTT against a TLS port, TLS against a plain port.
        let plainToTLS = try await tls.firstOutcome(port: tls.plainPort, tls: trusted)
        #expect(plainToTLS.failureReason?.contains("does not speak TLS") == true, "\(plainToTLS)")

        // Five different messages.
        let reasons = [wrongCAReason, wrongHostReason, missingReason, expiredReason, badPasswordReason]
        #expect(Set(reasons).count == reasons.count)
    }

    @Test func insecureSkipVerifyConnectsToAnyCertificateAndIsWarnedAtEveryConnect() async throws {
        let tls = try await TLSBroker()
        let outcome = try await tls.firstOutcome(port: tls.wrongHostPort, tls: MQTTTLSOptions(
            trust: .caFile(tls.certificates.otherCACertificate), insecureSkipVerify: true))
        #expect(outcome.failureReason == nil, "\(outcome)")
    }
}

@Suite(.serialized) struct TLSGatewayProcessTests {
    /// A gateway config for the mutual-TLS listener with `tls` as its `tls:` mapping and sealing on.
    static func configuration(_ tls: TLSBroker, modbusPort: Int, outbox: String, keyFile: String, tlsLines: String) -> String {
        """
        gateway: { id: gw-tls }
        mqtt:
          host: localhost
          port: \(tls.mutualPort)
          keepalive: 5s
          reconnect_min: 100ms
          reconnect_max: 500ms
          tls:
        \(tlsLines.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n"))
        buffer: { path: \(outbox) }
        payload:
          seal: aes-256-gcm
          keys: [{ id: site-k1, file: \(keyFile) }]
        log_level: debug
        devices:
          - name: boiler-1
            tcp: { host: 127.0.0.1, port: \(modbusPort) }
            poll_interval: 100ms
            timeout: 200ms
            tags:
              - { name: temperature, table: holding, address: 0, type: int16, scale: 0.1 }
        """
    }

    @Test func dataStaysBufferedUntilACorrectTLSSetupConnectsAndArrivesSealed() async throws {
        let tls = try await TLSBroker()
        let c = tls.certificates
        let modbusPort = freeLoopbackPort()
        let simulator = try ModbusSimulator(port: modbusPort)
        simulator.setHoldingRegisters(0, [715])
        try simulator.start()
        defer { simulator.stop() }
        let subscriber = RecordingSubscriber(port: tls.plainPort, filter: "edge/#")
        try await subscriber.waitConnected()
        let keyFile = tls.directory.file("site-k1.key")
        let key = try SealingKey.generate(id: "site-k1", file: keyFile)
        let outbox = tls.directory.file("outbox.sqlite")
        let config = tls.directory.file("gateway.yaml")
        let gatewayBinary = try builtProduct("edge-gateway")

        // 1. The wrong CA: refused with its reason, polls pile up in the outbox, nothing arrives.
        try Self.configuration(tls, modbusPort: modbusPort, outbox: outbox, keyFile: keyFile, tlsLines: """
        ca_file: \(c.otherCACertificate)
        cert_file: \(c.clientCertificate)
        key_file: \(c.clientKey)
        """).write(toFile: config, atomically: true, encoding: .utf8)
        let refused = try ChildProcess(gatewayBinary, ["run", "--config", config], log: tls.directory.file("refused.log"))
        try await waitUntil("a refusal naming the CA check and 5 buffered polls") {
            refused.output.contains("unknown CA")
                && ((try? Outbox.readStatistics(path: outbox))?.bufferedMessages ?? 0) >= 5
        }
        #expect(refused.output.contains("localhost:\(tls.mutualPort)"), "\(refused.output)")
        refused.signal(SIGTERM)
        #expect(try await refused.waitForExit() == 0, "\(refused.output)")
        let buffered = try Outbox.readStatistics(path: outbox)
        #expect(buffered.acknowledged == 0)
        try await subscriber.roundTrip()
        #expect(subscriber.messages(on: "edge/gw-tls/boiler-1/data").isEmpty)

        // 2. The right CA and an encrypted client key: everything buffered is delivered, sealed.
        try Self.configuration(tls, modbusPort: modbusPort, outbox: outbox, keyFile: keyFile, tlsLines: """
        ca_file: \(c.caCertificate)
        cert_file: \(c.clientCertificate)
        key_file: \(c.clientEncryptedKey)
        key_password_file: \(c.passphraseFile)
        min_version: tls1.2
        """).write(toFile: config, atomically: true, encoding: .utf8)
        let gateway = try ChildProcess(gatewayBinary, ["run", "--config", config], log: tls.directory.file("gateway.log"))
        let topic = "edge/gw-tls/boiler-1/data"
        try await waitUntil("the buffered boot-1 polls to arrive", timeout: .seconds(20)) {
            subscriber.messages(on: topic).count >= buffered.bufferedMessages + 2
        }
        gateway.signal(SIGTERM)
        #expect(try await gateway.waitForExit() == 0, "\(gateway.output)")
        let opener = try Opener(keys: [key])
        let opened = try subscriber.messages(on: topic).map { message in
            #expect(message.json["alg"] as? String == "A256GCM" && message.json["kid"] as? String == "site-k1")
            #expect(!message.text.contains("temperature"), "the payload on the wire is encrypted")
            let plain = try opener.open(message.payload, topic: topic)
            return try #require(try JSONSerialization.jsonObject(with: Data(plain)) as? [String: Any])
        }
        let bootOne = opened.filter { $0["boot"] as? Int == 1 }.compactMap { $0["seq"] as? Int }
        #expect(bootOne == Array(1...buffered.bufferedMessages), "every poll buffered in boot 1 arrives once, in order")
        #expect((opened.first?["values"] as? [String: Any])?["temperature"] as? Double == 71.5)
    }

    @Test func badKeyFilesStopStartupWithAClearError() async throws {
        let directory = try TemporaryDirectory("badkey")
        defer { directory.remove() }
        let gatewayBinary = try builtProduct("edge-gateway")
        let shortKey = directory.file("short.key")
        try Data(repeating: 7, count: 16).write(to: URL(fileURLWithPath: shortKey))
        chmod(shortKey, 0o600)
        let openKey = directory.file("open.key")
        try String(repeating: "ab", count: 32).write(toFile: openKey, atomically: true, encoding: .utf8)
        chmod(openKey, 0o644)
        for (file, expected) in [(shortKey, "not a 32-byte key"), (openKey, "chmod 600 \(openKey)"),
                                 (directory.file("missing.key"), "does not exist"), (directory.path, "is a directory")] {
            let config = directory.file("gateway.yaml")
            try """
            gateway: { id: gw }
            mqtt: { host: 127.0.0.1, port: \(freeLoopbackPort()) }
            buffer: { path: \(directory.file("outbox.sqlite")) }
            payload: { seal: hmac-sha256, keys: [{ id: k1, file: \(file) }] }
            devices: [{ name: d, tcp: { host: 127.0.0.1, port: \(freeLoopbackPort()) }, tags: [{ name: t, table: input, address: 0, type: int16 }] }]
            """.write(toFile: config, atomically: true, encoding: .utf8)
            let gateway = try ChildProcess(gatewayBinary, ["run", "--config", config], log: directory.file("run.log"))
            let status = try await gateway.waitForExit()
            #expect(status != 0, "\(gateway.output)")
            #expect(gateway.output.contains(expected), "expected '\(expected)' in: \(gateway.output)")
        }
    }
}
