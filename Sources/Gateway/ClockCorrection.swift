// Correcting the `ts` of messages measured before the clock was synchronised: from
// the boottime kept with each row and the wall time of the kernel's boot that a
// synchronised clock of the same boot tells. Pure, no I/O: the forwarder feeds it
// clock readings and asks it for each message it is about to publish.
import Foundation
import GatewayClock
import Logging
import Outbox
import Sealing

/// What a message's `ts` rests on (its `ts_source`).
public enum TimestampSource: String, Sendable {
    /// Read from a synchronised wall clock.
    case synchronised
    /// Measured while the clock was unsynchronised, then corrected before publishing
    /// from its boottime and a later synchronised clock of the same kernel boot.
    case corrected
    /// Read from an unsynchronised wall clock and not corrected (no synchronised clock
    /// seen yet in its kernel boot, or the row is from an earlier kernel boot).
    case unsynchronised

    init(_ sync: ClockSync) {
        self = sync == .synchronised ? .synchronised : .unsynchronised
    }
}

/// Keeps the reference for corrections: the wall time at the kernel's boot (wall −
/// boottime) as the latest synchronised reading of this kernel boot tells it.
struct TimestampCorrector {
    /// A wall clock step larger than this (between two readings) is logged and counted.
    static let stepThreshold: Int64 = 1_000  // milliseconds

    /// Kernel boot id and wall time at boot (ms since 1970) from the latest synchronised reading.
    private(set) var reference: (bootID: String, wallAtBoot: Int64)?
    /// The wall time at boot of the previous reading, to see steps.
    private var lastWallAtBoot: Int64?
    /// Wall clock steps larger than `stepThreshold` seen.
    private(set) var steps: Int64 = 0
    /// Messages whose `ts` was corrected.
    private(set) var corrected: Int64 = 0

    /// Takes a clock reading. Returns the step in milliseconds when the wall clock
    /// moved against boottime by more than `stepThreshold` since the last reading.
    mutating func observe(_ reading: ClockReading) -> Int64? {
        let wallAtBoot = reading.wallAtBoot
        var step: Int64?
        if let last = lastWallAtBoot, abs(wallAtBoot - last) > Self.stepThreshold {
            step = wallAtBoot - last
            steps += 1
        }
        lastWallAtBoot = wallAtBoot
        if reading.sync == .synchronised {
            reference = (reading.bootID, wallAtBoot)
        }
        return step
    }

    /// The true time of a message measured unsynchronised in the current kernel boot,
    /// once a synchronised clock of that boot was seen; nil for anything else (measured
    /// synchronised, from another kernel boot, or no reference yet).
    func correctedTime(_ measured: MeasuredAt?) -> Date? {
        guard let measured, !measured.synchronised, let reference, reference.bootID == measured.kernelBootID else {
            return nil
        }
        return Date(timeIntervalSince1970: Double(reference.wallAtBoot + measured.boottime / 1_000_000) / 1000)
    }

    /// The true poll time of a Sparkplug DDATA row (its metric timestamps), counted as
    /// corrected; nil when the row needs no correction or cannot get one (see `correctedTime`).
    mutating func correctedPollTime(for message: OutboxMessage) -> Date? {
        guard let time = correctedTime(message.measured) else { return nil }
        corrected += 1
        return time
    }

    /// The payload to publish for `message`: with `ts` corrected and `ts_source`
    /// `corrected` when it can be, else the stored payload unchanged. Sealed payloads
    /// are opened with `sealer`'s key, corrected and sealed again (a fresh nonce); one
    /// sealed with a key no longer configured is sent as it is (still `unsynchronised`).
    mutating func payload(for message: OutboxMessage, sealer: Sealer?) -> [UInt8] {
        guard let time = correctedTime(message.measured) else { return message.payload }
        let rewritten: [UInt8]?
        if let sealer {
            guard let opener = try? Opener(keys: [sealer.key]),
                  let plain = try? opener.open(message.payload, topic: message.topic),
                  let fixed = MessageEncoding.correctingTimestamp(plain, to: time)
            else { return message.payload }
            rewritten = IngestService.seal(fixed, topic: message.topic, with: sealer)
        } else {
            rewritten = MessageEncoding.correctingTimestamp(message.payload, to: time)
        }
        guard let rewritten else { return message.payload }
        corrected += 1
        return rewritten
    }
}

extension MessageEncoding {
    /// The data payload with its `ts` replaced by `date` and `ts_source` by `corrected`,
    /// or nil when it has no `"ts":"…","ts_source":"unsynchronised"` pair.
    ///
    /// Only `gateway` and `device` come before `ts` in a data message, and inside a
    /// JSON string every `"` is escaped, so the first `"ts":"` is the key.
    public static func correctingTimestamp(_ payload: [UInt8], to date: Date) -> [UInt8]? {
        let key = Array(#""ts":""#.utf8)
        let tail = Array(#"","ts_source":"unsynchronised""#.utf8)
        guard let start = firstIndex(of: key, in: payload) else { return nil }
        let valueStart = start + key.count
        guard let valueEnd = payload[valueStart...].firstIndex(of: UInt8(ascii: "\"")),
              payload[valueEnd...].starts(with: tail) else { return nil }
        var result = Array(payload[..<valueStart])
        result.append(contentsOf: timestamp(date).utf8)
        result.append(contentsOf: #"","ts_source":"corrected""#.utf8)
        result.append(contentsOf: payload[(valueEnd + tail.count)...])
        return result
    }

    private static func firstIndex(of needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for index in 0...(haystack.count - needle.count) where haystack[index] == needle[0] {
            if haystack[index..<(index + needle.count)].elementsEqual(needle) { return index }
        }
        return nil
    }
}
