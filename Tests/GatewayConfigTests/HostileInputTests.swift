// Inputs that used to hang the loader, eat its memory, or pass and then fail at
// run time: every one is refused with a problem that names its place.
import Foundation
import Testing
@testable import GatewayConfig
#if canImport(Glibc)
import Glibc
#endif

/// The problems of loading the file at `path` (an issue if it loads).
private func fileRefusal(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) -> [ConfigProblem] {
    do {
        _ = try ConfigurationLoader.load(file: path)
        Issue.record("expected \(path) to be rejected", sourceLocation: sourceLocation)
    } catch let error as ConfigurationError {
        return error.problems
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
    }
    return []
}

/// A valid document; `gateway`, `device` and `extra` replace parts of it.
private func document(gateway: String = "id: gw", deviceName: String = "d", device: String = "",
                      buffer: String = "", mqtt: String = "") -> String {
    """
    gateway:
      \(gateway)
    mqtt:
      host: 127.0.0.1
      \(mqtt)
    \(buffer)
    devices:
      - name: \(deviceName)
        tcp: { host: 127.0.0.1 }
        \(device)
        tags: [{ name: t, table: input, address: 1, type: int16 }]
    """
}

/// "Billion laughs": each anchor repeats the one before ten times; `*l9` stands for 10^9 values.
private let laughs = (1...9).map { level in
    "l\(level): &l\(level) [" + Array(repeating: "*l\(level - 1)", count: 10).joined(separator: ",") + "]"
}.joined(separator: "\n")

private func temporaryPath(_ name: String) -> String {
    NSTemporaryDirectory() + "hostile-\(UUID().uuidString.prefix(8))-" + name
}

@Suite struct HostileInputTests {
    // MARK: item 9: bounded cost

    @Test func billionLaughsAsAMappingKeyIsRefused() throws {
        let problems = rejectedProblems("""
        l0: &l0 "lol"
        \(laughs)
        ? *l9
        : boom
        """)
        let found = try #require(problems.first, "\(problems)")
        #expect(problems.count == 1)
        #expect(found.message.contains("expands to more than 1000000 values"), "\(found)")
        #expect(found.line != nil, "placed at the alias that blows up: \(found)")
    }

    @Test func billionLaughsWhereTheSchemaWalksAListIsRefused() throws {
        let problems = rejectedProblems("""
        x:
          l0: &l0 { name: d, tcp: { host: h }, tags: [{ name: t, table: input, address: 1, type: int16 }] }
        \(laughs.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
        gateway: { id: gw }
        mqtt: { host: h }
        devices: *l9
        """)
        #expect(problems.map(\.message).contains { $0.contains("expands to more than") }, "\(problems)")
    }

    @Test func aFewAliasesStillWork() throws {
        let config = try ConfigurationLoader.parse(yaml: """
        gateway: { id: gw }
        mqtt: { host: 127.0.0.1 }
        devices:
          - name: a
            tcp: &plc { host: 10.0.0.5, port: 502 }
            tags: &tags [{ name: t, table: input, address: 1, type: int16 }]
          - name: b
            tcp: *plc
            unit_id: 2
            tags: *tags
        """)
        #expect(config.devices.map(\.transport) == [.tcp(host: "10.0.0.5", port: 502), .tcp(host: "10.0.0.5", port: 502)])
    }

