import Foundation
import Modbus
import Testing
@testable import GatewayConfig

// MARK: Helpers

/// The error `yaml` is rejected with; records an issue if it loads.
private func rejection(
    _ yaml: String, sourceLocation: SourceLocation = #_sourceLocation
) -> ConfigurationError? {
    do {
        _ = try ConfigurationLoader.parse(yaml: yaml)
        Issue.record("expected the configuration to be rejected", sourceLocation: sourceLocation)
    } catch let error as ConfigurationError {
        #expect(!error.problems.isEmpty, sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

/// The problems `yaml` is rejected with.
private func problems(
    _ yaml: String, sourceLocation: SourceLocation = #_sourceLocation
) -> [ConfigProblem] {
    rejection(yaml, sourceLocation: sourceLocation)?.problems ?? []
}

/// The single problem at `path`; records an issue unless there is exactly one.
private func problem(
    at path: String, in yaml: String, sourceLocation: SourceLocation = #_sourceLocation
) -> ConfigProblem? {
    let all = problems(yaml, sourceLocation: sourceLocation)
    let matching = all.filter { $0.path == path }
    #expect(matching.count == 1, "problems: \(all.map(\.description))", sourceLocation: sourceLocation)
    return matching.first
}

/// A valid document with `devices:` replaced by `devices`.
private func withDevices(_ devices: String) -> String {
    """
    gateway:
      id: gw-01
    mqtt:
      host: broker
    devices:
    \(devices)
    """
}

/// A valid document with one device whose tags are `tags`.
private func withTags(_ tags: String) -> String {
    withDevices("""
      - name: boiler-1
        tcp: { host: 127.0.0.1 }
        tags:
    \(tags)
    """)
}

/// The example configuration of the design, verbatim.
private let exampleYAML = """
gateway:
  id: gw-01                 # required; one MQTT topic level
  topic_prefix: edge        # optional
  stats_interval: 60s
mqtt:                        # required section
  host: 127.0.0.1            # required
  port: 1883                 # 1...65535
  client_id: gw-01           # default: the gateway id
  keepalive: 30s             # 5s ... 65535s
  qos: 1                     # 0, 1 or 2
  max_inflight: 100          # 1 ... 65535
  reconnect_min: 1s
  reconnect_max: 30s         # >= reconnect_min
buffer:
  path: /var/lib/edge-gateway/outbox.sqlite
  sync: full                 # full | normal
  max_messages: 5000000      # integer > 0, or null/"none" = unlimited
  max_bytes: 1GiB
  max_age: 7d                # duration or null/"none"
  drop_policy: drop_oldest   # drop_oldest | drop_newest
log_level: info              # trace|debug|info|notice|warning|error|critical
devices:                     # required, at least one
  - name: boiler-1           # required, unique, one topic level like gateway.id
    tcp: { host: 127.0.0.1, port: 1502 }
    unit_id: 1
    poll_interval: 1s        # >= 10ms
    timeout: 500ms           # >= 10ms
    byte_order: abcd         # abcd | cdab | badc | dcba
    tags:                    # required, at least one
      - name: temperature    # required, unique within the device
        table: holding       # holding | input
        address: 0           # 0...65535
        type: int16          # int16 | uint16 | int32 | uint32 | float32
        byte_order: cdab     # optional, overrides the device
        scale: 0.1           # number, default 1
        offset: 0            # number, default 0
"""

// MARK: Valid files

@Test func exampleLoadsWithItsValues() throws {
    let config = try ConfigurationLoader.parse(yaml: exampleYAML)
    #expect(config == GatewayConfiguration(
        gateway: GatewayIdentity(id: "gw-01", topicPrefix: "edge", statsInterval: .seconds(60)),
        mqtt: MQTTSettings(host: "127.0.0.1", port: 1883, clientID: "gw-01", keepalive: .seconds(30),
                           qos: 1, maxInflight: 100, reconnectMin: .seconds(1), reconnectMax: .seconds(30)),
        buffer: BufferSettings(path: "/var/lib/edge-gateway/outbox.sqlite", sync: .full,
                               maxMessages: 5_000_000, maxBytes: 1 << 30, maxAge: .seconds(7 * 86_400),
                               dropPolicy: .dropOldest),
        devices: [DeviceConfiguration(
            name: "boiler-1", transport: .tcp(host: "127.0.0.1", port: 1502), unitID: 1,
            pollInterval: .seconds(1), timeout: .milliseconds(500), byteOrder: .abcd,
            tags: [TagConfiguration(name: "temperature", table: .holding, address: 0, type: .int16,
                                    byteOrder: .cdab, scale: 0.1, offset: 0)])],
        logLevel: .info))
}

