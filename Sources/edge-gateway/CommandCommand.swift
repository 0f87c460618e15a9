// `edge-gateway command`: the central side of guarded writes. Builds a signed or
// sealed command (docs/COMMANDS.md), publishes it and waits for its result.
import ArgumentParser
import Foundation
import Gateway
import GatewayConfig
import Logging
import Modbus
import MQTTUplink
import Sealing
import Synchronization

/// `<tag>=<value>`: true/false, an integer or a decimal number.
struct SetArgument: ExpressibleByArgument {
    var tag: String
    var value: TagValue

    init?(argument: String) {
        guard let equals = argument.firstIndex(of: "=") else { return nil }
        tag = String(argument[..<equals])
        let text = String(argument[argument.index(after: equals)...])
        guard !tag.isEmpty else { return nil }
        if text == "true" || text == "false" {
            value = .bool(text == "true")
        } else if let integer = Int64(text) {
            value = .integer(integer)
        } else if let number = Double(text), number.isFinite {
            value = .number(number)
        } else {
            return nil
        }
    }
}

/// EX_UNAVAILABLE from sysexits.h: no answer.
let exitNoAnswer: Int32 = 69

struct Command: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send a signed command that writes tags of a device, and print the gateway's result.",
        discussion: """
        Publishes to <prefix>/<gateway>/<device>/cmd (QoS 1, not retained) and waits for the
        result on .../cmd/result. Exits 0 when the gateway wrote and read back every tag, 65
        when it refused the command or the device failed (the result says why), 69 when no
        result arrived in time. See docs/COMMANDS.md.
        """)

    @Option(help: ArgumentHelp("The command key: <id>=<file> (or a file; id = its name without extension).", valueName: "id=file"))
    var key: KeyArgument

    @Option(help: "The gateway id.")
    var gateway: String

    @Option(help: "The device name.")
    var device: String

    @Option(name: .customLong("set"), help: ArgumentHelp("<tag>=<value>: true/false or a number. Repeatable.", valueName: "tag=value"))
    var values: [SetArgument] = []

    @Option(help: "Broker as host:port.")
    var broker: String = "127.0.0.1:1883"

    @Option(help: "First topic level (gateway.topic_prefix).")
    var prefix: String = "edge"

    @Option(help: "hs256 (signed, readable) or a256gcm (sealed).")
    var alg: String = "hs256"

    @Option(help: "Seconds to wait for the result.")
    var timeout: Double = 10

    @Option(help: "Command id (default: a random one).")
    var id: String?

    @Option(help: "CA certificate file (PEM): connect with TLS.")
    var caFile: String?

    @Option(help: "Client certificate (PEM) for mutual TLS.")
    var certFile: String?

    @Option(help: "Private key (PEM) of the client certificate.")
    var keyFile: String?

    @Option(help: "MQTT user name.")
    var username: String?

    @Option(help: "File holding the MQTT password (first line).")
    var passwordFile: String?

    func validate() throws {
        guard !values.isEmpty else { throw ValidationError("give at least one --set <tag>=<value>") }
        guard ["hs256", "a256gcm"].contains(alg.lowercased()) else { throw ValidationError("--alg is hs256 or a256gcm") }
        guard let colon = broker.lastIndex(of: ":"), Int(broker[broker.index(after: colon)...]) != nil else {
            throw ValidationError("--broker is host:port, e.g. 127.0.0.1:1883")
        }
    }

    func run() async throws {
        let sealingKey: SealingKey
        do {
            sealingKey = try SealingKey.load(id: key.id, file: key.file)
        } catch {
            FileHandle.standardError.write(Data("edge-gateway command: \(error)\n".utf8))
            throw ExitCode(exitConfigurationError)
        }
        let identity = GatewayIdentity(id: gateway, topicPrefix: prefix)
        var nonce = [UInt8](repeating: 0, count: 16)
        var generator = SystemRandomNumberGenerator()
        for index in nonce.indices { nonce[index] = generator.next() }
        let commandID = id ?? "cmd-" + UUID().uuidString.lowercased().prefix(13)
        let command = CommandMessage(id: commandID, gateway: gateway, device: device, issued: Date(),
                                     nonce: Data(nonce).base64EncodedString(), values: values.map { ($0.tag, $0.value) })
        let topic = identity.commandTopic(device: device)
        let resultTopic = identity.commandResultTopic(device: device)
        let sealer = Sealer(algorithm: alg.lowercased() == "hs256" ? .hmacSHA256 : .aes256GCM, key: sealingKey)
        let envelope = try sealer.seal(command.payload(), topic: topic)

        let colon = broker.lastIndex(of: ":")!
        var mqtt = MQTTSettings(host: String(broker[..<colon]), port: Int(broker[broker.index(after: colon)...])!,
                                clientID: "edge-gateway-command-\(UUID().uuidString.prefix(8))")
        if caFile != nil || certFile != nil {
            mqtt.tls = MQTTTLSSettings(trust: caFile.map { .caFile($0) } ?? .systemStore, certFile: certFile, keyFile: keyFile)
        }
        mqtt.username = username
        if let passwordFile {
            let text = (try? String(contentsOfFile: passwordFile, encoding: .utf8)) ?? ""
            mqtt.password = Secret(String(text.split(separator: "\n", omittingEmptySubsequences: false).first ?? ""))
        }
        var settings = MQTTUplinkSettings(host: mqtt.host, port: mqtt.port, clientID: mqtt.clientID,
                                          reconnectMin: .milliseconds(200), reconnectMax: .seconds(2)).secured(by: mqtt)
        settings.cleanSession = true
        let (events, sink) = AsyncStream.makeStream(of: MQTTEvent.self)
        var logger = Logger(label: "edge-gateway.command")
        logger.logLevel = .error
        let uplink = MQTTUplink(settings: settings, logger: logger) { sink.yield($0) }
        uplink.start()
        let deadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
        let timer = Task {
            try? await Task.sleep(until: deadline)
            sink.finish()
        }
        defer { timer.cancel() }
        var sent = false
        var answer: [String: Any]?
        var raw = ""
        /// A refusal of a sealed command that did not open names no id (the gateway cannot read it).
        var anonymous: (object: [String: Any], raw: String)?
        loop: for await event in events {
            switch event {
            case .connected:
                // Only once: a command is never sent again (a reconnect could deliver it twice).
                guard !sent else { continue }
                do {
                    try uplink.subscribe(resultTopic, qos: 1)
                    _ = try uplink.publish(MQTTMessage(topic: topic, payload: envelope, qos: 1))
                    sent = true
                } catch {
                    FileHandle.standardError.write(Data("edge-gateway command: cannot send: \(error)\n".utf8))
                }
            case let .message(message) where message.topic == resultTopic:
                guard let object = try? JSONSerialization.jsonObject(with: Data(message.payload)) as? [String: Any] else { continue }
                if sent, object["id"] is NSNull, anonymous == nil {
                    anonymous = (object, String(decoding: message.payload, as: UTF8.self))
                    continue
                }
                guard object["id"] as? String == commandID else { continue }
                answer = object
                raw = String(decoding: message.payload, as: UTF8.self)
                break loop
            case let .connectFailed(reason, _):
                FileHandle.standardError.write(Data("edge-gateway command: \(reason)\n".utf8))
            default:
                continue
            }
        }
        await uplink.stop()
        if answer == nil, let anonymous {
            // Most likely ours (e.g. sealed with a key the gateway does not have); say so.
            print(anonymous.raw)
            FileHandle.standardError.write(Data("edge-gateway command: no result named \(commandID); the refusal above names no id (a sealed command the gateway could not open): check --key\n".utf8))
            throw ExitCode(exitRejected)
        }
        guard let answer else {
            FileHandle.standardError.write(Data((sent
                ? "edge-gateway command: no result for \(commandID) on \(resultTopic) within \(timeout) s (is commands.enabled on, and the gateway connected?)\n"
                : "edge-gateway command: could not send to \(broker) within \(timeout) s\n").utf8))
            throw ExitCode(exitNoAnswer)
        }
        print(raw)
        guard answer["ok"] as? Bool == true else { throw ExitCode(exitRejected) }
    }
}
