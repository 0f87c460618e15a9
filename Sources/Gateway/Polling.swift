// One service per field bus, each on its own thread.
import GatewayConfig
import Logging
import Modbus
import ServiceLifecycle

/// Runs a `BusPoller` on a dedicated `BusExecutor` until graceful shutdown.
public struct PollingService: Service, CustomStringConvertible {
    public let poller: BusPoller
    /// Beaten from the bus thread between Modbus requests (see `WatchdogService`).
    public let heartbeat: Heartbeat

    public init(poller: BusPoller) {
        self.poller = poller
        self.heartbeat = Heartbeat(name: "bus \(poller.busKey)")
    }

    public var description: String { "PollingService(\(poller.busKey))" }

    public func run() async {
        let executor = BusExecutor(name: "bus \(poller.busKey)")
        defer { executor.shutdown() }
        await cancelWhenGracefulShutdown {
            await withTaskExecutorPreference(executor) {
                await withDiscardingTaskGroup { group in
                    // Runs on the bus thread too: it beats only while no Modbus call
                    // holds that thread, so a hung call stops the watchdog.
                    group.addTask { [heartbeat] in
                        repeat { heartbeat.beat() } while (try? await Task.sleep(for: Heartbeat.interval)) != nil
                    }
                    await poller.run()
                    group.cancelAll()
                }
            }
        }
    }
}
