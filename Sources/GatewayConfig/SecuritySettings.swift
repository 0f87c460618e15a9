// The security parts of gateway.yaml: TLS and credentials of the MQTT uplink
// (`mqtt.tls`, `mqtt.username`, `mqtt.password_file`/`password_env`) and payload
// sealing (`payload:`). Read by SecurityLoader.swift.

/// A secret read from a file or the environment (a password, a key passphrase).
/// It never prints itself, so it cannot leak into logs or `check-config` output.
public struct Secret: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The secret text itself; hand it only to what needs it.
    public let value: String

    public init(_ value: String) {
        self.value = value
    }

    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
}

/// TLS of the MQTT connection (`mqtt.tls`). Present means TLS is on.
public struct MQTTTLSSettings: Sendable, Equatable {
    /// Which certificate authorities the broker's certificate must chain to.
    public enum Trust: Sendable, Equatable {
        /// The operating system's store (`/etc/ssl/certs`): the default.
        case systemStore
        /// A PEM file of CA certificates (`ca_file`).
        case caFile(String)
        /// A directory of hashed PEM CA certificates (`ca_dir`, as `c_rehash` makes).
        case caDirectory(String)
    }

    /// The oldest TLS version the gateway accepts.
    public enum MinimumVersion: String, Sendable, Equatable, CaseIterable {
        case tls12 = "tls1.2"
        case tls13 = "tls1.3"
    }

    public var trust: Trust
    /// Client certificate (PEM) for mutual TLS; set together with `keyFile`.
    public var certFile: String?
    /// Private key (PEM) of the client certificate; must not be readable by group or other.
    public var keyFile: String?
    /// Passphrase of an encrypted `keyFile`, read from `key_password_file`.
    public var keyPassword: Secret?
    public var minimumVersion: MinimumVersion
    /// OpenSSL cipher list for TLS 1.2 (`nil`: OpenSSL's defaults).
    public var ciphers: String?
    /// ALPN protocol to offer (`nil`: none), for brokers behind a shared port.
    public var alpn: String?
    /// Accept any server certificate and host name. Only for a lab: logged as a
    /// warning at every connect.
    public var insecureSkipVerify: Bool

    public init(trust: Trust = .systemStore, certFile: String? = nil, keyFile: String? = nil,
                keyPassword: Secret? = nil, minimumVersion: MinimumVersion = .tls12, ciphers: String? = nil,
                alpn: String? = nil, insecureSkipVerify: Bool = false) {
        self.trust = trust
        self.certFile = certFile
        self.keyFile = keyFile
        self.keyPassword = keyPassword
        self.minimumVersion = minimumVersion
        self.ciphers = ciphers
        self.alpn = alpn
        self.insecureSkipVerify = insecureSkipVerify
    }
}

/// Where the MQTT password came from (for `check-config`; the password itself is a `Secret`).
public enum PasswordSource: Sendable, Equatable, CustomStringConvertible {
    case file(String)
    case environment(String)
    /// Written in gateway.yaml itself (accepted with a warning).
    case configuration

    public var description: String {
        switch self {
        case let .file(path): return "file \(path)"
        case let .environment(name): return "environment variable \(name)"
        case .configuration: return "gateway.yaml (not recommended)"
        }
    }
}

/// Application-level sealing of data payloads (`payload:`).
public struct PayloadSettings: Sendable, Equatable {
    public enum Seal: String, Sendable, Equatable, CaseIterable {
        /// Plain JSON payloads.
        case none
        /// Encrypted and authenticated (envelope `alg` `A256GCM`).
        case aes256GCM = "aes-256-gcm"
        /// Readable but signed (envelope `alg` `HS256`).
        case hmacSHA256 = "hmac-sha256"
    }

    /// A key file with the id that names it in envelopes (`kid`).
    public struct Key: Sendable, Equatable {
        public var id: String
        /// 32 bytes raw, or as hex or base64 text; must not be readable by group or other.
        public var file: String

        public init(id: String, file: String) {
            self.id = id
            self.file = file
        }
    }

    public var seal: Seal
    /// Every key listed; the one named by `sealKey` seals, all of them open.
    public var keys: [Key]
    /// Id of the key that seals; `nil` only when `seal` is `none`.
    public var sealKey: String?

    public init(seal: Seal = .none, keys: [Key] = [], sealKey: String? = nil) {
        self.seal = seal
        self.keys = keys
        self.sealKey = sealKey
    }

    /// The key that seals, when sealing is on.
    public var sealingKey: Key? {
        guard seal != .none, let sealKey else { return nil }
        return keys.first { $0.id == sealKey }
    }
}
