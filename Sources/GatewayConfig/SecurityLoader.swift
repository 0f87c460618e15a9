// The schema of the security settings: `mqtt.tls`, the MQTT credentials and
// `payload:`. Referenced files are checked and read here, at load time (modes,
// PEM contents, sealing keys, passwords), so a missing CA file, a malformed key
// or a key file other users can read stops startup with its YAML path.

import Foundation
import Sealing
import Yams

/// What `mqttSecurity` read from the `mqtt` section, applied once the section is complete.
struct MQTTSecurity {
    var tls: MQTTTLSSettings?
    var username: String?
    var password: Secret?
    var passwordSource: PasswordSource?

    /// Sets TLS and credentials; with TLS and no `port:` written, the port is 8883.
    func apply(to settings: inout MQTTSettings, portWritten: Bool) {
        settings.tls = tls
        settings.username = username
        settings.password = password
        settings.passwordSource = passwordSource
        if tls != nil && !portWritten { settings.port = 8883 }
    }
}

/// Checks of files named in gateway.yaml.
public enum ConfiguredFile {
    /// A problem with a file that holds a secret: missing, not a regular file,
    /// unreadable, or readable by group or other (`nil` if it is fine).
    public static func secretProblem(_ path: String) -> (message: String, hint: String)? {
        if let problem = readableProblem(path, directory: false) { return problem }
        var info = stat()
        guard stat(path, &info) == 0 else {
            return ("cannot inspect '\(path)': \(String(cString: strerror(errno)))", "check the path")
        }
        let mode = info.st_mode & 0o777
        if mode & 0o044 != 0 {
            return ("'\(path)' holds a secret but is readable by other users (mode \(String(mode, radix: 8)))",
                    "chmod 600 \(path)")
        }
        return nil
    }

    /// A problem with a file (or directory) the gateway must read: missing,
    /// the wrong kind, or unreadable (`nil` if it is fine).
    public static func readableProblem(_ path: String, directory: Bool) -> (message: String, hint: String)? {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            return ("'\(path)' does not exist", "check the path; relative paths start in the gateway's working directory")
        }
        if isDirectory.boolValue != directory {
            return directory
                ? ("'\(path)' is a file, not a directory", "use ca_file: for a single PEM file")
                : ("'\(path)' is a directory, not a file", "name the file itself")
        }
        guard access(path, R_OK) == 0 else {
            return ("cannot read '\(path)': \(String(cString: strerror(errno)))",
                    "let the gateway's user read it (ls -l \(path))")
        }
        return nil
    }

    /// The secret in the first line of `path`: the bytes before the first LF,
    /// without a trailing CR (a file saved with Windows line ends). Read as
    /// bytes, not Characters: Swift takes "\r\n" as one Character, so a
    /// Character-wise trim would keep the "\r" in the password.
    static func readSecret(_ path: String) -> Result<String, FileReadError> {
        guard let data = FileManager.default.contents(atPath: path) else {
            return .failure(FileReadError(message: "cannot read '\(path)'"))
        }
        return firstLine(of: [UInt8](data), path: path)
    }

    static func firstLine(of bytes: [UInt8], path: String) -> Result<String, FileReadError> {
        var line = bytes.prefix { $0 != UInt8(ascii: "\n") }
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        guard let text = String(validating: line, as: UTF8.self) else {
            return .failure(FileReadError(message: "the first line of '\(path)' is not UTF-8 text"))
        }
        return .success(text)
    }

    struct FileReadError: Error {
        var message: String
    }
}

extension YAMLValue {
    func warn(_ message: String, hint: String) {
        log.warn(path, at: mark, message, hint: hint)
    }

    /// A path to a file holding a secret (checked now: exists, readable, private).
    func secretFile() -> String? {
        guard let path = string(hint: "write the path of the file") else { return nil }
        if let problem = ConfiguredFile.secretProblem(path) {
            report(problem.message, hint: problem.hint)
            return nil
        }
        return path
    }

    /// A path to a readable file or directory (checked now).
    func readablePath(directory: Bool) -> String? {
        guard let path = string(hint: "write the path of the \(directory ? "directory" : "file")") else { return nil }
        if let problem = ConfiguredFile.readableProblem(path, directory: directory) {
            report(problem.message, hint: problem.hint)
            return nil
        }
        return path
    }
}

