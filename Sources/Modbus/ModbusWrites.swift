// Writes through libmodbus: FC5/FC15 for coils, FC6/FC16 for holding registers.
import CModbus
#if canImport(Glibc)
import Glibc
#endif

extension ModbusConnection {
    /// Writes coils from `address`: one with FC5 (write single coil), several with FC15.
    public func writeCoils(unit: Int, address: Int, values: [Bool]) throws(ModbusError) {
        let what = values.count == 1 ? "write coil \(address) (FC5) to unit \(unit)"
            : "write coils \(address)+\(values.count) (FC15) to unit \(unit)"
        try checkWriteRange(unit: unit, address: address, count: values.count, what: what)
        try selectUnit(unit)
        let (written, code): (Int32, Int32)
        if values.count == 1 {
            let rc = modbus_write_bit(context, Int32(address), values[0] ? 1 : 0)
            (written, code) = (rc, errno)
        } else {
            var bits = values.map { UInt8($0 ? 1 : 0) }
            let rc = modbus_write_bits(context, Int32(address), Int32(bits.count), &bits)
            (written, code) = (rc, errno)
        }
        try check(written, errno: code, expected: values.count, what: what)
    }

    /// Writes holding registers from `address`: one with FC6 (write single register), several with FC16.
    public func writeRegisters(unit: Int, address: Int, values: [UInt16]) throws(ModbusError) {
        let what = values.count == 1 ? "write holding \(address) (FC6) to unit \(unit)"
            : "write holding \(address)+\(values.count) (FC16) to unit \(unit)"
        try checkWriteRange(unit: unit, address: address, count: values.count, what: what)
        try selectUnit(unit)
        let (written, code): (Int32, Int32)
        if values.count == 1 {
            let rc = modbus_write_register(context, Int32(address), values[0])
            (written, code) = (rc, errno)
        } else {
            var words = values
            let rc = modbus_write_registers(context, Int32(address), Int32(words.count), &words)
            (written, code) = (rc, errno)
        }
        try check(written, errno: code, expected: values.count, what: what)
    }

    private func checkWriteRange(unit: Int, address: Int, count: Int, what: String) throws(ModbusError) {
        // FC15 carries at most 1968 coils, FC16 at most 123 registers; a tag is far smaller.
        guard (0...255).contains(unit), (0...0xFFFF).contains(address), (1...123).contains(count),
              address + count - 1 <= 0xFFFF else {
            throw ModbusError(kind: .setup, message: "\(what): unit id, address or count out of range")
        }
    }
}

/// The meaning of a Modbus exception code (Modbus Application Protocol v1.1b3, §7).
public enum ModbusExceptionMeaning {
    public static func of(_ code: Int) -> String {
        switch code {
        case 1: return "illegal function: the device does not support this function code"
        case 2: return "illegal data address: the device has no such register or coil"
        case 3: return "illegal data value: the device refused the value"
        case 4: return "server device failure: the device failed while performing the write"
        case 5: return "acknowledge: the device accepted the request and is still processing it"
        case 6: return "server device busy: try again later"
        case 8: return "memory parity error"
        case 10: return "gateway path unavailable"
        case 11: return "gateway target device failed to respond"
        default: return "exception code \(code) (not defined by the Modbus specification)"
        }
    }
}
