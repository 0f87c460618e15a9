// The floor of `per-message`: what one poll's work costs when nothing but that work is
// done, on ONE thread, straight through the C libraries, in the same run as the gateway:
// no poller could spend less on this machine (short of doing less work per poll).
//
//   One dedicated thread (Foundation Thread), at a fixed rate, sleeping to absolute
//   deadlines (clock_nanosleep TIMER_ABSTIME, CLOCK_MONOTONIC; a slot already passed
//   is skipped and counted as an overrun, as a poller would). Per poll:
//   1. libmodbus `modbus_read_registers` of holding registers 0..99 (unit 1) from the
//      simulator the gateway runs poll, on one kept connection;
//   2. the gateway's own payload: RegisterDecoding.decode of the 100 uint16 tags, then
//      MessageEncoding.dataMessage (gateway "floor", device "meter": as long as the
//      gateway's "bench"), with the wall time from Date() rather than GatewayClock;
//   3. sqlite3 C API (WAL, the run's `synchronous`, the outbox's `message` columns but
//      its three clock columns, its cache_size and temp_store; wal_autocheckpoint left at
//      SQLite's default): prepared
//      BEGIN IMMEDIATE, DELETE of the previous poll's row (acknowledged by then),
//      INSERT, COMMIT; the file sits in the bench's temporary directory, beside the
//      gateway's outbox. No meta row is updated (the outbox updates one per commit);
//   4. libmosquitto without its thread (RawMosquittoClient: MQTT 3.1.1, TCP_NODELAY, as
//      the gateway): `mosquitto_publish` at QoS 1 to the same broker, then
//      `mosquitto_loop` on the same thread until that mid's PUBACK callback fired.
//   Measured over the polls after a warm-up: the thread's CPU time
//   (clock_gettime CLOCK_THREAD_CPUTIME_ID: this thread only, not the bench process's
//   other threads) and its voluntary and involuntary context switches
//   (/proc/thread-self/status), per poll.
//   Any failing call ends the run with a BaselineFailure naming the step; no figure is
//   made from a failed run.
import CModbus
import Foundation
import Gateway
import GatewayConfig
import GRDBSQLite
import LocalPeers
import Modbus
#if canImport(Glibc)
import Glibc
#endif

/// What the floor spent in one run.
struct FloorRun {
    var pollsPerSecond: Int
    var sync: String
    /// Measured polls (the warm-up excluded).
    var polls: Int
    var seconds: Double
    /// Seconds of the thread's CPU time per poll.
    var cpuPerPoll: Double
    var wakeupsPerPoll: Double
    var preemptionsPerPoll: Double
    /// Deadlines already passed when the previous poll ended (those slots were skipped).
    var overruns: Int
    var payloadBytes: Int

    /// Milliseconds of CPU per 1,000 values (100 values per poll).
    var cpuPerThousandValues: Double { cpuPerPoll * 1000 * 10 }
}

/// What one floor run is given (Sendable: handed to the floor's own thread).
private struct FloorSettings: Sendable {
    var databasePath: String
    var brokerPort: Int
    var modbusPort: Int
    var pollsPerSecond: Int
    var synchronousFull: Bool
    var warmUpPolls: Int
    var measuredPolls: Int
}

/// Runs the floor at `pollsPerSecond` for `duration` (at least 10 polls) on a thread of
/// its own, after a warm-up of at least 2 polls (1 s at 10 and 100 polls/s).
func runFloor(directory: TemporaryDirectory, brokerPort: Int, modbusPort: Int, pollsPerSecond: Int,
              sync: String, duration: Duration) async throws -> FloorRun {
    let settings = FloorSettings(
        databasePath: directory.file("floor-\(pollsPerSecond)-\(sync).sqlite"), brokerPort: brokerPort,
        modbusPort: modbusPort, pollsPerSecond: pollsPerSecond, synchronousFull: sync == "full",
        warmUpPolls: max(2, pollsPerSecond), measuredPolls: max(10, Int(Double(pollsPerSecond) * seconds(duration))))
    RawMosquittoClient.initialiseLibrary()
    let measured = try await onBaselineThread(named: "bench-floor") { try FloorPoller(settings).run() }
    let polls = Double(settings.measuredPolls)
    return FloorRun(pollsPerSecond: pollsPerSecond, sync: sync, polls: settings.measuredPolls,
                    seconds: measured.seconds, cpuPerPoll: measured.cpuSeconds / polls,
                    wakeupsPerPoll: Double(measured.voluntary) / polls,
                    preemptionsPerPoll: Double(measured.involuntary) / polls,
                    overruns: measured.overruns, payloadBytes: measured.payloadBytes)
}

