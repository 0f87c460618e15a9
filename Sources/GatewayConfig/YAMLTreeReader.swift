// A small reader over a composed Yams.Node tree. Every value carries its YAML
// path and its Mark, so each problem can say where it is; nothing throws, each
// read reports into one ProblemLog and returns nil, so a single pass finds all.

import Yams

/// The problems of one document, in the order they were found.
final class ProblemLog {
    let file: String
    private(set) var problems: [ConfigProblem] = []
    /// What is accepted but should change; does not stop loading.
    private(set) var warnings: [ConfigProblem] = []

    init(file: String) {
        self.file = file
    }

    func report(_ path: String, at mark: Mark?, _ message: String, hint: String) {
        problems.append(ConfigProblem(
            path: path, line: mark?.line, column: mark?.column,
            message: message, hint: hint, file: file))
    }

    func warn(_ path: String, at mark: Mark?, _ message: String, hint: String) {
        warnings.append(ConfigProblem(
            path: path, line: mark?.line, column: mark?.column,
            message: message, hint: hint, file: file))
    }

    /// The problems in file order (those without a place first), ties in the
    /// order they were found.
    var problemsInFileOrder: [ConfigProblem] {
        problems.enumerated().sorted { a, b in
            let left = (a.element.line ?? 0, a.element.column ?? 0, a.offset)
            let right = (b.element.line ?? 0, b.element.column ?? 0, b.offset)
            return left < right
        }.map(\.element)
    }
}

/// One node of the document with where it is.
struct YAMLValue {
    let node: Node
    /// Full YAML path, like `devices[0].tags[2].address`.
    let path: String
    /// The key this value was found under (`"device"` for list items), for messages.
    let name: String
    let log: ProblemLog
    /// Where the key of this value is, for problems about the value as a
    /// whole (a missing key of a mapping is reported at the mapping's key).
    var keyMark: Mark?

    var mark: Mark? { node.mark }

    func report(_ message: String, hint: String) {
        log.report(path, at: mark, message, hint: hint)
    }

    // MARK: Kinds

    enum Kind {
        case null, bool, int, float, string, mapping, list
    }

    var kind: Kind {
        switch node {
        case .mapping: return .mapping
        case .sequence: return .list
        case .alias: return .string
        case .scalar:
            switch node.tag.rawValue {
            case Tag.Name.null.rawValue: return .null
            case Tag.Name.bool.rawValue: return .bool
            case Tag.Name.int.rawValue: return .int
            case Tag.Name.float.rawValue: return .float
            default: return .string
            }
        }
    }

    var isNull: Bool { kind == .null }

    /// The scalar's text exactly as written (without quotes).
    var text: String? { node.scalar?.string }

    /// "the string \"abc\"", "a list", ... for "expected X, found Y".
    var found: String {
        let text = self.text ?? ""
        switch kind {
        case .null: return "no value"
        case .bool: return "the boolean \(Excerpt.of(text))"
        case .int: return "the integer \(Excerpt.of(text))"
        case .float: return "the number \(Excerpt.of(text))"
        case .string: return "the string \"\(Excerpt.of(text))\""
        case .mapping: return "a mapping"
        case .list: return "a list"
        }
    }

    func reportWrongType(expected: String, hint: String) {
        let hint = isNull ? "write a value after '\(name):'" : hint
        report("expected \(expected), found \(found)", hint: hint)
    }

    // MARK: Containers

    /// The items of a list, with paths `path[i]`.
    func list(itemName: String, hint: String) -> [YAMLValue]? {
        guard case let .sequence(sequence) = node else {
            reportWrongType(expected: "a list", hint: hint)
            return nil
        }
        return sequence.enumerated().map { index, item in
            YAMLValue(node: item, path: "\(path)[\(index)]", name: itemName, log: log)
        }
    }

    // MARK: Scalars

    /// Any non-null scalar, as written: `id: 42` is the string "42".
    func string(hint: String = "write a plain value") -> String? {
        guard let text, !isNull else {
            reportWrongType(expected: "a string", hint: hint)
            return nil
        }
        return text
    }

    /// The one boolean of gateway.yaml: YAML 1.2's `true` or `false` (also
    /// `True`/`TRUE`, `False`/`FALSE`), unquoted. YAML 1.1's `yes`, `no`, `on`,
    /// `off`, `y` and `n` are refused with a hint, not guessed: parsers disagree
    /// on them, and a guess that turns TLS or verification off is not one to make.
    func boolean(hint: String) -> Bool? {
        if kind == .bool, let text {
            if ["true", "True", "TRUE"].contains(text) { return true }
            if ["false", "False", "FALSE"].contains(text) { return false }
        }
        if kind == .bool || kind == .string, let word = text,
           ["yes", "no", "on", "off", "y", "n"].contains(word.lowercased()) {
            report("'\(word)' is not a boolean in gateway.yaml",
                   hint: "write true or false (YAML 1.2 booleans; the YAML 1.1 words yes/no/on/off/y/n are not accepted)")
            return nil
        }
        reportWrongType(expected: "true or false", hint: hint)
        return nil
    }

