// TLS, mutual TLS and credentials of the uplink, and the failure messages that
// say which check failed against which broker. Kept apart from the session
// loop in MQTTUplink.swift, which calls in at three places only.
import CMosquitto
import COpenSSL
import Foundation
import Logging
import Synchronization

/// TLS of the MQTT connection.
public struct MQTTTLSOptions: Sendable, Equatable {
    /// What the broker's certificate must chain to.
    public enum Trust: Sendable, Equatable {
        case systemStore
        case caFile(String)
        case caDirectory(String)
    }

    public var trust: Trust
    /// Client certificate and key (PEM) for mutual TLS.
    public var certFile: String?
    public var keyFile: String?
    /// Passphrase of an encrypted `keyFile`, handed to OpenSSL through a callback.
    public var keyPassphrase: String?
    /// The oldest TLS version the client accepts.
    public enum Version: Sendable, Equatable {
        case tls12
        case tls13

        /// The name libmosquitto's `mosquitto_tls_opts_set` takes.
        var mosquittoName: String {
            switch self {
            case .tls12: return "tlsv1.2"
            case .tls13: return "tlsv1.3"
            }
        }
    }

    /// Oldest accepted version.
    public var minimumVersion: Version
    /// OpenSSL cipher list (TLS 1.2); `nil` for the defaults.
    public var ciphers: String?
    /// ALPN protocol offered to the broker.
    public var alpn: String?
    /// Skip the certificate and host name checks (warned at every connect).
    public var insecureSkipVerify: Bool

    public init(trust: Trust = .systemStore, certFile: String? = nil, keyFile: String? = nil,
                keyPassphrase: String? = nil, minimumVersion: Version = .tls12, ciphers: String? = nil,
                alpn: String? = nil, insecureSkipVerify: Bool = false) {
        self.trust = trust
        self.certFile = certFile
        self.keyFile = keyFile
        self.keyPassphrase = keyPassphrase
        self.minimumVersion = minimumVersion
        self.ciphers = ciphers
        self.alpn = alpn
        self.insecureSkipVerify = insecureSkipVerify
    }

    var trustDescription: String {
        switch trust {
        case .systemStore: return "the system CA store"
        case let .caFile(path): return "ca_file \(path)"
        case let .caDirectory(path): return "ca_dir \(path)"
        }
    }
}

/// MQTT user name and password.
public struct MQTTCredentials: Sendable, Equatable, CustomStringConvertible {
    public var username: String
    public var password: String?

    public init(username: String, password: String?) {
        self.username = username
        self.password = password
    }

    public var description: String { "user \(username)" }
}

/// Per-connection TLS state the C callbacks read and write.
final class SecurityState: Sendable {
    /// libmosquitto's error log lines of this connection attempt (OpenSSL's queue as text).
    let errors = Mutex<[String]>([])

    /// OpenSSL failed the broker's certificate ("certificate verify failed").
    var certificateRejected: Bool {
        errors.withLock { $0.contains { $0.lowercased().contains("certificate verify failed") } }
    }
    /// The key passphrase for the password callback (empty: none).
    let passphrase = Mutex<[UInt8]>([])
}

/// Where the system store's hashed certificates are on Debian; libmosquitto
/// needs a CA path even when it also loads the OS store.
private let systemCADirectory = "/etc/ssl/certs"

