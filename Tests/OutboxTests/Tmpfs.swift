import Foundation
import Testing

/// A tmpfs of a fixed size the test mounts (root only) and unmounts.
struct Tmpfs {
    struct MountFailed: Error, CustomStringConvertible {
        var description: String
    }

    let path: String

    init(at path: String, size: String) throws {
        self.path = path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let (status, output) = try run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(size),mode=0755", "tmpfs", path])
        guard status == 0 else {
            throw MountFailed(description: "mount -t tmpfs -o size=\(size) tmpfs \(path) failed "
                + "(needs root with CAP_SYS_ADMIN): \(output)")
        }
    }

    func remount(options: String) throws {
        let (status, output) = try run("/bin/mount", ["-o", options, path])
        guard status == 0 else { throw MountFailed(description: "mount -o \(options) \(path) failed: \(output)") }
    }

    func unmount() {
        if (try? run("/bin/umount", [path]))?.status != 0 {
            _ = try? run("/bin/umount", ["-l", path])
        }
    }
}
