// The small textual formats of gateway.yaml: durations ("500ms", "1.5s", "7d"),
// byte sizes ("64MB", "1GiB") and MQTT topic levels. Exact integer arithmetic,
// so "0.1s" is exactly 100 ms.

/// A non-negative decimal number as written, like `1.5`, kept exact.
struct DecimalText {
    var whole: Int64
    /// Digits after the point, at most 18 of them (later ones are dropped).
    var fraction: Int64
    var fractionDigits: Int

    /// Splits `text` into a decimal number and the unit that follows it
    /// (spaces between them allowed). `nil` if it does not start with a digit.
    static func split(_ text: String) -> (number: DecimalText, unit: Substring)? {
        let text = Substring(text)
        let digits = text.prefix(while: \.isASCIIDigit)
        guard !digits.isEmpty, let whole = Int64(digits) else { return nil }
        var rest = text.dropFirst(digits.count)
        var number = DecimalText(whole: whole, fraction: 0, fractionDigits: 0)
        if rest.first == "." {
            rest = rest.dropFirst()
            let fractionDigits = rest.prefix(while: \.isASCIIDigit)
            guard !fractionDigits.isEmpty else { return nil }
            rest = rest.dropFirst(fractionDigits.count)
            let kept = fractionDigits.prefix(18)
            number.fraction = Int64(kept) ?? 0
            number.fractionDigits = kept.count
        }
        return (number, rest.drop(while: { $0 == " " }))
    }

    /// `self × unit`, rounded down; `nil` if it does not fit in an `Int64`.
    func scaled(by unit: Int64) -> Int64? {
        let (wholePart, overflow) = whole.multipliedReportingOverflow(by: unit)
        guard !overflow else { return nil }
        var divisor: Int64 = 1
        for _ in 0..<fractionDigits { divisor *= 10 }
        // fraction < divisor, so the quotient is below `unit` and cannot overflow.
        let product = fraction.multipliedFullWidth(by: unit)
        let fractionPart = divisor.dividingFullWidth(product).quotient
        let (sum, sumOverflow) = wholePart.addingReportingOverflow(fractionPart)
        return sumOverflow ? nil : sum
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}

enum DurationSyntax {
    /// Accepted units and their length in nanoseconds; no unit means seconds.
    static let units: [(name: String, nanoseconds: Int64)] = [
        ("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000),
        ("h", 3_600_000_000_000), ("d", 86_400_000_000_000), ("", 1_000_000_000),
    ]

    static let example = "a number of seconds, or a number with a unit ms, s, m, h or d: 500ms, 1.5s, 2m, 1h, 7d"

    /// Parses `500ms`, `1.5s`, `2m`, `1h`, `7d` or a bare number of seconds.
    /// `nil` if malformed, negative or too large.
    static func parse(_ text: String) -> Duration? {
        guard let (number, unit) = DecimalText.split(text.trimmingSpaces),
              let scale = units.first(where: { $0.name == unit })?.nanoseconds,
              let nanoseconds = number.scaled(by: scale)
        else { return nil }
        return .nanoseconds(nanoseconds)
    }

    /// The shortest exact spelling: `10ms`, `5s`, `2m`, `7d`, `1.5s`.
    static func format(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        if attoseconds == 0 {
            for (name, length) in [("d", Int64(86_400)), ("h", 3_600), ("m", 60)]
            where seconds != 0 && seconds % length == 0 {
                return "\(seconds / length)\(name)"
            }
            return "\(seconds)s"
        }
        if attoseconds % 1_000_000_000_000_000 == 0 && seconds == 0 {
            return "\(attoseconds / 1_000_000_000_000_000)ms"
        }
        let nanoseconds = seconds * 1_000_000_000 + attoseconds / 1_000_000_000
        if nanoseconds % 1_000_000 == 0 { return "\(nanoseconds / 1_000_000)ms" }
        return "\(nanoseconds)ns"
    }
}

enum ByteSizeSyntax {
    /// Accepted units (compared case-insensitively): decimal KB/MB/GB/TB,
    /// binary KiB/MiB/GiB/TiB, B or nothing for bytes.
    static let units: [(name: String, bytes: Int64)] = [
        ("", 1), ("b", 1),
        ("kb", 1_000), ("mb", 1_000_000), ("gb", 1_000_000_000), ("tb", 1_000_000_000_000),
        ("kib", 1 << 10), ("mib", 1 << 20), ("gib", 1 << 30), ("tib", 1 << 40),
    ]

    static let example = "a number of bytes, or a number with a unit: 512KB, 64MB, 1GB (powers of 1000), 64MiB, 1GiB (powers of 1024)"