    @Test func deepNestingIsRefusedBeforeItCanExhaustTheStack() throws {
        // libyaml stops at 1000 levels, before the recursive composer could run out of stack.
        let problems = rejectedProblems("gateway: " + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000))
        #expect(problems.count == 1 && problems[0].message.contains("nesting level") && problems[0].line == 1, "\(problems)")
    }

    @Test func aLongInvalidValueIsCutAndGetsNoSuggestion() throws {
        let long = String(repeating: "x", count: 900_000)
        let problems = rejectedProblems(document(device: "byte_order: \(long)"))
        let found = try #require(problems.first { $0.path == "devices[0].byte_order" }, "\(problems.map(\.path))")
        #expect(found.message.contains("(900000 bytes)"), "\(found.message.prefix(200))")
        #expect(found.description.utf8.count < 400, "the value is not echoed whole: \(found.description.prefix(400))")
        #expect(!found.hint.contains("did you mean"))
    }

    @Test func aLongUnknownKeyIsCutInPathAndMessage() throws {
        let key = String(repeating: "k", count: 900_000)
        // An explicit key (`? key`): YAML allows implicit keys of up to 1024 characters only.
        let problems = rejectedProblems(document(device: "? \(key)\n    : 1"))
        let found = try #require(problems.first { $0.message.hasPrefix("unknown key") }, "\(problems.count) problems")
        #expect(found.description.utf8.count < 700, "\(found.description.prefix(700))")
        #expect(found.path.hasPrefix("devices[0].kkkk") && found.path.hasSuffix("(900000 bytes)"), "\(found.path.prefix(200))")
        #expect(!found.hint.contains("did you mean"))
    }

    @Test func suggestionsStillHelpWithShortTypos() throws {
        let problems = rejectedProblems(document(device: "byte_order: abdc"))
        #expect(problems.first?.hint.contains("did you mean") == true, "\(problems)")
    }

    @Test func aFileOverOneMebibyteIsRefusedWithTheLimit() throws {
        let path = temporaryPath("big.yaml")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data(document().utf8 + Array(repeating: UInt8(ascii: "#"), count: 2 << 20)).write(to: URL(fileURLWithPath: path))
        let problems = fileRefusal(path)
        #expect(problems.count == 1 && problems[0].message.contains("1048576 bytes (1 MiB)"), "\(problems)")
        #expect(rejectedProblems(String(repeating: "# comment\n", count: 200_000)).first?.message.contains("limit is 1048576") == true)
    }

    // MARK: item 10: what the file is

    @Test func aFIFOIsNotARegularFileAndDoesNotBlock() throws {
        let path = temporaryPath("fifo.yaml")
        #expect(mkfifo(path, 0o600) == 0)
        defer { unlink(path) }
        // No writer ever opens the FIFO: a blocking open would never return.
        let problems = fileRefusal(path)
        #expect(problems.map(\.message) == ["configuration file '\(path)' is not a regular file: it is a FIFO (named pipe)"])
        #expect(!problems.contains { $0.message.contains("permission") })
    }

    @Test func devZeroIsNotARegularFile() {
        let problems = fileRefusal("/dev/zero")
        #expect(problems.map(\.message) == ["configuration file '/dev/zero' is not a regular file: it is a character device"])
    }

    @Test func aBufferPathThatIsADirectoryIsSaidSo() throws {
        let directory = temporaryPath("outbox-dir")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let problems = rejectedProblems(document(buffer: "buffer: { path: \(directory) }"))
        let found = try #require(problems.first, "\(problems)")
        #expect(found.path == "buffer.path" && found.line == 6)
        #expect(found.message.contains("is a directory"), "\(found)")
        #expect(found.hint.contains("\(directory)/outbox.sqlite") && !found.hint.contains("chown"), "\(found)")
    }

    // MARK: item 5: topics

    @Test func aDeviceNameMakingATopicLongerThanMQTTAllowsIsRefused() throws {
        // edge/gw/<name>/status: 15 bytes besides the name.
        let fits = String(repeating: "d", count: 65_535 - 15)
        let config = try ConfigurationLoader.parse(yaml: document(deviceName: fits))
        #expect(config.gateway.deviceStatusTopic(device: fits).utf8.count == 65_535)

        let problems = rejectedProblems(document(deviceName: fits + "d"))
        let found = try #require(problems.first, "\(problems)")
        #expect(problems.count == 1 && found.path == "devices[0].name" && found.line == 8, "\(found.description.prefix(300))")
        #expect(found.message.contains("65536 bytes long; MQTT topics are at most 65535 bytes"), "\(found.message.prefix(300))")
        #expect(found.message.utf8.count < 300)

        let seventyK = rejectedProblems(document(deviceName: String(repeating: "n", count: 70_000)))
        #expect(seventyK.map(\.path) == ["devices[0].name"])
    }

    @Test func aTopicPrefixWithAControlCharacterOrTooLongIsRefused() throws {
        let control = rejectedProblems(document(gateway: "id: gw\n  topic_prefix: \"edge\\x01\""))
        #expect(control.map(\.path) == ["gateway.topic_prefix"], "\(control)")
        #expect(control.first?.message.contains("control character (U+0001)") == true, "\(control)")
        #expect(control.first?.message.contains("edge\\u{1}") == true, "shown visibly: \(control)")

        let delete = rejectedProblems(document(gateway: "id: gw\n  topic_prefix: \"plant\\x7F/edge\""))
        #expect(delete.map(\.path) == ["gateway.topic_prefix"], "\(delete)")

        let long = rejectedProblems(document(gateway: "id: gw\n  topic_prefix: " + String(repeating: "p", count: 70_000)))
        #expect(long.map(\.path) == ["gateway.topic_prefix"], "\(long.map { $0.description.prefix(200) })")
        #expect(long.first?.message.contains("65535") == true)

        // Levels separated by single '/' are fine; wildcards and empty levels are not.
        #expect(try ConfigurationLoader.parse(yaml: document(gateway: "id: gw\n  topic_prefix: plant-a/edge")).gateway.topicPrefix
                == "plant-a/edge")
        #expect(rejectedProblems(document(gateway: "id: gw\n  topic_prefix: plant/+/edge")).map(\.path) == ["gateway.topic_prefix"])
        #expect(rejectedProblems(document(gateway: "id: gw\n  topic_prefix: plant//edge")).map(\.path) == ["gateway.topic_prefix"])
    }

    @Test func aGatewayIDMakingTheStatusTopicTooLongIsRefusedAtTheID() throws {
        let problems = rejectedProblems(document(gateway: "id: " + String(repeating: "g", count: 65_530)))
        #expect(problems.map(\.path) == ["gateway.id"], "\(problems.map { $0.description.prefix(200) })")
        #expect(problems.first?.message.contains("MQTT topics are at most 65535 bytes") == true)
    }

    @Test func everyTopicIsCheckedByTheSameRules() {
        #expect(TopicSyntax.topicProblem("edge/gw/d/data") == nil)
        #expect(TopicSyntax.topicProblem("edge/gw/d+x/data") != nil)
        #expect(TopicSyntax.topicProblem("edge/gw/#/data") != nil)
        #expect(TopicSyntax.topicProblem("edge//d/data") != nil)
        #expect(TopicSyntax.topicProblem("edge/gw/\u{85}/data") != nil, "C1 control")
        #expect(TopicSyntax.topicProblem("edge/gw/\u{FFFF}/data") != nil, "noncharacter")
        #expect(TopicSyntax.topicProblem("edge/gw/ü/data") == nil, "UTF-8 beyond ASCII is fine")
    }

    // MARK: item 11: limits that cannot work

    @Test func maxBytesBelowOneMessagePlusOverheadIsRefusedWithTheMinimum() throws {
        let problems = rejectedProblems(document(buffer: "buffer: { max_bytes: 1 }"))
        let found = try #require(problems.first, "\(problems)")
        #expect(problems.count == 1 && found.path == "buffer.max_bytes" && found.line == 6, "\(found)")
        #expect(found.message.contains("the minimum is 65536 bytes"), "\(found)")
        #expect(found.hint.contains("at least 64KiB"), "\(found)")

        #expect(try ConfigurationLoader.parse(yaml: document(buffer: "buffer: { max_bytes: 64KiB }")).buffer.maxBytes == 65_536)
        #expect(try ConfigurationLoader.parse(yaml: document(buffer: "buffer: { max_bytes: none }")).buffer.maxBytes == nil)

        // A device with big string tags needs more than the floor.
        let strings = (0..<20).map { "{ name: s\($0), table: holding, address: \($0 * 125), type: string, length: 125 }" }
        let big = rejectedProblems("""
        gateway: { id: gw }
        mqtt: { host: 127.0.0.1 }
        buffer: { max_bytes: 100KB }
        devices: [{ name: d, tcp: { host: h }, tags: [\(strings.joined(separator: ", "))] }]
        """)
        #expect(big.map(\.path) == ["buffer.max_bytes"], "\(big)")
    }

    @Test func maxMessagesZeroIsRefused() {
        let problems = rejectedProblems(document(buffer: "buffer: { max_messages: 0 }"))
        #expect(problems.map(\.path) == ["buffer.max_messages"], "\(problems)")
    }

    // MARK: one boolean

    @Test func booleansAreTrueOrFalseOnly() throws {
        let rtu = { (value: String) in
            """
            gateway: { id: gw }
            mqtt: { host: 127.0.0.1 }
            devices: [{ name: d, rtu: { port: /dev/ttyUSB0, rs485: \(value) }, tags: [{ name: t, table: input, address: 1, type: int16 }] }]
            """
        }
        for word in ["true", "True", "TRUE"] {
            guard case let .rtu(serial) = try ConfigurationLoader.parse(yaml: rtu(word)).devices[0].transport else {
                Issue.record("not rtu"); continue
            }
            #expect(serial.rs485, "\(word)")
        }
        for word in ["y", "yes", "on", "Y", "n", "no", "off"] {
            let problems = rejectedProblems(rtu(word))
            #expect(problems.map(\.path) == ["devices[0].rtu.rs485"], "\(word): \(problems)")
            #expect(problems.first?.hint.contains("write true or false") == true, "\(word): \(problems)")
        }
        // The same rule in the security settings.
        #expect(rejectedProblems(document(mqtt: "tls: { insecure_skip_verify: y }")).map(\.path) == ["mqtt.tls.insecure_skip_verify"])
        #expect(rejectedProblems(document(mqtt: "tls: { insecure_skip_verify: yes }")).first?.hint.contains("YAML 1.2") == true)
        #expect(rejectedProblems(document(mqtt: "tls: on")).map(\.path) == ["mqtt.tls"])
        #expect(try ConfigurationLoader.parse(yaml: document(mqtt: "tls: True")).mqtt.tls != nil)
    }
}
