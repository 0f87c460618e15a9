import Testing
@testable import Modbus

/// The checks of a Modbus TCP answer that a libmodbus server cannot be made to
/// send wrong (exception codes, short frames); the rest run against the simulator
/// in TCPAnswerTests.
@Suite struct TCPReadFrameTests {
    let request = TCPReadFrame(transactionID: 0x0102, unit: 9, function: 3, address: 100, count: 2)

    func check(_ answer: [UInt8]) -> Result<TCPReadFrame.Answer, TCPReadFrame.Mismatch> {
        var buffer = answer + [UInt8](repeating: 0, count: 260 - answer.count)
        return buffer.withUnsafeMutableBufferPointer { request.check(UnsafeBufferPointer($0), length: answer.count) }
    }

    @Test func theRequestIsFramedWithItsTransactionAndUnit() {
        #expect(request.bytes == [0x01, 0x02, 0, 0, 0, 6, 9, 3, 0, 100, 0, 2])
        #expect(request.expectedDataBytes == 4)
        #expect(TCPReadFrame(transactionID: 1, unit: 1, function: 1, address: 0, count: 9).expectedDataBytes == 2)
    }

    @Test func aRightAnswerYieldsItsDataBytes() {
        #expect(check([0x01, 0x02, 0, 0, 0, 7, 9, 3, 4, 0xA, 0xB, 0xC, 0xD]) == .success(.data(9..<13)))
    }

    @Test func exceptionAnswersAreExceptionsAndUnknownCodesAreNot() {
        #expect(check([0x01, 0x02, 0, 0, 0, 3, 9, 0x83, 2]) == .success(.exception(code: 2)))
        #expect(check([0x01, 0x02, 0, 0, 0, 3, 9, 0x83, 0x20]) == .failure(.unknownException(code: 0x20)))
        #expect(check([0x01, 0x02, 0, 0, 0, 3, 9, 0x83, 0]) == .failure(.unknownException(code: 0)))
    }

    @Test func theFirstWrongFieldIsTheOneNamed() {
        // Transaction id before everything else: the rest of another request's answer says nothing.
        #expect(check([0x01, 0x03, 0, 1, 0, 9, 8, 4, 4, 0, 0, 0, 0]) == .failure(.transactionID(received: 0x0103, expected: 0x0102)))
        #expect(check([0x01, 0x02, 1, 0, 0, 9, 8, 4, 4, 0, 0, 0, 0]) == .failure(.protocolID(received: 0x0100)))
        #expect(check([0x01, 0x02, 0, 0, 0, 9, 8, 4, 4, 0, 0, 0, 0]) == .failure(.headerLength(announced: 9, following: 7)))
        #expect(check([0x01, 0x02, 0, 0, 0, 7, 8, 4, 4, 0, 0, 0, 0]) == .failure(.unit(received: 8, expected: 9)))
        #expect(check([0x01, 0x02, 0, 0, 0, 7, 9, 4, 4, 0, 0, 0, 0]) == .failure(.function(received: 4, expected: 3)))
        #expect(check([0x01, 0x02, 0, 0, 0, 5, 9, 3, 2, 0, 0]) == .failure(.dataBytes(received: 2, expected: 4)))
        #expect(check([0x01, 0x02, 0, 0, 0, 2, 9, 3]) == .failure(.tooShort(length: 8)))
    }
}
