// Where a process's resident memory is, from /proc/<pid>/smaps: the scale and rss
// benches' breakdown of the gateway's VmRSS.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Resident memory of one process by kind of mapping, in KiB.
struct MemoryMap {
    /// Mapped files: the binary, the Swift runtime, Foundation, ICU, libc (shared, clean pages mostly).
    var files = 0
    /// glibc's main arena (`[heap]`).
    var mainHeap = 0
    /// glibc's other arenas: anonymous read-write mappings at a 64 MiB boundary (glibc
    /// reserves each arena's heap as 64 MiB, aligned to its size).
    var arenas = 0
    var arenaCount = 0
    /// Thread stacks: anonymous read-write mappings right above a small inaccessible
    /// guard mapping (glibc puts the thread's descriptor and TLS at the top of the stack).
    var stacks = 0
    var stackCount = 0
    /// The most any one thread stack has touched.
    var deepestStack = 0
    /// The rest: large blocks malloc maps on their own, the Swift runtime's own mappings,
    /// a static binary's `.bss`.
    var otherAnonymous = 0
    /// Of `files`, the pages written by this process (relocated data, `.data`): the rest
    /// is clean code and read-only data, shared with every process mapping the same file.
    var filesPrivateDirty = 0
    /// Pages written by this process, files and anonymous (smaps' Private_Dirty).
    var privateDirty = 0
    /// Pages the process touched since its referenced bits were last cleared
    /// (`echo 1 > /proc/<pid>/clear_refs`; smaps' Referenced): its working set.
    var referenced = 0
    /// RSS, private dirty and referenced per mapped file (by file name), largest first.
    var byFile: [(name: String, rss: Int, privateDirty: Int, referenced: Int)] = []

    var total: Int { files + mainHeap + arenas + stacks + otherAnonymous }

    /// The whole file: /proc files report size 0, and Foundation's `String(contentsOfFile:)`
    /// returned only the start of a large smaps.
    private static func read(_ path: String) -> String? {
        let descriptor = open(path, O_RDONLY)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 { return nil }
            if count == 0 { break }
            bytes += chunk[..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// `nil` when smaps cannot be read (the process is gone).
    init?(pid: pid_t) {
        guard let text = Self.read("/proc/\(pid)/smaps") else { return nil }
        struct Mapping {
            var start: UInt
            var end: UInt
            var permissions: Substring
            var name: Substring
            var rss = 0
            var privateDirty = 0
            var referenced = 0
        }
        var mappings: [Mapping] = []
        for line in text.split(separator: "\n") {
            if line.hasPrefix("Rss:") {
                mappings[mappings.count - 1].rss = Int(line.split(whereSeparator: \.isWhitespace)[1]) ?? 0
                continue
            }
            if line.hasPrefix("Referenced:") {
                mappings[mappings.count - 1].referenced = Int(line.split(whereSeparator: \.isWhitespace)[1]) ?? 0
                continue
            }
            if line.hasPrefix("Private_Dirty:") {
                mappings[mappings.count - 1].privateDirty = Int(line.split(whereSeparator: \.isWhitespace)[1]) ?? 0
                continue
            }
            // "start-end perms offset dev inode [name]"; other lines are "Key: value".
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard fields.count >= 5, let dash = fields[0].firstIndex(of: "-"),
                  let start = UInt(fields[0][..<dash], radix: 16),
                  let end = UInt(fields[0][fields[0].index(after: dash)...], radix: 16)
            else { continue }
            let name = fields.count == 6 ? fields[5].drop { $0 == " " } : ""
            mappings.append(Mapping(start: start, end: end, permissions: fields[1], name: name))
        }
        let arenaAlignment: UInt = 64 << 20
        var perFile: [Substring: (rss: Int, privateDirty: Int, referenced: Int)] = [:]
        for (index, mapping) in mappings.enumerated() {
            let readWrite = mapping.permissions.hasPrefix("rw")
            privateDirty += mapping.privateDirty
            referenced += mapping.referenced
            if mapping.name == "[heap]" {
                mainHeap += mapping.rss
            } else if !mapping.name.isEmpty {
                if mapping.name.hasPrefix("/") {
                    files += mapping.rss
                    filesPrivateDirty += mapping.privateDirty
                    let name = mapping.name.split(separator: "/").last ?? mapping.name
                    perFile[name, default: (0, 0, 0)].rss += mapping.rss
                    perFile[name, default: (0, 0, 0)].privateDirty += mapping.privateDirty
                    perFile[name, default: (0, 0, 0)].referenced += mapping.referenced
                } else {
                    otherAnonymous += mapping.rss
                }
            } else if readWrite && mapping.start % arenaAlignment == 0 {
                arenas += mapping.rss
                arenaCount += 1
            } else if readWrite, index > 0, mappings[index - 1].end == mapping.start,
                      mappings[index - 1].permissions.hasPrefix("---"),
                      mappings[index - 1].end - mappings[index - 1].start <= 64 << 10 {
                stacks += mapping.rss
                stackCount += 1
                deepestStack = max(deepestStack, mapping.rss)
            } else {
                otherAnonymous += mapping.rss
            }
        }
        byFile = perFile.map { (String($0.key), $0.value.rss, $0.value.privateDirty, $0.value.referenced) }
            .sorted { $0.rss > $1.rss }
    }
}
