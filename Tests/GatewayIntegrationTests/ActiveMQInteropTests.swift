// The interop scenario on ActiveMQ 5.17 (Debian's activemq, MQTT 3.1.1 only), started by
// the test as its own JVM with one MQTT transport on 127.0.0.1 and nothing else (no
// OpenWire, no JMX, no web console). Debian's activemq package does not bring the MQTT
// transport's codec: libmqtt-client-java (with libhawtdispatch-java) does, and the test
// puts those jars on the instance's own lib/ path. Skipped with a printed reason where
// either is missing; under CI=true (make deps installs both) that fails.
import Foundation
import Testing
import TestSupport

/// An ActiveMQ instance in its own directory: persistent (KahaDB), so a durable MQTT
/// subscription survives the broker's graceful restart.
final class ActiveMQBroker: InteropBroker, @unchecked Sendable {
    static let runJar = "/usr/share/activemq/bin/activemq.jar"
    /// The MQTT transport's codec and its dispatch library, from libmqtt-client-java.
    static let transportJars = ["/usr/share/java/mqtt-client.jar", "/usr/share/java/hawtdispatch.jar",
                                "/usr/share/java/hawtdispatch-transport.jar"]
    let mqttPort = freeLoopbackPort()
    private let java: String
    private let directory: TemporaryDirectory
    // Invariant: touched by the test's task only (start/stop are awaited in sequence).
    private var node: ChildProcess?

    /// The broker, or nil (with the reason printed) where ActiveMQ or its MQTT codec is
    /// not installed; under CI=true that is an error naming the packages.
    static func availableOrSkip(_ test: String) throws -> ActiveMQBroker? {
        let missing = ([runJar] + transportJars).filter { !FileManager.default.fileExists(atPath: $0) }
        let java = try? requireTool("java", package: "default-jre-headless")
        guard missing.isEmpty, let java else {
            let reason = "\(missing + (java == nil ? ["java"] : [])) not found: install activemq and "
                + "libmqtt-client-java (make deps does)"
            if ProcessInfo.processInfo.environment["CI"] == "true" { throw MissingTool(description: reason) }
            print("skipping \(test): \(reason)")
            return nil
        }
        return try ActiveMQBroker(java: java)
    }

    private init(java: String) throws {
        self.java = java
        directory = try TemporaryDirectory("activemq")
        try FileManager.default.createDirectory(atPath: directory.file("conf"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: directory.file("lib"), withIntermediateDirectories: true)
        for jar in Self.transportJars {
            try FileManager.default.createSymbolicLink(atPath: directory.file("lib/" + (jar as NSString).lastPathComponent),
                                                       withDestinationPath: jar)
        }
        try """
        <beans xmlns="http://www.springframework.org/schema/beans"
          xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
          xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
          http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
          <broker xmlns="http://activemq.apache.org/schema/core" useJmx="false" brokerName="interop"
                  persistent="true" dataDirectory="\(directory.file("data"))">
            <persistenceAdapter><kahaDB directory="\(directory.file("data/kahadb"))"/></persistenceAdapter>
            <transportConnectors>
              <transportConnector name="mqtt" uri="mqtt://127.0.0.1:\(mqttPort)"/>
            </transportConnectors>
          </broker>
        </beans>
        """.write(toFile: directory.file("conf/activemq.xml"), atomically: true, encoding: .utf8)
        try """
        log4j.rootLogger=INFO, stdout
        log4j.appender.stdout=org.apache.log4j.ConsoleAppender
        log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
        log4j.appender.stdout.layout.ConversionPattern=%d %-5p %c{1} - %m%n
        """.write(toFile: directory.file("conf/log4j.properties"), atomically: true, encoding: .utf8)
    }

    deinit {
        if let node, node.isRunning {
            node.signal(SIGKILL)
            node.waitBlocking()
        }
        directory.remove()
    }

    /// Starts the JVM and waits until the MQTT transport answers (about 15 s on two busy cores).
    func start() async throws {
        node = try ChildProcess(java, [
            "-Xmx256M", "-Dlog4j.configuration=file:" + directory.file("conf/log4j.properties"),
            "--add-opens", "java.base/java.lang=ALL-UNNAMED", "--add-opens", "java.base/java.util=ALL-UNNAMED",
            "--add-opens", "java.base/java.net=ALL-UNNAMED",
            "-Dactivemq.home=/usr/share/activemq", "-Dactivemq.base=" + directory.path,
            "-Dactivemq.conf=" + directory.file("conf"), "-Dactivemq.data=" + directory.file("data"),
            "-jar", Self.runJar, "start", "xbean:file:" + directory.file("conf/activemq.xml"),
        ], log: directory.file("activemq-\(UUID().uuidString.prefix(6)).log"))
        let port = mqttPort
        try await waitUntil("ActiveMQ's MQTT transport on 127.0.0.1:\(port)", timeout: .seconds(60)) {
            guard node?.isRunning == true else { throw MissingTool(description: "ActiveMQ exited: \(log.suffix(3000))") }
            return isListening(port: port)
        }
    }

    /// Stops the JVM gracefully (its shutdown hook stops the broker and closes KahaDB).
    func stop() async throws {
        guard let node else { return }
        node.signal(SIGTERM)
        _ = try await node.waitForExit(timeout: .seconds(60))
        self.node = nil
    }

    var log: String { node?.output ?? "" }
}

@Suite(.serialized) struct ActiveMQInteropTests {
    /// Birth retained, replay after a 20 s broker stop with no (boot, seq) missing,
    /// the Last Will on SIGKILL, the clean offline status on SIGTERM.
    @Test func birthReplayWillAndCleanOffline() async throws {
        guard let broker = try ActiveMQBroker.availableOrSkip("ActiveMQ birthReplayWillAndCleanOffline") else { return }
        try await InteropScenario.run(on: broker, gatewayID: "gw-activemq", protocolLine: "")
    }
}