    /// A whole number in `range`.
    func integer(in range: ClosedRange<Int>, rangeHint: String? = nil) -> Int? {
        let rangeHint = rangeHint ?? "use a value in \(range.lowerBound)...\(range.upperBound)"
        guard kind == .int, let scalar = node.scalar else {
            if kind == .string, let text, text.utf8.count <= Excerpt.limit, Int(text.trimmingSpaces) != nil {
                reportWrongType(expected: "an integer", hint: "write \(text.trimmingSpaces) without quotes")
            } else {
                reportWrongType(expected: "an integer", hint: rangeHint)
            }
            return nil
        }
        guard let value = Int.construct(from: scalar), range.contains(value) else {
            report("\(name) \(Excerpt.of(scalar.string)) is out of range", hint: rangeHint)
            return nil
        }
        return value
    }

    /// A finite number (integer or decimal).
    func finiteNumber() -> Double? {
        guard kind == .int || kind == .float, let scalar = node.scalar,
              let value = Double.construct(from: scalar)
        else {
            reportWrongType(expected: "a number", hint: "write a number such as 1, 0.1 or -40")
            return nil
        }
        guard value.isFinite else {
            report("\(name) must be a finite number, not \(Excerpt.of(scalar.string))", hint: "write a number such as 1, 0.1 or -40")
            return nil
        }
        return value
    }

    /// One of `E`'s raw values (any case), or one of `aliases`.
    func choice<E: RawRepresentable & CaseIterable>(
        _ type: E.Type, aliases: [String: E] = [:]
    ) -> E? where E.RawValue == String {
        let allowed = E.allCases.map(\.rawValue)
        let hint = "use one of: \(allowed.joined(separator: ", "))"
        guard kind != .mapping, kind != .list, !isNull, let text else {
            reportWrongType(expected: "one of \(allowed.joined(separator: ", "))", hint: hint)
            return nil
        }
        let key = text.trimmingSpaces.lowercased()
        if let value = E(rawValue: key) ?? aliases[key] { return value }
        let suggestion = Suggestion.closest(to: key, among: allowed + aliases.keys.sorted())
        report("'\(Excerpt.of(text))' is not a valid \(name)",
               hint: suggestion.map { "did you mean '\($0)'? \(hint)" } ?? hint)
        return nil
    }

    /// A duration in `range`: a number of seconds or a string such as `500ms`, `2m`.
    func duration(in range: ClosedRange<Duration>, rangeHint: String? = nil) -> Duration? {
        let parsed: Duration?
        switch kind {
        case .int, .float, .string:
            parsed = text.flatMap(DurationSyntax.parse)
        case .null, .bool, .mapping, .list:
            reportWrongType(expected: "a duration", hint: "write " + DurationSyntax.example)
            return nil
        }
        guard let parsed else {
            report("'\(Excerpt.of(text ?? ""))' is not a valid duration", hint: "write " + DurationSyntax.example)
            return nil
        }
        guard range.contains(parsed) else {
            let shown = DurationSyntax.format(parsed)
            let bounds = "\(DurationSyntax.format(range.lowerBound))...\(DurationSyntax.format(range.upperBound))"
            let relation = parsed < range.lowerBound ? "too short" : "too long"
            report("\(name) \(shown) is \(relation)", hint: rangeHint ?? "use a duration in \(bounds)")
            return nil
        }
        return parsed
    }

    /// A positive byte size: an integer or a string such as `64MB`, `1GiB`.
    func byteSize() -> Int64? {
        let parsed: Int64?
        switch kind {
        case .int, .string:
            parsed = text.flatMap(ByteSizeSyntax.parse)
        case .null, .bool, .float, .mapping, .list:
            reportWrongType(expected: "a size", hint: "write " + ByteSizeSyntax.example)
            return nil
        }
        guard let parsed else {
            report("'\(Excerpt.of(text ?? ""))' is not a valid size", hint: "write " + ByteSizeSyntax.example)
            return nil
        }
        guard parsed > 0 else {
            report("\(name) must be larger than 0", hint: "write a positive size, or none for no limit")
            return nil
        }
        return parsed
    }

    /// Whether this is `null`, `~`, an empty value or the word `none`: "no limit".
    var meansNone: Bool {
        isNull || (kind == .string && text?.trimmingSpaces.lowercased() == "none")
    }
}