@Test func fullFileWithNonDefaultValues() throws {
    let config = try ConfigurationLoader.parse(yaml: """
    gateway: { id: line_3.gw, topic_prefix: plant-a/edge, stats_interval: 2m, allow_dots_in_topics: true }
    mqtt:
      host: 10.8.0.1
      port: 8883
      client_id: "gateway 3"
      keepalive: 1m
      qos: 2
      max_inflight: 20
      reconnect_min: 250ms
      reconnect_max: 1.5m
    buffer:
      path: /tmp/outbox.sqlite
      sync: normal
      max_messages: none
      max_bytes: 64MB
      max_age: 36h
      drop_policy: drop_newest
    log_level: debug
    devices:
      - name: meter
        tcp: { host: 10.0.0.5 }
        unit_id: 7
        poll_interval: 0.5
        timeout: 100ms
        byte_order: dcba
        tags:
          - { name: energy, table: input_register, address: 65534, type: uint32, scale: 0.01, offset: -3.5 }
          - { name: power, table: INPUT, address: 10, type: float32 }
      - name: meter-2
        tcp: { host: 10.0.0.5, port: 502 }
        unit_id: 8
        tags:
          - { name: energy, table: holding_register, address: 3, type: uint16 }
    """)
    #expect(config.gateway == GatewayIdentity(id: "line_3.gw", topicPrefix: "plant-a/edge", statsInterval: .seconds(120)))
    #expect(config.gateway.dataTopic(device: "meter") == "plant-a/edge/line_3.gw/meter/data")
    #expect(config.mqtt == MQTTSettings(host: "10.8.0.1", port: 8883, clientID: "gateway 3", keepalive: .seconds(60),
                                        qos: 2, maxInflight: 20, reconnectMin: .milliseconds(250),
                                        reconnectMax: .seconds(90)))
    #expect(config.buffer == BufferSettings(path: "/tmp/outbox.sqlite", sync: .normal, maxMessages: nil,
                                            maxBytes: 64_000_000, maxAge: .seconds(36 * 3600),
                                            dropPolicy: .dropNewest))
    #expect(config.logLevel == .debug)
    #expect(config.devices.count == 2)
    let meter = config.devices[0]
    #expect(meter.transport == .tcp(host: "10.0.0.5", port: 502))
    #expect(meter.unitID == 7)
    #expect(meter.pollInterval == .milliseconds(500))
    #expect(meter.timeout == .milliseconds(100))
    #expect(meter.byteOrder == .dcba)
    #expect(meter.tags == [
        TagConfiguration(name: "energy", table: .input, address: 65534, type: .uint32, scale: 0.01, offset: -3.5),
        TagConfiguration(name: "power", table: .input, address: 10, type: .float32),
    ])
    #expect(config.devices[1].tags[0].table == .holding)
    // Same TCP endpoint, different unit ids: one shared bus.
    #expect(config.devices[0].transport.busKey == config.devices[1].transport.busKey)
}

