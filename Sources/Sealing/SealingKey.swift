// Sealing keys and their files: 32 bytes, stored raw or as hex or base64 text,
// in a file that only its owner may read.
import Foundation

/// Why sealing, opening or reading a key failed. `description` says what and what to do.
public struct SealingError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// A key file is missing, unreadable, readable by others, or not 32 bytes.
        case badKeyFile
        /// The message is not a sealed envelope (not JSON, missing fields, wrong `v`/`alg`).
        case malformedEnvelope
        /// A field that must be base64 is not, or has the wrong length.
        case badBase64
        /// The envelope names a key id none of the given keys has.
        case unknownKeyID
        /// The tag or signature does not match: the message was altered, or it was
        /// sealed for another topic (the two cannot be told apart; both mean "reject").
        case authenticationFailed
        /// OpenSSL failed (out of memory, no entropy).
        case crypto
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}

/// A 32-byte key with the id that names it in envelopes (`kid`).
///
/// Equal when id and bytes are equal. Its description names the id only, never the bytes.
public struct SealingKey: Sendable, Equatable, CustomStringConvertible {
    /// Key length in bytes: AES-256 and HMAC-SHA256 both use 32.
    public static let length = 32

    public let id: String
    let bytes: [UInt8]

    /// A key from its bytes; `id` must be 1...64 of letters, digits, '.', '_', '-'.
    public init(id: String, bytes: [UInt8]) throws(SealingError) {
        guard Self.isValidID(id) else {
            throw SealingError(.badKeyFile, "key id '\(id)' is not valid: use only \(Self.idCharacters)")
        }
        guard bytes.count == Self.length else {
            throw SealingError(.badKeyFile, "key '\(id)' has \(bytes.count) bytes; it must have \(Self.length)")
        }
        self.id = id
        self.bytes = bytes
    }

    /// Reads a key file: 32 raw bytes, or 64 hex digits, or base64 of 32 bytes
    /// (surrounding whitespace allowed). The file must not be readable by group or other.
    public static func load(id: String, file path: String) throws(SealingError) -> SealingKey {
        let keyFile = "key file '\(path)' (key '\(id)')"
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw SealingError(.badKeyFile, "\(keyFile) cannot be read: \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw SealingError(.badKeyFile, "\(keyFile) is not a regular file")
        }
        let mode = info.st_mode & 0o777
        guard mode & 0o044 == 0 else {
            throw SealingError(.badKeyFile,
                               "\(keyFile) is readable by other users (mode \(String(mode, radix: 8))); fix: chmod 600 \(path)")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SealingError(.badKeyFile, "\(keyFile) cannot be read: \(String(cString: strerror(errno)))")
        }
        guard let bytes = decodeKey([UInt8](data)) else {
            throw SealingError(.badKeyFile, "\(keyFile) holds \(data.count) bytes that are not a 32-byte key; "
                               + "expected 32 raw bytes, 64 hex digits or 44 base64 characters (edge-gateway keygen makes one)")
        }
        return try SealingKey(id: id, bytes: bytes)
    }

    /// Writes a new random key as base64 text to `path` with mode 0600; refuses to overwrite.
    public static func generate(id: String, file path: String) throws(SealingError) -> SealingKey {
        let key = try SealingKey(id: id, bytes: randomBytes(length))
        let text = Array((Data(key.bytes).base64EncodedString() + "\n").utf8)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else {
            throw SealingError(.badKeyFile, "cannot create key file '\(path)': \(String(cString: strerror(errno)))"
                               + (errno == EEXIST ? " (refusing to overwrite a key)" : ""))
        }
        defer { close(fd) }
        fchmod(fd, 0o600)  // whatever the umask
        let written = text.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == text.count, fsync(fd) == 0 else {
            throw SealingError(.badKeyFile, "cannot write key file '\(path)': \(String(cString: strerror(errno)))")
        }
        return key
    }

    public var description: String { "key \(id)" }

    /// What a key id may hold, for messages.
    public static let idCharacters = "letters, digits, '.', '_' and '-' (1...64 of them)"

    /// The one rule for key ids (`kid`), used by key files, the CLI and gateway.yaml:
    /// 1...64 ASCII letters, digits, '.', '_', '-', so an id is safe to write into
    /// JSON and topics unescaped.
    public static func isValidID(_ id: String) -> Bool {
        (1...64).contains(id.utf8.count) && id.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
                return true
            default:
                return false
            }
        }
    }

    /// 32 raw bytes, or trimmed hex or base64 text of 32 bytes.
    static func decodeKey(_ content: [UInt8]) -> [UInt8]? {
        if content.count == length { return content }
        let isSpace: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }
        let text = content.drop(while: isSpace).reversed().drop(while: isSpace).reversed()
        if text.count == 2 * length, let bytes = Hex.decode(Array(text)) { return bytes }
        if let string = String(bytes: text, encoding: .ascii), let data = Data(base64Encoded: string),
           data.count == length {
            return [UInt8](data)
        }
        return nil
    }
}

enum Hex {
    static func decode(_ text: [UInt8]) -> [UInt8]? {
        guard text.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.count / 2)
        var index = 0
        while index < text.count {
            guard let high = nibble(text[index]), let low = nibble(text[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }
}