    /// Parses `1048576`, `512KB`, `1.5GB`, `64MiB`; fractions of a byte are dropped.
    static func parse(_ text: String) -> Int64? {
        guard let (number, unit) = DecimalText.split(text.trimmingSpaces),
              let scale = units.first(where: { $0.name == unit.lowercased() })?.bytes
        else { return nil }
        return number.scaled(by: scale)
    }
}

/// Whether '.' may appear in the gateway's topics (`gateway.allow_dots_in_topics`).
enum TopicDots {
    case refused
    /// Allowed, with a warning.
    case allowed
}

/// MQTT topic names (MQTT 3.1.1 §1.5.3, §4.7): UTF-8 (a Swift `String` always is),
/// at most 65,535 bytes, no U+0000, no control characters, no wildcards.
enum TopicSyntax {
    /// Why a '.' in a topic is refused by default.
    /// (RabbitMQ's MQTT plugin turns '/' into '.' for its AMQP routing keys and back,
    /// so 'a.b/c' reaches subscribers as 'a/b/c'. The other characters of a level,
    /// letters, digits, '-' and '_', pass every broker unchanged.)
    static let whyNoDots = "RabbitMQ routes MQTT over its own '.'-separated routing keys and delivers '.' "
        + "as '/', so consumers' wildcard subscriptions miss these messages and sealed "
        + "messages fail to open (their topic is authenticated)"

    static let levelCharacters = "letters, digits, '_', '.' and '-'"
    /// The longest topic MQTT can carry: its length is a 16-bit number.
    static let maximumBytes = 65_535

    /// Whether `name` is usable as one MQTT topic level (and as a JSON key):
    /// `[A-Za-z0-9_.-]+`.
    static func isLevelName(_ name: String) -> Bool {
        !name.isEmpty && name.unicodeScalars.allSatisfy { scalar in
            switch scalar {
            case "A"..."Z", "a"..."z", "0"..."9", "_", ".", "-": return true
            default: return false
            }
        }
    }

    /// C0 controls (U+0000...U+001F), DEL and C1 controls (U+007F...U+009F):
    /// brokers refuse them in topics ("Malformed UTF-8") and close the connection.
    static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
    }

    /// Unicode noncharacters (U+FDD0...U+FDEF, U+xFFFE, U+xFFFF), which brokers also refuse.
    static func isNoncharacter(_ scalar: Unicode.Scalar) -> Bool {
        (0xFDD0...0xFDEF).contains(scalar.value) || scalar.value & 0xFFFE == 0xFFFE
    }

    /// What is wrong with `prefix` as the first levels of a topic, or `nil`.
    static func prefixProblem(_ prefix: String) -> String? {
        let shown = Excerpt.of(prefix)
        if prefix.isEmpty { return "the topic prefix is empty" }
        if prefix.utf8.count > maximumBytes {
            return "topic prefix '\(shown)' is longer than an MQTT topic may be (65535 bytes)"
        }
        if let scalar = prefix.unicodeScalars.first(where: { isControl($0) || isNoncharacter($0) }) {
            let what = scalar.value == 0 ? "a NUL character" : isControl(scalar) ? "a control character" : "a Unicode noncharacter"
            return "topic prefix '\(shown)' contains \(what) (U+\(hex(scalar)))"
        }
        if prefix.contains("+") || prefix.contains("#") {
            return "topic prefix '\(shown)' contains a wildcard ('+' or '#')"
        }
        if prefix.hasPrefix("/") || prefix.hasSuffix("/") {
            return "topic prefix '\(shown)' starts or ends with '/'"
        }
        if prefix.contains("//") { return "topic prefix '\(shown)' has an empty level ('//')" }
        if prefix.hasPrefix("$") { return "topic prefix '\(shown)' starts with '$', which brokers reserve" }
        return nil
    }

    /// What is wrong with `topic` as a topic name to publish on, or `nil`.
    static func topicProblem(_ topic: String) -> String? {
        let shown = Excerpt.of(topic)
        let bytes = topic.utf8.count
        if bytes > maximumBytes {
            return "topic '\(shown)' would be \(bytes) bytes long; MQTT topics are at most \(maximumBytes) bytes"
        }
        if let scalar = topic.unicodeScalars.first(where: { isControl($0) || isNoncharacter($0) }) {
            return "topic '\(shown)' contains the character U+\(hex(scalar)), which MQTT does not allow in topics"
        }
        for level in topic.split(separator: "/", omittingEmptySubsequences: false) {
            if level.isEmpty { return "topic '\(shown)' has an empty level" }
            if level.contains("+") || level.contains("#") {
                return "topic '\(shown)' contains a wildcard ('+' or '#'), which is not allowed when publishing"
            }
        }
        return nil
    }

    private static func hex(_ scalar: Unicode.Scalar) -> String {
        let digits = String(scalar.value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}