extension SchemaReader {
    // MARK: mqtt.tls and credentials

    /// Reads `tls`, `username`, `password_file`, `password_env` and `password`
    /// from the `mqtt` section; `nil` after a problem.
    func mqttSecurity(_ section: inout MappingReader) -> MQTTSecurity? {
        var failed = false
        var security = MQTTSecurity()
        if let value = section.optional("tls") {
            switch value.kind {
            case .bool:
                if let on = value.boolean(hint: "write tls: true, or a mapping with ca_file:, cert_file:, ...") {
                    security.tls = on ? MQTTTLSSettings() : nil
                } else { failed = true }
            case .null:
                security.tls = MQTTTLSSettings()
            default:
                if value.meansNone {
                    security.tls = nil
                } else if let tls = tlsSettings(value) {
                    security.tls = tls
                } else { failed = true }
            }
        }

        let usernameValue = section.optional("username")
        if let usernameValue {
            if let name = usernameValue.string(hint: "write the MQTT user name") {
                security.username = name
            } else { failed = true }
        }
        let file = section.optional("password_file")
        let environment = section.optional("password_env")
        let inline = section.optional("password")
        let given = [file, environment, inline].compactMap { $0 }
        if given.count > 1 {
            given[1].report("more than one of password_file, password_env and password is set",
                            hint: "keep one; password_file (mode 600) is the safest")
            failed = true
        } else if let file {
            if let path = file.secretFile() {
                switch ConfiguredFile.readSecret(path) {
                case let .success(text) where !text.isEmpty:
                    security.password = Secret(text)
                    security.passwordSource = .file(path)
                case .success:
                    file.report("password file '\(path)' is empty", hint: "write the password into it (one line)")
                    failed = true
                case let .failure(error):
                    file.report(error.message, hint: "let the gateway's user read it, and keep it private: chmod 600 \(path)")
                    failed = true
                }
            } else { failed = true }
        } else if let environment {
            if let name = environment.string(hint: "write the name of an environment variable, e.g. MQTT_PASSWORD") {
                if let text = ProcessInfo.processInfo.environment[name], !text.isEmpty {
                    security.password = Secret(text)
                    security.passwordSource = .environment(name)
                } else {
                    environment.report("environment variable \(name) is not set or empty",
                                       hint: "set it in the service's environment (e.g. systemd EnvironmentFile=, mode 600)")
                    failed = true
                }
            } else { failed = true }
        } else if let inline {
            if let text = inline.string(hint: "better: put the password in a file and use password_file:") {
                security.password = Secret(text)
                security.passwordSource = .configuration
                inline.warn("the MQTT password is written in the configuration file",
                            hint: "move it to a file only the gateway can read (chmod 600) and use password_file:, or use password_env:")
            } else { failed = true }
        }
        if security.password != nil && security.username == nil, let first = given.first {
            first.report("a password is set but no username",
                         hint: "add username: <MQTT user>")
            failed = true
        }
        if security.password != nil && security.tls == nil, let first = given.first {
            first.warn("the MQTT password is sent without TLS",
                       hint: "add tls: (or run the link only inside a VPN)")
        }
        return failed ? nil : security
    }

