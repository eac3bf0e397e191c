// swift-tools-version:6.0
import PackageDescription

// Module map (one job each):
//   CShims     C shims for what Swift cannot import (epoll, CMSG, TUNSETIFF, _GNU_SOURCE calls)
//   CZTRPC     include/ztrpc.h only: RPC wire format shared with libztintercept.so (C, built by
//              scripts/build-intercept.sh from Sources/ztintercept, which has no SwiftPM target)
//   CNetlink   system library: libnl-route-3 (link/address configuration)
//   CCap       system library: libcap (capability reduction)
//   CSeccomp   system library: libseccomp; CSandbox: ztapd's own syscall allow-list on top of it
//   PhyLoop    epoll PhySocket event loop, eventfd wake-up, timers; Sys: the one syscall layer (with a test seam)
//   LinuxNet   TAP device, netlink interface plumbing, capabilities, credentials
//   NetStack   our sans-I/O TCP/IP stack (pure Swift, no I/O, injected clock)
//   NetStackFuzz  libFuzzer harness for NetStack.receive (scripts/fuzz.sh); plain builds get a replayer
//   NetStackBench fixed in-process TCP workload for instruction counts (valgrind --tool=callgrind)
//   ZTapFuzz   libFuzzer harnesses for the RPC decoder + hub, the control protocol and the INI parser
//   ZTConfig   systemd-style INI parsing, in-place editing, daemon/network config model
//   ZTControl  ztctl <-> ztapd control protocol (JSON over AF_UNIX) and client
//   ZTService  the daemon: network loops, stack driver, control server; Intercept/: the RPC side of
//              libztintercept (codec, access, ports, socket options, TCP and UDP bridges, hub)
let swiftSettings: [SwiftSetting] = [.swiftLanguageMode(.v6)]
// The data path's targets drop the run-time exclusivity checks in release builds (each access
// to a class's stored property cost a call into the runtime: ~4% of ztapd's CPU under nginx
// keep-alive, perf); debug builds, which the unit tests use, keep them. Bounds and overflow
// checks stay on everywhere. Cross-module optimization lets ZTService specialize PhyLoop's
// generic loop for its handler: unspecialized, every dispatch, add and reap looked up generic
// metadata and witness tables at run time (~10% of ztapd's user time opening connections).
let dataPathSettings: [SwiftSetting] = swiftSettings + [
    .unsafeFlags(["-enforce-exclusivity=unchecked", "-cross-module-optimization"], .when(configuration: .release)),
]

let package = Package(
    name: "ztap",
    products: [
        .executable(name: "ztapd", targets: ["ztapd"]),
        .executable(name: "ztctl", targets: ["ztctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
    ],
    targets: [
        .target(name: "CShims"),
        .target(name: "CZTRPC"),
        .systemLibrary(name: "CNetlink", pkgConfig: "libnl-route-3.0",
                       providers: [.apt(["libnl-3-dev", "libnl-route-3-dev"])]),
        .systemLibrary(name: "CCap", pkgConfig: "libcap", providers: [.apt(["libcap-dev"])]),
        .systemLibrary(name: "CSeccomp", pkgConfig: "libseccomp", providers: [.apt(["libseccomp-dev"])]),
        .target(name: "CSandbox", dependencies: ["CSeccomp"]),
        .target(name: "PhyLoop",
                dependencies: ["CShims", .product(name: "SystemPackage", package: "swift-system")],
                swiftSettings: dataPathSettings),
        .target(name: "LinuxNet",
                dependencies: ["CShims", "CNetlink", "CCap", "PhyLoop",
                               .product(name: "SystemPackage", package: "swift-system")],
                swiftSettings: dataPathSettings),
        .target(name: "NetStack", swiftSettings: dataPathSettings),
        .executableTarget(name: "NetStackFuzz", dependencies: ["NetStack"], swiftSettings: swiftSettings),
        .executableTarget(name: "NetStackBench", dependencies: ["NetStack"], swiftSettings: swiftSettings),
        .executableTarget(name: "ZTapFuzz", dependencies: ["ZTService", "ZTConfig"], swiftSettings: swiftSettings),
        .target(name: "ZTConfig", swiftSettings: swiftSettings),
        .target(name: "ZTControl",
                dependencies: ["CShims", "ZTConfig", .product(name: "SystemPackage", package: "swift-system")],
                swiftSettings: swiftSettings),
        .target(name: "ZTService",
                dependencies: ["PhyLoop", "LinuxNet", "NetStack", "ZTConfig", "ZTControl", "CShims", "CZTRPC", "CSandbox",
                               .product(name: "Logging", package: "swift-log"),
                               .product(name: "SystemPackage", package: "swift-system")],
                swiftSettings: dataPathSettings),
        .executableTarget(name: "ztapd",
                          dependencies: ["ZTService", "CSandbox", .product(name: "Logging", package: "swift-log"),
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          swiftSettings: swiftSettings),
        .executableTarget(name: "ztctl",
                          dependencies: ["ZTControl", "ZTConfig",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          swiftSettings: swiftSettings),
        .testTarget(name: "NetStackTests", dependencies: ["NetStack"], swiftSettings: swiftSettings),
        .testTarget(name: "ZTConfigTests", dependencies: ["ZTConfig"], swiftSettings: swiftSettings),
        .testTarget(name: "PhyLoopTests", dependencies: ["PhyLoop", "CShims"], swiftSettings: swiftSettings),
        .testTarget(name: "LinuxNetTests", dependencies: ["LinuxNet"], swiftSettings: swiftSettings),
        .testTarget(name: "ZTServiceTests", dependencies: ["ZTService", "NetStack", "PhyLoop", "LinuxNet", "CZTRPC", "CShims", "CSandbox"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "ZTControlTests", dependencies: ["ZTControl", "ZTConfig"], swiftSettings: swiftSettings),
    ]
)
