import Foundation
import Glibc
import Testing
@testable import ZTControl

/// Which interception `ztctl run --mode auto` picks: the executable classification on synthetic
/// ELF images (every header field it reads), scripts, and the real binaries where installed.
@Suite struct ProgramKindTests {
    /// A minimal little-endian ELF64 image: optional PT_INTERP, optional sections by name.
    static func elf(interp: Bool, sections: [String] = [], elfClass: UInt8 = 2) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 64)
        b[0...3] = [0x7f, 0x45, 0x4c, 0x46]
        b[4] = elfClass
        b[5] = 1
        func put16(_ at: Int, _ v: Int) { b[at] = UInt8(v & 0xff); b[at + 1] = UInt8(v >> 8) }
        func put64(_ at: Int, _ v: Int, into a: inout [UInt8]) { for i in 0..<8 { a[at + i] = UInt8((v >> (8 * i)) & 0xff) } }
        // Two program headers at 64: PT_LOAD (1), then PT_INTERP (3) or PT_NOTE (4).
        put64(32, 64, into: &b)
        put16(54, 56)
        put16(56, 2)
        var ph = [UInt8](repeating: 0, count: 112)
        ph[0] = 1
        ph[56] = interp ? 3 : 4
        b += ph
        // Section names: "" then each name; section headers: null, one per name, .shstrtab.
        var names: [UInt8] = [0]
        var offsets: [Int] = []
        for n in sections + [".shstrtab"] {
            offsets.append(names.count)
            names += Array(n.utf8) + [0]
        }
        let strOff = b.count
        b += names
        let shOff = b.count
        put64(40, shOff, into: &b)
        put16(58, 64)
        put16(60, offsets.count + 1)
        put16(62, offsets.count)
        var sh = [UInt8](repeating: 0, count: 64 * (offsets.count + 1))
        for (i, o) in offsets.enumerated() {
            let at = 64 * (i + 1)
            for k in 0..<4 { sh[at + k] = UInt8((o >> (8 * k)) & 0xff) }
        }
        let last = 64 * offsets.count
        put64(last + 24, strOff, into: &sh)
        put64(last + 32, names.count, into: &sh)
        return b + sh
    }

    static func kind(_ bytes: [UInt8]) -> ProgramKind {
        ProgramInspector.kind { offset, count in
            let o = Int(offset)
            return o + count <= bytes.count ? Array(bytes[o..<(o + count)]) : nil
        }
    }

    @Test func elfImages() {
        #expect(Self.kind(Self.elf(interp: true, sections: [".text", ".dynamic"])) == .dynamicELF)
        #expect(Self.kind(Self.elf(interp: false, sections: [".text"])) == .staticELF)
        #expect(Self.kind(Self.elf(interp: false, sections: [".text", ".note.go.buildid"])) == .goELF)
        // A Go program with cgo is dynamic, and still makes its own socket system calls.
        #expect(Self.kind(Self.elf(interp: true, sections: [".go.buildinfo"])) == .goELF)
        #expect(Self.kind(Self.elf(interp: true, elfClass: 1)) == .elf32)
        // Damaged: truncated after the header, or not ELF at all.
        #expect(Self.kind(Array(Self.elf(interp: true)[0..<64])) == .staticELF)
        #expect(Self.kind(Array("MZ\u{90}\u{0}rest".utf8)) == .unknown)
        #expect(Self.kind([]) == .unknown)
    }

    @Test func scripts() {
        #expect(Self.kind(Array("#!/bin/sh\necho hi\n".utf8)) == .script(interpreter: "/bin/sh"))
        #expect(Self.kind(Array("#! /usr/bin/python3 -u\n".utf8)) == .script(interpreter: "/usr/bin/python3"))
        #expect(Self.kind(Array("#!/usr/bin/env -S node --flag\n".utf8)) == .script(interpreter: "node"))
        #expect(Self.kind(Array("#! \n".utf8)) == .script(interpreter: ""))
        #expect(Self.kind(Array("#!".utf8)) == .unknown) // shorter than any header
    }

    @Test func autoModes() {
        #expect(ProgramKind.staticELF.autoMode(programName: "busybox") == .seccomp)
        #expect(ProgramKind.goELF.autoMode(programName: "caddy") == .seccomp)
        #expect(ProgramKind.dynamicELF.autoMode(programName: "curl") == .preload)
        #expect(ProgramKind.dynamicELF.autoMode(programName: "/bin/sh") == .both)
        #expect(ProgramKind.dynamicELF.autoMode(programName: "env") == .both)
        #expect(ProgramKind.script(interpreter: "/bin/sh").autoMode(programName: "./run.sh") == .both)
        #expect(ProgramKind.elf32.autoMode(programName: "old") == .preload)
        #expect(ProgramKind.unknown.autoMode(programName: "x") == .preload)
    }

    @Test func realBinaries() throws {
        // The test binary itself is a dynamic Swift program; sh is dynamic on Debian.
        let me = try #require(try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
        #expect(ProgramInspector.kind(path: me) == .dynamicELF)
        #expect(ProgramInspector.kind(path: "/nonexistent/x") == .unknown)
        #expect(ProgramInspector.resolve("sh", searchPath: "/nonexistent:/usr/bin:/bin") != nil)
        #expect(ProgramInspector.resolve("./local", searchPath: nil) == "./local")
        #expect(ProgramInspector.resolve("no-such-program-zt", searchPath: "/usr/bin") == nil)
    }
}
