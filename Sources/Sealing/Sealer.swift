// Payload envelopes (docs/SEALING.md): sealing on the gateway, opening on the
// central side. libcrypto does the cryptography; no C type leaves this file.
import COpenSSL
import Foundation

/// The sealing algorithms and their names in the envelope's `alg`.
public enum SealAlgorithm: String, Sendable, CaseIterable {
    /// AES-256-GCM, 12-byte random nonce, the topic as additional authenticated data.
    case aes256GCM = "A256GCM"
    /// HMAC-SHA256 over topic ‖ 0x00 ‖ payload; the payload stays readable.
    case hmacSHA256 = "HS256"
}

/// Seals payloads with one key into the JSON envelope of docs/SEALING.md.
///
/// Thread-safe. The keyed OpenSSL context is prepared once and reused under a
/// lock (the ingest seals on one thread, inside its transaction), so a seal
/// costs the cipher or MAC itself, not a key schedule.
public struct Sealer: Sendable {
    public let algorithm: SealAlgorithm
    public let key: SealingKey
    private let engine: KeyedContext

    public init(algorithm: SealAlgorithm, key: SealingKey) {
        self.algorithm = algorithm
        self.key = key
        engine = KeyedContext(algorithm: algorithm, key: key.bytes)
    }

    /// The envelope of `payload` for `topic`. AES-256-GCM takes a fresh 12-byte
    /// nonce from OpenSSL's CSPRNG for every call.
    ///
    /// - Throws: `SealingError.crypto` only when OpenSSL itself fails (no entropy,
    ///   no memory); nothing is ever returned unsealed.
    public func seal(_ payload: [UInt8], topic: String) throws(SealingError) -> [UInt8] {
        switch algorithm {
        case .aes256GCM:
            return try seal(payload, topic: topic, nonce: engine.freshNonce())
        case .hmacSHA256:
            return try seal(payload, topic: topic, nonce: [])
        }
    }

    /// `seal` with a given nonce, for known-answer tests only: a nonce must
    /// never be used twice with one key.
    package func seal(_ payload: [UInt8], topic: String, nonce: [UInt8]) throws(SealingError) -> [UInt8] {
        var envelope = Envelope.Writer(algorithm: algorithm, kid: key.id)
        switch algorithm {
        case .aes256GCM:
            var topic = topic
            let sealed = try topic.withUTF8 { aad in
                Result { () throws(SealingError) in try engine.encrypt(payload, nonce: nonce, aad: UnsafeRawBufferPointer(aad)) }
            }.get()
            envelope.field("iv", nonce)
            envelope.field("ct", sealed)
        case .hmacSHA256:
            envelope.field("msg", payload)
            envelope.field("sig", try engine.sign(topic: topic, payload: payload))
        }
        return envelope.finish()
    }

    /// AES-256-GCM ciphertext and tag of `plain` under `nonce` and any `aad`, by
    /// the same keyed context `seal` uses: the known-answer tests run the
    /// production cipher path with the NIST vectors' binary AAD.
    func encryptGCM(_ plain: [UInt8], nonce: [UInt8], aad: [UInt8]) throws(SealingError) -> [UInt8] {
        precondition(algorithm == .aes256GCM, "encryptGCM needs an AES-256-GCM sealer")
        return try aad.withUnsafeBytes { aad in
            Result { () throws(SealingError) in try engine.encrypt(plain, nonce: nonce, aad: aad) }
        }.get()
    }
}

/// Opens envelopes sealed with any of its keys (the central side; keys can rotate).
public struct Opener: Sendable {
    public let keys: [SealingKey]

    /// - Throws: `SealingError.badKeyFile` when two keys share an id.
    public init(keys: [SealingKey]) throws(SealingError) {
        var seen = Set<String>()
        for key in keys where !seen.insert(key.id).inserted {
            throw SealingError(.badKeyFile, "two keys have the id '\(key.id)'; each key needs its own id")
        }
        self.keys = keys
    }