@Test func minimalFileGetsAllDefaults() throws {
    let config = try ConfigurationLoader.parse(yaml: """
    gateway:
      id: gw-01
    mqtt:
      host: broker.local
    devices:
      - name: boiler-1
        tcp:
          host: 192.168.1.10
        tags:
          - name: temperature
            table: holding
            address: 0
            type: int16
    """)
    #expect(config == GatewayConfiguration(
        gateway: GatewayIdentity(id: "gw-01"),
        mqtt: MQTTSettings(host: "broker.local", clientID: "gw-01"),
        buffer: BufferSettings(),
        devices: [DeviceConfiguration(
            name: "boiler-1", transport: .tcp(host: "192.168.1.10", port: 502),
            tags: [TagConfiguration(name: "temperature", table: .holding, address: 0, type: .int16)])],
        logLevel: .info))
}

@Test func nullAndNoneMeanNoLimit() throws {
    let config = try ConfigurationLoader.parse(yaml: withTags("""
          - { name: t, table: holding, address: 0, type: int16 }
    """) + """

    buffer:
      max_messages: ~
      max_bytes: none
      max_age: null
    """)
    #expect(config.buffer.maxMessages == nil)
    #expect(config.buffer.maxBytes == nil)
    #expect(config.buffer.maxAge == nil)
}

// MARK: Value syntax

@Test(arguments: [
    ("500ms", Duration.milliseconds(500)), ("1.5s", .milliseconds(1500)), ("2m", .seconds(120)),
    ("1h", .seconds(3600)), ("7d", .seconds(604_800)), ("0.1s", .milliseconds(100)),
    ("60", .seconds(60)), ("10 ms", .milliseconds(10)),
])
func durationsParse(text: String, expected: Duration) {
    #expect(DurationSyntax.parse(text) == expected)
}

@Test(arguments: ["", "s", "5 minutes", "-1s", "1.s", "1e3s", "99999999999999999999d", "1d2h"])
func malformedDurationsAreRejected(text: String) {
    #expect(DurationSyntax.parse(text) == nil)
}

@Test(arguments: [
    ("1024", Int64(1024)), ("512KB", 512_000), ("64MB", 64_000_000), ("1GB", 1_000_000_000),
    ("64MiB", 64 << 20), ("1GiB", 1 << 30), ("1.5KiB", 1536), ("2 gib", 2 << 30),
])
func sizesParse(text: String, expected: Int64) {
    #expect(ByteSizeSyntax.parse(text) == expected)
}

@Test func durationsFormatShortly() {
    #expect(DurationSyntax.format(.milliseconds(10)) == "10ms")
    #expect(DurationSyntax.format(.seconds(5)) == "5s")
    #expect(DurationSyntax.format(.seconds(120)) == "2m")
    #expect(DurationSyntax.format(.milliseconds(1500)) == "1500ms")
}

@Test func suggestionsUseEditDistance() {
    #expect(Suggestion.closest(to: "hots", among: ["host", "port"]) == "host")
    #expect(Suggestion.closest(to: "clientId", among: ["client_id", "qos"]) == "client_id")
    #expect(Suggestion.closest(to: "xyz", among: ["host", "port"]) == nil)
}

// MARK: Problem descriptions

@Test func problemDescriptionReadsLikeACompilerDiagnostic() {
    let problem = ConfigProblem(path: "devices[0].tags[2].address", line: 12, column: 7,
                                message: "address 70000 is out of range", hint: "Modbus addresses are 0...65535")
    #expect(problem.description
        == "gateway.yaml:12:7: devices[0].tags[2].address: address 70000 is out of range; hint: Modbus addresses are 0...65535")
    #expect(ConfigProblem(path: "", message: "m", hint: "h", file: "x.yaml").description == "x.yaml: m; hint: h")
}

// MARK: Bad files, one kind at a time

