import Testing
@testable import PhyLoop
@Test func moduleLinks() { #expect(true) }
