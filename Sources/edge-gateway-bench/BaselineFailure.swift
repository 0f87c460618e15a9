// How a baseline of the bench (the floor of `per-message`, the raw libmosquitto of
// `replay`) reports a failed step. No figure is made from a failed run.
import CMosquitto
#if canImport(Glibc)
import Glibc
#endif

/// A baseline step that failed: which baseline, which call, and what the library said
/// (its text taken right at the call).
struct BaselineFailure: Error, CustomStringConvertible {
    enum Baseline: String {
        /// The one-thread floor of `per-message` (FloorBaseline.swift).
        case floor
        /// The baselines of `replay`: raw libmosquitto (RawReplayBaseline.swift) and
        /// MQTTUplink from a thread.
        case replay
    }

    var baseline: Baseline
    var step: String
    var reason: String
    var description: String { "\(baseline.rawValue) baseline: \(step) failed: \(reason)" }

    /// A failed libmosquitto call (nil when `rc` is MOSQ_ERR_SUCCESS): errno's text for
    /// `MOSQ_ERR_ERRNO`, else libmosquitto's own. `code` is errno taken right after the call.
    static func mosquitto(_ rc: Int32, errno code: Int32, _ baseline: Baseline,
                          _ step: @autoclosure () -> String) -> BaselineFailure? {
        guard rc != MOSQ_ERR_SUCCESS.rawValue else { return nil }
        let reason = rc == MOSQ_ERR_ERRNO.rawValue ? String(cString: strerror(code)) : String(cString: mosquitto_strerror(rc))
        return BaselineFailure(baseline: baseline, step: step(), reason: reason)
    }
}
