// The monitor's page (MonitorPage.html) on its own: self-contained, and in a real
// browser against recorded API answers served from a directory on loopback, so
// the rendering, the escaping of untrusted strings and the detail panel are
// checked without a monitor running.
import Foundation
import MonitorWeb
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite struct MonitorPageContentTests {
    @Test func needsNoAssetFromTheNetwork() {
        let html = MonitorPage.html
        #expect(html.hasPrefix("<!DOCTYPE html>"))
        // No external script, style sheet, font, image or import: plants are offline.
        for forbidden in ["http://", "https://", "<link", " src=", "@import", "url(", "//cdn", "<iframe"] {
            #expect(!html.contains(forbidden), "the page refers to an external asset: \(forbidden)")
        }
        #expect(html.contains("<style>") && html.contains("<script>"))
    }

    @Test func neverWritesMarkupFromData() {
        // Every string from the API is untrusted: text nodes and attributes only.
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
            #expect(!MonitorPage.html.contains(sink), "the page uses \(sink)")
        }
    }
}

/// A directory served over HTTP on loopback by Python's http.server.
final class StaticSite: Sendable {
    let port: Int
    let directory: TemporaryDirectory
    private let server: ChildProcess

    init(_ files: [String: String]) async throws {
        directory = try TemporaryDirectory("monitor-page")
        for (path, content) in files {
            let file = directory.file(path)
            try FileManager.default.createDirectory(atPath: URL(fileURLWithPath: file).deletingLastPathComponent().path,
                                                    withIntermediateDirectories: true)
            try content.write(toFile: file, atomically: true, encoding: .utf8)
        }
        let python = try requireTool("python3", package: "python3")
        port = freeLoopbackPort()
        server = try ChildProcess(python, ["-m", "http.server", String(port), "--bind", "127.0.0.1",
                                           "--directory", directory.path],
                                  log: NSTemporaryDirectory() + "static-site-\(port).log")
        let port = self.port
        try await waitUntil("python3 http.server on port \(port)") { isListening(port: port) }
    }

    var url: String { "http://127.0.0.1:\(port)/index.html" }

    func stop() {
        server.signal(SIGTERM)
        server.waitBlocking()
        directory.remove()
    }
}

/// Recorded answers of the monitor's API (contract section 2), times relative to now.
enum FleetFixture {
    static let hostileID = #"<img src=x onerror="document.body.setAttribute('data-xss','id')">"#
    static let hostileError = #"<script>document.body.setAttribute('data-xss','error')</script>"#

    static func time(_ secondsAgo: Double) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date(timeIntervalSinceNow: -secondsAgo))
    }

    static func gateway(_ id: String, _ state: String, since: Double, boot: Int, backlog: Int = 0, eta: Double? = nil,
                        replaying: Bool = false, dropped: Int = 0, lost: Int = 0, lostRanges: [[String: Int]] = [],
                        devices: [[String: Any]] = []) -> [String: Any] {
        ["id": id, "state": state, "since": time(since), "last_seen": time(1), "boot": boot, "session": 1,
         "backlog": ["messages": backlog, "bytes": backlog * 200, "oldest_age_s": backlog > 0 ? 64.0 : NSNull(),
                     "drain_rate_per_s": replaying ? 35.0 : 0.0, "eta_s": eta.map { $0 as Any } ?? NSNull()],
         "replaying": replaying, "dropped": dropped, "lost": lost, "lost_ranges": lostRanges,
         "duplicates": 0, "seal_failures": 0, "continuity": "tracked", "polls_failed": 0, "devices": devices]
    }

    static func device(_ name: String, _ state: String, error: String? = nil) -> [String: Any] {
        ["name": name, "state": state, "error": error.map { $0 as Any } ?? NSNull(), "since": time(30)]
    }

    static var gateways: [[String: Any]] {
        [gateway("gw-online", "online", since: 3600, boot: 12, devices: [device("boiler-1", "online")]),
         gateway("gw-replay", "online", since: 40, boot: 7, backlog: 1200, eta: 34.3, replaying: true),
         gateway("gw-killed", "offline_connection_lost", since: 420, boot: 4,
                 devices: [device("meter-a", "offline", error: "modbus: connection timed out")]),
         gateway("gw-stopped", "offline_shutdown", since: 7200, boot: 30),
         gateway("gw-stale", "stale", since: 95, boot: 2, backlog: 40, dropped: 250),
         gateway("gw-lossy", "online", since: 1800, boot: 11, lost: 8, lostRanges: [["boot": 11, "first": 40, "last": 47]]),
         gateway(hostileID, "online", since: 10, boot: 1, devices: [device("<b>x</b>", "offline", error: hostileError)])]
    }

    static var fleet: String {
        json(["generated_at": time(0),
              "totals": ["gateways": 7, "online": 4, "offline": 2, "stale": 1, "lost": 8],
              "gateways": gateways])
    }

    static var lossyDetail: String {
        var detail = gateways[5]
        detail["history"] = [
            ["ts": time(60), "kind": "lost", "detail": "boot 11: 40-47 lost (8) after an empty backlog"],
            ["ts": time(1800), "kind": "birth", "detail": "boot 11 session 5"],
            ["ts": time(1810), "kind": "will", "detail": "connection lost, boot 11 session 4"],
            ["ts": time(2000), "kind": "gap", "detail": "boot 11: 12-20 dropped (buffer full)"],
            ["ts": time(2500), "kind": "device", "detail": "press: online"],
        ]
        detail["boots"] = [["boot": 11, "received": [[1, 11], [21, 39], [48, 4711]], "highest_committed": 4711,
                            "gaps": [[12, 20]]]]
        return json(detail)
    }

    static func json(_ object: Any) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }
}