    private func tlsSettings(_ value: YAMLValue) -> MQTTTLSSettings? {
        guard var section = MappingReader(value, hint: "write tls: as a mapping with ca_file:, cert_file:, key_file:, ...")
        else { return nil }
        var failed = false
        var tls = MQTTTLSSettings()

        let caFile = section.optional("ca_file")
        let caDirectory = section.optional("ca_dir")
        if let caFile, caDirectory != nil {
            caFile.report("both ca_file and ca_dir are set", hint: "keep one of them")
            failed = true
        } else if let caFile {
            if let path = caFile.readablePath(directory: false) {
                if let problem = TLSFiles.certificateProblem(path, key: "ca_file") {
                    caFile.report(problem, hint: "name a PEM file of the CA certificate(s) that signed the broker's certificate")
                    failed = true
                } else {
                    tls.trust = .caFile(path)
                }
            } else { failed = true }
        } else if let caDirectory {
            if let path = caDirectory.readablePath(directory: true) { tls.trust = .caDirectory(path) } else { failed = true }
        }

        let certValue = section.optional("cert_file")
        let keyValue = section.optional("key_file")
        let passwordValue = section.optional("key_password_file")
        if let certValue {
            if let path = certValue.readablePath(directory: false) {
                if let problem = TLSFiles.certificateProblem(path, key: "cert_file") {
                    certValue.report(problem, hint: "name the client certificate in PEM form (-----BEGIN CERTIFICATE-----)")
                    failed = true
                } else {
                    tls.certFile = path
                }
            } else { failed = true }
        }
        if let keyValue {
            if let path = keyValue.secretFile() { tls.keyFile = path } else { failed = true }
        }
        if (certValue == nil) != (keyValue == nil) {
            let present = certValue ?? keyValue!
            present.report(certValue == nil ? "key_file is set without cert_file" : "cert_file is set without key_file",
                           hint: "mutual TLS needs both the client certificate (cert_file) and its key (key_file)")
            failed = true
        }
        if let passwordValue {
            if keyValue == nil {
                passwordValue.report("key_password_file is set without key_file",
                                     hint: "it holds the passphrase of an encrypted key_file")
                failed = true
            } else if let path = passwordValue.secretFile() {
                switch ConfiguredFile.readSecret(path) {
                case let .success(text):
                    tls.keyPassword = Secret(text)
                case let .failure(error):
                    passwordValue.report(error.message, hint: "chmod 600 \(path)")
                    failed = true
                }
            } else { failed = true }
        }

        // The key opens (with its passphrase) and belongs to the certificate, as OpenSSL will need at connect.
        if let keyValue, let keyFile = tls.keyFile, passwordValue == nil || tls.keyPassword != nil,
           let problem = TLSFiles.keyProblem(keyFile, passphrase: tls.keyPassword, certificatePath: tls.certFile) {
            let culprit = problem.culprit == .keyPasswordFile ? (passwordValue ?? keyValue) : keyValue
            culprit.report(problem.message, hint: problem.hint)
            failed = true
        }

        if let version = section.optional("min_version") {
            if let parsed = version.choice(MQTTTLSSettings.MinimumVersion.self,
                                           aliases: ["1.2": .tls12, "1.3": .tls13, "tlsv1.2": .tls12, "tlsv1.3": .tls13]) {
                tls.minimumVersion = parsed
            } else { failed = true }
        }
        if let ciphers = section.optional("ciphers") {
            if let list = ciphers.string(hint: "write an OpenSSL cipher list, e.g. ECDHE+AESGCM:ECDHE+CHACHA20"),
               !list.trimmingSpaces.isEmpty {
                tls.ciphers = list
            } else {
                if ciphers.text?.trimmingSpaces.isEmpty == true {
                    ciphers.report("ciphers is empty", hint: "remove it to use OpenSSL's defaults")
                }
                failed = true
            }
        }
        if let alpn = section.optional("alpn") {
            if let protocolName = alpn.string(hint: "write the ALPN protocol name the broker expects, e.g. mqtt"),
               (1...255).contains(protocolName.utf8.count) {
                tls.alpn = protocolName
            } else {
                if alpn.text?.isEmpty == true {
                    alpn.report("alpn is empty", hint: "remove it, or write the protocol name, e.g. mqtt")
                }
                failed = true
            }
        }
        if let insecure = section.optional("insecure_skip_verify") {
            if let skip = insecure.boolean(hint: "write insecure_skip_verify: true only for a lab broker") {
                tls.insecureSkipVerify = skip
                if skip {
                    insecure.warn("TLS certificate and host name checks are off: anyone on the path can pose as the broker",
                                  hint: "set ca_file: to the broker's CA and remove insecure_skip_verify")
                }
            } else { failed = true }
        }
        section.finish()
        return failed ? nil : tls
    }

    // MARK: payload

