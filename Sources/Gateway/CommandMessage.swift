// The plain payload inside a command envelope (docs/COMMANDS.md) and the
// result payload the gateway answers with.
import Foundation
import Modbus

/// A command after its envelope was opened: what the operator asked for.
public struct CommandMessage: Sendable, Equatable {
    public var id: String
    public var gateway: String
    public var device: String
    /// When the operator issued it (its `ts`).
    public var issued: Date
    public var nonce: String
    /// Tag name → value, in the order written in the command.
    public var values: [(tag: String, value: TagValue)]

    public init(id: String, gateway: String, device: String, issued: Date, nonce: String,
                values: [(tag: String, value: TagValue)]) {
        self.id = id
        self.gateway = gateway
        self.device = device
        self.issued = issued
        self.nonce = nonce
        self.values = values
    }

    public static func == (lhs: CommandMessage, rhs: CommandMessage) -> Bool {
        lhs.id == rhs.id && lhs.gateway == rhs.gateway && lhs.device == rhs.device && lhs.issued == rhs.issued
            && lhs.nonce == rhs.nonce && lhs.values.elementsEqual(rhs.values) { $0.tag == $1.tag && $0.value == $1.value }
    }

    /// Most tags one command may set.
    public static let maxTags = 64

    /// The payload: `{"id":…,"gateway":…,"device":…,"ts":…,"nonce":…,"set":{tag:value,…}}`,
    /// keys in this order, no whitespace.
    public func payload() -> [UInt8] {
        var json = JSONWriter()
        json.beginObject()
        json.key("id"); json.string(id)
        json.key("gateway"); json.string(gateway)
        json.key("device"); json.string(device)
        json.key("ts"); json.string(MessageEncoding.timestamp(issued))
        json.key("nonce"); json.string(nonce)
        json.key("set"); json.beginObject()
        for (tag, value) in values {
            json.key(tag)
            json.value(value)
        }
        json.endObject()
        json.endObject()
        return json.bytes
    }

    /// Parses a command payload. The `id` is returned even when something else is
    /// wrong, so a refusal can name the command.
    static func parse(_ bytes: [UInt8]) -> (id: String?, result: Result<CommandMessage, CommandSyntaxError>) {
        guard let wire = try? JSONDecoder().decode(Wire.self, from: Data(bytes)) else {
            return (nil, .failure(CommandSyntaxError("the command is not a JSON object with string fields id, gateway, device, ts, nonce and an object set")))
        }
        guard let id = wire.id, (1...128).contains(id.utf8.count) else {
            return (nil, .failure(CommandSyntaxError("the command has no 'id' (a string of 1...128 bytes)")))
        }
        guard let gateway = wire.gateway, let device = wire.device else {
            return (id, .failure(CommandSyntaxError("the command has no 'gateway' and 'device' strings")))
        }
        guard let ts = wire.ts, let issued = parseTimestamp(ts) else {
            return (id, .failure(CommandSyntaxError("the command has no 'ts' in UTC ISO 8601, e.g. 2026-11-24T01:00:00.000Z")))
        }
        guard let nonce = wire.nonce, (16...128).contains(nonce.utf8.count) else {
            return (id, .failure(CommandSyntaxError("the command has no 'nonce' of 16...128 characters (e.g. base64 of 16 random bytes)")))
        }
        guard let set = wire.set, !set.isEmpty, set.count <= maxTags else {
            return (id, .failure(CommandSyntaxError("the command has no 'set' object with 1...\(maxTags) tags")))
        }
        var values: [(tag: String, value: TagValue)] = []
        for tag in set.keys.sorted() {
            guard let value = set[tag]!.value else {
                return (id, .failure(CommandSyntaxError("'set.\(tag)' is not a number, true/false or text")))
            }
            values.append((tag, value))
        }
        return (id, .success(CommandMessage(id: id, gateway: gateway, device: device, issued: issued,
                                            nonce: nonce, values: values)))
    }

    /// The command as JSON, every field optional so a wrong one is named, not a decoding error.
    private struct Wire: Decodable {
        var id: String?
        var gateway: String?
        var device: String?
        var ts: String?
        var nonce: String?
        var set: [String: WireValue]?
    }

    /// A value of `set`: JSONDecoder keeps booleans and numbers apart (a `1` is not `true`).
    private struct WireValue: Decodable {
        var value: TagValue?

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let bool = try? container.decode(Bool.self) {
                value = .bool(bool)
            } else if let integer = try? container.decode(Int64.self) {
                value = .integer(integer)
            } else if let number = try? container.decode(Double.self) {
                value = .number(number)
            } else if let text = try? container.decode(String.self) {
                // Kept so the tag check can say "wrong type".
                value = .string(text)
            } else {
                value = nil
            }
        }
    }

    static func parseTimestamp(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text)
    }
}

extension JSONWriter {
    mutating func value(_ value: TagValue) {
        switch value {
        case let .integer(integer): self.integer(integer)
        case let .number(number): self.number(number)
        case let .bool(bool): self.bool(bool)
        case let .string(text): string(text)
        }
    }
}

/// Why a payload is not a command.
struct CommandSyntaxError: Error {
    var message: String
    init(_ message: String) { self.message = message }
}
