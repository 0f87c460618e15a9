// The PEM files of `mqtt.tls`, read with libcrypto at load time as OpenSSL will
// read them at connect time, so a malformed certificate or key, a wrong
// passphrase or a key of another certificate stops `check-config` and `run`
// (exit 78, before the outbox is opened) instead of failing every connect.

import COpenSSL
import Foundation

enum TLSFiles {
    /// The setting a key problem belongs to.
    enum Culprit { case keyFile, keyPasswordFile }

    /// Why `path` holds no PEM certificate, or `nil` when it holds at least one.
    static func certificateProblem(_ path: String, key: String) -> String? {
        guard let certificate = readCertificate(path) else {
            return "\(key) '\(path)' holds no PEM certificate (\(errors()))"
        }
        X509_free(certificate)
        return nil
    }

    /// Why the private key in `keyPath` cannot be used with the certificate in
    /// `certificatePath` (opened with `passphrase`), or `nil` when it can.
    static func keyProblem(_ keyPath: String, passphrase: Secret?, certificatePath: String?)
        -> (culprit: Culprit, message: String, hint: String)? {
        let encrypted = (FileManager.default.contents(atPath: keyPath)).map {
            String(decoding: $0, as: UTF8.self).contains("ENCRYPTED")
        } ?? false
        guard let key = readPrivateKey(keyPath, passphrase: passphrase?.value) else {
            let detail = errors()
            if encrypted && passphrase == nil {
                return (.keyFile, "key_file '\(keyPath)' is encrypted and no key_password_file is set",
                        "add key_password_file: <file whose first line is the passphrase>")
            }
            if encrypted {
                return (.keyPasswordFile, "key_file '\(keyPath)' does not open with the passphrase in key_password_file (\(detail))",
                        "check the passphrase: the first line of key_password_file")
            }
            return (.keyFile, "key_file '\(keyPath)' holds no PEM private key (\(detail))",
                    "name the client certificate's private key in PEM form (-----BEGIN PRIVATE KEY-----)")
        }
        defer { EVP_PKEY_free(key) }
        guard let certificatePath, let certificate = readCertificate(certificatePath) else { return nil }
        defer { X509_free(certificate) }
        guard X509_check_private_key(certificate, key) == 1 else {
            ERR_clear_error()
            return (.keyFile, "key_file '\(keyPath)' is not the key of cert_file '\(certificatePath)'",
                    "name the key that was made with this certificate (their public keys differ)")
        }
        return nil
    }

    private static func readCertificate(_ path: String) -> OpaquePointer? {
        guard let bio = BIO_new_file(path, "r") else { return nil }
        defer { BIO_free(bio) }
        return PEM_read_bio_X509(bio, nil, refusePassphrase, nil)
    }

    private static func readPrivateKey(_ path: String, passphrase: String?) -> OpaquePointer? {
        guard let bio = BIO_new_file(path, "r") else { return nil }
        defer { BIO_free(bio) }
        guard let passphrase else { return PEM_read_bio_PrivateKey(bio, nil, refusePassphrase, nil) }
        var bytes = Array(passphrase.utf8CString)
        defer { for index in bytes.indices { bytes[index] = 0 } }
        return bytes.withUnsafeMutableBytes { buffer in
            PEM_read_bio_PrivateKey(bio, nil, givePassphrase, buffer.baseAddress)
        }
    }

    /// OpenSSL's error queue of this thread as text (and emptied).
    private static func errors() -> String {
        var messages: [String] = []
        while case let code = ERR_get_error(), code != 0 {
            messages.append(ERR_reason_error_string(code).map { String(cString: $0) } ?? "OpenSSL error \(code)")
        }
        return messages.isEmpty ? "OpenSSL gave no reason" : "OpenSSL: " + messages.joined(separator: "; ")
    }
}

// pem_password_cb: without a callback OpenSSL would ask for a passphrase on the terminal.

/// No passphrase: an encrypted PEM fails to open.
private func refusePassphrase(_ buffer: UnsafeMutablePointer<CChar>?, _ size: Int32, _ rwflag: Int32,
                              _ user: UnsafeMutableRawPointer?) -> Int32 {
    0
}

/// The NUL-terminated passphrase at `user`.
private func givePassphrase(_ buffer: UnsafeMutablePointer<CChar>?, _ size: Int32, _ rwflag: Int32,
                            _ user: UnsafeMutableRawPointer?) -> Int32 {
    guard let buffer, let user, size > 0 else { return 0 }
    let passphrase = user.assumingMemoryBound(to: CChar.self)
    let count = min(strlen(passphrase), Int(size) - 1)
    buffer.update(from: passphrase, count: count)
    buffer[count] = 0
    return Int32(count)
}