extension MQTTUplink {
    /// Applies TLS and credentials to a fresh handle. Returns a problem, or `nil`.
    func configureSecurity(_ raw: OpaquePointer, context: CallbackContext, settings: MQTTUplinkSettings,
                           logger: Logger) -> String? {
        // Until CONNACK only (onConnectCallback clears it): the lines name why a connect failed.
        mosquitto_log_callback_set(raw, onLogCallback)
        if let credentials = settings.credentials {
            let rc = mosquitto_username_pw_set(raw, credentials.username, credentials.password)
            let code = errno
            if rc != MOSQ_ERR_SUCCESS.rawValue {
                return MQTTError.mosquitto(rc, errno: code, "set the MQTT user name for \(settings.endpoint)").message
            }
        }
        guard let tls = settings.tls else { return nil }
        let broker = "broker \(settings.endpoint)"

        var caFile: String?
        var caDirectory: String?
        switch tls.trust {
        case .systemStore:
            _ = mosquitto_int_option(raw, MOSQ_OPT_TLS_USE_OS_CERTS, 1)
            caDirectory = systemCADirectory
        case let .caFile(path): caFile = path
        case let .caDirectory(path): caDirectory = path
        }
        if let passphrase = tls.keyPassphrase {
            context.security.passphrase.withLock { $0 = Array(passphrase.utf8) }
        }
        var rc = mosquitto_tls_set(raw, caFile, caDirectory, tls.certFile, tls.keyFile,
                                   tls.keyPassphrase == nil ? nil : passphraseCallback)
        var code = errno
        if rc != MOSQ_ERR_SUCCESS.rawValue {
            return MQTTError.mosquitto(rc, errno: code, "TLS setup for \(broker) (\(tls.trustDescription), "
                                       + "cert_file \(tls.certFile ?? "-"), key_file \(tls.keyFile ?? "-"))").message
        }
        rc = mosquitto_tls_opts_set(raw, tls.insecureSkipVerify ? 0 : 1, tls.minimumVersion.mosquittoName, tls.ciphers)
        code = errno
        if rc != MOSQ_ERR_SUCCESS.rawValue {
            return MQTTError.mosquitto(rc, errno: code, "TLS options for \(broker) (min_version \(tls.minimumVersion.mosquittoName), "
                                       + "ciphers \(tls.ciphers ?? "default"))").message
        }
        if tls.insecureSkipVerify {
            _ = mosquitto_tls_insecure_set(raw, true)
            logger.warning("TLS verification is OFF (insecure_skip_verify): the broker's certificate and host name are not checked", metadata: [
                "broker": "\(settings.endpoint)",
            ])
        }
        if let alpn = tls.alpn {
            rc = mosquitto_string_option(raw, MOSQ_OPT_TLS_ALPN, alpn)
            code = errno
            if rc != MOSQ_ERR_SUCCESS.rawValue {
                return MQTTError.mosquitto(rc, errno: code, "set ALPN '\(alpn)' for \(broker)").message
            }
        }
        return nil
    }

    /// A CONNACK refusal, with bad credentials named as such.
    func describeRefusal(_ refusal: String, settings: MQTTUplinkSettings) -> String {
        let lower = refusal.lowercased()
        if lower.contains("not authori") || lower.contains("bad user name or password") {
            let who = settings.credentials.map { "user '\($0.username)'" } ?? "an anonymous client (no mqtt.username)"
            return "bad credentials: broker \(settings.endpoint) refused \(who): \(refusal)"
        }
        return "broker \(settings.endpoint) refused the connection: \(refusal)"
    }

    /// A plain connection that the broker closed after TCP connected, before its
    /// CONNACK: the usual cause is a TLS listener (it cannot read a plain
    /// CONNECT and hangs up), so the reason says what to check.
    static func closedBeforeCONNACK(settings: MQTTUplinkSettings) -> String {
        "broker \(settings.endpoint) closed the connection before CONNACK (no MQTT answer to CONNECT): "
            + "if port \(settings.port) is a TLS listener, set mqtt.tls; otherwise check mqtt.port "
            + "(1883 is usually plain MQTT, 8883 MQTT over TLS) and the broker's log"
    }

    /// Why a connection attempt failed before CONNACK: which TLS check failed, if
    /// one did, else `fallback`.
    func describeConnectFailure(_ raw: OpaquePointer, context: CallbackContext, settings: MQTTUplinkSettings,
                                fallback: String) -> String {
        guard let tls = settings.tls else { return fallback }
        var errors = context.security.errors.withLock { $0 }
        // Whatever libmosquitto left in this thread's queue.
        while case let code = ERR_get_error(), code != 0 {
            errors.append(ERR_reason_error_string(code).map { String(cString: $0) } ?? "OpenSSL error \(code)")
        }
        var verifyResult = Int(X509_V_OK)
        if let ssl = mosquitto_ssl_get(raw) {
            verifyResult = SSL_get_verify_result(OpaquePointer(ssl))
        }
        let broker = "broker \(settings.endpoint)"
        let detail = errors.isEmpty ? fallback : errors.joined(separator: "; ")
        guard let check = Self.failedCheck(verifyResult: verifyResult, errors: errors, tls: tls, host: settings.host) else {
            return errors.isEmpty ? fallback : "TLS with \(broker) failed: \(detail)"
        }
        return "TLS with \(broker) failed: \(check) (\(detail))"
    }

