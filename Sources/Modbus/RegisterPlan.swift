// Which Modbus requests one poll of a device sends.

/// One read request and the tags whose registers (or bits) it carries.
public struct RegisterBlock: Sendable, Equatable {
    public var table: RegisterTable
    public var address: Int
    /// Registers, or bits for coils and discrete inputs.
    public var count: Int
    /// Indices into the device's tag list.
    public var tagIndices: [Int]

    public init(table: RegisterTable, address: Int, count: Int, tagIndices: [Int]) {
        self.table = table
        self.address = address
        self.count = count
        self.tagIndices = tagIndices
    }

    var end: Int { address + count }
}

/// The requests for one poll group of a device: tags of one table are merged
/// into one read when the unused addresses between them are at most `maxGap`
/// and the read stays within the protocol's limits (125 registers, 2000 bits).
public struct RegisterPlan: Sendable, Equatable {
    public static let maxRegistersPerRead = 125
    public static let maxBitsPerRead = 2000

    public var blocks: [RegisterBlock]

    /// Most registers (or bits) one read of `table` may carry.
    public static func limit(for table: RegisterTable) -> Int {
        table.holdsBits ? maxBitsPerRead : maxRegistersPerRead
    }

    /// Plans the tags at `indices` (all tags when `nil`), table by table in address order.
    public init(tags: [TagConfiguration], maxGap: Int = 0, indices: [Int]? = nil) {
        let chosen = indices ?? Array(tags.indices)
        var blocks: [RegisterBlock] = []
        for table in RegisterTable.allCases {
            let limit = Self.limit(for: table)
            let ordered = chosen
                .filter { tags[$0].table == table }
                .sorted { (tags[$0].address, $0) < (tags[$1].address, $1) }
            var current: RegisterBlock?
            for index in ordered {
                let tag = tags[index]
                let end = tag.address + tag.width
                if var block = current,
                   tag.address <= block.end + maxGap,
                   max(end, block.end) - block.address <= limit {
                    block.count = max(end, block.end) - block.address
                    block.tagIndices.append(index)
                    current = block
                } else {
                    if let block = current { blocks.append(block) }
                    current = RegisterBlock(table: table, address: tag.address, count: tag.width, tagIndices: [index])
                }
            }
            if let block = current { blocks.append(block) }
        }
        self.blocks = blocks
    }

    public init(blocks: [RegisterBlock]) {
        self.blocks = blocks
    }

    /// Smaller reads for a block a device rejected with exception 2 (illegal
    /// data address): first the runs of touching tags, and when that is the
    /// block itself, one read per tag. Empty when the block cannot be split.
    public static func split(_ block: RegisterBlock, tags: [TagConfiguration]) -> [RegisterBlock] {
        guard block.tagIndices.count > 1 else { return [] }
        let runs = RegisterPlan(tags: tags, maxGap: 0, indices: block.tagIndices).blocks
        if runs.count > 1 { return runs }
        return block.tagIndices.map { index in
            RegisterBlock(table: block.table, address: tags[index].address, count: tags[index].width, tagIndices: [index])
        }
    }

    /// One line per request: `FC3 holding 0+6: temperature, pump_on`.
    public func explain(tags: [TagConfiguration]) -> [String] {
        blocks.map { block in
            let names = block.tagIndices.map { tags[$0].name }.joined(separator: ", ")
            let unit = block.table.holdsBits ? "bit" : "register"
            return "FC\(block.table.functionCode) \(block.table.rawValue) \(block.address)+\(block.count) "
                + "(\(block.count) \(unit)\(block.count == 1 ? "" : "s")): \(names)"
        }
    }
}
