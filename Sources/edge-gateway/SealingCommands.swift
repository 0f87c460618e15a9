// The central side of payload sealing: `edge-gateway open` verifies and opens
// sealed messages, `edge-gateway keygen` makes key files.
import ArgumentParser
import Foundation
import Sealing

/// A key on the command line: `<file>` (id = file name without extension) or `<id>=<file>`.
struct KeyArgument: ExpressibleByArgument {
    var id: String
    var file: String

    init?(argument: String) {
        if let equals = argument.firstIndex(of: "="), !argument[..<equals].contains("/") {
            id = String(argument[..<equals])
            file = String(argument[argument.index(after: equals)...])
        } else {
            file = argument
            id = KeyArgument.defaultID(file)
        }
        guard !id.isEmpty, !file.isEmpty else { return nil }
    }

    /// `/etc/edge-gateway/k1.key` → `k1`.
    static func defaultID(_ file: String) -> String {
        let name = URL(fileURLWithPath: file).lastPathComponent
        guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return name }
        return String(name[..<dot])
    }
}

/// EX_DATAERR from sysexits.h: the input was rejected.
let exitRejected: Int32 = 65

struct Open: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Verify a sealed message read from stdin and print its plain payload.",
        discussion: """
        Reads one envelope ({"v":1,"alg":"A256GCM"|"HS256",...}, see docs/SEALING.md) from stdin.
        Prints the plain payload on stdout and exits 0, or prints why the message was
        rejected (wrong key id, bad tag or signature, topic mismatch, bad base64) on
        stderr and exits 65. Give every key that may have sealed it.
        """)

    @Option(name: .long, help: ArgumentHelp("A key file (id = file name without extension), or <id>=<file>. Repeatable.",
                                            valueName: "file"))
    var key: [KeyArgument] = []

    @Option(name: .long, help: "The MQTT topic the message was received on (it is authenticated).")
    var topic: String

    func validate() throws {
        guard !key.isEmpty else { throw ValidationError("give at least one --key <file>") }
    }

    func run() throws {
        let opener: Opener
        do {
            opener = try Opener(keys: key.map { argument throws(SealingError) in
                try SealingKey.load(id: argument.id, file: argument.file)
            })
        } catch {
            FileHandle.standardError.write(Data("edge-gateway open: \(error)\n".utf8))
            throw ExitCode(exitConfigurationError)
        }
        var input = [UInt8](FileHandle.standardInput.readDataToEndOfFile())
        while let last = input.last, last == 0x0A || last == 0x0D { input.removeLast() }
        do {
            let plain = try opener.open(input, topic: topic)
            FileHandle.standardOutput.write(Data(plain))
        } catch {
            FileHandle.standardError.write(Data("edge-gateway open: rejected: \(error)\n".utf8))
            throw ExitCode(exitRejected)
        }
    }
}

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a new random 32-byte sealing key (base64) to a file with mode 0600.")

    @Argument(help: "Path of the new key file; an existing file is never overwritten.")
    var file: String

    @Option(help: "Key id to show in the configuration snippet (default: the file name without extension).")
    var id: String?

    func run() throws {
        let keyID = id ?? KeyArgument.defaultID(file)
        do {
            _ = try SealingKey.generate(id: keyID, file: file)
        } catch {
            FileHandle.standardError.write(Data("edge-gateway keygen: \(error)\n".utf8))
            throw ExitCode(1)
        }
        print("wrote \(file) (mode 0600). In gateway.yaml:")
        print("payload:")
        print("  seal: aes-256-gcm")
        print("  keys:")
        print("    - { id: \(keyID), file: \(file) }")
        print("  seal_key: \(keyID)")
    }
}