    func payloadSettings(_ value: YAMLValue) -> PayloadSettings? {
        guard var section = MappingReader(value, hint: "write payload: as a mapping with seal:, keys: and seal_key:")
        else { return nil }
        var failed = false
        let sealValue = section.optional("seal")
        let sealName = sealValue.map {
            $0.choice(PayloadSettings.SealName.self, aliases: ["a256gcm": .aes256GCM, "hs256": .hmacSHA256])
        } ?? PayloadSettings.SealName.none
        if sealName == nil { failed = true }

        var keys: [(setting: PayloadSettings.Key, key: SealingKey)] = []
        let keysValue = section.optional("keys")
        if let keysValue {
            if let items = keysValue.list(itemName: "key", hint: "write each key as - { id: k1, file: /etc/edge-gateway/k1.key }") {
                var seen: [String: Int] = [:]
                for (index, item) in items.enumerated() {
                    guard let key = payloadKey(item) else { failed = true; continue }
                    if let earlier = seen[key.setting.id] {
                        item.report("key id '\(key.setting.id)' is already used by keys[\(earlier)]",
                                    hint: "give each key its own id; the id names the key in every sealed message")
                        failed = true
                    } else {
                        seen[key.setting.id] = index
                        keys.append(key)
                    }
                }
            } else { failed = true }
        }

        var sealKey: SealingKey?
        let sealKeyValue = section.optional("seal_key")
        if let sealKeyValue {
            if let id = sealKeyValue.string(hint: "write the id of one of the keys") {
                if let chosen = keys.first(where: { $0.setting.id == id }) {
                    sealKey = chosen.key
                } else if !failed {
                    let known = keys.map(\.setting.id)
                    let suggestion = Suggestion.closest(to: id, among: known).map { "did you mean '\($0)'? " } ?? ""
                    sealKeyValue.report("seal_key '\(Excerpt.of(id))' is not one of the listed keys",
                                        hint: suggestion + (known.isEmpty ? "add the key under keys:" : "listed: \(known.joined(separator: ", "))"))
                    failed = true
                }
            } else { failed = true }
        } else if let sealName, sealName != .none, !failed {
            if keys.count == 1 {
                sealKey = keys[0].key
            } else if keys.isEmpty {
                log.report(value.path.isEmpty ? "payload.keys" : value.path + ".keys", at: value.keyMark ?? value.mark,
                           "seal \(sealName.rawValue) needs a key, and keys: is empty",
                           hint: "make one with `edge-gateway keygen /etc/edge-gateway/k1.key` and add keys: [{ id: k1, file: /etc/edge-gateway/k1.key }]")
                failed = true
            } else {
                log.report(value.path + ".seal_key", at: value.keyMark ?? value.mark,
                           "several keys are listed but none is chosen to seal",
                           hint: "add seal_key: <id>; the other keys only open (for rotation)")
                failed = true
            }
        }
        section.finish()
        guard !failed, let sealName else { return nil }
        let seal: PayloadSettings.Seal
        switch (sealName, sealKey) {
        case (.none, _): seal = .none
        case let (.aes256GCM, key?): seal = .sealed(.aes256GCM, key: key)
        case let (.hmacSHA256, key?): seal = .sealed(.hmacSHA256, key: key)
        case (.aes256GCM, nil), (.hmacSHA256, nil):
            // Every way to get here reported a problem above; refuse rather than go out plain.
            log.report(value.path + ".seal", at: value.keyMark ?? value.mark, "sealing is on but no key was chosen",
                       hint: "add keys: and seal_key:")
            return nil
        }
        return PayloadSettings(seal: seal, keys: keys.map(\.setting))
    }

    /// One `keys:` item, its key file read and checked now (so a malformed key
    /// stops `check-config` and `run` with the file's YAML path and line).
    func payloadKey(_ value: YAMLValue) -> (setting: PayloadSettings.Key, key: SealingKey)? {
        guard var section = MappingReader(value, hint: "write each key as { id: k1, file: /etc/edge-gateway/k1.key }")
        else { return nil }
        let id = section.required("id", hint: "add id: <key id>; it is the kid of every message sealed with it")
            .flatMap { value -> String? in
                guard let id = value.string() else { return nil }
                guard SealingKey.isValidID(id) else {
                    value.report("key id '\(Excerpt.of(id))' is not valid", hint: "use only \(SealingKey.idCharacters)")
                    return nil
                }
                return id
            }
        let fileValue = section.required("file", hint: "add file: <path of the key file> (edge-gateway keygen makes one)")
        let file = fileValue.flatMap { $0.secretFile() }
        section.finish()
        guard let id, let file, let fileValue else { return nil }
        do {
            let key = try SealingKey.load(id: id, file: file)
            return (PayloadSettings.Key(id: id, file: file), key)
        } catch {
            fileValue.report(error.message, hint: "restore the key, or make a new one with `edge-gateway keygen <new file>` and name that file here")
            return nil
        }
    }
}
