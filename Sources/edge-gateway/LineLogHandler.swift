// Log lines for stderr: one event per line, `key=value` metadata. Under systemd
// (JOURNAL_STREAM set) each line starts with a syslog priority `<N>` so journald
// keeps the level, and the timestamp is left to journald.
import Foundation
import Logging

struct LineLogHandler: LogHandler {
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    private let label: String
    private let underJournald = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] != nil
    private static let lock = NSLock()

    init(label: String) { self.label = label }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var fields = metadata
        if let explicit = event.metadata { fields.merge(explicit) { $1 } }
        if let error = event.error { fields["error"] = "\(error)" }
        var text = underJournald ? "<\(Self.priority(event.level))>" : "\(Self.timestamp()) "
        text += "\(event.level.rawValue.uppercased()) \(event.message)"
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
            let rendered = "\(value)"
            let quoted = rendered.contains(" ") || rendered.isEmpty ? "\"\(rendered)\"" : rendered
            text += " \(key)=\(quoted)"
        }
        text += "\n"
        Self.lock.withLock { FileHandle.standardError.write(Data(text.utf8)) }
    }

    private static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }

    private static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var parts = tm()
        var seconds = now.tv_sec
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1,
                      parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec, Int(now.tv_nsec / 1_000_000))
    }
}

enum Logging {
    /// Installs the line handler once; later calls only build loggers.
    static func makeLogger(level: Logger.Level) -> Logger {
        bootstrapOnce
        var logger = Logger(label: "edge-gateway")
        logger.logLevel = level
        return logger
    }

    private static let bootstrapOnce: Void = {
        LoggingSystem.bootstrap { LineLogHandler(label: $0) }
    }()
}