@Test func unknownKeyGetsDidYouMean() throws {
    let found = try #require(problem(at: "mqtt.hots", in: """
    gateway: { id: gw-01 }
    mqtt:
      host: broker
      hots: other
    devices: [{name: d, tcp: {host: h}, tags: [{name: t, table: input, address: 1, type: int16}]}]
    """))
    #expect(found.message == "unknown key 'hots'")
    #expect(found.hint.hasPrefix("did you mean 'host'?"))
    #expect(found.hint.contains("allowed keys here: host, port, client_id"))
    #expect(found.line == 4)
    #expect(found.column == 3)
}

@Test func stringWhereAnIntegerIsExpected() throws {
    let found = try #require(problem(at: "mqtt.port", in: """
    gateway: { id: gw-01 }
    mqtt:
      host: broker
      port: eighteen
    devices: [{name: d, tcp: {host: h}, tags: [{name: t, table: input, address: 1, type: int16}]}]
    """))
    #expect(found.message == "expected an integer, found the string \"eighteen\"")
    #expect(found.line == 4)
    #expect(found.column == 9)
}

@Test func quotedNumberGetsUnquoteHint() throws {
    let found = try #require(problem(at: "mqtt.port", in: """
    gateway: { id: gw-01 }
    mqtt: { host: broker, port: "1883" }
    devices: [{name: d, tcp: {host: h}, tags: [{name: t, table: input, address: 1, type: int16}]}]
    """))
    #expect(found.hint == "write 1883 without quotes")
}

@Test func mappingWhereAListIsExpected() throws {
    let found = try #require(problem(at: "devices", in: """
    gateway: { id: gw-01 }
    mqtt: { host: broker }
    devices:
      name: boiler-1
    """))
    #expect(found.message == "expected a list, found a mapping")
    #expect(found.line == 4)
}

@Test func missingRequiredKey() throws {
    let found = try #require(problem(at: "devices[0].tags[0].type", in: withTags("""
          - name: temperature
            table: holding
            address: 0
    """)))
    #expect(found.message == "missing required key 'type'")
    #expect(found.hint.contains("int16"))
    #expect(found.line == 9)
}

@Test func outOfRangeAddress() throws {
    let found = try #require(problem(at: "devices[0].tags[0].address", in: withTags("""
          - { name: t, table: holding, address: 70000, type: int16 }
    """)))
    #expect(found.message == "address 70000 is out of range")
    #expect(found.hint == "Modbus addresses are 0...65535")
    #expect(found.line == 9)
    #expect(found.description.hasPrefix("gateway.yaml:9:45: devices[0].tags[0].address: address 70000 is out of range"))
}

@Test func multiRegisterValuePastTheLastAddress() throws {
    let found = try #require(problem(at: "devices[0].tags[0].address", in: withTags("""
          - { name: t, table: holding, address: 65535, type: float32 }
    """)))
    #expect(found.message == "a float32 at address 65535 runs past the last register")
    #expect(found.hint.contains("occupies 2 registers"))
}

@Test func outOfRangeNumbers() {
    let all = problems("""
    gateway: { id: gw-01 }
    mqtt: { host: broker, port: 0, qos: 3, max_inflight: 0, keepalive: 2s }
    devices:
      - name: d
        tcp: { host: h, port: 70000 }
        unit_id: 256
        poll_interval: 5ms
        tags: [{ name: t, table: input, address: 1, type: int16, scale: 0 }]
    """)
    #expect(Set(all.map(\.path)) == [
        "mqtt.port", "mqtt.qos", "mqtt.max_inflight", "mqtt.keepalive", "devices[0].tcp.port",
        "devices[0].unit_id", "devices[0].poll_interval", "devices[0].tags[0].scale",
    ])
    #expect(all.first { $0.path == "mqtt.qos" }?.message == "qos 3 is out of range")
    #expect(all.first { $0.path == "devices[0].poll_interval" }?.message == "poll_interval 5ms is too short")
    #expect(all.first { $0.path == "devices[0].tags[0].scale" }?.message == "scale must not be 0")
}

@Test func badEnumValueListsTheAllowedOnes() throws {
    let found = try #require(problem(at: "devices[0].tags[0].table", in: withTags("""
          - { name: t, table: holdng, address: 0, type: int16 }
    """)))
    #expect(found.message == "'holdng' is not a valid table")
    #expect(found.hint == "did you mean 'holding'? use one of: holding, input, coils, discrete_inputs")
    let level = try #require(problem(at: "log_level", in: withTags("""
          - { name: t, table: input, address: 0, type: int16 }
    """) + "\nlog_level: verbose"))
    #expect(level.hint == "use one of: trace, debug, info, notice, warning, error, critical")
}

@Test func duplicateDeviceNames() throws {
    let found = try #require(problem(at: "devices[1].name", in: withDevices("""
      - { name: boiler, tcp: { host: a }, tags: [{ name: t, table: input, address: 0, type: int16 }] }
      - { name: boiler, tcp: { host: b }, tags: [{ name: t, table: input, address: 0, type: int16 }] }
    """)))
    #expect(found.message == "device name 'boiler' is already used by devices[0]")
    #expect(found.line == 7)
}

@Test func duplicateTagNamesInADevice() throws {
    let found = try #require(problem(at: "devices[0].tags[2].name", in: withTags("""
          - { name: t, table: input, address: 0, type: int16 }
          - { name: u, table: input, address: 1, type: int16 }
          - { name: t, table: input, address: 2, type: int16 }
    """)))
    #expect(found.message == "tag name 't' is already used by tags[0] of this device")
    #expect(found.line == 11)
}

@Test func sameBusAndUnitID() throws {
    let found = try #require(problem(at: "devices[1].unit_id", in: withDevices("""
      - { name: a, tcp: { host: 10.0.0.5 }, unit_id: 3, tags: [{ name: t, table: input, address: 0, type: int16 }] }
      - { name: b, tcp: { host: 10.0.0.5, port: 502 }, unit_id: 3, tags: [{ name: t, table: input, address: 0, type: int16 }] }
      - { name: c, tcp: { host: 10.0.0.6 }, unit_id: 3, tags: [{ name: t, table: input, address: 0, type: int16 }] }
    """)))
    #expect(found.message == "devices[0] and devices[1] both use unit id 3 on tcp://10.0.0.5:502")
    #expect(found.hint.hasPrefix("give each device a distinct unit_id"))
    #expect(found.line == 7)
}

@Test func invalidTopicLevels() {
    let all = problems("""
    gateway: { id: gw/01, topic_prefix: "edge/+/x" }
    mqtt: { host: broker }
    devices: [{ name: "boiler #1", tcp: { host: h }, tags: [{ name: t, table: input, address: 0, type: int16 }] }]
    """)
    #expect(all.map(\.path) == ["gateway.id", "gateway.topic_prefix", "devices[0].name"])
    #expect(all[0].message == "gateway id 'gw/01' is not a valid MQTT topic level")
    #expect(all[1].message == "topic prefix 'edge/+/x' contains a wildcard ('+' or '#')")
    #expect(all[2].message == "device name 'boiler #1' is not a valid MQTT topic level")
    #expect(problem(at: "gateway.topic_prefix", in: withTags("""
          - { name: t, table: input, address: 0, type: int16 }
    """).replacingOccurrences(of: "id: gw-01", with: "id: gw-01\n  topic_prefix: /edge/"))?
        .message == "topic prefix '/edge/' starts or ends with '/'")
}

@Test func malformedDurationAndSize() {
    let all = problems(withTags("""
          - { name: t, table: input, address: 0, type: int16 }
    """) + """

    buffer:
      max_bytes: 12 parsecs
      max_age: 5 minutes
    """)
    #expect(all.map(\.path) == ["buffer.max_bytes", "buffer.max_age"])
    #expect(all[0].message == "'12 parsecs' is not a valid size")
    #expect(all[0].hint.contains("64MiB"))
    #expect(all[1].message == "'5 minutes' is not a valid duration")
    #expect(all[1].hint.contains("500ms"))
}

@Test func emptyDevicesList() throws {
    let found = try #require(problem(at: "devices", in: """
    gateway: { id: gw-01 }
    mqtt: { host: broker }
    devices: []
    """))
    #expect(found.message == "no devices are configured")
    #expect(found.line == 3)
}

@Test func missingMQTTSectionAndHost() throws {
    let noSection = try #require(problem(at: "mqtt", in: withTags("""
          - { name: t, table: input, address: 0, type: int16 }
    """).replacingOccurrences(of: "mqtt:\n  host: broker\n", with: "")))
    #expect(noSection.message == "missing broker: there is no mqtt section")
    #expect(noSection.hint == "add mqtt: with at least host: <broker address>")

    let noHost = try #require(problem(at: "mqtt.host", in: withTags("""
          - { name: t, table: input, address: 0, type: int16 }
    """).replacingOccurrences(of: "host: broker", with: "port: 1883")))
    #expect(noHost.message == "missing broker: mqtt has no host")
    #expect(noHost.line == 3)  // at the key `mqtt:`
}

@Test func reconnectMaxBelowMin() throws {
    let found = try #require(problem(at: "mqtt.reconnect_max", in: withTags("""
          - { name: t, table: input, address: 0, type: int16 }
    """).replacingOccurrences(of: "host: broker", with: "host: broker\n  reconnect_min: 10s\n  reconnect_max: 5s")))
    #expect(found.message == "reconnect_max 5s is shorter than reconnect_min 10s")
}

// MARK: Several problems at once

@Test func everyProblemIsReported() throws {
    let yaml = """
    gateway:
      id: gw-01
      colour: blue
    mqtt:
      port: 1883
    buffer:
      sync: sometimes
    devices:
      - name: a
        tcp: { host: h }
        unit_id: 300
        tags:
          - { name: t, table: input, address: -1, type: int16 }
      - name: a
        tcp: { host: h }
        tags: []
    """
    let all = problems(yaml)
    #expect(all.map(\.path) == [
        "gateway.colour", "mqtt.host", "buffer.sync", "devices[0].unit_id",
        "devices[0].tags[0].address", "devices[1].name", "devices[1].tags",
    ])
    #expect(all.map(\.line) == [3, 4, 7, 11, 13, 14, 16])
    let error = try #require(rejection(yaml))
    #expect(error.description.hasPrefix("gateway.yaml: 7 problems:\ngateway.yaml:3:3: gateway.colour: unknown key 'colour'"))
}

// MARK: Files and syntax

@Test func missingFile() throws {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("no-such-\(UUID()).yaml").path
    do {
        _ = try ConfigurationLoader.load(file: path)
        Issue.record("loaded a missing file")
    } catch let error as ConfigurationError {
        #expect(error.file == path)
        #expect(error.problems.count == 1)
        #expect(error.problems.first?.message == "configuration file '\(path)' does not exist")
        #expect(error.problems.first?.hint.isEmpty == false)
    }
}

@Test func loadsAFile() throws {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("gateway-\(UUID()).yaml").path
    try exampleYAML.write(toFile: path, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(atPath: path) }
    #expect(try ConfigurationLoader.load(file: path) == ConfigurationLoader.parse(yaml: exampleYAML))
}

@Test func malformedYAMLGivesLineAndColumn() throws {
    let all = problems("""
    gateway:
      id: gw-01
    mqtt:
      host: [broker
    devices: []
    """)
    #expect(all.count == 1)
    let found = try #require(all.first)
    #expect(found.message.hasPrefix("malformed YAML: "))
    #expect(found.line != nil && found.column != nil)
    #expect(!found.hint.isEmpty)

    let tab = try #require(problems("gateway:\n\tid: gw-01\n").first)
    #expect(tab.line == 2)
    #expect(tab.column == 1)
    #expect(tab.hint == "indent with spaces; YAML does not allow tabs for indentation")
}

@Test func duplicateKeyIsReportedWhereItIs() throws {
    let found = try #require(problems("""
    gateway:
      id: gw-01
      id: gw-02
    """).first)
    #expect(found.message == "key 'id' appears more than once in the same mapping")
    #expect(found.line != nil)
}

@Test func emptyDocument() {
    #expect(problems("# nothing yet\n").map(\.message) == ["the configuration is empty"])
}
