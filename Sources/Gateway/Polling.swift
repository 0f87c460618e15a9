// One service per field bus, each on its own thread.
import GatewayConfig
import Logging
import Modbus
import ServiceLifecycle

/// Runs a `BusPoller` on a dedicated `BusExecutor` until graceful shutdown.
public struct PollingService: Service, CustomStringConvertible {
    public let poller: BusPoller

    public init(poller: BusPoller) {
        self.poller = poller
    }

    public var description: String { "PollingService(\(poller.busKey))" }

    public func run() async {
        let executor = BusExecutor(name: "bus \(poller.busKey)")
        defer { executor.shutdown() }
        await cancelWhenGracefulShutdown {
            await withTaskExecutorPreference(executor) {
                await poller.run()
            }
        }
    }
}