    /// The plain payload of `envelope`, after checking it was sealed for `topic`
    /// with one of the keys and not altered.
    ///
    /// - Throws: `SealingError` with kind `.malformedEnvelope`, `.badBase64`,
    ///   `.unknownKeyID` or `.authenticationFailed`, and a message saying which.
    public func open(_ envelope: [UInt8], topic: String) throws(SealingError) -> [UInt8] {
        let parsed = try Envelope.parse(envelope)
        guard let key = keys.first(where: { $0.id == parsed.kid }) else {
            let known = keys.map { "'\($0.id)'" }.joined(separator: ", ")
            throw SealingError(.unknownKeyID,
                               "wrong key id: the message was sealed with key '\(parsed.kid)', which is not among the keys given (\(known))")
        }
        switch parsed.algorithm {
        case .aes256GCM:
            let nonce = try parsed.base64("iv")
            guard nonce.count == GCM.nonceLength else {
                throw SealingError(.badBase64, "field 'iv' holds \(nonce.count) bytes; A256GCM uses a 12-byte nonce")
            }
            let sealed = try parsed.base64("ct")
            guard sealed.count >= GCM.tagLength else {
                throw SealingError(.badBase64, "field 'ct' holds \(sealed.count) bytes, fewer than the 16-byte tag")
            }
            guard let plain = try GCM.open(sealed, key: key.bytes, nonce: nonce, aad: Array(topic.utf8)) else {
                throw SealingError(.authenticationFailed,
                                   "bad tag: the AES-256-GCM tag does not verify with key '\(key.id)' for topic '\(topic)'; "
                                   + "the ciphertext, iv or tag was altered, or the message was sealed for another topic")
            }
            return plain
        case .hmacSHA256:
            let payload = try parsed.base64("msg")
            let signature = try parsed.base64("sig")
            let expected = try HMACSHA256.signature(key: key.bytes, topic: topic, payload: payload)
            guard signature.count == expected.count,
                  CRYPTO_memcmp(signature, expected, expected.count) == 0 else {
                throw SealingError(.authenticationFailed,
                                   "bad signature: the HMAC-SHA256 signature does not verify with key '\(key.id)' for topic '\(topic)'; "
                                   + "the message or signature was altered, or it was signed for another topic")
            }
            return payload
        }
    }
}

// MARK: - Envelope

enum Envelope {
    /// Writes `{"v":1,"alg":"…","kid":"…",…}` directly as bytes. Key ids and
    /// base64 never need JSON escaping.
    struct Writer {
        private var bytes: [UInt8] = []

        init(algorithm: SealAlgorithm, kid: String) {
            bytes.reserveCapacity(400)
            bytes.append(contentsOf: #"{"v":1,"alg":""#.utf8)
            bytes.append(contentsOf: algorithm.rawValue.utf8)
            bytes.append(contentsOf: #"","kid":""#.utf8)
            bytes.append(contentsOf: kid.utf8)
            bytes.append(UInt8(ascii: "\""))
        }

        mutating func field(_ name: String, _ value: [UInt8]) {
            bytes.append(contentsOf: #",""#.utf8)
            bytes.append(contentsOf: name.utf8)
            bytes.append(contentsOf: #"":""#.utf8)
            Base64.encode(value, into: &bytes)
            bytes.append(UInt8(ascii: "\""))
        }

        consuming func finish() -> [UInt8] {
            bytes.append(UInt8(ascii: "}"))
            return bytes
        }
    }

    struct Parsed {
        var algorithm: SealAlgorithm
        var kid: String
        var fields: [String: Any]

        func base64(_ name: String) throws(SealingError) -> [UInt8] {
            guard let text = fields[name] as? String else {
                throw SealingError(.malformedEnvelope, "the envelope has no string field '\(name)' (alg \(algorithm.rawValue) needs it)")
            }
            guard let bytes = Base64.decode(Array(text.utf8)) else {
                throw SealingError(.badBase64, "field '\(name)' is not valid base64 (standard alphabet with '=' padding)")
            }
            return bytes
        }
    }

    static func parse(_ bytes: [UInt8]) throws(SealingError) -> Parsed {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(bytes))
        } catch {
            throw SealingError(.malformedEnvelope, "the message is not a sealed envelope: it is not JSON")
        }
        guard let fields = object as? [String: Any] else {
            throw SealingError(.malformedEnvelope, "the message is not a sealed envelope: not a JSON object")
        }
        guard (fields["v"] as? Int) == 1 else {
            throw SealingError(.malformedEnvelope,
                               "the message is not a version 1 envelope (\"v\":1 missing or different): is payload sealing on?")
        }
        guard let name = fields["alg"] as? String else {
            throw SealingError(.malformedEnvelope, "the envelope has no 'alg'")
        }
        guard let algorithm = SealAlgorithm(rawValue: name) else {
            throw SealingError(.malformedEnvelope, "unsupported alg '\(name)'; known: A256GCM, HS256")
        }
        guard let kid = fields["kid"] as? String else {
            throw SealingError(.malformedEnvelope, "the envelope has no 'kid'")
        }
        return Parsed(algorithm: algorithm, kid: kid, fields: fields)
    }
}

// MARK: - libcrypto

/// `count` bytes from OpenSSL's CSPRNG.
func randomBytes(_ count: Int) throws(SealingError) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    guard RAND_bytes(&bytes, Int32(count)) == 1 else {
        throw SealingError(.crypto, "the random number generator failed: \(openSSLErrors())")
    }
    return bytes
}

/// OpenSSL's error queue of this thread as text (and emptied).
func openSSLErrors() -> String {
    var messages: [String] = []
    while case let code = ERR_get_error(), code != 0 {
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        messages.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }
    return messages.isEmpty ? "no OpenSSL error reported" : messages.joined(separator: "; ")
}

/// An algorithm fetched from the default provider once; shared by all threads
/// (OpenSSL's fetched objects are immutable and reference counted).
private final class FetchedCipher: @unchecked Sendable {
    let cipher: OpaquePointer
    init(_ name: String) {
        guard let cipher = EVP_CIPHER_fetch(nil, name, nil) else {
            fatalError("libcrypto has no \(name): \(openSSLErrors())")
        }
        self.cipher = cipher
    }
    deinit { EVP_CIPHER_free(cipher) }
}

private let aes256GCM = FetchedCipher("AES-256-GCM")

enum GCM {
    static let nonceLength = 12
    static let tagLength = 16

