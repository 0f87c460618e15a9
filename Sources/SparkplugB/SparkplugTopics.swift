// The Sparkplug B 3.0 topic namespace of one edge node:
// spBv1.0/<group>/<NBIRTH|NDEATH|NDATA|NCMD>/<node>[/<device> for the D… verbs].

/// The topics of one Sparkplug edge node and its devices.
public struct SparkplugTopics: Sendable, Equatable {
    /// The first topic level of every Sparkplug B message.
    public static let namespace = "spBv1.0"

    public let group: String
    public let node: String

    public init(group: String, node: String) {
        self.group = group
        self.node = node
    }

    public var nbirth: String { nodeTopic("NBIRTH") }
    public var ndeath: String { nodeTopic("NDEATH") }
    public var ndata: String { nodeTopic("NDATA") }
    public var ncmd: String { nodeTopic("NCMD") }
    public func dbirth(device: String) -> String { deviceTopic("DBIRTH", device) }
    public func ddeath(device: String) -> String { deviceTopic("DDEATH", device) }
    public func ddata(device: String) -> String { deviceTopic("DDATA", device) }
    public func dcmd(device: String) -> String { deviceTopic("DCMD", device) }
    /// Every DCMD of this node's devices (a subscription filter).
    public var dcmdFilter: String { deviceTopic("DCMD", "+") }

    /// `spBv1.0/STATE/<host>`: the retained state of a primary host application.
    public static func state(host: String) -> String { "\(namespace)/STATE/\(host)" }

    /// The device of a `DDATA`/`DCMD`/… topic of this node, nil for any other topic.
    public func device(in topic: String, verb: String) -> String? {
        let prefix = "\(Self.namespace)/\(group)/\(verb)/\(node)/"
        guard topic.hasPrefix(prefix) else { return nil }
        let device = String(topic.dropFirst(prefix.count))
        return device.isEmpty || device.contains("/") ? nil : device
    }

    private func nodeTopic(_ verb: String) -> String { "\(Self.namespace)/\(group)/\(verb)/\(node)" }
    private func deviceTopic(_ verb: String, _ device: String) -> String {
        "\(Self.namespace)/\(group)/\(verb)/\(node)/\(device)"
    }
}
