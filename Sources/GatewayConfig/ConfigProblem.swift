// What the loader reports when gateway.yaml cannot be used: every problem, each
// with its YAML path, its place in the file, what is wrong and what to do.

/// One thing wrong with a configuration file.
///
/// `description` reads like a compiler diagnostic, so editors and terminals can
/// jump to the place:
/// `gateway.yaml:12:7: devices[0].tags[2].address: address 70000 is out of range; hint: Modbus addresses are 0...65535`
public struct ConfigProblem: Sendable, Equatable, CustomStringConvertible {
    /// YAML path of the offending value, like `devices[0].tags[2].address`;
    /// `""` when the problem concerns the whole document or file.
    public var path: String
    /// 1-based line in the file, when known.
    public var line: Int?
    /// 1-based column in the file, when known.
    public var column: Int?
    /// What is wrong.
    public var message: String
    /// What to do about it.
    public var hint: String
    /// The file the problem was found in, as named to the loader.
    public var file: String

    public init(
        path: String,
        line: Int? = nil,
        column: Int? = nil,
        message: String,
        hint: String,
        file: String = "gateway.yaml"
    ) {
        self.path = path
        self.line = line
        self.column = column
        self.message = message
        self.hint = hint
        self.file = file
    }

    /// `file:line:column: path: message; hint: hint`, leaving out what is unknown.
    public var description: String {
        var text = file
        if let line {
            text += ":\(line)"
            if let column { text += ":\(column)" }
        }
        text += ": "
        if !path.isEmpty { text += "\(path): " }
        text += message
        if !hint.isEmpty { text += "; hint: \(hint)" }
        return text
    }
}

/// A configuration file that cannot be used, with every problem found in it
/// (in document order), not just the first.
public struct ConfigurationError: Error, Equatable, CustomStringConvertible {
    /// The file as named to the loader.
    public var file: String
    /// Never empty.
    public var problems: [ConfigProblem]

    public init(file: String, problems: [ConfigProblem]) {
        self.file = file
        self.problems = problems
    }

    /// One problem per line, preceded by a count when there are several.
    public var description: String {
        let lines = problems.map(\.description)
        guard lines.count > 1 else { return lines.first ?? "\(file): invalid configuration" }
        return (["\(file): \(lines.count) problems:"] + lines).joined(separator: "\n")
    }
}
