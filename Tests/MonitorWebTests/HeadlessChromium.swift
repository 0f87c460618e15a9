// A real browser for the page tests: headless Chromium (Debian package `chromium`)
// loads a URL, runs its script for a stretch of virtual time, and hands back the
// DOM as it stands then (`--dump-dom`) or a screenshot.
import Foundation
import Testing
import TestSupport

/// True under CI, where a missing tool fails a test instead of disabling it.
let isCI = ProcessInfo.processInfo.environment["CI"] == "true"

/// The repository's root directory.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// Runs a command to its end with its output in `directory`; returns its exit status and output.
func runCommand(_ executable: String, _ arguments: [String], in directory: TemporaryDirectory,
                timeout: Duration = .seconds(60)) async throws -> (status: Int32, output: String) {
    let child = try ChildProcess(executable, arguments, log: directory.file("cmd-\(UUID().uuidString.prefix(8)).log"))
    let status = try await child.waitForExit(timeout: timeout)
    return (status, child.output)
}

struct HeadlessChromium {
    let executable: String
    let directory: TemporaryDirectory

    init(directory: TemporaryDirectory) throws {
        executable = try requireTool("chromium", package: "chromium")
        self.directory = directory
    }

    /// The page's DOM after `virtualTime` of script time (timers run, fetches complete).
    func dumpDOM(_ url: String, virtualTime: Duration = .seconds(5)) async throws -> DumpedDOM {
        let output = directory.file("dom-\(UUID().uuidString.prefix(8)).html")
        try await run(["--dump-dom", url], virtualTime: virtualTime, stdout: output)
        let html = try String(contentsOfFile: output, encoding: .utf8)
        let stderr = (try? String(contentsOfFile: output + ".stderr", encoding: .utf8)) ?? ""
        try #require(html.contains("<html"), "chromium dumped no DOM for \(url): \(stderr.suffix(3000))")
        return DumpedDOM(html: html)
    }

    /// A PNG of the page after `virtualTime`, written to `path`.
    func screenshot(_ url: String, to path: String, size: (width: Int, height: Int) = (1400, 900),
                    virtualTime: Duration = .seconds(5)) async throws {
        try await run(["--screenshot=\(path)", "--window-size=\(size.width),\(size.height)", url],
                      virtualTime: virtualTime, stdout: directory.file("screenshot.log"))
    }

    private func run(_ arguments: [String], virtualTime: Duration, stdout: String) async throws {
        let profile = directory.file("profile-\(UUID().uuidString.prefix(8))")
        let flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                     "--disable-extensions", "--disable-dev-shm-usage", "--user-data-dir=\(profile)",
                     "--virtual-time-budget=\(Int(virtualTime / .milliseconds(1)))"]
        // stdout (the DOM) apart from stderr (Chromium's own chatter about D-Bus and GPUs).
        let quoted = ([executable] + flags + arguments).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        let script = quoted.joined(separator: " ") + " > '\(stdout)' 2> '\(stdout).stderr'"
        let result = try await runCommand("/bin/sh", ["-c", script], in: directory, timeout: .seconds(90))
        let stderr = (try? String(contentsOfFile: stdout + ".stderr", encoding: .utf8)) ?? ""
        try #require(result.status == 0, "chromium exited \(result.status): \(stderr.suffix(2000))")
    }
}

/// A DOM serialised by `--dump-dom`, read with a few patterns: the page's hooks are
/// attributes on known elements, so no general HTML parser is needed.
struct DumpedDOM {
    let html: String

    /// The attributes of every start tag named `tag` that has `attribute`, in document order.
    func elements(_ tag: String, with attribute: String) -> [[String: String]] {
        var found: [[String: String]] = []
        let pattern = try! Regex("<\(tag)(\\s[^>]*)?>")
        for match in html.matches(of: pattern) {
            let attributes = Self.attributes(in: String(html[match.range]))
            if attributes[attribute] != nil { found.append(attributes) }
        }
        return found
    }

    /// The attributes of the `<body>` tag.
    var body: [String: String] { elements("body", with: "data-loaded").first ?? [:] }

    /// The text between the start tag carrying `attribute="value"` and the next `</tr>`
    /// (a table row's text, tags removed, entities decoded).
    func rowText(_ attribute: String, _ value: String) -> String? {
        let escaped = Self.escapeAttribute(value)
        guard let start = html.range(of: "\(attribute)=\"\(escaped)\"") else { return nil }
        let rest = html[start.upperBound...]
        let end = rest.range(of: "</tr>")?.lowerBound ?? rest.endIndex
        let text = String(rest[..<end]).replacing(/<[^>]*>/, with: " ")
        return Self.decode(text).split(whereSeparator: \.isWhitespace).joined(separator: " ")
    }

    private static func attributes(in tag: String) -> [String: String] {
        var result: [String: String] = [:]
        for match in tag.matches(of: /\s([a-zA-Z_:][-a-zA-Z0-9_:.]*)(?:="([^"]*)")?/) {
            result[String(match.1)] = decode(String(match.2 ?? ""))
        }
        return result
    }

    static func decode(_ text: String) -> String {
        text.replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&lt;", with: "<")
            .replacingOccurrences(of: "&gt;", with: ">").replacingOccurrences(of: "&#39;", with: "'")
            .replacingOccurrences(of: "&nbsp;", with: "\u{a0}").replacingOccurrences(of: "&amp;", with: "&")
    }

    /// How Chromium writes `value` inside a double-quoted attribute (for the plain ids tests use).
    static func escapeAttribute(_ value: String) -> String {
        value.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
