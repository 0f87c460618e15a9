// Why a command was not carried out: one reason each, named in the result and the log.
import Modbus

public struct CommandRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    /// The `reason` of a result with `"ok":false`.
    public enum Reason: String, Sendable, Equatable, CaseIterable {
        /// Not an envelope, or the payload inside is not a command.
        case malformed
        /// The envelope names a key id the gateway does not have.
        case unknownKey = "unknown_key"
        /// Tag or signature does not verify (altered, wrong key, or sealed for another topic).
        case badSignature = "bad_signature"
        /// Delivered from the broker's retained store: a stored command is never run.
        case retained
        /// The command names another gateway or device than the topic it arrived on.
        case topicMismatch = "topic_mismatch"
        /// Issued more than `max_age` ago (also: expired while waiting for the bus).
        case tooOld = "too_old"
        /// Issued further in the future than `max_skew`.
        case fromFuture = "from_future"
        /// Issued before this gateway process started: its nonces cannot be checked.
        case beforeStart = "issued_before_start"
        /// Its nonce was already seen within `max_age`.
        case replay
        /// More commands than `rate` allows.
        case rateExceeded = "rate_exceeded"
        /// The device has no tag of that name.
        case unknownTag = "unknown_tag"
        /// The tag is not `writable: true`.
        case notWritable = "not_writable"
        case wrongType = "wrong_type"
        /// Outside the tag's `min`/`max`.
        case outOfRange = "out_of_range"
        /// The register type cannot hold the value (a fraction, too large).
        case notRepresentable = "not_representable"
        /// The device is not answering polls.
        case deviceOffline = "device_offline"
        /// The connection the command arrived on is gone: its result could not be delivered.
        case uplinkDown = "uplink_down"
        /// The bus is stopping.
        case gatewayStopping = "gateway_stopping"
    }

    public var reason: Reason
    public var message: String

    public init(_ reason: Reason, _ message: String) {
        self.reason = reason
        self.message = message
    }

    public var description: String { "\(reason.rawValue): \(message)" }

    init(_ problem: WriteValueProblem) {
        switch problem.kind {
        case .wrongType: self.init(.wrongType, problem.message)
        case .outOfRange: self.init(.outOfRange, problem.message)
        case .notRepresentable: self.init(.notRepresentable, problem.message)
        }
    }
}
