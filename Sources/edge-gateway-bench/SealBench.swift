// `seal`: messages/s through seal + outbox append for 200-byte payloads, sealed
// inside the committing transaction as the ingest does, against unsealed appends
// of the same payloads in the same run.
import Foundation
import LocalPeers
import Outbox
import Sealing

func benchSeal(directory: TemporaryDirectory) async throws {
    let total = 100_000
    let batchSize = 1000
    let rounds = 3
    print("seal: \(total) messages of 200 bytes per run, sealed in the append transaction, group commits of \(batchSize),")
    print("      synchronous=FULL, \(rounds) alternating rounds, medians")
    let key = try SealingKey(id: "bench", bytes: (0..<32).map { UInt8($0) })
    let topic = "edge/bench/device/data"
    // Unsealed, but padded to the size of an AES-256-GCM envelope: how much of
    // the cost is the larger row rather than the cryptography.
    let envelopeSize = try Sealer(algorithm: .aes256GCM, key: key).seal(payload, topic: topic).count
    let padded = [UInt8](repeating: UInt8(ascii: "x"), count: envelopeSize)
    let variants: [(name: String, sealer: Sealer?)] = [
        ("none", nil),
        ("none-padded", nil),
        ("aes-256-gcm", Sealer(algorithm: .aes256GCM, key: key)),
        ("hmac-sha256", Sealer(algorithm: .hmacSHA256, key: key)),
    ]
    var rates: [String: [Double]] = [:]
    let clock = ContinuousClock()
    for round in 1...rounds {
        for variant in variants {
            let outbox = try Outbox(settings: OutboxSettings(path: directory.file("seal-\(variant.name)-\(round).sqlite"),
                                                             synchronous: .full, maxMessages: nil, maxBytes: nil),
                                    logger: quiet)
            let sealer = variant.sealer
            let batch = (0..<batchSize).map { _ in
                OutboxDraft(topic: topic, qos: 1) { _, _ in
                    guard let sealer else { return variant.name == "none" ? payload : padded }
                    return (try? sealer.seal(payload, topic: topic)) ?? []
                }
            }
            let elapsed = try await clock.measure {
                for _ in 0..<(total / batchSize) { _ = try await outbox.append(batch) }
            }
            rates[variant.name, default: []].append(Double(total) / seconds(elapsed))
        }
        print(String(format: "  round %d: none %.0f, none padded to %d bytes %.0f, aes-256-gcm %.0f, hmac-sha256 %.0f msg/s",
                     round, rates["none"]!.last!, envelopeSize, rates["none-padded"]!.last!,
                     rates["aes-256-gcm"]!.last!, rates["hmac-sha256"]!.last!))
    }
    func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
    let plain = median(rates["none"]!)
    figure("baseline: unsealed append (median)", plain, "msg/s")
    let paddedRate = median(rates["none-padded"]!)
    figure("unsealed, padded to the envelope's \(envelopeSize) bytes (median)", paddedRate, "msg/s")
    print(String(format: "  ratio padded / unsealed (the row size alone): %.2f", paddedRate / plain))
    for name in ["aes-256-gcm", "hmac-sha256"] {
        let rate = median(rates[name]!)
        figure("\(name) seal + append (median)", rate, "msg/s")
        print(String(format: "  ratio %@ / unsealed (target >= 0.8): %.2f", name, rate / plain))
    }
    // The sealing alone, without the outbox, for scale.
    for variant in variants.dropFirst(2) {
        let sealer = variant.sealer!
        let count = 200_000
        let elapsed = try clock.measure {
            for _ in 0..<count { _ = try sealer.seal(payload, topic: topic) }
        }
        figure("\(variant.name) seal only, one thread", Double(count) / seconds(elapsed), "msg/s")
    }
}
