// A few lines of the protobuf wire format, by hand, for the one hot path: a DDATA per
// poll, committed at ingest and rendered at publish. Births and commands go through
// the generated types; tests check this path against them (same bytes, same decoding).
//
// Both types work on raw memory: a 100-tag DDATA is ~1,000 fields, and per-field
// array bookkeeping (uniqueness, capacity, slices) cost more than the encoding itself.

/// Writes protobuf fields into memory of a size fixed beforehand (an upper bound that
/// the caller computes); every write checks it, so a wrong bound stops the process
/// instead of writing past the memory.
struct ProtobufWriter {
    private let base: UnsafeMutablePointer<UInt8>
    private let capacity: Int
    private(set) var count = 0

    /// Largest length prefix a nested message gets room for before its content is
    /// written (3 bytes: up to 2 MiB); `endNested` moves the content if it needs more or less.
    static let reservedLength = 3

    private init(_ memory: UnsafeMutableBufferPointer<UInt8>) {
        base = memory.baseAddress!
        capacity = memory.count
    }

    /// The bytes `write` wrote into at most `upperBound` bytes of scratch memory (on
    /// the stack when it fits), copied once into an array of their exact size.
    static func bytes<E: Error>(upperBound: Int, _ write: (inout ProtobufWriter) throws(E) -> Void) throws(E) -> [UInt8] {
        let result: Result<[UInt8], E> = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(upperBound, 1)) { memory in
            var writer = ProtobufWriter(memory)
            do throws(E) {
                try write(&writer)
            } catch {
                return .failure(error)
            }
            return .success(Array(UnsafeBufferPointer(start: writer.base, count: writer.count)))
        }
        return try result.get()
    }

    /// Bytes a varint of `value` takes.
    @inline(__always)
    static func varintSize(_ value: UInt64) -> Int {
        value == 0 ? 1 : (64 - value.leadingZeroBitCount + 6) / 7
    }

    @inline(__always)
    private mutating func reserve(_ size: Int) {
        precondition(size <= capacity - count, "protobuf writer: upper bound too small")
    }

    @inline(__always)
    mutating func varint(_ value: UInt64) {
        reserve(Self.varintSize(value))
        var value = value
        while value >= 0x80 {
            base[count] = UInt8(truncatingIfNeeded: value) | 0x80
            count += 1
            value >>= 7
        }
        base[count] = UInt8(value)
        count += 1
    }

    @inline(__always)
    mutating func varintField(_ field: UInt64, _ value: UInt64) {
        varint(field << 3)
        varint(value)
    }

    mutating func lengthDelimited(_ field: UInt64, _ content: UnsafeRawBufferPointer) {
        varint(field << 3 | 2)
        varint(UInt64(content.count))
        raw(content)
    }

    mutating func lengthDelimited(_ field: UInt64, _ content: String) {
        var content = content
        content.withUTF8 { lengthDelimited(field, UnsafeRawBufferPointer($0)) }
    }

    mutating func lengthDelimited(_ field: UInt64, _ content: [UInt8]) {
        content.withUnsafeBytes { lengthDelimited(field, $0) }
    }

    mutating func fixed32Field(_ field: UInt64, _ value: UInt32) {
        varint(field << 3 | 5)
        withUnsafeBytes(of: value.littleEndian) { raw($0) }
    }

    mutating func fixed64Field(_ field: UInt64, _ value: UInt64) {
        varint(field << 3 | 1)
        withUnsafeBytes(of: value.littleEndian) { raw($0) }
    }

    /// Copies bytes unchanged (e.g. a field read from another message).
    mutating func raw(_ bytes: UnsafeRawBufferPointer) {
        guard !bytes.isEmpty else { return }
        reserve(bytes.count)
        UnsafeMutableRawPointer(base + count).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        count += bytes.count
    }

    /// Starts a nested message (a length-delimited field written field by field);
    /// returns the mark `endNested` needs.
    mutating func beginNested(_ field: UInt64) -> Int {
        varint(field << 3 | 2)
        reserve(Self.reservedLength)
        count += Self.reservedLength
        return count
    }

    /// Writes the nested message's length in front of it, moving its content to sit
    /// right after the length.
    mutating func endNested(_ mark: Int) {
        let length = count - mark
        let size = Self.varintSize(UInt64(length))
        let lengthAt = mark - Self.reservedLength
        if size != Self.reservedLength {
            reserve(max(0, size - Self.reservedLength))
            UnsafeMutableRawPointer(base + lengthAt + size).copyMemory(from: base + mark, byteCount: length)  // memmove
        }
        count = lengthAt
        varint(UInt64(length))
        count += length
    }
}

/// Reads the fields of one protobuf message in memory, without interpreting them.
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

    let bytes: UnsafeRawBufferPointer
    private(set) var index: Int
    let end: Int

    init(_ bytes: UnsafeRawBufferPointer, range: Range<Int>? = nil) {
        self.bytes = bytes
        index = range?.lowerBound ?? 0
        end = range?.upperBound ?? bytes.count
    }

    var atEnd: Bool { index >= end }

    /// The bytes of `range` (of a field this reader returned).
    func slice(_ range: Range<Int>) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[range])
    }

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
