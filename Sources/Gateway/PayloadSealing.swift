// From `payload:` in gateway.yaml to the Sealer the ingest uses.
import GatewayConfig
import Sealing

extension GatewayRuntime {
    /// The sealer `payload` asks for (`nil` for `seal: none`). The key was read
    /// and checked by the configuration loader, so this cannot fail.
    public static func sealer(_ payload: PayloadSettings) -> Sealer? {
        switch payload.seal {
        case .none: return nil
        case let .sealed(algorithm, key): return Sealer(algorithm: algorithm, key: key)
        }
    }
}
