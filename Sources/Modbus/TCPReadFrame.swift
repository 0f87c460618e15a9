// Modbus TCP framing of one read (FC1–FC4): the request ADU the gateway sends,
// and the checks of the answer against it. libmodbus 3.1.6 reads the answer's
// bytes but compares neither its unit id nor its MBAP length with the request
// (and lets a protocol id with one zero byte through), so the gateway checks
// every field of the header itself before it decodes anything.
import CModbus

/// One read request over Modbus TCP: MBAP header (transaction id, protocol id 0,
/// length, unit id) and the PDU (function, address, count).
struct TCPReadFrame: Equatable {
    var transactionID: UInt16
    var unit: UInt8
    var function: UInt8
    var address: UInt16
    var count: UInt16

    /// The 12 bytes on the wire.
    var bytes: [UInt8] { withBytes { Array($0) } }

    /// Calls `body` with the 12 bytes on the wire, kept on the stack (one request per poll block).
    func withBytes<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        let frame: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (UInt8(transactionID >> 8), UInt8(transactionID & 0xFF), 0, 0, 0, 6, unit, function,
             UInt8(address >> 8), UInt8(address & 0xFF), UInt8(count >> 8), UInt8(count & 0xFF))
        return withUnsafeBytes(of: frame) { body($0) }
    }

    /// Data bytes a correct answer carries: two per register, one per eight bits.
    var expectedDataBytes: Int {
        function <= 2 ? (Int(count) + 7) / 8 : Int(count) * 2
    }

    /// What a received answer turned out to be.
    enum Answer: Equatable {
        /// The data bytes, at these indices of the answer.
        case data(Range<Int>)
        /// A Modbus exception answer with this code (1…11).
        case exception(code: Int)
    }

    /// Why an answer is not the answer to this request.
    enum Mismatch: Error, Equatable, CustomStringConvertible {
        case tooShort(length: Int)
        case transactionID(received: UInt16, expected: UInt16)
        case protocolID(received: UInt16)
        case headerLength(announced: Int, following: Int)
        case unit(received: UInt8, expected: UInt8)
        case function(received: UInt8, expected: UInt8)
        case unknownException(code: Int)
        case dataBytes(received: Int, expected: Int)

        var description: String {
            switch self {
            case let .tooShort(length):
                return "\(length) bytes are too short for a Modbus TCP answer"
            case let .transactionID(received, expected):
                return "transaction id \(received) in the answer, expected \(expected) (an answer to another request)"
            case let .protocolID(received):
                return "protocol id \(received) in the MBAP header, expected 0 (Modbus)"
            case let .headerLength(announced, following):
                return "the MBAP header announces \(announced) bytes, \(following) follow"
            case let .unit(received, expected):
                return "answer from unit id \(received), expected unit id \(expected)"
            case let .function(received, expected):
                return "function code \(received) in the answer to a function \(expected) request"
            case let .unknownException(code):
                return "exception code \(code) is not a Modbus exception"
            case let .dataBytes(received, expected):
                return "\(received) data bytes in the answer, expected \(expected)"
            }
        }
    }

    /// Checks the first `length` bytes of `answer` (as `modbus_receive_confirmation`
    /// left them) against this request: transaction id, protocol id, MBAP length,
    /// unit id, function code, then the byte count.
    func check(_ answer: UnsafeBufferPointer<UInt8>, length: Int) -> Result<Answer, Mismatch> {
        // MBAP (7) + function + byte count or exception code.
        guard length >= 9, length <= answer.count else { return .failure(.tooShort(length: length)) }
        let receivedID = UInt16(answer[0]) << 8 | UInt16(answer[1])
        guard receivedID == transactionID else {
            return .failure(.transactionID(received: receivedID, expected: transactionID))
        }
        let protocolID = UInt16(answer[2]) << 8 | UInt16(answer[3])
        guard protocolID == 0 else { return .failure(.protocolID(received: protocolID)) }
        let announced = Int(answer[4]) << 8 | Int(answer[5])
        guard announced == length - 6 else { return .failure(.headerLength(announced: announced, following: length - 6)) }
        guard answer[6] == unit else { return .failure(.unit(received: answer[6], expected: unit)) }
        let receivedFunction = answer[7]
        if receivedFunction == function | 0x80 {
            let code = Int(answer[8])
            guard (1..<Int(MODBUS_EXCEPTION_MAX)).contains(code), length == 9 else { return .failure(.unknownException(code: code)) }
            return .success(.exception(code: code))
        }
        guard receivedFunction == function else {
            return .failure(.function(received: receivedFunction, expected: function))
        }
        let byteCount = Int(answer[8])
        guard byteCount == expectedDataBytes, length == 9 + byteCount else {
            return .failure(.dataBytes(received: length - 9, expected: expectedDataBytes))
        }
        return .success(.data(9..<length))
    }
}
