import Foundation
import Testing
@testable import ZTConfig

@Suite struct NetworkDirectoryTests {
    @Test func badFileDoesNotHideGoodOnes() throws {
        try withTempDir { dir in
            try write("[Network]\nAddress=10.1.0.2/24\n", to: dir + "/alpha.conf")
            try write("[Network]\nMTU=70000\n", to: dir + "/broken.conf")
            try write("[Network]\nAddress=10.2.0.2/24\nServices=echo\n", to: dir + "/gamma.conf")
            try write("not even ini", to: dir + "/notes.txt")
            try write("junk", to: dir + "/.hidden.conf")
            try FileManager.default.createDirectory(atPath: dir + "/sub.conf", withIntermediateDirectories: false)
            let (networks, errors) = NetworkDirectory.load(directory: dir)
            #expect(networks.map(\.name) == ["alpha", "gamma"])
            #expect(networks[1].services == [.echo])
            #expect(errors.map(\.description) == ["\(dir)/broken.conf:2: invalid MTU=70000: expected an integer in 1280...65521"])
        }
    }

    @Test func badNamesAndInterfaceClashes() throws {
        try withTempDir { dir in
            try write("[Network]\nInterface=zt-b\n", to: dir + "/a.conf")
            try write("", to: dir + "/b.conf")
            try write("", to: dir + "/Upper.conf")
            let (networks, errors) = NetworkDirectory.load(directory: dir)
            #expect(networks.map(\.name) == ["a"])
            #expect(errors.map(\.description) == [
                "\(dir)/Upper.conf: invalid network name \"Upper\": expected 1 to 32 characters [a-z0-9-], not starting with -",
                "\(dir)/b.conf: interface zt-b is already used by \(dir)/a.conf",
            ])
        }
    }

    @Test func missingDirectoryMeansNoNetworks() {
        let (networks, errors) = NetworkDirectory.load(directory: "/nonexistent/ztap/networks.d")
        #expect(networks.isEmpty && errors.isEmpty)
    }

    @Test func shippedExampleIsTheDemoNetwork() throws {
        let (networks, errors) = NetworkDirectory.load(directory: repoRoot + "/config/networks.d")
        #expect(errors.isEmpty, "\(errors)")
        let ex = try #require(networks.first { $0.name == "example" })
        #expect(ex.addresses.map(\.description) == ["10.200.0.2/24"])
        #expect(ex.kernelAddresses.map(\.description) == ["10.200.0.1/24"])
        #expect(ex.mtu == 2800 && ex.services == [.echo, .discard, .chargen])
        #expect(ex.effectiveInterface == "zt-example")
        // Every settable key is documented (as a comment or a setting) in the example.
        let text = try read(repoRoot + "/config/networks.d/example.conf")
        for k in NetworkKeys.all {
            #expect(text.contains("\n\(k.key)=") || text.contains("\n#\(k.key)="), "\(k.key) documented")
        }
        // Uncommenting every example line gives a valid file too: once with Bridge= and without
        // the [VXLAN] block at the end (they exclude each other), once the other way round.
        let parts = text.components(separatedBy: "\n#[VXLAN]\n")
        #expect(parts.count == 2, "the example ends with a commented [VXLAN] section")
        func uncomment(_ s: String) -> String {
            s.split(separator: "\n", omittingEmptySubsequences: false)
                .map { $0.hasPrefix("#") && $0.contains("=") && !$0.contains(" ") ? String($0.dropFirst()) : String($0) }
                .joined(separator: "\n")
        }
        let uncommented = uncomment(parts[0].replacingOccurrences(of: "\n#Gateway", with: "\nGateway"))
        let full = try NetworkConfig.parse(text: uncommented, name: "example", file: "example.conf")
        #expect(full.gateway == "10.200.0.1" && full.bridge == "br0" && full.allowUsers == ["alice"])
        let multihost = parts[0] + "\n[VXLAN]\n" + uncomment(parts.last ?? "")
        let mh = try NetworkConfig.parse(text: multihost, name: "example", file: "example.conf")
        #expect(mh.vxlan?.vni == 4242 && mh.vxlan?.remotes.count == 2 && mh.vxlan?.device == "eth0")
    }
}
