// edge-monitor's HTTP side (Hummingbird 2): the page, the JSON API and /metrics,
// each served from the latest immutable snapshot; no request waits for the model.
// The fleet JSON and /metrics are rendered once per snapshot and written in chunks (FleetRendering).
import Foundation
import Hummingbird
import Logging
import Monitor
import MonitorWeb

public enum MonitorHTTPServer {
    /// The application serving `/`, `/api/fleet`, `/api/gateways/<id>` and `/metrics`.
    public static func application(host: String, port: Int, snapshot: @escaping @Sendable () -> FleetSnapshot,
                                   logger: Logger) -> some ApplicationProtocol {
        let router = Router()
        let page = ByteBuffer(string: MonitorPage.html)
        let rendering = FleetRendering(snapshot: snapshot)
        router.get("/") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                     body: .init(byteBuffer: page))
        }
        router.get("/api/fleet") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                     body: FleetRendering.body(await rendering.bytes(.fleetJSON)))
        }
        router.get("/api/gateways/:id") { _, context in
            let id = context.parameters.get("id") ?? ""
            guard let detail = snapshot().detail(id) else {
                return json(.notFound, try JSONEncoder().encode(["error": "no gateway '\(id)' is known to this monitor"]))
            }
            return json(.ok, try FleetSnapshot.encoder().encode(detail))
        }
        router.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: FleetRendering.body(await rendering.bytes(.metrics)))
        }
        return Application(router: router, configuration: .init(address: .hostname(host, port: port),
                                                                 serverName: "edge-monitor"),
                           logger: logger)
    }

    private static func json(_ status: HTTPResponse.Status, _ data: Data) -> Response {
        Response(status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                 body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}
