// From `payload:` in gateway.yaml to the Sealer the ingest uses.
import GatewayConfig
import Sealing

extension GatewayRuntime {
    /// The sealer `payload` asks for (`nil` for `seal: none`), its keys read and
    /// checked now, so a bad key file stops startup instead of the first commit.
    ///
    /// - Throws: `SealingError` naming the key file and the fix.
    public static func sealer(_ payload: PayloadSettings) throws(SealingError) -> Sealer? {
        // Every listed key is read, so a broken opening-only key is found too.
        let keys = try payload.keys.map { key throws(SealingError) in try SealingKey.load(id: key.id, file: key.file) }
        guard let sealKey = payload.sealingKey, let key = keys.first(where: { $0.id == sealKey.id }) else { return nil }
        switch payload.seal {
        case .none: return nil
        case .aes256GCM: return Sealer(algorithm: .aes256GCM, key: key)
        case .hmacSHA256: return Sealer(algorithm: .hmacSHA256, key: key)
        }
    }
}
