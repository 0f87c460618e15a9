// The security parts of gateway.yaml: TLS and credentials of the MQTT uplink
// (`mqtt.tls`, `mqtt.username`, `mqtt.password_file`/`password_env`) and payload
// sealing (`payload:`). Read by SecurityLoader.swift.

import Sealing

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
    /// How data payloads leave the gateway. Sealing carries the key it seals
    /// with, read and checked by the loader: sealing without a key cannot be
    /// written down, so no path can let payloads out plain by mistake.
    public enum Seal: Sendable, Equatable {
        /// Plain JSON payloads.
        case none
        /// Sealed with `algorithm` (envelope `alg` `A256GCM` or `HS256`) and `key`.
        case sealed(SealAlgorithm, key: SealingKey)

        public var algorithm: SealAlgorithm? {
            if case let .sealed(algorithm, _) = self { return algorithm }
            return nil
        }

        public var key: SealingKey? {
            if case let .sealed(_, key) = self { return key }
            return nil
        }
    }

    /// The words of `payload.seal` in gateway.yaml.
    enum SealName: String, CaseIterable {
        case none
        case aes256GCM = "aes-256-gcm"
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
    /// Every key listed (each one read and checked at load); the sealing key is
    /// one of them, the others only open (for rotation).
    public var keys: [Key]

    public init(seal: Seal = .none, keys: [Key] = []) {
        self.seal = seal
        self.keys = keys
    }
}
