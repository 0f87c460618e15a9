// A small PKI made by the openssl command line for TLS tests: a CA, a second
// (untrusted) CA, server certificates for the right and a wrong host name, and
// client certificates (valid, expired, and one with an encrypted key).
import Foundation

/// Certificates and keys in one directory; keys have mode 0600.
public struct TestCertificates: Sendable {
    public let directory: String
    /// Passphrase of `clientEncryptedKey`.
    public static let passphrase = "correct horse battery staple"

    public var caCertificate: String { directory + "/ca.pem" }
    /// A CA that signed nothing the broker uses.
    public var otherCACertificate: String { directory + "/other-ca.pem" }
    /// For `localhost` and 127.0.0.1.
    public var serverCertificate: String { directory + "/server.pem" }
    public var serverKey: String { directory + "/server.key" }
    /// For `wrong.example` only.
    public var wrongHostCertificate: String { directory + "/wronghost.pem" }
    public var wrongHostKey: String { directory + "/wronghost.key" }
    public var clientCertificate: String { directory + "/client.pem" }
    public var clientKey: String { directory + "/client.key" }
    /// `clientKey` encrypted with `passphrase`.
    public var clientEncryptedKey: String { directory + "/client-encrypted.key" }
    /// A file holding `passphrase`, mode 0600.
    public var passphraseFile: String { directory + "/client.pass" }
    /// Valid in January 2020 only.
    public var expiredClientCertificate: String { directory + "/expired.pem" }
    public var expiredClientKey: String { directory + "/expired.key" }

    /// Makes everything with `openssl` (EC P-256 keys, so it is quick).
    public static func make(in directory: String) async throws -> TestCertificates {
        let openssl = try requireTool("openssl", package: "openssl")
        let certificates = TestCertificates(directory: directory)
        func run(_ arguments: [String]) async throws {
            let log = directory + "/openssl.log"
            let child = try ChildProcess(openssl, arguments, log: log)
            let status = try await child.waitForExit(timeout: .seconds(60))
            guard status == 0 else {
                throw MissingTool(description: "openssl \(arguments.joined(separator: " ")) failed (\(status)): \(child.output)")
            }
        }
        func file(_ name: String) -> String { directory + "/" + name }
        func write(_ name: String, _ text: String) throws {
            try text.write(toFile: file(name), atomically: true, encoding: .utf8)
        }
        let curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for ca in ["ca", "other-ca"] {
            try await run(["req", "-x509"] + curve + ["-keyout", file("\(ca).key"), "-out", file("\(ca).pem"),
                           "-days", "30", "-subj", "/CN=edge-gateway test \(ca)"])
        }
        try write("server.ext", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        try write("wronghost.ext", "subjectAltName=DNS:wrong.example\nextendedKeyUsage=serverAuth\n")
        try write("client.ext", "extendedKeyUsage=clientAuth\n")
        var serial = 1
        for (name, subject, ext) in [("server", "/CN=localhost", "server.ext"), ("wronghost", "/CN=wrong.example", "wronghost.ext"),
                                     ("client", "/CN=gw-test", "client.ext")] {
            try await run(["req"] + curve + ["-keyout", file("\(name).key"), "-out", file("\(name).csr"), "-subj", subject])
            try await run(["x509", "-req", "-in", file("\(name).csr"), "-CA", file("ca.pem"), "-CAkey", file("ca.key"),
                           "-set_serial", "\(serial)", "-days", "30", "-extfile", file(ext), "-out", file("\(name).pem")])
            serial += 1
        }
        // `openssl x509 -days` cannot go into the past; `openssl ca` takes explicit dates.
        try await run(["req"] + curve + ["-keyout", file("expired.key"), "-out", file("expired.csr"), "-subj", "/CN=gw-expired"])
        try FileManager.default.createDirectory(atPath: file("ca-db"), withIntermediateDirectories: true)
        try write("ca-db/index.txt", "")
        try write("ca-db/serial", "1000\n")
        try write("ca.cnf", """
        [ ca ]
        default_ca = test_ca
        [ test_ca ]
        database = \(file("ca-db/index.txt"))
        new_certs_dir = \(file("ca-db"))
        serial = \(file("ca-db/serial"))
        default_md = sha256
        policy = any_name
        unique_subject = no
        x509_extensions = client_ext
        [ any_name ]
        commonName = supplied
        [ client_ext ]
        extendedKeyUsage = clientAuth
        """)
        try await run(["ca", "-batch", "-notext", "-config", file("ca.cnf"), "-cert", file("ca.pem"), "-keyfile", file("ca.key"),
                       "-startdate", "20200101000000Z", "-enddate", "20200201000000Z",
                       "-in", file("expired.csr"), "-out", file("expired.pem")])
        try write("client.pass", passphrase + "\n")
        try await run(["pkey", "-in", file("client.key"), "-out", file("client-encrypted.key"), "-aes256",
                       "-passout", "pass:\(passphrase)"])
        for key in ["ca.key", "other-ca.key", "server.key", "wronghost.key", "client.key", "expired.key",
                    "client-encrypted.key", "client.pass"] {
            chmod(file(key), 0o600)
        }
        return certificates
    }
}
