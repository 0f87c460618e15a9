// From polls to committed outbox rows: group commit of everything that arrived
// while the previous commit was syncing.
import Foundation
import GatewayConfig
import Logging
import Modbus
import Outbox
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
    /// Called after each commit with the newest committed id (the forwarder leases what is new).
    private let onCommit: @Sendable (Int64) -> Void

    public init(identity: GatewayIdentity, qos: Int, outbox: Outbox, logger: Logger,
                onCommit: @escaping @Sendable (Int64) -> Void) {
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

    private func commitPending() async {
        while true {
            let batch: [DevicePoll] = pending.withLock { polls in
                let taken = Array(polls.prefix(Self.maxBatch))
                polls.removeFirst(taken.count)
                return taken
            }
            if batch.isEmpty { return }
            let gateway = identity.id
            let drafts = batch.map { poll in
                OutboxDraft(topic: identity.dataTopic(device: poll.device), qos: qos) { boot, seq in
                    MessageEncoding.dataMessage(gateway: gateway, poll: poll, boot: boot, seq: seq)
                }
            }
            do {
                let committed = try await outbox.append(drafts)
                if let newest = committed.last?.id { onCommit(newest) }
            } catch {
                // The outbox has applied its drop policy and counted the loss.
                logger.error("could not commit polls to the outbox", metadata: [
                    "polls": "\(batch.count)", "error": "\(error)",
                ])
            }
        }
    }
}
