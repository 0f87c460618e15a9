// `edge-gateway-bench commands`: a command's round trip, publish → Modbus write and
// read back on the device's bus → result received, while the same bus polls every
// 10 ms; against the bare MQTT round trip through the same broker (publish → the
// client's own subscription), measured in the same run.
import Foundation
import Gateway
import GatewayConfig
import LocalPeers
import Logging
import Modbus
import MQTTUplink
import Sealing
import Synchronization

private final class Flag: Sendable {
    let value = Atomic<Bool>(false)
}

private final class UplinkBox: Sendable {
    let uplink = Mutex<MQTTUplink?>(nil)
}

/// A client that publishes and waits for the next message on its subscription.
private final class RoundTripClient: Sendable {
    private let uplink: MQTTUplink
    private let connected = Flag()
    private let inbox: AsyncStream<MQTTMessage>

    init(port: Int, filter: String) {
        let (inbox, sink) = AsyncStream.makeStream(of: MQTTMessage.self)
        self.inbox = inbox
        let connected = connected
        let box = UplinkBox()
        uplink = MQTTUplink(settings: MQTTUplinkSettings(host: "127.0.0.1", port: port, clientID: "bench-\(UUID().uuidString.prefix(6))"),
                            logger: quiet) { event in
            switch event {
            case .connected:
                try? box.uplink.withLock { try $0?.subscribe(filter, qos: 1) }
                connected.value.store(true, ordering: .releasing)
            case let .message(message): sink.yield(message)
            default: break
            }
        }
        box.uplink.withLock { [uplink] in $0 = uplink }
        uplink.start()
    }

    func waitConnected() async throws {
        try await waitUntil("the bench client connected") { connected.value.load(ordering: .acquiring) }
        try await Task.sleep(for: .milliseconds(200))  // setup, not measured: the SUBACK has no event
    }

    /// Milliseconds from publishing `message` to receiving a message that contains `answer`.
    func roundTrip(_ message: MQTTMessage, answer: String,
                   iterator: inout AsyncStream<MQTTMessage>.Iterator) async throws -> Double {
        let start = ContinuousClock.now
        _ = try uplink.publish(message)
        let marker = Array(answer.utf8)
        while let received = await iterator.next() {
            if received.payload.firstRange(of: marker) != nil { break }
        }
        return seconds(ContinuousClock.now - start) * 1000
    }

    func publish(_ message: MQTTMessage) throws { _ = try uplink.publish(message) }

    func makeIterator() -> AsyncStream<MQTTMessage>.Iterator { inbox.makeAsyncIterator() }

    func stop() async { await uplink.stop() }
}

