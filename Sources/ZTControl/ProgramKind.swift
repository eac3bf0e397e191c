#if canImport(Glibc)
import Glibc
#endif

/// How `ztctl run` moves a program's sockets onto a network (docs/INTERCEPT.md).
public enum InterceptMode: String, CaseIterable, Sendable {
    /// Chosen from the program: `ProgramKind.autoMode`.
    case auto
    /// libztintercept.so through LD_PRELOAD: programs that call libc's socket functions.
    case preload
    /// ztap-seccomp: seccomp user notification, for programs that make system calls themselves.
    case seccomp
    /// Both: the library where it is loaded, the supervisor for every process it is not in.
    case both
}

/// What kind of executable a program is, as far as interception cares.
public enum ProgramKind: Equatable, Sendable {
    /// A 64-bit ELF linked against a dynamic libc: LD_PRELOAD reaches its socket calls.
    case dynamicELF
    /// A 64-bit ELF without an interpreter (static, static-PIE): libc, if any, is inside it.
    case staticELF
    /// A Go program (its runtime makes raw system calls, with or without cgo).
    case goELF
    /// A `#!` script; `interpreter` is the path on that line (after `env`, the program it names).
    case script(interpreter: String)
    /// A 32-bit ELF: neither the 64-bit library nor the supervisor's filter reach it.
    case elf32
    /// Not recognised (not readable, not ELF, not a script).
    case unknown

    /// Programs whose purpose is to run other programs: under `auto` they get both mechanisms, so a
    /// static or Go program they start is covered as well.
    public static let launchers: Set<String> = [
        "sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "ash", "env", "timeout", "nohup", "setsid",
        "xargs", "nice", "ionice", "taskset", "chrt", "time", "make", "runuser", "su", "parallel",
    ]

    /// The mode `--mode auto` picks: seccomp for static and Go programs, both for scripts and
    /// launchers (what they run is not known in advance), LD_PRELOAD for other dynamic programs.
    public func autoMode(programName: String) -> InterceptMode {
        switch self {
        case .staticELF, .goELF:
            return .seccomp
        case .script:
            return .both
        case .dynamicELF:
            let base = programName.split(separator: "/").last.map(String.init) ?? programName
            return Self.launchers.contains(base) ? .both : .preload
        case .elf32, .unknown:
            return .preload
        }
    }
}

/// Reads just enough of an executable to tell its kind: the ELF header, program headers
/// (PT_INTERP) and section names (Go's `.note.go.buildid` / `.go.buildinfo`), or the `#!` line.
public enum ProgramInspector {
    /// Finds `program` like execvp: as given if it contains a slash, else in `searchPath`.
    public static func resolve(_ program: String, searchPath: String?) -> String? {
        if program.contains("/") { return program }
        for dir in (searchPath ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":", omittingEmptySubsequences: false) {
            let d = dir.isEmpty ? "." : String(dir)
            let candidate = d + "/" + program
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// Classifies the file at `path`.
    public static func kind(path: String) -> ProgramKind {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .unknown }
        defer { close(fd) }
        return kind { offset, count in
            var buf = [UInt8](repeating: 0, count: count)
            let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
            return n == count ? buf : nil
        }
    }

    /// Classifies an executable given a reader of its bytes (offset, count) -> exactly count bytes.
    public static func kind(read: (UInt64, Int) -> [UInt8]?) -> ProgramKind {
        guard let head = read(0, 4) else { return .unknown }
        if head[0] == 0x23, head[1] == 0x21 { return script(read: read) } // "#!"
        guard head == [0x7f, 0x45, 0x4c, 0x46], let ident = read(0, 64) else { return .unknown }
        guard ident[4] == 2 else { return ident[4] == 1 ? .elf32 : .unknown } // EI_CLASS
        guard ident[5] == 1 else { return .unknown } // little-endian only (x86-64, aarch64)
        func u16(_ b: [UInt8], _ at: Int) -> Int { Int(b[at]) | Int(b[at + 1]) << 8 }
        func u32(_ b: [UInt8], _ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[at + $1]) << (8 * $1) } }
        func u64(_ b: [UInt8], _ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[at + $1]) << (8 * $1) } }

        // Program headers: PT_INTERP (3) means a dynamic loader, hence a dynamic libc.
        let phoff = u64(ident, 32), phentsize = u16(ident, 54), phnum = u16(ident, 56)
        var dynamic = false
        if phentsize >= 4, phnum > 0, phnum < 4096, let ph = read(phoff, phentsize * phnum) {
            dynamic = (0..<phnum).contains { u32(ph, $0 * phentsize) == 3 }
        }
        // Section names: Go's linker always writes .note.go.buildid (and .go.buildinfo since 1.13).
        let shoff = u64(ident, 40), shentsize = u16(ident, 58), shnum = u16(ident, 60), shstrndx = u16(ident, 62)
        if shoff > 0, shentsize >= 40, shnum > 0, shnum < 65280, shstrndx < shnum,
           let sh = read(shoff, shentsize * shnum) {
            let strOff = u64(sh, shstrndx * shentsize + 24), strSize = u64(sh, shstrndx * shentsize + 32)
            if strSize > 0, strSize < 1 << 20, let names = read(strOff, Int(strSize)) {
                for i in 0..<shnum {
                    let at = Int(u32(sh, i * shentsize))
                    guard at < names.count else { continue }
                    let end = names[at...].firstIndex(of: 0) ?? names.count
                    let name = String(decoding: names[at..<end], as: UTF8.self)
                    if name == ".note.go.buildid" || name == ".go.buildinfo" { return .goELF }
                }
            }
        }
        return dynamic ? .dynamicELF : .staticELF
    }

    private static func script(read: (UInt64, Int) -> [UInt8]?) -> ProgramKind {
        var line: [UInt8] = []
        var off: UInt64 = 2
        while line.count < 256, let b = read(off, 1), b[0] != 0x0a {
            line.append(b[0])
            off += 1
        }
        let words = String(decoding: line, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard let first = words.first else { return .script(interpreter: "") }
        if first.hasSuffix("/env"), words.count > 1 {
            // `#!/usr/bin/env [-S] prog`: the program it names.
            let prog = words.dropFirst().first { !$0.hasPrefix("-") }
            return .script(interpreter: prog.map(String.init) ?? String(first))
        }
        return .script(interpreter: String(first))
    }
}