    /// Why the broker's certificate was rejected. libmosquitto's asynchronous
    /// handshake frees OpenSSL's state before its verify result can be read, and
    /// "certificate verify failed" alone does not tell an unknown CA from an
    /// expired certificate or a wrong host name. So a short TLS handshake of our
    /// own, with the same trust and host name, asks OpenSSL for the exact result.
    func diagnoseCertificateRejection(source: String?, fallback: String) -> String {
        guard let tls = settings.tls,
              let verifyResult = CertificateProbe.verifyResult(host: settings.host, port: settings.port,
                                                               source: source, trust: tls.trust),
              verifyResult != Int(X509_V_OK),
              let check = Self.failedCheck(verifyResult: verifyResult, errors: [], tls: tls, host: settings.host)
        else { return "TLS with broker \(settings.endpoint) failed: the broker's certificate was not accepted (\(fallback))" }
        return "TLS with broker \(settings.endpoint) failed: \(check)"
    }

    /// The check a TLS failure comes from, in words an operator can act on.
    static func failedCheck(verifyResult: Int, errors: [String], tls: MQTTTLSOptions, host: String) -> String? {
        let text = errors.joined(separator: " ").lowercased()
        let client = tls.certFile.map { "client certificate \($0)" } ?? "client certificate"
        if text.contains("host name verification failed") {
            // libmosquitto's own check, after OpenSSL's chain check passed.
            return "hostname mismatch: the broker's certificate is not issued for '\(host)'"
        }
        switch Int32(verifyResult) {
        case X509_V_OK:
            break
        case X509_V_ERR_CERT_HAS_EXPIRED:
            return "expired certificate: the broker's certificate has expired"
        case X509_V_ERR_CERT_NOT_YET_VALID:
            return "the broker's certificate is not valid yet (check the gateway's clock)"
        case X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH:
            return "hostname mismatch: the broker's certificate is not issued for '\(host)'"
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT,
             X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN, X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT,
             X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE, X509_V_ERR_CERT_SIGNATURE_FAILURE:
            return "unknown CA: the broker's certificate is not signed by a CA in \(tls.trustDescription)"
        default:
            return "the broker's certificate was not accepted: \(String(cString: X509_verify_cert_error_string(verifyResult)))"
        }
        if text.contains("certificate verify failed") {
            // Without OpenSSL's verify result the reason is not known for sure.
            return "the broker's certificate was not accepted (unknown CA, expired, or not issued for '\(host)')"
        }
        if text.contains("alert certificate required") || (text.contains("alert handshake failure") && tls.certFile == nil) {
            return "missing client certificate: the broker requires one (mutual TLS); set mqtt.tls.cert_file and key_file"
        }
        if text.contains("alert certificate expired") {
            return "expired certificate: the broker rejected the \(client) because it has expired"
        }
        if text.contains("alert unknown ca") || text.contains("alert bad certificate")
            || text.contains("alert certificate unknown") || text.contains("alert decrypt error") {
            return "the broker rejected the \(client) (not signed by a CA it trusts, or revoked)"
        }
        if text.contains("bad decrypt") || text.contains("unable to load client key") || text.contains("bad password") {
            return "cannot load the client key \(tls.keyFile ?? "") (wrong passphrase in key_password_file?)"
        }
        if text.contains("unable to load client cert") {
            return "cannot load the \(client)"
        }
        if text.contains("wrong version number") || text.contains("packet length too long") || text.contains("record layer failure") {
            return "the broker does not speak TLS on this port (a plain MQTT listener?)"
        }
        if text.contains("unexpected eof") {
            return "the broker closed the connection during the TLS handshake: it does not speak TLS on this port "
                + "(a plain MQTT listener?) or dropped the client"
        }
        if text.contains("protocol version") || text.contains("unsupported protocol") {
            return "no common TLS version (min_version \(tls.minimumVersion.mosquittoName))"
        }
        if text.contains("no cipher") || text.contains("no shared cipher") || text.contains("alert handshake failure") {
            return "the TLS handshake was refused (ciphers \(tls.ciphers ?? "default"), ALPN \(tls.alpn ?? "none"))"
        }
        return nil
    }
}

