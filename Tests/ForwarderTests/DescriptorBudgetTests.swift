import Descriptors
import Testing
@testable import Gateway
@testable import MQTTUplink

/// Every bus needs a descriptor below 1024 (libmodbus' select()); the gateway keeps its
/// own out of their way where it can and refuses to start when the buses cannot fit.
@Suite struct DescriptorBudgetTests {
    @Test func theUplinkWakeDescriptorSitsAbove1023() {
        let executor = UplinkExecutor()
        #expect(executor.wakeFD >= SelectRange.limit, "eventfd on \(executor.wakeFD)")
    }

    @Test func busesFitOnlyBesideTheGatewaysOwnDescriptorsAndTheMargin() throws {
        let room = Int(SelectRange.limit) - DescriptorBudget.margin
        #expect(DescriptorBudget(ownBelowLimit: 16, buses: room - 16).fits)
        let over = DescriptorBudget(ownBelowLimit: 16, buses: room - 15)
        #expect(!over.fits)
        let error = try #require(throws: DescriptorBudgetError.self) { try over.check() }
        #expect(error.description.contains("\(room - 15) buses"), "\(error)")
        #expect(error.description.contains("at most \(room - 16) buses fit"), "\(error)")
        #expect(error.description.contains("split the devices over two gateways"), "\(error)")
    }

    /// The integrity check's connection, counted while it runs, is not held twice.
    @Test func aRunningIntegrityCheckIsCountedOnce() {
        let room = Int(SelectRange.limit) - DescriptorBudget.margin
        let own = 15 + DescriptorBudget.integrityCheckDescriptors
        #expect(DescriptorBudget(ownBelowLimit: own, buses: room - 15, integrityCheckRunning: true).fits)
        #expect(!DescriptorBudget(ownBelowLimit: own, buses: room - 15, integrityCheckRunning: false).fits)
    }
}
