import Testing
@testable import NetStack
@Test func moduleLinks() { #expect(true) }
