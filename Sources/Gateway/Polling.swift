// One service per field bus, each on its own thread; a bus stuck in libmodbus
// never holds up the gateway's stop.
import GatewayConfig
import Logging
import Modbus
import ServiceLifecycle
import Synchronization

/// When stopping buses must be done: the first bus told to stop sets it for all,
/// so many buses stuck at once cost one wind-down, not one each (the service
/// group stops services one after another).
public final class BusStopDeadline: Sendable {
    /// How long stopping buses may take to wind down before they are abandoned.
    public let windDown: Duration
    private let deadline = Mutex<ContinuousClock.Instant?>(nil)

    public init(windDown: Duration = .milliseconds(500)) { self.windDown = windDown }

    /// The deadline, set by the first caller.
    func start() -> ContinuousClock.Instant {
        deadline.withLock { deadline in
            if let deadline { return deadline }
            let now = ContinuousClock.now + windDown
            deadline = now
            return now
        }
    }
}

/// Runs a `BusPoller` on a dedicated `BusExecutor` until graceful shutdown.
///
/// Stopping never waits for a bus thread that is stuck: the service cancels the
/// poller, abandons its connection (a request blocked on a TCP socket returns at
/// once), gives the bus until the common `BusStopDeadline` to finish, and returns
/// either way. An abandoned bus reports nothing after its service returned, so
/// the polls the ingest service commits at shutdown are all that will come.
public struct PollingService: Service, CustomStringConvertible {
    public let poller: BusPoller
    /// Beaten from the bus thread after each Modbus request; inside a request it
    /// holds the request's deadline, while idle the time the next poll is due
    /// (see `WatchdogService`).
    public let heartbeat: Heartbeat
    private let stopDeadline: BusStopDeadline
    private let logger: Logger

    public init(poller: BusPoller, stopDeadline: BusStopDeadline = BusStopDeadline(),
                logger: Logger = Logger(label: "edge-gateway.bus")) {
        let heartbeat = Heartbeat(name: "bus \(poller.busKey)")
        var poller = poller
        poller.requestWatch = { deadline in
            if let deadline { heartbeat.enterRequest(deadline: deadline) } else { heartbeat.beat() }
        }
        self.poller = poller
        self.heartbeat = heartbeat
        self.stopDeadline = stopDeadline
        self.logger = logger
    }

    public var description: String { "PollingService(\(poller.busKey))" }

    private enum Signal: Sendable {
        /// The poller returned (stopped, or could not set the bus up).
        case busEnded
        /// Graceful shutdown began.
        case stop
        /// The wind-down time is over.
        case deadline
    }

    public func run() async {
        let (signals, signal) = AsyncStream.makeStream(of: Signal.self)
        let executor = BusExecutor(name: "bus \(poller.busKey)")
        var poller = poller
        poller.executor = executor  // idle waits block the bus thread, no timer thread wakes it
        // Deliberately not a child task: the service must be able to return while
        // this task's thread is still blocked in a libmodbus call. It ends on its
        // own once that call returns (cancelled, abandoned, it starts nothing new).
        let bus = Task(executorPreference: executor) { [poller, heartbeat] in
            // Alive from here; then around every request and before every idle wait
            // (`BusPoller.requestWatch`), all on the bus thread: no timer wakes it.
            heartbeat.beat()
            await poller.run()
            signal.yield(.busEnded)
            // Last: the thread ends once this job returns (nothing else is queued on it).
            executor.shutdown()
        }
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                var stopping = false
                // Ends early (nil) when this task is cancelled.
                for await event in signals {
                    if case .busEnded = event { break }
                    if case .deadline = event {
                        logger.warning("bus still inside a Modbus request at shutdown: abandoned it", metadata: [
                            "bus": "\(poller.busKey)",
                        ])
                        break
                    }
                    guard !stopping else { continue }
                    stopping = true
                    bus.cancel()
                    poller.abandon()
                    let deadline = stopDeadline.start()
                    group.addTask {
                        if (try? await Task.sleep(until: deadline)) != nil { signal.yield(.deadline) }
                    }
                }
                group.cancelAll()
            }
        } onGracefulShutdown: {
            signal.yield(.stop)
        }
        // Cancelled, or the bus ended by itself: make sure it stays stopped.
        bus.cancel()
        poller.abandon()
    }
}