    /// The plaintext, or `nil` when the tag does not verify.
    static func open(_ sealed: [UInt8], key: [UInt8], nonce: [UInt8], aad: [UInt8]) throws(SealingError) -> [UInt8]? {
        guard let context = EVP_CIPHER_CTX_new() else {
            throw SealingError(.crypto, "cannot create a cipher context: \(openSSLErrors())")
        }
        defer { EVP_CIPHER_CTX_free(context) }
        let cipherLength = sealed.count - tagLength
        var tag = Array(sealed[cipherLength...])
        var output = [UInt8](repeating: 0, count: max(cipherLength, 1))
        var length: Int32 = 0
        guard EVP_DecryptInit_ex2(context, aes256GCM.cipher, key, nonce, nil) == 1,
              aad.isEmpty || EVP_DecryptUpdate(context, nil, &length, aad, Int32(aad.count)) == 1
        else { throw SealingError(.crypto, "AES-256-GCM decryption failed: \(openSSLErrors())") }
        var written: Int32 = 0
        if cipherLength > 0 {
            let ok = sealed.withUnsafeBufferPointer { input in
                EVP_DecryptUpdate(context, &output, &written, input.baseAddress, Int32(cipherLength)) == 1
            }
            guard ok else { throw SealingError(.crypto, "AES-256-GCM decryption failed: \(openSSLErrors())") }
        }
        guard EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_GCM_SET_TAG, Int32(tagLength), &tag) == 1 else {
            throw SealingError(.crypto, "AES-256-GCM decryption failed: \(openSSLErrors())")
        }
        let verified = output.withUnsafeMutableBufferPointer { out in
            EVP_DecryptFinal_ex(context, out.baseAddress! + Int(written), &length) == 1
        }
        ERR_clear_error()
        return verified ? Array(output.prefix(cipherLength)) : nil
    }
}

/// One keyed libcrypto context (AES-256-GCM cipher or HMAC-SHA256 MAC), reused.
///
/// Invariant: `context` is only touched while `lock` is held; it is freed in deinit.
private final class KeyedContext: @unchecked Sendable {
    private let lock = NSLock()
    private let algorithm: SealAlgorithm
    private let context: OpaquePointer
    /// CSPRNG output drawn in bulk (one RAND_bytes call per 512 nonces) and
    /// handed out once each; under `lock`.
    private var randomPool: [UInt8] = []
    private var poolPosition = 0
    private static let poolSize = 512 * GCM.nonceLength

