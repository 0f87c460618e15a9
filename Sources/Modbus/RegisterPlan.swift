// Which Modbus requests one poll of a device sends.
import GatewayConfig

/// One read request and the tags whose registers it carries.
public struct RegisterBlock: Sendable, Equatable {
    public var table: RegisterTable
    public var address: Int
    public var count: Int
    /// Indices into the device's tag list.
    public var tagIndices: [Int]
}

/// The requests for one device: tags of one table whose registers touch or
/// overlap are merged, up to the protocol's 125 registers per read. Gaps are
/// not read through (a device may reject unmapped addresses).
public struct RegisterPlan: Sendable, Equatable {
    public static let maxRegistersPerRead = 125

    public var blocks: [RegisterBlock]

    public init(tags: [TagConfiguration]) {
        var blocks: [RegisterBlock] = []
        for table in RegisterTable.allCases {
            let indices = tags.indices
                .filter { tags[$0].table == table }
                .sorted { (tags[$0].address, $0) < (tags[$1].address, $1) }
            var current: RegisterBlock?
            for index in indices {
                let tag = tags[index]
                let end = tag.address + tag.type.registerCount
                if var block = current,
                   tag.address <= block.address + block.count,
                   max(end, block.address + block.count) - block.address <= Self.maxRegistersPerRead {
                    block.count = max(end, block.address + block.count) - block.address
                    block.tagIndices.append(index)
                    current = block
                } else {
                    if let block = current { blocks.append(block) }
                    current = RegisterBlock(table: table, address: tag.address,
                                            count: tag.type.registerCount, tagIndices: [index])
                }
            }
            if let block = current { blocks.append(block) }
        }
        self.blocks = blocks
    }
}