private struct FloorMeasurement: Sendable {
    var seconds: Double
    var cpuSeconds: Double
    var voluntary: Int
    var involuntary: Int
    var overruns: Int
    var payloadBytes: Int
}

/// Nanoseconds of `clock` (CLOCK_MONOTONIC, CLOCK_THREAD_CPUTIME_ID).
private func nanoseconds(_ clock: clockid_t) -> Int64 {
    var now = timespec()
    clock_gettime(clock, &now)
    return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
}

/// The calling thread's voluntary and involuntary context switches so far.
private func threadSwitches() throws -> (voluntary: Int, involuntary: Int) {
    let status: String
    do {
        status = try String(contentsOfFile: "/proc/thread-self/status", encoding: .utf8)
    } catch {
        throw BaselineFailure(baseline: .floor, step: "reading /proc/thread-self/status", reason: "\(error)")
    }
    var voluntary: Int?, involuntary: Int?
    for line in status.split(separator: "\n") {
        let value = Int(line.split(separator: "\t").last ?? "")
        if line.hasPrefix("voluntary_ctxt_switches:") { voluntary = value }
        if line.hasPrefix("nonvoluntary_ctxt_switches:") { involuntary = value }
    }
    guard let voluntary, let involuntary else {
        throw BaselineFailure(baseline: .floor, step: "reading /proc/thread-self/status", reason: "no voluntary/nonvoluntary_ctxt_switches lines")
    }
    return (voluntary, involuntary)
}

/// The floor's connections and statements. Created, used and closed on the floor thread only.
private final class FloorPoller {
    private let settings: FloorSettings
    private var modbus: OpaquePointer?
    private var database: OpaquePointer?
    private var statements: [OpaquePointer] = []
    private let tags = (0..<100).map { TagConfiguration(name: "r\($0)", table: .holding, address: $0, type: .uint16) }
    private let topic = GatewayIdentity(id: "floor").dataTopic(device: "meter")

    init(_ settings: FloorSettings) {
        self.settings = settings
    }

    deinit {
        for statement in statements { sqlite3_finalize(statement) }
        if let database { sqlite3_close(database) }
        if let modbus {
            modbus_close(modbus)
            modbus_free(modbus)
        }
    }