    init(algorithm: SealAlgorithm, key: [UInt8]) {
        self.algorithm = algorithm
        switch algorithm {
        case .aes256GCM:
            guard let context = EVP_CIPHER_CTX_new(),
                  EVP_EncryptInit_ex2(context, aes256GCM.cipher, key, nil, nil) == 1 else {
                fatalError("cannot prepare AES-256-GCM: \(openSSLErrors())")
            }
            self.context = context
        case .hmacSHA256:
            guard let context = EVP_MAC_CTX_new(hmac.mac) else {
                fatalError("cannot prepare HMAC-SHA256: \(openSSLErrors())")
            }
            let ok = "digest".withCString { name in
                "SHA256".withCString { digest in
                    var params = [OSSL_PARAM_construct_utf8_string(name, UnsafeMutablePointer(mutating: digest), 0),
                                  OSSL_PARAM_construct_end()]
                    return EVP_MAC_init(context, key, key.count, &params) == 1
                }
            }
            guard ok else { fatalError("cannot prepare HMAC-SHA256: \(openSSLErrors())") }
            self.context = context
        }
    }

    deinit {
        switch algorithm {
        case .aes256GCM: EVP_CIPHER_CTX_free(context)
        case .hmacSHA256: EVP_MAC_CTX_free(context)
        }
    }

    /// 12 bytes from the CSPRNG that no other call gets.
    func freshNonce() throws(SealingError) -> [UInt8] {
        lock.lock()
        defer { lock.unlock() }
        if poolPosition == randomPool.count {
            randomPool = try randomBytes(Self.poolSize)
            poolPosition = 0
        }
        defer { poolPosition += GCM.nonceLength }
        return Array(randomPool[poolPosition..<poolPosition + GCM.nonceLength])
    }

    /// Ciphertext followed by the 16-byte tag.
    func encrypt(_ plain: [UInt8], nonce: [UInt8], aad: UnsafeRawBufferPointer) throws(SealingError) -> [UInt8] {
        guard nonce.count == GCM.nonceLength else {
            throw SealingError(.crypto, "an A256GCM nonce has 12 bytes, not \(nonce.count)")
        }
        var output = [UInt8](repeating: 0, count: plain.count + GCM.tagLength)
        let ok = lock.withLock {
            output.withUnsafeMutableBufferPointer { out -> Bool in
                var length: Int32 = 0
                // A new nonce on the keyed context: the key schedule is kept.
                guard EVP_EncryptInit_ex2(context, nil, nil, nonce, nil) == 1 else { return false }
                let aadOK = aad.isEmpty
                    || EVP_EncryptUpdate(context, nil, &length, aad.baseAddress?.assumingMemoryBound(to: UInt8.self),
                                         Int32(aad.count)) == 1
                guard aadOK else { return false }
                var written: Int32 = 0
                if !plain.isEmpty {
                    guard EVP_EncryptUpdate(context, out.baseAddress, &written, plain, Int32(plain.count)) == 1 else { return false }
                }
                guard EVP_EncryptFinal_ex(context, out.baseAddress! + Int(written), &length) == 1 else { return false }
                return EVP_CIPHER_CTX_ctrl(context, EVP_CTRL_GCM_GET_TAG, Int32(GCM.tagLength),
                                           out.baseAddress! + plain.count) == 1
            }
        }
        guard ok else { throw SealingError(.crypto, "AES-256-GCM encryption failed: \(openSSLErrors())") }
        return output
    }

    /// HMAC-SHA256(key, topic ‖ 0x00 ‖ payload).
    func sign(topic: String, payload: [UInt8]) throws(SealingError) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        var topic = topic
        var separator: UInt8 = 0
        let ok = lock.withLock {
            var length = 0
            // No key: OpenSSL 3 restarts the MAC with the key it has.
            guard EVP_MAC_init(context, nil, 0, nil) == 1 else { return false }
            let topicOK = topic.withUTF8 { bytes in
                bytes.isEmpty || EVP_MAC_update(context, bytes.baseAddress, bytes.count) == 1
            }
            return topicOK
                && EVP_MAC_update(context, &separator, 1) == 1
                && (payload.isEmpty || EVP_MAC_update(context, payload, payload.count) == 1)
                && EVP_MAC_final(context, &digest, &length, digest.count) == 1
                && length == 32
        }
        guard ok else { throw SealingError(.crypto, "HMAC-SHA256 failed: \(openSSLErrors())") }
        return digest
    }
}