func benchCommands(directory: TemporaryDirectory) async throws {
    let count = 300
    print("commands: \(count) HS256 commands, each one float32 setpoint written and read back, polls every 10 ms on the same bus")
    // Neither libmosquitto nor mosquitto turn Nagle's algorithm off by default: a small
    // message behind another on the same socket then waits for a delayed ACK (40 ms on
    // Linux). The gateway and this client set MOSQ_OPT_TCP_NODELAY; the broker's side is
    // `set_tcp_nodelay true` in mosquitto.conf (mosquitto >= 2.0). Both brokers in one run:
    // the default one first (the before), then one with set_tcp_nodelay (the after).
    var p50s: [Double] = []
    for noDelay in [false, true] {
        print("  broker \(noDelay ? "with set_tcp_nodelay true" : "with mosquitto's defaults (Nagle on)"):")
        let (latencies, baseline) = try await commandRoundTrips(count: count, brokerNoDelay: noDelay,
                                                                directory: directory)
        func percentile(_ values: [Double], _ p: Double) -> Double {
            let sorted = values.sorted()
            return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
        }
        // The header above says which broker; labels stay short enough for `figure`.
        let tag = noDelay ? " [nodelay]" : " [default]"
        figure("command → write → read back → result, p50" + tag, percentile(latencies, 0.5), "ms")
        figure("command → write → read back → result, p99" + tag, percentile(latencies, 0.99), "ms")
        figure("baseline: MQTT publish → own subscription, p50" + tag, percentile(baseline, 0.5), "ms")
        figure("baseline: MQTT publish → own subscription, p99" + tag, percentile(baseline, 0.99), "ms")
        print(String(format: "  ratio p50 command / MQTT round trip: %.1f (Neuron publishes 91 ms average for a 50-tag write)",
                     percentile(latencies, 0.5) / max(percentile(baseline, 0.5), 0.001)))
        p50s.append(percentile(latencies, 0.5))
    }
    print(String(format: "  ratio p50 command, broker default / broker set_tcp_nodelay: %.1f", p50s[0] / max(p50s[1], 0.001)))
}

/// Command round trips and the bare MQTT round trips, through one broker.
private func commandRoundTrips(count: Int, brokerNoDelay: Bool,
                               directory: TemporaryDirectory) async throws -> (commands: [Double], baseline: [Double]) {
    let brokerPort = freeLoopbackPort()
    let broker = brokerNoDelay
        ? try MosquittoBroker(port: brokerPort, configuration: """
            listener \(brokerPort) 127.0.0.1
            allow_anonymous true
            persistence false
            set_tcp_nodelay true
            """)
        : try MosquittoBroker(port: brokerPort)
    try await broker.start()
    let modbusPort = freeLoopbackPort()
    let simulator = try ModbusSimulator(port: modbusPort)
    try simulator.start()
    defer { simulator.stop() }
    let keyFile = directory.file("ops1-\(brokerNoDelay).key")
    let key = try SealingKey.generate(id: "ops1", file: keyFile)
    let config = directory.file("commands-\(brokerNoDelay).yaml")
    try """
    gateway: { id: bench }
    mqtt: { host: 127.0.0.1, port: \(broker.port) }
    buffer: { path: \(directory.file("commands-\(brokerNoDelay).sqlite")), sync: normal }
    log_level: error
    commands: { enabled: true, keys: [{ id: ops1, file: \(keyFile) }], rate: 10000/s }
    devices:
      - name: boiler
        tcp: { host: 127.0.0.1, port: \(modbusPort) }
        poll_interval: 10ms
        tags:
          - { name: temperature, table: holding, address: 0, type: int16, scale: 0.1 }
          - { name: setpoint, table: holding, address: 40, type: float32, writable: true, min: 0, max: 100 }
    """.write(toFile: config, atomically: true, encoding: .utf8)
    let gateway = try ChildProcess(try builtProduct("edge-gateway"), ["run", "--config", config],
                                   log: directory.file("commands-\(brokerNoDelay).log"))
    defer { gateway.signal(SIGTERM) }
    let identity = GatewayIdentity(id: "bench")
    let topic = identity.commandTopic(device: "boiler")
    let client = RoundTripClient(port: broker.port, filter: identity.commandResultTopic(device: "boiler"))
    try await client.waitConnected()
    let sealer = Sealer(algorithm: .hmacSHA256, key: key)
    var iterator = client.makeIterator()
    // A gateway that never answers must not hang the bench.
    let stuck = Task {
        try await Task.sleep(for: .seconds(120))
        print("  commands: no answer from the gateway within 120 s; its log:\n\(gateway.output.suffix(1000))")
        exit(1)
    }
    defer { stuck.cancel() }
    // Warm-up commands until the gateway answers one (it subscribes once connected
    // and answers once the device was polled); later warm-up answers are skipped by id.
    let warmUp = Task { [client] in
        var index = 0
        while !Task.isCancelled {
            index += 1
            let command = CommandMessage(id: "warm-\(index)", gateway: "bench", device: "boiler", issued: Date(),
                                         nonce: "warm-up-nonce-\(index)-\(UUID().uuidString)", values: [("setpoint", .number(50))])
            try? client.publish(MQTTMessage(topic: topic, payload: try sealer.seal(command.payload(), topic: topic), qos: 1))
            try? await Task.sleep(for: .milliseconds(300))
        }
    }
    while let first = await iterator.next() {
        if first.payload.firstRange(of: Array(#""ok":true"#.utf8)) != nil { break }
    }
    warmUp.cancel()
    _ = await warmUp.value
    var latencies: [Double] = []
    for index in 0..<count {
        let command = CommandMessage(id: "c-\(index)", gateway: "bench", device: "boiler", issued: Date(),
                                     nonce: "bench-nonce-\(index)-\(UUID().uuidString)",
                                     values: [("setpoint", .number(Double(index % 100)))])
        let message = MQTTMessage(topic: topic, payload: try sealer.seal(command.payload(), topic: topic), qos: 1)
        latencies.append(try await client.roundTrip(message, answer: #""id":"c-\#(index)","#, iterator: &iterator))
    }
    await client.stop()

    // Baseline: the same client's publish → its own subscription, through the same broker.
    let echo = RoundTripClient(port: broker.port, filter: "bench/echo")
    try await echo.waitConnected()
    var echoIterator = echo.makeIterator()
    var baseline: [Double] = []
    for _ in 0..<count {
        baseline.append(try await echo.roundTrip(MQTTMessage(topic: "bench/echo", payload: Array(repeating: 0x78, count: 200), qos: 1),
                                                 answer: "x", iterator: &echoIterator))
    }
    await echo.stop()
    return (latencies, baseline)
}
