// From polls to committed outbox rows: group commit of everything that arrived
// while the previous commit was syncing.
import Foundation
import GatewayClock
import GatewayConfig
import Logging
import Modbus
import Outbox
import Sealing
import SparkplugB
import ServiceLifecycle
import Synchronization

/// Collects device polls from the bus threads and commits them to the outbox in
/// batches. A poll counts as a message once its batch is committed.
public final class IngestService: Service, Sendable {
    /// Most messages in one transaction.
    static let maxBatch = 2_000

    private let identity: GatewayIdentity
    private let qos: UInt8
    private let outbox: Outbox
    private let logger: Logger
    private let pending = Mutex<[DevicePoll]>([])
    private let wakeUps: AsyncStream<Void>
    private let wakeUp: AsyncStream<Void>.Continuation
    /// Called after each commit with the rows committed (in id order, never empty): the
    /// forwarder publishes them without reading them back when it is caught up.
    private let onCommit: @Sendable ([OutboxMessage]) -> Void
    /// Seals each data payload inside the committing transaction, so the outbox
    /// on disk holds only sealed payloads; `nil` when `payload.seal` is `none`.
    private let sealer: Sealer?
    /// Set with `mqtt.format: sparkplug`: polls are committed as Sparkplug DDATA.
    private let sparkplug: SparkplugNode?
    /// What of an `on_change` poll changed (Sparkplug only); used by the committing task alone.
    private let exceptions: Mutex<SparkplugReportByException>

    /// - Parameter sealer: seals every data payload before it is committed.
    /// - Parameter sparkplug: commits polls as the node's stored DDATA instead of JSON.
    public init(identity: GatewayIdentity, qos: Int, outbox: Outbox, logger: Logger, sealer: Sealer? = nil,
                sparkplug: SparkplugNode? = nil, devices: [DeviceConfiguration] = [],
                onCommit: @escaping @Sendable ([OutboxMessage]) -> Void) {
        self.sealer = sealer
        self.sparkplug = sparkplug
        exceptions = Mutex(SparkplugReportByException(devices: devices))
        self.identity = identity
        self.qos = UInt8(qos)
        self.outbox = outbox
        self.logger = logger
        self.onCommit = onCommit
        (wakeUps, wakeUp) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Hands a poll over for the next commit. Called from bus threads; never blocks on I/O.
    public func submit(_ poll: DevicePoll) {
        pending.withLock { $0.append(poll) }
        wakeUp.yield()
    }

    public func run() async {
        await withGracefulShutdownHandler {
            for await _ in wakeUps {
                await commitPending()
            }
            // Shutdown: the pollers have stopped; commit what is in hand.
            await commitPending()
        } onGracefulShutdown: {
            self.wakeUp.finish()
        }
    }

    /// The sealed envelope of `plain`. A failing CSPRNG or libcrypto is no state
    /// to go on in: the process stops (and systemd restarts it) rather than ever
    /// committing a payload unsealed.
    static func seal(_ plain: [UInt8], topic: String, with sealer: Sealer) -> [UInt8] {
        do {
            return try sealer.seal(plain, topic: topic)
        } catch {
            fatalError("cannot seal a payload for \(topic): \(error)")
        }
    }

    private func commitPending() async {
        while true {
            let batch: [DevicePoll] = pending.withLock { polls in
                let taken = Array(polls.prefix(Self.maxBatch))
                polls.removeFirst(taken.count)
                return taken
            }
            if batch.isEmpty { return }
            let gateway = identity.id
            let sealer = self.sealer
            let drafts = batch.map { poll in
                let measured = MeasuredAt(boottime: poll.clock.boottime, kernelBootID: poll.clock.bootID,
                                          synchronised: poll.clock.sync == .synchronised)
                if let node = sparkplug {
                    let poll = exceptions.withLock { $0.changes(in: poll) }
                    return OutboxDraft(topic: node.topics.ddata(device: poll.device), qos: qos,
                                       measured: measured) { boot, seq in
                        node.storedDData(poll, boot: boot, seq: seq)
                    }
                }
                let topic = identity.dataTopic(device: poll.device)
                return OutboxDraft(topic: topic, qos: qos, measured: measured) { boot, seq in
                    let plain = MessageEncoding.dataMessage(gateway: gateway, poll: poll, boot: boot, seq: seq)
                    return sealer.map { Self.seal(plain, topic: topic, with: $0) } ?? plain
                }
            }
            do {
                let committed = try await outbox.append(drafts)
                if !committed.isEmpty { onCommit(committed) }
            } catch {
                exceptions.withLock { $0.forget() }  // the host's values are unknown: send whole polls next
                // The outbox has applied its drop policy and counted the loss.
                logger.error("could not commit polls to the outbox", metadata: [
                    "polls": "\(batch.count)", "error": "\(error)",
                ])
            }
        }
    }
}
