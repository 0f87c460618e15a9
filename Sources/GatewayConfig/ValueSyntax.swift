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

enum TopicSyntax {
    static let levelCharacters = "letters, digits, '_', '.' and '-'"

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

    /// What is wrong with `prefix` as the first levels of a topic, or `nil`.
    static func prefixProblem(_ prefix: String) -> String? {
        if prefix.isEmpty { return "the topic prefix is empty" }
        if prefix.contains("+") || prefix.contains("#") {
            return "topic prefix '\(prefix)' contains a wildcard ('+' or '#')"
        }
        if prefix.hasPrefix("/") || prefix.hasSuffix("/") {
            return "topic prefix '\(prefix)' starts or ends with '/'"
        }
        if prefix.contains("//") { return "topic prefix '\(prefix)' has an empty level ('//')" }
        if prefix.hasPrefix("$") { return "topic prefix '\(prefix)' starts with '$', which brokers reserve" }
        if prefix.unicodeScalars.contains(where: { $0.value == 0 }) {
            return "topic prefix contains a NUL character"
        }
        return nil
    }
}