/// Reads a mapping key by key and reports the keys nobody asked for.
///
/// Every key the schema knows is asked for (present or not), so at `finish()`
/// the asked keys are exactly the allowed ones and feed the "did you mean" hint.
struct MappingReader {
    let value: YAMLValue
    private let entries: [(key: String, keyNode: Node, value: Node)]
    private var known: [String] = []
    private var claimed: Set<String> = []

    /// `nil` (and a problem reported) if `value` is not a mapping. A null value
    /// (`buffer:` with nothing under it) reads as an empty mapping.
    init?(_ value: YAMLValue, hint: String) {
        self.value = value
        switch value.node {
        case let .mapping(mapping):
            entries = mapping.map { pair in
                (pair.key.scalar?.string ?? "<\(YAMLValue(node: pair.key, path: "", name: "", log: value.log).found)>",
                 pair.key, pair.value)
            }
        case _ where value.isNull:
            entries = []
        default:
            value.reportWrongType(expected: "a mapping", hint: hint)
            return nil
        }
    }

    /// The path of `key` under this mapping; a long key is cut (see `Excerpt`).
    private func path(_ key: String) -> String {
        let key = Excerpt.of(key)
        return value.path.isEmpty ? key : "\(value.path).\(key)"
    }

    /// The value under `key`, if present. Makes `key` an allowed key.
    mutating func optional(_ key: String) -> YAMLValue? {
        known.append(key)
        return claim(key)
    }

    /// The value under `key`, or a problem at the mapping when it is absent.
    mutating func required(_ key: String, message: String? = nil, hint: String) -> YAMLValue? {
        guard let found = optional(key) else {
            value.log.report(path(key), at: value.keyMark ?? value.mark,
                             message ?? "missing required key '\(key)'", hint: hint)
            return nil
        }
        return found
    }

    /// The value under `key` without offering `key` as a suggestion: for keys
    /// that are recognised only to be refused with a better hint.
    mutating func claim(_ key: String) -> YAMLValue? {
        claimed.insert(key)
        guard let entry = entries.first(where: { $0.key == key }) else { return nil }
        return YAMLValue(node: entry.value, path: path(key), name: key, log: value.log,
                         keyMark: entry.keyNode.mark)
    }

    /// Whether `key` is written in the mapping (asked for or not).
    func contains(_ key: String) -> Bool {
        entries.contains { $0.key == key }
    }

    /// Reports every key that was not asked for, with a "did you mean".
    func finish() {
        let allowed = "allowed keys here: \(known.joined(separator: ", "))"
        for entry in entries where !claimed.contains(entry.key) {
            let hint = Suggestion.closest(to: entry.key, among: known)
                .map { "did you mean '\($0)'? \(allowed)" } ?? allowed
            value.log.report(path(entry.key), at: entry.keyNode.mark,
                             "unknown key '\(Excerpt.of(entry.key))'", hint: hint)
        }
    }
}

/// "Did you mean" by edit distance, ignoring case, '_' and '-'.
enum Suggestion {
    /// Longer words get no suggestion: no key or value of the schema is near
    /// them, and the distance costs time and memory with the word's length.
    static let longestWord = 64

    static func closest(to word: String, among candidates: [String]) -> String? {
        guard word.utf8.count <= longestWord else { return nil }
        let target = normalized(word)
        let limit = max(1, min(3, target.count / 3))
        return candidates
            .map { (candidate: $0, distance: editDistance(target, normalized($0))) }
            .filter { $0.distance <= limit }
            .min { $0.distance < $1.distance }?
            .candidate
    }

    private static func normalized(_ word: String) -> [Character] {
        Array(word.lowercased().filter { $0 != "_" && $0 != "-" })
    }

    /// Edit distance counting insertions, deletions, substitutions and swaps
    /// of neighbours ("hots" is one edit from "host").
    static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
        var d = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
        for i in 0...a.count { d[i][0] = i }
        for j in 0...b.count { d[0][j] = j }
        for i in stride(from: 1, through: a.count, by: 1) {
            for j in stride(from: 1, through: b.count, by: 1) {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
                }
            }
        }
        return d[a.count][b.count]
    }
}

extension String {
    var trimmingSpaces: String {
        String(drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }
}

/// A value as shown in a message: whole when short; else its first
/// `limit` characters, an ellipsis and its size, so a hostile value cannot
/// flood the terminal or the journal. Control characters are written as
/// `\u{1}` so they can be seen.
enum Excerpt {
    static let limit = 60

    static func of(_ text: String) -> String {
        let long = !text.unicodeScalars.dropFirst(limit).isEmpty
        var shown = ""
        for scalar in text.unicodeScalars.prefix(limit) {
            if TopicSyntax.isControl(scalar) {
                shown += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                shown.unicodeScalars.append(scalar)
            }
        }
        return long ? shown + "… (\(text.utf8.count) bytes)" : shown
    }
}
