#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Small POSIX file helpers with errors that name the path and the errno text.
enum FileIO {
    static func errnoText(_ e: Int32) -> String { String(cString: strerror(e)) }

    /// Reads a whole file as UTF-8. nil when it does not exist and `missingOK`.
    static func readText(path: String, missingOK: Bool = false) throws(ConfigError) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let e = errno
            if e == ENOENT && missingOK { return nil }
            throw ConfigError(file: path, message: "cannot open: \(errnoText(e)) (errno \(e))")
        }
        defer { close(fd) }
        return try readText(fd: fd, path: path)
    }

    static func readText(fd: Int32, path: String) throws(ConfigError) -> String {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                throw ConfigError(file: path, message: "cannot read: \(errnoText(e)) (errno \(e))")
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
            // Config files are small; a huge one is a mistake (or /dev/zero).
            if bytes.count > 1 << 20 {
                throw ConfigError(file: path, message: "file is larger than 1 MiB; not a config file")
            }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw ConfigError(file: path, message: "file is not valid UTF-8")
        }
        return text
    }

    /// Writes `text` to `path` atomically: a temporary file in the same directory, the same mode
    /// and owner as the file it replaces (or `mode` for a new one), fsync, then rename (or link,
    /// when `exclusive`, so an existing file is never replaced), then fsync of the directory.
    static func writeAtomically(path givenPath: String, text: String, mode newMode: mode_t = 0o644,
                                exclusive: Bool = false) throws(ConfigError) {
        func fail(_ what: String, _ e: Int32) -> ConfigError {
            ConfigError(file: givenPath, message: "\(what): \(errnoText(e)) (errno \(e))")
        }
        // Renaming over a symlink would replace the link; write to the file it points to.
        var path = givenPath
        var lst = stat()
        if !exclusive, lstat(givenPath, &lst) == 0, (lst.st_mode & S_IFMT) == S_IFLNK {
            guard let resolved = realpath(givenPath, nil) else { throw fail("cannot resolve symlink", errno) }
            path = String(cString: resolved)
            free(resolved)
        }
        var mode = newMode
        var owner: (uid_t, gid_t)?
        var st = stat()
        if stat(path, &st) == 0 {
            if exclusive { throw ConfigError(file: givenPath, message: "already exists") }
            mode = st.st_mode & 0o7777
            owner = (st.st_uid, st.st_gid)
        } else if errno != ENOENT {
            throw fail("cannot stat", errno)
        }
        let dir = directoryName(path)
        let base = baseName(path)
        var template = Array("\(dir)/.\(base).XXXXXX".utf8CString)
        // mkostemp needs _GNU_SOURCE, which the Glibc module does not expose; set CLOEXEC after.
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        if fd < 0 { throw fail("cannot create a temporary file in \(dir)", errno) }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        let tmp = String(decoding: template.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var done = false
        defer {
            if !done { unlink(tmp) }
        }
        do {
            defer { close(fd) }
            var bytes = Array(text.utf8)
            var off = 0
            while off < bytes.count {
                let n = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress! + off, $0.count - off) }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw fail("cannot write \(tmp)", errno)
                }
                off += n
            }
            if fchmod(fd, mode) != 0 { throw fail("cannot chmod \(tmp)", errno) }
            if let (uid, gid) = owner, uid != geteuid() || gid != getegid() {
                if fchown(fd, uid, gid) != 0 { throw fail("cannot give \(tmp) the owner of the original", errno) }
            }
            if fsync(fd) != 0 { throw fail("cannot fsync \(tmp)", errno) }
        }
        if exclusive {
            // link(2) fails with EEXIST instead of replacing a file created meanwhile.
            if link(tmp, path) != 0 { throw fail("cannot create", errno) }
            unlink(tmp)
        } else if rename(tmp, path) != 0 {
            throw fail("cannot rename \(tmp) over it", errno)
        }
        done = true
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            _ = fsync(dfd)  // best effort: the rename already happened
            close(dfd)
        }
    }

    /// Runs `body` holding an exclusive flock on the directory of `path`, so concurrent ztctl
    /// edits of one directory serialise (the file itself is replaced by rename, so it cannot be
    /// the lock).
    static func withDirectoryLock<T>(path: String, _ body: () throws(ConfigError) -> T) throws(ConfigError) -> T {
        let dir = directoryName(path)
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd < 0 {
            let e = errno
            throw ConfigError(file: path, message: "cannot open directory \(dir): \(errnoText(e)) (errno \(e))")
        }
        defer { close(dfd) }
        while flock(dfd, LOCK_EX) != 0 {
            let e = errno
            if e == EINTR { continue }
            throw ConfigError(file: path, message: "cannot lock directory \(dir): \(errnoText(e)) (errno \(e))")
        }
        return try body()
    }

    static func directoryName(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let d = path[..<slash]
        return d.isEmpty ? "/" : String(d)
    }

    static func baseName(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    /// Names of the entries of a directory (no "." and ".."), sorted bytewise. nil when missing.
    static func listDirectory(_ dir: String) throws(ConfigError) -> [String]? {
        guard let d = opendir(dir) else {
            let e = errno
            if e == ENOENT { return nil }
            throw ConfigError(file: dir, message: "cannot open directory: \(errnoText(e)) (errno \(e))")
        }
        defer { closedir(d) }
        var names: [String] = []
        while let ent = readdir(d) {
            let name = withUnsafeBytes(of: ent.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
    }

    static func isRegularFile(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }
}
