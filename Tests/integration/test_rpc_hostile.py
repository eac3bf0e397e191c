"""Hostile and malformed traffic on ztapd's intercept RPC socket (RUN_DIR/NAME.sock).

Each bad request must get an error reply or a closed channel, ztapd must close every fd it was
sent, and it must go on serving everyone else: checked by a real program under the intercept
afterwards and by ztapd's fd count. Runs in the test's own namespace.
"""
import array
import errno
import os
import socket
import struct
import subprocess
import sys
import textwrap
import time

from conftest import fd_count, wait_until
from intercept_env import KERNEL, env  # noqa: F401 - env is the shared fixture

MAGIC = 0x5052545A
VERSION = 2
OP_CONNECT, OP_GETNAME = 1, 6
F_NEW = 2
REP = struct.Struct("<IHHIiiI")     # ztrpc_rep_hdr


def header(op, body_len, magic=MAGIC, version=VERSION, rid=7):
    return struct.pack("<IHHII", magic, version, op, rid, body_len)


SOCK_REQ_LEN = 80                   # struct ztrpc_sock_req (ztrpc version 2)


def sock_req(addr="10.70.0.1", port=9000, flags=0, proto=6):
    """ztrpc_sock_req: a 24-byte ztrpc_addr (IPv4 as ::ffff:a.b.c.d, port, reserved, scope id),
    flags, proto, family (AF_INET), filler, 40 bytes of options, sndbuf, pid."""
    a = b"\0" * 10 + b"\xff\xff" + socket.inet_aton(addr) + struct.pack(">H", port) + b"\0\0" + b"\0" * 4
    return a + struct.pack("<HBBI", flags, proto, socket.AF_INET, 0) + b"\0" * 40 + b"\0" * 8