/// The HMAC implementation, fetched once (see `FetchedCipher`).
private final class FetchedMAC: @unchecked Sendable {
    let mac: OpaquePointer
    init(_ name: String) {
        guard let mac = EVP_MAC_fetch(nil, name, nil) else {
            fatalError("libcrypto has no \(name): \(openSSLErrors())")
        }
        self.mac = mac
    }
    deinit { EVP_MAC_free(mac) }
}

private let hmac = FetchedMAC("HMAC")

enum HMACSHA256 {
    /// HMAC-SHA256(key, topic bytes ‖ 0x00 ‖ payload bytes).
    static func signature(key: [UInt8], topic: String, payload: [UInt8]) throws(SealingError) -> [UInt8] {
        var message = Array(topic.utf8)
        message.reserveCapacity(message.count + 1 + payload.count)
        message.append(0)
        message.append(contentsOf: payload)
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        guard HMAC(EVP_sha256(), key, Int32(key.count), message, message.count, &digest, &length) != nil,
              length == 32 else {
            throw SealingError(.crypto, "HMAC-SHA256 failed: \(openSSLErrors())")
        }
        return digest
    }
}

// MARK: - Base64

/// Standard base64 (RFC 4648 §4) with padding; decoding is strict.
enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let values: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (index, character) in alphabet.enumerated() { table[Int(character)] = UInt8(index) }
        return table
    }()

    static func encode(_ bytes: [UInt8], into output: inout [UInt8]) {
        let start = output.count
        let encodedLength = (bytes.count + 2) / 3 * 4
        output.append(contentsOf: repeatElement(0, count: encodedLength))
        alphabet.withUnsafeBufferPointer { alphabet in
            bytes.withUnsafeBufferPointer { input in
                output.withUnsafeMutableBufferPointer { buffer in
                    var out = start
                    var index = 0
                    while index + 3 <= input.count {
                        let chunk = UInt32(input[index]) << 16 | UInt32(input[index + 1]) << 8 | UInt32(input[index + 2])
                        buffer[out] = alphabet[Int(chunk >> 18 & 63)]
                        buffer[out + 1] = alphabet[Int(chunk >> 12 & 63)]
                        buffer[out + 2] = alphabet[Int(chunk >> 6 & 63)]
                        buffer[out + 3] = alphabet[Int(chunk & 63)]
                        index += 3
                        out += 4
                    }
                    let rest = input.count - index
                    if rest > 0 {
                        let chunk = UInt32(input[index]) << 16 | (rest == 2 ? UInt32(input[index + 1]) << 8 : 0)
                        buffer[out] = alphabet[Int(chunk >> 18 & 63)]
                        buffer[out + 1] = alphabet[Int(chunk >> 12 & 63)]
                        buffer[out + 2] = rest == 2 ? alphabet[Int(chunk >> 6 & 63)] : UInt8(ascii: "=")
                        buffer[out + 3] = UInt8(ascii: "=")
                    }
                }
            }
        }
    }

    static func encode(_ bytes: [UInt8]) -> String {
        var output: [UInt8] = []
        encode(bytes, into: &output)
        return String(decoding: output, as: UTF8.self)
    }

    /// `nil` unless `text` is canonical padded base64.
    static func decode(_ text: [UInt8]) -> [UInt8]? {
        guard text.count % 4 == 0 else { return nil }
        var output: [UInt8] = []
        output.reserveCapacity(text.count / 4 * 3)
        var index = 0
        while index < text.count {
            let last = index + 4 == text.count
            let padding = last ? (text[index + 3] == UInt8(ascii: "=") ? (text[index + 2] == UInt8(ascii: "=") ? 2 : 1) : 0) : 0
            var chunk: UInt32 = 0
            for offset in 0..<4 {
                let character = text[index + offset]
                if offset >= 4 - padding {
                    chunk <<= 6
                    continue
                }
                let value = values[Int(character)]
                guard value != 0xFF else { return nil }
                chunk = chunk << 6 | UInt32(value)
            }
            output.append(UInt8(chunk >> 16 & 0xFF))
            if padding < 2 { output.append(UInt8(chunk >> 8 & 0xFF)) }
            if padding < 1 { output.append(UInt8(chunk & 0xFF)) }
            // Canonical: the bits under the padding are zero.
            if padding == 1 && chunk & 0xFF != 0 { return nil }
            if padding == 2 && chunk & 0xFFFF != 0 { return nil }
            index += 4
        }
        return output
    }
}
