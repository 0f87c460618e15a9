// Bounds on what a configuration file may cost to read, checked before the
// document is composed: its size and how far its aliases expand (libyaml
// itself refuses nesting deeper than 1000 levels).
// Yams composes aliases by sharing nodes, but hashes every mapping key to find
// duplicates, so a "billion laughs" alias used as a key (or a list the schema
// walks) costs time exponential in the file's size. libyaml's event stream is
// read once here to count the nodes the document stands for, aliases expanded.

import CYaml

enum YAMLDocumentBounds {
    /// Largest configuration file read, in bytes.
    static let maximumBytes = 1 << 20
    /// Most nodes the document may stand for with every alias expanded. A large
    /// plant (hundreds of devices with hundreds of tags) stays far below it.
    static let maximumNodes = 1_000_000

    /// A problem when `yaml` is too large or expands too far through
    /// its aliases; `nil` otherwise (syntax errors are left to the composer).
    static func problem(_ yaml: String, file: String) -> ConfigProblem? {
        let size = yaml.utf8.count
        guard size <= maximumBytes else {
            return ConfigProblem(
                path: "", message: "the configuration is \(size) bytes; the limit is \(maximumBytes) bytes (1 MiB)",
                hint: "a gateway.yaml is a few KB: check that the file named is the configuration", file: file)
        }
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else { return nil }
        defer { yaml_parser_delete(&parser) }
        var bytes = Array(yaml.utf8)
        return bytes.withUnsafeMutableBufferPointer { buffer -> ConfigProblem? in
            yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)
            var counter = NodeCounter()
            while true {
                var event = yaml_event_t()
                guard yaml_parser_parse(&parser, &event) == 1 else { return nil }
                defer { yaml_event_delete(&event) }
                let mark = event.start_mark
                let line = Int(mark.line) + 1, column = Int(mark.column) + 1
                switch counter.consume(event) {
                case .more:
                    continue
                case .end:
                    return nil
                case .tooLarge:
                    return ConfigProblem(
                        path: "", line: line, column: column,
                        message: "the document expands to more than \(maximumNodes) values through its aliases",
                        hint: "write the values out, or refer to an anchor (*name) from fewer places; "
                            + "an alias of a node that holds aliases multiplies", file: file)
                }
            }
        }
    }

    /// The expanded size of each open list or mapping, and of each anchor.
    private struct NodeCounter {
        enum Step { case more, end, tooLarge }

        private var open: [(anchor: String?, nodes: Int)] = []
        private var anchors: [String: Int] = [:]
        private var total = 0

        mutating func consume(_ event: yaml_event_t) -> Step {
            switch event.type {
            case YAML_STREAM_END_EVENT:
                return .end
            case YAML_SCALAR_EVENT:
                return add(1, anchor: Self.text(event.data.scalar.anchor))
            case YAML_ALIAS_EVENT:
                let name = Self.text(event.data.alias.anchor)
                return add(name.flatMap { anchors[$0] } ?? 1, anchor: nil)
            case YAML_SEQUENCE_START_EVENT, YAML_MAPPING_START_EVENT:
                let anchor = event.type == YAML_SEQUENCE_START_EVENT
                    ? Self.text(event.data.sequence_start.anchor) : Self.text(event.data.mapping_start.anchor)
                open.append((anchor, 1))
                return .more
            case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                guard let closed = open.popLast() else { return .more }
                return add(closed.nodes, anchor: closed.anchor)
            default:
                return .more
            }
        }

        /// Every count stays at most `maximumNodes` before an add, so sums cannot overflow.
        private mutating func add(_ nodes: Int, anchor: String?) -> Step {
            if let anchor { anchors[anchor] = nodes }
            if open.isEmpty {
                total += nodes
                return total > YAMLDocumentBounds.maximumNodes ? .tooLarge : .more
            }
            open[open.count - 1].nodes += nodes
            return open[open.count - 1].nodes > YAMLDocumentBounds.maximumNodes ? .tooLarge : .more
        }

        private static func text(_ pointer: UnsafeMutablePointer<yaml_char_t>?) -> String? {
            pointer.map { String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self)) }
        }
    }
}