// The callbacks run on the network thread inside libmosquitto; they only copy data.

private func onLogCallback(_ mosq: OpaquePointer?, _ user: UnsafeMutableRawPointer?, _ level: Int32,
                           _ text: UnsafePointer<CChar>?) {
    guard level & Int32(MOSQ_LOG_ERR) != 0, let text, user != nil else { return }
    let line = String(cString: text)
    CallbackContext.from(user).security.errors.withLock { errors in
        if errors.count < 20 { errors.append(line) }
    }
}

/// OpenSSL's pem_password_cb; libmosquitto passes the mosquitto handle as `userdata`.
private func passphraseCallback(_ buffer: UnsafeMutablePointer<CChar>?, _ size: Int32, _ rwflag: Int32,
                                _ userdata: UnsafeMutableRawPointer?) -> Int32 {
    guard let buffer, size > 0, let userdata,
          let user = mosquitto_userdata(OpaquePointer(userdata)) else { return 0 }
    return CallbackContext.from(user).security.passphrase.withLock { passphrase in
        let count = min(passphrase.count, Int(size) - 1)
        passphrase.withUnsafeBytes { bytes in
            if let source = bytes.baseAddress, count > 0 {
                UnsafeMutableRawPointer(buffer).copyMemory(from: source, byteCount: count)
            }
        }
        buffer[count] = 0
        return Int32(count)
    }
}

/// A TLS handshake that only checks the broker's certificate and reports OpenSSL's
/// verify result (`X509_V_*`), or nil when the handshake could not get that far.
enum CertificateProbe {
    static func verifyResult(host: String, port: Int, source: String?, trust: MQTTTLSOptions.Trust) -> Int? {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var found: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &found) == 0, let address = found else { return nil }
        defer { freeaddrinfo(found) }
        let fd = socket(address.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        if let source {
            var local = addrinfo()
            local.ai_family = address.pointee.ai_family
            local.ai_flags = AI_NUMERICHOST
            var bound: UnsafeMutablePointer<addrinfo>?
            guard getaddrinfo(source, nil, &local, &bound) == 0, let bound else { return nil }
            defer { freeaddrinfo(bound) }
            guard bind(fd, bound.pointee.ai_addr, bound.pointee.ai_addrlen) == 0 else { return nil }
        }
        guard connect(fd, address.pointee.ai_addr, address.pointee.ai_addrlen) == 0 else { return nil }

        guard let context = SSL_CTX_new(TLS_client_method()) else { return nil }
        defer { SSL_CTX_free(context) }
        SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil)
        switch trust {
        case .systemStore: SSL_CTX_set_default_verify_paths(context)
        case let .caFile(file): SSL_CTX_load_verify_locations(context, file, nil)
        case let .caDirectory(directory): SSL_CTX_load_verify_locations(context, nil, directory)
        }
        guard let ssl = SSL_new(context) else { return nil }
        defer { SSL_free(ssl) }
        SSL_set_fd(ssl, fd)
        let isAddress = host.contains(":") || host.split(separator: ".").allSatisfy { UInt8($0) != nil }
        if isAddress {
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host)
        } else {
            SSL_set1_host(ssl, host)
            _ = host.withCString { name in
                SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, Int(TLSEXT_NAMETYPE_host_name), UnsafeMutableRawPointer(mutating: name))
            }
        }
        _ = SSL_connect(ssl)
        ERR_clear_error()
        return SSL_get_verify_result(ssl)
    }
}
