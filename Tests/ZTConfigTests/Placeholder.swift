import Testing
@testable import ZTConfig
@Test func moduleLinks() { #expect(true) }
