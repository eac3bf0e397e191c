import Foundation
import Testing
@testable import ZTConfig

/// docs/man/ztapd.conf.5 documents every key the parsers accept: a key added to a spec list
/// without a line in the man page fails here.
@Suite struct ManPageTests {
    static let page: String = {
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        return (try? String(contentsOf: repo.appendingPathComponent("docs/man/ztapd.conf.5"), encoding: .utf8)) ?? ""
    }()

    /// The section heading and the `.BI Key=` entry of a key, as man(7) source spells them.
    static func documented(_ section: String, _ key: String) -> Bool {
        page.contains(".SH [\(section)]") && page.contains(".BI \(key)=")
    }

    @Test func everyNetworkKeyIsInTheManPage() {
        #expect(!Self.page.isEmpty, "docs/man/ztapd.conf.5 not found")
        for k in NetworkKeys.all {
            #expect(Self.documented(k.section, k.key), "ztapd.conf(5) lacks [\(k.section)] \(k.key)=")
        }
    }

    @Test func everyDaemonKeyIsInTheManPage() {
        #expect(Self.page.contains(".SH [Daemon]"))
        for s in DaemonConfig.specs where s.key != "ControlGroups" {   // an alias, named in ControlGroup='s entry
            #expect(Self.page.contains(".BI \(s.key)="), "ztapd.conf(5) lacks [Daemon] \(s.key)=")
        }
        #expect(Self.page.contains("ControlGroups="))
    }
}