    func run() throws -> FloorMeasurement {
        let modbus = try connectModbus()
        let database = try openDatabase()
        let begin = try prepare(database, "BEGIN IMMEDIATE")
        let delete = try prepare(database, "DELETE FROM message WHERE id = ?")
        let insert = try prepare(database, """
            INSERT INTO message (boot, seq, topic, qos, created_at, size, payload) VALUES (1, ?, ?, 1, ?, ?, ?)
            """)
        let commit = try prepare(database, "COMMIT")
        let mosquitto = try connectMQTT()

        let period = Int64(1_000_000_000 / settings.pollsPerSecond)
        var deadline = nanoseconds(CLOCK_MONOTONIC) + period
        var previousRow: Int64?
        var overruns = 0
        var payloadBytes = 0
        var start: (wall: Int64, cpu: Int64, switches: (voluntary: Int, involuntary: Int))?
        let total = settings.warmUpPolls + settings.measuredPolls
        for index in 0..<total {
            if index == settings.warmUpPolls {
                start = (nanoseconds(CLOCK_MONOTONIC), nanoseconds(CLOCK_THREAD_CPUTIME_ID), try threadSwitches())
                overruns = 0
            }
            try sleep(until: deadline)
            let seq = Int64(index + 1)

            // 1. The Modbus read.
            var words = [UInt16](repeating: 0, count: 100)
            let (read, readErrno) = words.withUnsafeMutableBufferPointer { buffer in
                let count = modbus_read_registers(modbus, 0, 100, buffer.baseAddress)
                return (count, errno)
            }
            guard read == 100 else {
                throw BaselineFailure(baseline: .floor, step: "modbus_read_registers of holding 0..99 from 127.0.0.1:\(settings.modbusPort)",
                                   reason: read < 0 ? String(cString: modbus_strerror(readErrno)) : "\(read) registers")
            }

            // 2. The gateway's payload.
            var results = [Result<TagValue, TagError>](repeating: .failure(TagError("not read")), count: tags.count)
            RegisterDecoding.decode(block: words, startingAt: 0, tags: tags, indices: Array(tags.indices),
                                    deviceOrder: .abcd, into: &results)
            let now = Date()
            let poll = DevicePoll(device: "meter", timestamp: now,
                                  readings: tags.indices.map { DevicePoll.Reading(tag: tags[$0].name, value: results[$0]) })
            let payload = MessageEncoding.dataMessage(gateway: "floor", poll: poll, boot: 1, seq: seq)
            payloadBytes = payload.count

            // 3. The commit, deleting the previous (acknowledged) row in the same transaction.
            try step(database, begin, "BEGIN IMMEDIATE")
            if let previousRow {
                sqlite3_bind_int64(delete, 1, previousRow)
                try step(database, delete, "DELETE of the previous row")
            }
            sqlite3_bind_int64(insert, 1, seq)
            sqlite3_bind_int64(insert, 3, Int64(now.timeIntervalSince1970 * 1000))
            sqlite3_bind_int64(insert, 4, Int64(payload.count + topic.utf8.count))
            try topic.withCString { topicText in
                try payload.withUnsafeBytes { bytes in
                    // SQLITE_STATIC (nil): the buffers outlive the step; cleared before they end.
                    sqlite3_bind_text(insert, 2, topicText, -1, nil)
                    sqlite3_bind_blob(insert, 5, bytes.baseAddress, Int32(bytes.count), nil)
                    defer { sqlite3_clear_bindings(insert) }
                    try step(database, insert, "INSERT")
                }
            }
            previousRow = sqlite3_last_insert_rowid(database)
            try step(database, commit, "COMMIT")

            // 4. Publish at QoS 1 and wait for its PUBACK on this thread.
            try publish(mosquitto, payload)

            deadline += period
            let ended = nanoseconds(CLOCK_MONOTONIC)
            while deadline <= ended {
                deadline += period
                overruns += 1
            }
        }
        guard let start else { throw BaselineFailure(baseline: .floor, step: "the run", reason: "no measured polls") }
        let end = (nanoseconds(CLOCK_MONOTONIC), nanoseconds(CLOCK_THREAD_CPUTIME_ID), try threadSwitches())
        return FloorMeasurement(seconds: Double(end.0 - start.wall) / 1e9, cpuSeconds: Double(end.1 - start.cpu) / 1e9,
                                voluntary: end.2.voluntary - start.switches.voluntary,
                                involuntary: end.2.involuntary - start.switches.involuntary,
                                overruns: overruns, payloadBytes: payloadBytes)
    }