@Suite(.serialized) struct MonitorPageBrowserTests {
    static let browserAvailable = (try? requireTool("chromium", package: "chromium")) != nil

    func withSite(_ files: [String: String], _ body: (StaticSite, HeadlessChromium) async throws -> Void) async throws {
        let site = try await StaticSite(files)
        defer { site.stop() }
        let scratch = try TemporaryDirectory("chromium")
        defer { scratch.remove() }
        try await body(site, try HeadlessChromium(directory: scratch))
    }

    @Test(.enabled(if: isCI || browserAvailable, "needs chromium (make deps)"))
    func rendersEveryGatewayWithItsStateInWords() async throws {
        try await withSite(["index.html": MonitorPage.html, "api/fleet": FleetFixture.fleet]) { site, browser in
            let dom = try await browser.dumpDOM(site.url)
            #expect(dom.body["data-loaded"] == "true", "the page never rendered the fleet")
            let connection = dom.elements("div", with: "data-connection").first?["data-connection"]
            #expect(connection == "live")

            let rows = dom.elements("tr", with: "data-gateway")
            let states = Dictionary(rows.map { ($0["data-gateway"]!, $0["data-state"]!) }, uniquingKeysWith: { a, _ in a })
            #expect(states["gw-online"] == "online")
            #expect(states["gw-killed"] == "offline_connection_lost")
            #expect(states["gw-stopped"] == "offline_shutdown")
            #expect(states["gw-stale"] == "stale")
            #expect(rows.count == 7)

            #expect(dom.rowText("data-gateway", "gw-killed")?.contains("offline: connection lost") == true)
            #expect(dom.rowText("data-gateway", "gw-killed")?.contains("meter-a: modbus: connection timed out") == true)
            #expect(dom.rowText("data-gateway", "gw-stopped")?.contains("offline: shutdown") == true)
            #expect(dom.rowText("data-gateway", "gw-replay")?.contains("ETA 34 s") == true, "\(dom.rowText("data-gateway", "gw-replay") ?? "no row")")
            #expect(dom.rowText("data-gateway", "gw-stale")?.contains("250 reported") == true)

            // Lost is loud: first row, the count, the exact range, a banner.
            #expect(rows.first?["data-gateway"] == "gw-lossy", "a gateway with lost data is not listed first")
            #expect(rows.first?["data-lost"] == "8")
            let lossy = try #require(dom.rowText("data-gateway", "gw-lossy"))
            #expect(lossy.contains("LOST 8") && lossy.contains("boot 11: 40–47"), "\(lossy)")
            #expect(dom.html.contains("DATA LOST on 1 gateway: gw-lossy (8)"))
            let lostTotal = dom.elements("span", with: "data-total").first { $0["data-total"] == "lost" }
            #expect(lostTotal?["class"]?.contains("nonzero") == true)
        }
    }

