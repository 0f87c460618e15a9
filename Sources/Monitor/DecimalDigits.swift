// The one integer-to-ASCII writer of the hand-written documents (`/api/fleet` and
// `/metrics`): both append many thousands of integers per rendering, and neither
// goes through String for them.

extension Array where Element == UInt8 {
    /// Appends `value` in decimal ASCII (`-` first when negative, no padding), as
    /// `String(value)` writes it.
    @inlinable
    public mutating func appendDecimal(_ value: Int64) {
        guard value != 0 else { append(UInt8(ascii: "0")); return }
        if value < 0 { append(UInt8(ascii: "-")) }
        var magnitude = value.magnitude
        let start = count
        while magnitude > 0 {
            append(UInt8(ascii: "0") + UInt8(truncatingIfNeeded: magnitude % 10))
            magnitude /= 10
        }
        self[start...].reverse()
    }
}
