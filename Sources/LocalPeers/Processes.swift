// Child processes for the integration tests and the benchmarks: mosquitto, the gateway binary.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public struct MissingTool: Error, CustomStringConvertible {
    public var description: String
    public init(description: String) { self.description = description }
}

/// Finds an executable on PATH or in the sbin directories; fails naming the Debian package.
public func requireTool(_ name: String, package: String) throws -> String {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
    for directory in path.split(separator: ":").map(String.init) + ["/usr/sbin", "/usr/local/sbin", "/sbin"] {
        let candidate = directory + "/" + name
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    throw MissingTool(description: "\(name) is not installed: run `make deps` (Debian package \(package))")
}

/// A child process whose output goes to a log file.
///
/// Spawned with posix_spawn and an empty signal mask: a test runs on dispatch
/// threads that block SIGTERM and SIGINT, and a child inheriting that mask
/// (as Foundation's `Process` lets it) would never see the signals a test sends.
public final class ChildProcess: @unchecked Sendable {
    public let pid: pid_t
    public let logPath: String
    private let executable: String
    // Invariant: only touched under `lock`; set once the child has been reaped.
    private let lock = NSLock()
    private var exitStatus: Int32?

    public init(_ executable: String, _ arguments: [String], log logPath: String,
                environment: [String: String] = [:]) throws {
        self.executable = executable
        self.logPath = logPath
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        var defaults = sigset_t()
        sigfillset(&defaults)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var merged = ProcessInfo.processInfo.environment
        merged.merge(environment) { $1 }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard rc == 0 else {
            throw MissingTool(description: "cannot start \(executable): \(String(cString: strerror(rc)))")
        }
        self.pid = pid
    }

    deinit {
        if isRunning {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
    }

    /// Reaps the child if it has exited; true while it runs.
    public var isRunning: Bool {
        lock.withLock {
            guard exitStatus == nil else { return false }
            var status: Int32 = 0
            let reaped = waitpid(pid, &status, WNOHANG)
            if reaped == pid {
                // Exit code, or 128 + signal for a killed process (as a shell reports it).
                let signal = status & 0x7F
                exitStatus = signal == 0 ? (status >> 8) & 0xFF : 128 + signal
                return false
            }
            return reaped == 0
        }
    }

    public func signal(_ signal: Int32) { kill(pid, signal) }

    /// Blocks the calling thread until the child exits (for short commands in
    /// synchronous cleanup code); returns its status like `waitForExit`.
    @discardableResult
    public func waitBlocking() -> Int32 {
        lock.withLock {
            if let exitStatus { return exitStatus }
            var status: Int32 = 0
            while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
            let signal = status & 0x7F
            exitStatus = signal == 0 ? (status >> 8) & 0xFF : 128 + signal
            return exitStatus!
        }
    }

    /// Waits for the exit and returns its status (128 + signal for a killed process).
    public func waitForExit(timeout: Duration = .seconds(10)) async throws -> Int32 {
        try await waitUntil("\(URL(fileURLWithPath: executable).lastPathComponent) (pid \(pid)) to exit", timeout: timeout) {
            !isRunning
        }
        return lock.withLock { exitStatus ?? -1 }
    }

    public var output: String {
        (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
    }
}

/// A mosquitto broker on a loopback port, configured in its own directory.
public final class MosquittoBroker: @unchecked Sendable {
    public let port: Int
    private let directory: TemporaryDirectory
    private var child: ChildProcess?

    /// - Parameter persistent: keep retained messages and sessions across a graceful restart.
    public init(port: Int = freeLoopbackPort(), persistent: Bool = false) throws {
        self.port = port
        directory = try TemporaryDirectory("mosquitto")
        // Started as root, mosquitto would switch to its own user and could not write here.
        let user = String(cString: getpwuid(getuid()).pointee.pw_name)
        var config = "listener \(port) 127.0.0.1\nallow_anonymous true\nuser \(user)\n"
        config += persistent ? "persistence true\npersistence_location \(directory.path)/\n" : "persistence false\n"
        try config.write(toFile: directory.file("mosquitto.conf"), atomically: true, encoding: .utf8)
    }

    /// A broker run from `configuration` (mosquitto.conf text, e.g. TLS listeners);
    /// `start()` waits until `port` accepts connections. `user <current user>` is
    /// appended, so a broker started as root can still read its files.
    public init(port: Int, configuration: String) throws {
        self.port = port
        directory = try TemporaryDirectory("mosquitto")
        let user = String(cString: getpwuid(getuid()).pointee.pw_name)
        try (configuration + "\nuser \(user)\n")
            .write(toFile: directory.file("mosquitto.conf"), atomically: true, encoding: .utf8)
    }

    deinit {
        child = nil
        directory.remove()
    }

    /// Starts the broker and waits until it accepts connections.
    public func start() async throws {
        let executable = try requireTool("mosquitto", package: "mosquitto")
        child = try ChildProcess(executable, ["-c", directory.file("mosquitto.conf")], log: directory.file("mosquitto.log"))
        try await waitUntil("mosquitto on port \(port)") { isListening(port: port) }
    }

    /// Stops the broker and waits for its exit. `graceful` (SIGTERM) lets it save
    /// its persistent state; otherwise SIGKILL, as abrupt as a crashed host.
    public func stop(graceful: Bool = false) async throws {
        guard let child else { return }
        child.signal(graceful ? SIGTERM : SIGKILL)
        _ = try await child.waitForExit()
        self.child = nil
    }

    /// Sends `signal` to the running broker (SIGSTOP / SIGCONT: a broker that holds its
    /// connections open but answers nothing for a while).
    public func signal(_ signal: Int32) { child?.signal(signal) }

    public var log: String { child?.output ?? "" }
}

/// Path of a product built next to the test bundle (e.g. the `edge-gateway` binary).
public func builtProduct(_ name: String) throws -> String {
    var candidates: [String] = []
    if let bundle = Bundle.main.executableURL?.deletingLastPathComponent() {
        candidates.append(bundle.appendingPathComponent(name).path)
    }
    let arg0 = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    candidates.append(arg0.appendingPathComponent(name).path)
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    candidates.append(root.appendingPathComponent(".build/debug/\(name)").path)
    for candidate in candidates where FileManager.default.isExecutableFile(atPath: candidate) {
        return candidate
    }
    throw MissingTool(description: "\(name) is not built (looked in \(candidates)); run `swift build` first (make test does)")
}