def exchange(path, payload, fds=()):
    """Sends one message; returns the reply (op, id, result, err) or None if ztapd closed."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(5)
    try:
        s.connect(path)
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        try:
            s.sendmsg([payload], anc)
        except OSError:
            return None          # closed before we could even send: refused
        data = s.recv(4096)
    except (ConnectionResetError, BrokenPipeError):
        return None
    finally:
        s.close()
    if not data:
        return None
    assert len(data) >= REP.size, data
    magic, version, op, rid, result, err, _ = REP.unpack_from(data)
    assert magic == MAGIC and version == VERSION
    return op, rid, result, err


def test_malformed_requests_get_errors_and_no_fd_leaks(env):
    path = os.path.join(env.d.run_dir, "n.sock")
    base = fd_count(env.d.pid)
    r, w = os.pipe()
    a, b = socket.socketpair()
    cases = [
        ("3 bytes", b"abc", (), {None, errno.EPROTO, errno.EBADMSG, errno.EINVAL}),
        ("bad magic", header(OP_GETNAME, 0, magic=0xDEADBEEF), (a.fileno(),), {errno.EPROTO}),
        ("version 99", header(OP_GETNAME, 0, version=99), (a.fileno(),), {errno.EPROTO}),
        ("unknown op", header(200, 0), (a.fileno(),), {errno.EOPNOTSUPP}),
        ("no fds", header(OP_GETNAME, 0), (), {errno.EBADF}),
        ("pipe instead of socket", header(OP_GETNAME, 0), (r,), {errno.ENOTSOCK, errno.EBADF}),
        ("foreign unix socket", header(OP_GETNAME, 0), (a.fileno(),), {errno.ENOTSOCK}),
        ("connect, new, pipes", header(OP_CONNECT, SOCK_REQ_LEN) + sock_req(flags=F_NEW), (r, w),
         {errno.EBADF, errno.EINVAL, errno.ENOTSOCK}),
        ("connect, new, one fd", header(OP_CONNECT, SOCK_REQ_LEN) + sock_req(flags=F_NEW), (a.fileno(),),
         {errno.EBADF, errno.EINVAL, errno.ENOTSOCK}),
        ("connect, bad proto", header(OP_CONNECT, SOCK_REQ_LEN) + sock_req(flags=F_NEW, proto=99), (a.fileno(), b.fileno()),
         {errno.EINVAL, errno.EPROTONOSUPPORT, errno.EBADF, errno.ENOTSOCK}),
        ("length beyond body", header(OP_CONNECT, 5000) + sock_req(), (a.fileno(),),
         {None, errno.EPROTO, errno.EINVAL, errno.EMSGSIZE, errno.EBADMSG, errno.ENOTSOCK}),
        ("oversized message", header(OP_GETNAME, 4000) + b"\xff" * 4000, (a.fileno(),),
         {None, errno.EPROTO, errno.EMSGSIZE, errno.EINVAL, errno.EBADMSG}),
        ("too many fds", header(OP_GETNAME, 0), tuple([a.fileno()] * 8) + (r, w),
         {None, errno.EPROTO, errno.EMSGSIZE, errno.EINVAL, errno.EBADF, errno.ENOTSOCK, errno.E2BIG}),
        ("short body", header(OP_CONNECT, SOCK_REQ_LEN) + b"\x0a", (a.fileno(),), {None, errno.EPROTO, errno.EINVAL, errno.EBADMSG, errno.ENOTSOCK}),
    ]
    for name, payload, fds, allowed in cases:
        rep = exchange(path, payload, fds)
        got = None if rep is None else rep[3]
        assert got in allowed, f"{name}: reply {rep}, errno {got and errno.errorcode.get(got)}"
        if rep is not None:
            assert rep[2] == -1, f"{name}: succeeded: {rep}"
    # Every fd ztapd was sent has been closed again.
    assert wait_until(lambda: fd_count(env.d.pid) <= base, timeout=5), (fd_count(env.d.pid), base)
    for fd in (r, w):
        os.close(fd)
    a.close(); b.close()
    # And it still serves a real program.
    env.peer("echo", 9000)
    out = env.run(sys.executable, "-c", textwrap.dedent(f"""
        import socket
        s = socket.create_connection(("{KERNEL}", 9000), timeout=10)
        s.sendall(b"still here"); print(s.recv(100).decode())
        """), timeout=60)
    assert out.stdout.strip() == "still here"


def test_request_flood_and_connection_flood(env):
    path = os.path.join(env.d.run_dir, "n.sock")
    base = fd_count(env.d.pid)
    # 3000 requests back to back, each answered.
    a, b = socket.socketpair()
    t0 = time.monotonic()
    for _ in range(3000):
        rep = exchange(path, header(OP_GETNAME, 0), (a.fileno(),))
        assert rep is not None and rep[3] == errno.ENOTSOCK
    print(f"3000 RPC round trips in {time.monotonic() - t0:.2f} s")
    a.close(); b.close()
    # A user holds 600 silent RPC connections open: ztapd refuses what is over its per-user
    # bound, and root's program keeps working meanwhile.
    flood = textwrap.dedent(f"""
        import select, socket, sys, time
        conns = []
        for _ in range(600):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.connect({path!r})
            conns.append(s)
        time.sleep(1.0)
        p = select.poll()
        for s in conns:
            p.register(s, select.POLLIN | select.POLLHUP)
        closed = len(p.poll(500))
        print("OPEN", len(conns) - closed, flush=True)
        sys.stdin.readline()
        """)
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    fl = env.ns.popen("runuser", "-u", "nobody", "--", py, "-c", flood,
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    env.procs.append(fl)
    line = fl.stdout.readline().split()
    assert line and line[0] == "OPEN", line
    held = int(line[1])
    assert 0 < held <= 512, held
    env.peer("echo", 9000)
    out = env.run(sys.executable, "-c", textwrap.dedent(f"""
        import socket
        s = socket.create_connection(("{KERNEL}", 9000), timeout=10)
        s.sendall(b"served"); print(s.recv(100).decode())
        """), timeout=60)
    assert out.stdout.strip() == "served"
    assert "too many pending requests" in env.d.logs()
    fl.stdin.write("\n"); fl.stdin.flush()
    fl.wait(timeout=10)
    assert wait_until(lambda: fd_count(env.d.pid) <= base, timeout=10), (fd_count(env.d.pid), base)


def test_lingering_socket_sent_to_ztapd_does_not_block_it(env):
    """A TCP socket with SO_LINGER {1, 30} and unsent data, sent to ztapd and closed by the
    client: ztapd's close of the last reference must not wait 30 s on its event loop.
    (Loopback of the test's own namespace only.)"""
    path = os.path.join(env.d.run_dir, "n.sock")
    code = textwrap.dedent(f"""
        import array, socket, struct, time
        lst = socket.socket(); lst.bind(("127.0.0.1", 0)); lst.listen(1)   # never accepts, never reads
        t = socket.create_connection(lst.getsockname())
        t.setblocking(False)
        try:
            while True:
                t.send(bytes(1 << 16))
        except BlockingIOError:
            pass
        t.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 30))
        r = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        r.connect({path!r})
        hdr = struct.pack("<IHHII", 0x5052545A, {VERSION}, 6, 1, 0)
        r.sendmsg([hdr], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [t.fileno()]))])
        t.close()                      # ztapd now holds the last reference
        t0 = time.monotonic()
        rep = r.recv(100)
        r.close()
        # A second client is answered at once too.
        r2 = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); r2.settimeout(20)
        r2.connect({path!r}); r2.sendmsg([hdr]); rep2 = r2.recv(100)
        print(round(time.monotonic() - t0, 1), struct.unpack_from("<IHHIii", rep)[5], struct.unpack_from("<IHHIii", rep2)[5])
        """)
    r = env.ns.exec(sys.executable, "-c", code, timeout=60)
    secs, err1, err2 = r.stdout.split()
    assert int(err1) == errno.ENOTSOCK and int(err2) == errno.EBADF, r.stdout
    assert float(secs) < 5, f"ztapd was blocked {secs} s closing a lingering socket"


def test_a_garbled_one_way_channel_closes_alone_and_raises_no_sigpipe(env):
    """The library's one-way channel is a pipe (ztrpc.h ZTRPC_OP_CHANNEL) that ztapd reads. An
    app that writes garbage into it (found in /proc/self/fd) loses that channel only: ztapd
    closes it with a log line, the library's next one-way option gets EPIPE without SIGPIPE (the
    app keeps the default action, which would kill it) and opens a new channel, and the options
    still apply in order."""
    env.peer("echo", 9000)
    code = textwrap.dedent(f"""
        import os, signal, socket
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # Python ignores it by default
        s = socket.create_connection(("{KERNEL}", 9000), timeout=10)
        def pipes():
            out = set()
            for f in os.listdir("/proc/self/fd"):
                try:
                    t = os.readlink("/proc/self/fd/" + f)
                    if t.startswith("pipe:"):
                        out.add((int(f), t))
                except OSError:
                    pass
            return out
        before = pipes()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)     # opens the channel
        new = sorted(pipes() - before)
        print("CHANNEL", len(new))
        fd = new[0][0]
        os.write(fd, b"\\x55" * 16)                                  # not a ztrpc message
        import time; time.sleep(0.5)
        for v in (0, 1, 0):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, v)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, v)
        print("NODELAY", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        now = sorted(pipes() - before)
        print("CHANNELS", len(now), "NEW" if now and now[0][1] != new[0][1] else "SAME")
        s.sendall(b"alive"); print("ECHO", s.recv(5).decode())
        """)
    r = env.run(sys.executable, "-c", code, timeout=60, check=False)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    out = r.stdout.split("\n")
    assert "CHANNEL 1" in out and "NODELAY 0" in out and "CHANNELS 1 NEW" in out and "ECHO alive" in out, out
    assert "one-way channel lost its framing" in env.d.logs()