    @Test(.enabled(if: isCI || browserAvailable, "needs chromium (make deps)"))
    func showsUntrustedStringsAsText() async throws {
        try await withSite(["index.html": MonitorPage.html, "api/fleet": FleetFixture.fleet]) { site, browser in
            let dom = try await browser.dumpDOM(site.url)
            #expect(dom.body["data-loaded"] == "true")
            #expect(dom.body["data-xss"] == nil, "markup from the API ran in the page")
            let ids = dom.elements("tr", with: "data-gateway").compactMap { $0["data-gateway"] }
            #expect(ids.contains(FleetFixture.hostileID), "the hostile id is not shown as a gateway: \(ids)")
            // As text: escaped in the serialised DOM, never an element.
            #expect(!dom.html.contains("<img"))
            #expect(!dom.html.contains("<b>x</b>"))
            #expect(dom.html.contains("&lt;img src=x onerror="))
            #expect(dom.html.contains("&lt;script&gt;document.body.setAttribute"))
        }
    }

    @Test(.enabled(if: isCI || browserAvailable, "needs chromium (make deps)"))
    func clickedGatewayShowsItsHistory() async throws {
        try await withSite(["index.html": MonitorPage.html, "api/fleet": FleetFixture.fleet,
                            "api/gateways/gw-lossy": FleetFixture.lossyDetail]) { site, browser in
            // The hash is what a click sets (and what a shared link carries).
            let dom = try await browser.dumpDOM(site.url + "#gw=gw-lossy")
            let detail = try #require(dom.elements("aside", with: "data-gateway").first)
            #expect(detail["data-gateway"] == "gw-lossy")
            #expect(detail["data-state"] == "online")
            let kinds = dom.elements("li", with: "data-kind").compactMap { $0["data-kind"] }
            #expect(kinds == ["lost", "birth", "will", "gap", "device"])
            #expect(dom.html.contains("connection lost, boot 11 session 4"))
            #expect(dom.elements("tr", with: "data-boot").first?["data-boot"] == "11")
            #expect(dom.html.contains("1–11, 21–39, 48–4711"))
        }
    }

    @Test(.enabled(if: isCI || browserAvailable, "needs chromium (make deps)"))
    func aLargeFleetShowsItsProblemsFirstAndSaysWhatIsLeftOut() async throws {
        // 1,500 healthy gateways and one killed, last by id: the page shows 1,000 rows,
        // the killed one first, and says how many it left out.
        var gateways = (0..<1500).map { FleetFixture.gateway(String(format: "gw-%04d", $0), "online", since: 60, boot: 1) }
        gateways.append(FleetFixture.gateway("gw-zz-killed", "offline_connection_lost", since: 60, boot: 1))
        let fleet = FleetFixture.json(["generated_at": FleetFixture.time(0),
                                       "totals": ["gateways": 1501, "online": 1500, "offline": 1, "stale": 0, "lost": 0],
                                       "gateways": gateways])
        try await withSite(["index.html": MonitorPage.html, "api/fleet": fleet]) { site, browser in
            let dom = try await browser.dumpDOM(site.url)
            let rows = dom.elements("tr", with: "data-gateway")
            #expect(rows.count == 1000)
            #expect(rows.first?["data-gateway"] == "gw-zz-killed")
            #expect(dom.html.contains("Showing 1,000 of 1,501 gateways, problems first."))
        }
    }

    @Test(.enabled(if: isCI || browserAvailable, "needs chromium (make deps)"))
    func saysSoWhenTheMonitorDoesNotAnswer() async throws {
        try await withSite(["index.html": MonitorPage.html]) { site, browser in
            let dom = try await browser.dumpDOM(site.url)
            let connection = dom.elements("div", with: "data-connection").first
            #expect(connection?["data-connection"] == "unreachable")
            #expect(dom.body["data-loaded"] == "false")
        }
    }

    @Test(.enabled(if: isCI || browserAvailable, "needs chromium (make deps)"))
    func screenshotIsAPicture() async throws {
        try await withSite(["index.html": MonitorPage.html, "api/fleet": FleetFixture.fleet,
                            "api/gateways/gw-lossy": FleetFixture.lossyDetail]) { site, browser in
            let path = NSTemporaryDirectory() + "edge-monitor-page-fixture.png"
            try? FileManager.default.removeItem(atPath: path)
            try await browser.screenshot(site.url + "#gw=gw-lossy", to: path)
            let bytes = try #require(FileManager.default.contents(atPath: path))
            #expect(bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]), "not a PNG")
            #expect(bytes.count > 20_000, "a screenshot this small is blank")
            print("monitor page screenshot (fixture): \(path)")
        }
    }
}
