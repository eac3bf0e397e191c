"""Socket semantics an unmodified program relies on, run under `ztctl run` (the intercept).

Peers on the kernel side (kernel_peer.py): TCP echo on KERNEL:9000, UDP echo on KERNEL:9001,
nothing on KERNEL:9002 (refused), the connect-back helper on KERNEL:9003.
Prints one "ok NAME" line per check and "ALL OK" at the end; any failure raises.
"""
import ctypes
import errno
import os
import select
import socket
import sys

STACK, KERNEL = sys.argv[1], sys.argv[2]
ECHO, UDP_ECHO, CLOSED, CALLBACK = 9000, 9001, 9002, 9003
libc = ctypes.CDLL(None, use_errno=True)


def ok(name):
    print("ok", name, flush=True)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, f"EOF after {len(buf)} of {n} bytes"
        buf += chunk
    return buf


def nonblocking_connect():
    s = socket.socket()
    s.setblocking(False)
    rc = s.connect_ex((KERNEL, ECHO))
    assert rc in (0, errno.EINPROGRESS), rc
    _, w, _ = select.select([], [s], [], 10)
    assert w == [s], "not writable"
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    s.setblocking(True)
    s.sendall(b"ping")
    assert recv_exact(s, 4) == b"ping"
    s.close()
    # The same against a closed port: SO_ERROR says ECONNREFUSED.
    s = socket.socket()
    s.setblocking(False)
    rc = s.connect_ex((KERNEL, CLOSED))
    assert rc in (errno.EINPROGRESS, errno.ECONNREFUSED), rc
    if rc == errno.EINPROGRESS:
        select.select([], [s], [], 10)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
    s.close()
    # Nobody answers ARP for .77 on the network: SO_ERROR says EHOSTUNREACH once ARP gives up.
    s = socket.socket()
    s.setblocking(False)
    unreachable = KERNEL.rsplit(".", 1)[0] + ".77"
    rc = s.connect_ex((unreachable, 80))
    assert rc in (errno.EINPROGRESS, errno.EHOSTUNREACH), rc
    if rc == errno.EINPROGRESS:
        select.select([], [s], [], 30)
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        assert err == errno.EHOSTUNREACH, errno.errorcode.get(err, err)
    s.close()
    ok("nonblocking connect + select + SO_ERROR")


def refused():
    s = socket.socket()
    try:
        s.connect((KERNEL, CLOSED))
        raise AssertionError("connect to a closed port succeeded")
    except ConnectionRefusedError:
        pass
    s.close()
    ok("connection refused")


def names():
    s = socket.create_connection((KERNEL, ECHO), timeout=10)
    local, peer = s.getsockname(), s.getpeername()
    assert local[0] == STACK and 1024 <= local[1] <= 65535, local
    assert peer == (KERNEL, ECHO), peer
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) == socket.AF_INET
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
    s.close()
    ok("getsockname/getpeername/options")


def half_close():
    s = socket.create_connection((KERNEL, ECHO), timeout=10)
    payload = os.urandom(300_000)
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    assert got == payload, (len(got), len(payload))
    s.close()
    ok("shutdown(SHUT_WR) then read to EOF")


def accept4_flags():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((STACK, 0))
    srv.listen(8)
    assert srv.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    host, port = srv.getsockname()
    assert host == STACK and port != 0, (host, port)
    # Ask the kernel side to connect back to us.
    ctl = socket.create_connection((KERNEL, CALLBACK), timeout=10)
    ctl.sendall(f"{STACK} {port}\n".encode())
    r, _, _ = select.select([srv], [], [], 10)
    assert r == [srv], "listener never became readable"

    class SockaddrIn(ctypes.Structure):
        _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_ubyte * 2),
                    ("addr", ctypes.c_ubyte * 4), ("zero", ctypes.c_ubyte * 8)]
    sa = SockaddrIn()
    salen = ctypes.c_uint(ctypes.sizeof(sa))
    fd = libc.accept4(srv.fileno(), ctypes.byref(sa), ctypes.byref(salen),
                      socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    assert sa.family == socket.AF_INET and salen.value == 16
    assert ".".join(map(str, sa.addr)) == KERNEL, list(sa.addr)
    import fcntl
    assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    c = socket.socket(fileno=fd)
    assert c.getpeername()[0] == KERNEL
    assert c.getsockname() == (STACK, port), c.getsockname()
    c.setblocking(True)
    c.settimeout(10)
    assert recv_exact(c, 17) == b"hello from kernel"
    c.sendall(b"reply")
    assert recv_exact(c, 5) == b"reply"
    assert recv_exact(ctl, 5) == b"done\n"
    # Non-blocking listener, nothing pending: EAGAIN.
    srv.setblocking(False)
    try:
        srv.accept()
        raise AssertionError("accept with nothing pending succeeded")
    except BlockingIOError:
        pass
    c.close(); ctl.close(); srv.close()
    ok("accept4 SOCK_NONBLOCK|SOCK_CLOEXEC with peer address")


def fork_child():
    s = socket.create_connection((KERNEL, ECHO), timeout=10)
    pid = os.fork()
    if pid == 0:
        try:
            s.sendall(b"from child")
            code = 0 if recv_exact(s, 10) == b"from child" else 1
        except Exception as e:  # noqa: BLE001 - the parent reports the exit status
            print("child:", e, file=sys.stderr)
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    s.sendall(b"from parent")
    assert recv_exact(s, 11) == b"from parent"
    s.close()
    ok("fork and use in the child")


def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    for size in (1, 512, 1400, 4000):
        data = os.urandom(size)
        s.sendto(data, (KERNEL, UDP_ECHO))
        got, peer = s.recvfrom(65536)
        assert got == data and peer == (KERNEL, UDP_ECHO), (len(got), peer)
    # Like the kernel: an unbound sender was auto-bound to 0.0.0.0 and an ephemeral port.
    assert s.getsockname()[1] != 0, s.getsockname()
    s.close()
    # Connected: send/recv, and the names are the network's.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.connect((KERNEL, UDP_ECHO))
    s.send(b"connected")
    assert s.recv(100) == b"connected"
    assert s.getsockname()[0] == STACK and s.getpeername() == (KERNEL, UDP_ECHO), (s.getsockname(), s.getpeername())
    s.close()
    # Connected to a port nobody listens on: the kernel's ICMP port unreachable surfaces as
    # ECONNREFUSED on the next receive, once (as on a kernel UDP socket).
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.connect((KERNEL, CLOSED))
    s.send(b"anyone?")
    try:
        s.recv(100)
        raise AssertionError("no ECONNREFUSED on a connected UDP socket")
    except ConnectionRefusedError:
        pass
    s.send(b"again")   # the error was reported once; the socket still works
    s.close()
    # SO_RCVTIMEO set on the kernel socket before the first sendto still bounds recvfrom after
    # the socket moved to ztapd (nobody answers: an unconnected socket hears no ICMP error).
    import struct
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 1, 0))
    s.sendto(b"x", (KERNEL, CLOSED))
    try:
        s.recvfrom(100)
        raise AssertionError("recvfrom returned")
    except BlockingIOError:
        pass
    s.close()
    ok("UDP sendto/recvfrom with peer addresses")


for check in (nonblocking_connect, refused, names, half_close, accept4_flags, fork_child, udp):
    check()
print("ALL OK", flush=True)
