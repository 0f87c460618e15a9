// A few lines of the protobuf wire format, by hand, for the one hot path: a DDATA per
// poll, committed at ingest and rendered at publish. Births and commands go through
// the generated types; tests decode everything with them.

/// Appends protobuf fields to a byte buffer.
struct ProtobufWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    mutating func varint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    mutating func varintField(_ field: UInt64, _ value: UInt64) {
        varint(field << 3)
        varint(value)
    }

    mutating func lengthDelimited<C: Collection>(_ field: UInt64, _ content: C) where C.Element == UInt8 {
        varint(field << 3 | 2)
        varint(UInt64(content.count))
        bytes.append(contentsOf: content)
    }

    mutating func fixed32Field(_ field: UInt64, _ value: UInt32) {
        varint(field << 3 | 5)
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func fixed64Field(_ field: UInt64, _ value: UInt64) {
        varint(field << 3 | 1)
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }
}

/// Reads the fields of one protobuf message, without interpreting them.
struct ProtobufReader {
    struct Field {
        var number: UInt64
        var wireType: UInt64
        /// The whole field, key included (to copy it unchanged).
        var raw: Range<Int>
        /// A length-delimited field's content; a varint field's value is `value`.
        var content: Range<Int>
        var value: UInt64
    }

    struct Malformed: Error {}

    let bytes: [UInt8]
    private(set) var index: Int
    let end: Int

    init(_ bytes: [UInt8], range: Range<Int>? = nil) {
        self.bytes = bytes
        index = range?.lowerBound ?? 0
        end = range?.upperBound ?? bytes.count
    }

    var atEnd: Bool { index >= end }

    mutating func next() throws(Malformed) -> Field {
        let start = index
        let key = try varint()
        let wireType = key & 7
        var value: UInt64 = 0
        let content: Range<Int>
        switch wireType {
        case 0:
            value = try varint()
            content = index..<index
        case 1, 5:
            let width = wireType == 1 ? 8 : 4
            guard end - index >= width else { throw Malformed() }
            content = index..<index + width
            index += width
        case 2:
            let length = try varint()
            guard length <= UInt64(end - index) else { throw Malformed() }
            content = index..<index + Int(length)
            index += Int(length)
        default:
            throw Malformed()  // groups: not in sparkplug_b.proto
        }
        return Field(number: key >> 3, wireType: wireType, raw: start..<index, content: content, value: value)
    }

    private mutating func varint() throws(Malformed) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while index < end, shift < 64 {
            let byte = bytes[index]
            index += 1
            result |= UInt64(byte & 0x7F) << shift
            if byte < 0x80 { return result }
            shift += 7
        }
        throw Malformed()
    }
}
