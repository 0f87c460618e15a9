// The Debian package installed for real into a throwaway root (a network-namespaced
// chroot over overlays of this machine's /usr, /etc and /var, without the Swift
// toolchain), run there against a broker on its loopback, removed and purged.
// deploy/test-package.sh does the work; `make test` builds the package first.
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The newest package named `name` (edge-gateway, edge-monitor) that `make package` built, if any.
func builtPackage(_ name: String = "edge-gateway") -> String? {
    let directory = repositoryRoot + "/.build/deploy"
    let debs = (try? FileManager.default.contentsOfDirectory(atPath: directory))?
        .filter { $0.hasPrefix(name + "_") && $0.hasSuffix(".deb") } ?? []
    return debs.map { directory + "/" + $0 }.max { modified($0) < modified($1) }
}

private func modified(_ path: String) -> Date {
    ((try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date) ?? .distantPast
}

/// In CI the test always runs (and fails naming what is missing); elsewhere it
/// runs when the package is built and the test runs as root.
let isCI = ProcessInfo.processInfo.environment["CI"] == "true"

@Suite struct PackageInstallTests {
    @Test(.enabled(if: isCI || (getuid() == 0 && builtPackage() != nil),
                   "needs root and the package from `make package` (make test builds it)"))
    func installsRunsRemovesAndPurgesInAThrowawayRoot() async throws {
        #expect(getuid() == 0, "installing a package into a throwaway root needs root (namespaces, overlayfs, chroot)")
        let deb = try #require(builtPackage(), "no .deb in .build/deploy: run `make package` (make test does)")
        let directory = try TemporaryDirectory("package")
        defer { directory.remove() }
        // The edge-monitor package too, once the package has that product (build-deb.sh builds it then).
        let monitorDeb = builtPackage("edge-monitor")
        let declaresMonitor = (try? String(contentsOfFile: repositoryRoot + "/Package.swift", encoding: .utf8))?
            .contains(#".executable(name: "edge-monitor""#) ?? false
        #expect(!declaresMonitor || monitorDeb != nil, "no edge-monitor .deb in .build/deploy: run `make package`")
        let result = try await runCommand("/bin/bash", [repositoryRoot + "/deploy/test-package.sh", deb] + (monitorDeb.map { [$0] } ?? []),
                                          in: directory, timeout: .seconds(180))
        let summary = result.output.split(separator: "\n").filter { $0.hasPrefix("test-package:") }
        print(summary.joined(separator: "\n"))
        #expect(result.status == 0 && result.output.contains("test-package: OK"), "\(result.output)")
        if monitorDeb != nil {
            #expect(result.output.contains("test-package: edge-monitor installed (not enabled)"), "\(result.output)")
        }
    }
}
