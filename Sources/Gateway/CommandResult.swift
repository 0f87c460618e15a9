// The outcome of a command and its result payload on `<prefix>/<gw>/<device>/cmd/result`
// (docs/COMMANDS.md).
import Foundation
import Modbus

/// How a command ended.
enum CommandOutcome {
    case refused(CommandRefusal)
    case ran([TagWriteResult])

    var ok: Bool {
        guard case let .ran(results) = self else { return false }
        return results.allSatisfy { if case .written = $0.outcome { true } else { false } }
    }

    var isRefusal: Bool { if case .refused = self { true } else { false } }

    /// Why a command that reached the device did not succeed (the result's `reason`).
    enum DeviceFailure: String {
        /// The device answered with a Modbus exception (`exception` says which).
        case modbusException = "modbus_exception"
        /// No answer, a broken connection or a malformed answer.
        case modbusError = "modbus_error"
    }

    /// The result's `reason` when not ok: a refusal's, or how the device failed.
    var reason: String? {
        switch self {
        case let .refused(refusal): return refusal.reason.rawValue
        case let .ran(results):
            for result in results {
                if case let .failed(error) = result.outcome {
                    if case .exception = error.kind { return DeviceFailure.modbusException.rawValue }
                    return DeviceFailure.modbusError.rawValue
                }
            }
            return nil
        }
    }

    var error: String? {
        switch self {
        case let .refused(refusal): return refusal.message
        case let .ran(results):
            for result in results {
                if case let .failed(error) = result.outcome { return "tag '\(result.write.tag.name)': \(error.message)" }
            }
            return nil
        }
    }
}

/// The result payload (docs/COMMANDS.md).
enum CommandResultEncoding {
    static func payload(id: String?, gateway: String, device: String, kid: String?, outcome: CommandOutcome,
                        at date: Date) -> [UInt8] {
        var json = JSONWriter()
        json.beginObject()
        json.key("id"); if let id { json.string(id) } else { json.null() }
        json.key("gateway"); json.string(gateway)
        json.key("device"); json.string(device)
        json.key("kid"); if let kid { json.string(kid) } else { json.null() }
        json.key("ts"); json.string(MessageEncoding.timestamp(date))
        json.key("ok"); json.bool(outcome.ok)
        if let reason = outcome.reason { json.key("reason"); json.string(reason) }
        if let error = outcome.error { json.key("error"); json.string(error) }
        if case let .ran(results) = outcome {
            json.key("tags"); json.beginObject()
            for result in results {
                json.key(result.write.tag.name); json.beginObject()
                json.key("written")
                switch result.write.payload {
                case let .coil(bit): json.bool(bit)
                case let .registers(words):
                    json.beginArray()
                    for word in words { json.integer(Int64(word)) }
                    json.endArray()
                }
                switch result.outcome {
                case let .written(readBack):
                    json.key("status"); json.string("written")
                    switch readBack {
                    case let .success(value): json.key("read_back"); json.value(value)
                    case let .failure(error): json.key("read_back_error"); json.string(error.message)
                    }
                case let .failed(error):
                    json.key("status"); json.string("failed")
                    if case let .exception(code) = error.kind {
                        json.key("exception"); json.beginObject()
                        json.key("code"); json.integer(Int64(code))
                        json.key("meaning"); json.string(ModbusExceptionMeaning.of(code))
                        json.endObject()
                    }
                    json.key("error"); json.string(error.message)
                case .notAttempted:
                    json.key("status"); json.string("not_attempted")
                }
                json.endObject()
            }
            json.endObject()
        }
        json.endObject()
        return json.bytes
    }

    static func text(_ value: TagValue) -> String {
        switch value {
        case let .integer(integer): return "\(integer)"
        case let .number(number): return "\(number)"
        case let .bool(bool): return "\(bool)"
        case let .string(text): return "\"\(text.prefix(40))\""
        }
    }

    static func readBackText(_ outcome: TagWriteResult.Outcome) -> String {
        switch outcome {
        case let .written(.success(value)): return text(value)
        case .written(.failure): return "unreadable"
        case .failed: return "failed"
        case .notAttempted: return "not_attempted"
        }
    }
}