    private func sleep(until deadline: Int64) throws {
        var target = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        while true {
            let rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &target, nil)
            if rc == 0 { return }
            guard rc == EINTR else {
                throw BaselineFailure(baseline: .floor, step: "clock_nanosleep", reason: String(cString: strerror(rc)))
            }
        }
    }

    private func connectModbus() throws -> OpaquePointer {
        guard let context = modbus_new_tcp("127.0.0.1", Int32(settings.modbusPort)) else {
            let code = errno
            throw BaselineFailure(baseline: .floor, step: "modbus_new_tcp 127.0.0.1:\(settings.modbusPort)", reason: String(cString: modbus_strerror(code)))
        }
        modbus = context
        guard modbus_set_slave(context, 1) == 0 else {
            let code = errno
            throw BaselineFailure(baseline: .floor, step: "modbus_set_slave 1", reason: String(cString: modbus_strerror(code)))
        }
        guard modbus_connect(context) == 0 else {
            let code = errno
            throw BaselineFailure(baseline: .floor, step: "modbus_connect 127.0.0.1:\(settings.modbusPort)", reason: String(cString: modbus_strerror(code)))
        }
        return context
    }

    private func openDatabase() throws -> OpaquePointer {
        let path = settings.databasePath
        var opened: OpaquePointer?
        let rc = sqlite3_open_v2(path, &opened, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil)
        database = opened
        guard rc == SQLITE_OK, let opened else {
            throw BaselineFailure(baseline: .floor, step: "sqlite3_open_v2 \(path)", reason: String(cString: sqlite3_errstr(rc)))
        }
        let journal = try prepare(opened, "PRAGMA journal_mode = WAL")
        guard sqlite3_step(journal) == SQLITE_ROW, let mode = sqlite3_column_text(journal, 0),
              String(cString: mode) == "wal" else {
            throw BaselineFailure(baseline: .floor, step: "PRAGMA journal_mode = WAL on \(path)", reason: String(cString: sqlite3_errmsg(opened)))
        }
        sqlite3_reset(journal)
        let sql = """
            PRAGMA synchronous = \(settings.synchronousFull ? "FULL" : "NORMAL");
            PRAGMA cache_size = -4096;
            PRAGMA temp_store = MEMORY;
            CREATE TABLE message (
                id INTEGER PRIMARY KEY AUTOINCREMENT, boot INTEGER NOT NULL, seq INTEGER NOT NULL,
                topic TEXT NOT NULL, qos INTEGER NOT NULL, created_at INTEGER NOT NULL,
                size INTEGER NOT NULL, payload BLOB NOT NULL);
            """
        guard sqlite3_exec(opened, sql, nil, nil, nil) == SQLITE_OK else {
            throw BaselineFailure(baseline: .floor, step: "pragmas and CREATE TABLE on \(path)", reason: String(cString: sqlite3_errmsg(opened)))
        }
        return opened
    }

    private func prepare(_ database: OpaquePointer, _ sql: String) throws -> OpaquePointer {
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(database, sql, -1, &statement, nil) == SQLITE_OK, let statement else {
            throw BaselineFailure(baseline: .floor, step: "sqlite3_prepare_v2 \(sql)", reason: String(cString: sqlite3_errmsg(database)))
        }
        statements.append(statement)
        return statement
    }

    private func step(_ database: OpaquePointer, _ statement: OpaquePointer, _ what: String) throws {
        let rc = sqlite3_step(statement)
        guard rc == SQLITE_DONE else {
            let message = String(cString: sqlite3_errmsg(database))
            sqlite3_reset(statement)
            throw BaselineFailure(baseline: .floor, step: "sqlite3_step \(what) on \(settings.databasePath)", reason: "\(message) (\(rc))")
        }
        sqlite3_reset(statement)
    }

    private func connectMQTT() throws(BaselineFailure) -> RawMosquittoClient {
        let client = try RawMosquittoClient(
            id: "bench-floor-\(settings.pollsPerSecond)-\(settings.synchronousFull ? "full" : "normal")",
            port: settings.brokerPort, baseline: .floor)
        try client.connect()
        return client
    }

    /// Publishes at QoS 1 and drives the loop on this thread until that mid's PUBACK.
    private func publish(_ client: RawMosquittoClient, _ payload: [UInt8]) throws(BaselineFailure) {
        let mid = try client.publish(topic, payload)
        try client.loop(until: { client.lastAcknowledged == mid }, timeout: .seconds(10),
                        waitingFor: "the PUBACK of mid \(mid) on \(topic)")
    }
}
