import Testing
@testable import ZTConfig

@Suite struct INIDocumentTests {
    let sample = """
        # header comment
        ; another comment

        [Network]
          MTU = 1500   
        Address=10.0.0.2/24
        Address = 10.0.1.2/24 10.0.2.2/24
        # trailing comment of Network

        [Stack]
        MaxConnections=10

        """

    @Test func renderIsByteIdentical() throws {
        for text in [sample, "", "\n", "[A]\nk=v", "[A]\r\nk=v\r\n", "  \n\t# c\n[A]\nk = v \n"] {
            let doc = try INIDocument(text: text, file: "f")
            #expect(doc.render() == text)
        }
    }

    @Test func valuesTrimmedAndResetSemantics() throws {
        let doc = try INIDocument(text: sample + "[Network]\nAddress=\nAddress=10.9.0.2/24\n", file: "f")
        #expect(doc.values(section: "Network", key: "MTU") == ["1500"])
        #expect(doc.values(section: "Network", key: "Address") == ["10.9.0.2/24"])
        let plain = try INIDocument(text: sample, file: "f")
        #expect(plain.values(section: "Network", key: "Address") == ["10.0.0.2/24", "10.0.1.2/24 10.0.2.2/24"])
        #expect(plain.values(section: "Stack", key: "MTU") == [])
        #expect(plain.values(section: "network", key: "MTU") == [], "section names are case-sensitive")
    }

    @Test func noInlineComments() throws {
        let doc = try INIDocument(text: "[A]\nk=v # not a comment\n", file: "f")
        #expect(doc.values(section: "A", key: "k") == ["v # not a comment"])
    }

    @Test func syntaxErrors() {
        func err(_ text: String) -> String? {
            configError { () throws(ConfigError) in _ = try INIDocument(text: text, file: "x.conf") }?.description
        }
        #expect(err("[A]\njunk\n") == "x.conf:2: expected Key=Value, [Section], or a comment starting with # or ;, got junk")
        #expect(err("k=v\n") == "x.conf:1: k= appears before any [Section] header")
        #expect(err("[A]\n = v\n") == "x.conf:2: missing key name before = in = v")
        #expect(err("[A\n") == "x.conf:1: bad section header [A: expected [Section]")
        #expect(err("[]\n") == "x.conf:1: bad section header []: expected [Section]")
        #expect(err("# ok\n\n[A]\nk=\n") == nil)
    }

    @Test func setReplacesInPlaceKeepingEverythingElse() throws {
        var doc = try INIDocument(text: sample, file: "f")
        doc.set(section: "Network", key: "MTU", values: ["9000"])
        #expect(doc.render() == sample.replacingOccurrences(of: "  MTU = 1500   ", with: "  MTU = 9000"))
    }

    @Test func setListCollapsesAtFirstPosition() throws {
        var doc = try INIDocument(text: sample, file: "f")
        doc.set(section: "Network", key: "Address", values: ["10.5.0.2/24", "10.6.0.2/24"])
        let expected = sample.replacingOccurrences(
            of: "Address=10.0.0.2/24\nAddress = 10.0.1.2/24 10.0.2.2/24\n",
            with: "Address=10.5.0.2/24\nAddress=10.6.0.2/24\n")
        #expect(doc.render() == expected)
    }

    @Test func setEmptyRemoves() throws {
        var doc = try INIDocument(text: sample, file: "f")
        doc.set(section: "Network", key: "Address", values: [])
        #expect(!doc.render().contains("Address"))
        #expect(doc.render().contains("# trailing comment of Network"))
        doc.set(section: "Nope", key: "X", values: [])
        #expect(!doc.render().contains("Nope"))
    }

    @Test func setNewKeyGoesAfterLastAssignmentOfSection() throws {
        var doc = try INIDocument(text: sample, file: "f")
        doc.set(section: "Network", key: "Gateway", values: ["10.0.0.1"])
        #expect(doc.render() == sample.replacingOccurrences(
            of: "10.0.2.2/24\n# trailing", with: "10.0.2.2/24\nGateway=10.0.0.1\n# trailing"))
    }

    @Test func setNewSectionAppended() throws {
        var doc = try INIDocument(text: sample, file: "f")
        doc.set(section: "Access", key: "AllowUsers", values: ["alice"])
        #expect(doc.render() == sample + "\n[Access]\nAllowUsers=alice\n")
        var noNewline = try INIDocument(text: "[A]\nk=v", file: "f")
        noNewline.set(section: "B", key: "x", values: ["1"])
        #expect(noNewline.render() == "[A]\nk=v\n\n[B]\nx=1\n")
        var empty = try INIDocument(text: "", file: "f")
        empty.set(section: "B", key: "x", values: ["1"])
        #expect(empty.render() == "[B]\nx=1\n")
    }

    @Test func setKeepsCRLF() throws {
        var doc = try INIDocument(text: "[A]\r\nk = 1\r\nj=2\r\n", file: "f")
        doc.set(section: "A", key: "k", values: ["3"])
        #expect(doc.render() == "[A]\r\nk = 3\r\nj=2\r\n")
    }

    @Test func repeatedSectionsMerge() throws {
        var doc = try INIDocument(text: "[A]\nk=1\n[B]\nx=1\n[A]\nk=2\n", file: "f")
        #expect(doc.values(section: "A", key: "k") == ["1", "2"])
        doc.set(section: "A", key: "k", values: ["3"])
        #expect(doc.render() == "[A]\nk=3\n[B]\nx=1\n[A]\n")
        doc.set(section: "A", key: "n", values: ["4"])
        #expect(doc.render() == "[A]\nk=3\n[B]\nx=1\n[A]\nn=4\n")
    }
}

@Test func configErrorDescriptionForms() {
    #expect(ConfigError(file: "a.conf", line: 3, message: "bad").description == "a.conf:3: bad")
    #expect(ConfigError(file: "a.conf", message: "bad").description == "a.conf: bad")
    #expect(ConfigError(file: "", message: "bad").description == "bad")
    #expect(ConfigError(file: "a", line: 1, message: "m") != ConfigError(file: "a", line: 2, message: "m"))
}
