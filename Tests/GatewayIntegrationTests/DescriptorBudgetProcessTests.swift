// The gateway's start-up check of descriptors below 1024 (libmodbus' select() range):
// a gateway that would not fit its buses there refuses to start, naming the fix.
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct DescriptorBudgetProcessTests {
    /// 1,000 buses (as many as check-config allows) in a gateway that inherited 40 open
    /// descriptors below 1024: they do not fit, and it exits 78 before polling.
    @Test func aThousandBusesBesideInheritedDescriptorsRefuseToStart() async throws {
        let directory = try TemporaryDirectory("edge-gateway-fdbudget")
        defer { directory.remove() }
        let devices = (0..<1000).map { index in
            "  - { name: d\(index), tcp: { host: 127.0.0.1, port: \(10_000 + index) }, tags: [{ name: t, table: holding, address: 0, type: uint16 }] }"
        }.joined(separator: "\n")
        let config = directory.file("gateway.yaml")
        try """
        gateway:
          id: gw-fdbudget
        mqtt:
          host: 127.0.0.1
          port: \(try freeLoopbackPort())
        buffer:
          path: \(directory.file("outbox.sqlite"))
        devices:
        \(devices)
        """.write(toFile: config, atomically: true, encoding: .utf8)

        // Without close-on-exec: the child inherits them, as from a careless parent.
        let inherited = (0..<40).map { _ in dup(0) }
        defer { inherited.forEach { close($0) } }
        try #require(inherited.allSatisfy { $0 >= 0 && $0 < 1024 })
        let gateway = try ChildProcess(try builtProduct("edge-gateway"), ["run", "--config", config],
                                       log: directory.file("gateway.log"))
        let status = try await gateway.waitForExit(timeout: .seconds(30))
        #expect(status == 78, "exit status \(status): \(gateway.output)")
        #expect(gateway.output.contains("1000 buses do not fit"), "\(gateway.output)")
        #expect(gateway.output.contains("select()"), "\(gateway.output)")
        #expect(gateway.output.contains("split the devices over two gateways"), "\(gateway.output)")
    }
}
