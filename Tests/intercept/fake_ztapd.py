#!/usr/bin/env python3
"""fake_ztapd.py - a tiny stand-in for ztapd's RPC side, to unit-test libztintercept.so.

It speaks the wire format of Sources/CZTRPC/include/ztrpc.h (re-declared here with struct so a
layout change shows up as a failing test), hands out nothing itself (the library brings the
socketpairs), and plays a fake network 10.200.0.0/24 whose stack address is 10.200.0.2:

TCP CONNECT to 10.200.0.1:
  port 7   echo server, connects at once
  port 8   echo server, handshake takes 300 ms (EINPROGRESS for non-blocking connects)
  port 1   refused at once (ECONNREFUSED)
  port 2   refused after 300 ms
  port 3   times out after 1 s (ETIMEDOUT)
  port 80  a tiny HTTP/1.0 server answering "hello ztap!" to any request
  host 10.200.0.99: EHOSTUNREACH; any address outside 10.200.0.0/24: ENETUNREACH
TCP LISTEN: 200 ms later two connections arrive from 10.200.0.1:40001 and :40002; each sends
  b"hello from PORT" and then echoes. A listener on port 8081 instead gets one HTTP client
  connection that sends "GET / HTTP/1.0" and logs the response ({"event": "http_response"}).
UDP: every datagram is echoed back from its destination address.

Every request is appended to the --log file as one JSON line (op, fields, fds, protocol errors),
so tests can check what the library sent. Usage: fake_ztapd.py SOCKET_PATH LOG_PATH
"""
import array
import json
import os
import socket
import stat
import struct
import sys
import threading
import time
import errno as E

MAGIC = 0x5052545A
VERSION = 2
OP_CONNECT, OP_BIND, OP_LISTEN, OP_GETSOCKOPT, OP_SETSOCKOPT, OP_GETNAME, OP_UDP_OPEN = range(1, 8)
OP_CHANNEL = 8
# FAKE_NO_PIPE_CHANNEL=1: answer CHANNEL like a daemon that does not know it (EOPNOTSUPP), so the
# library keeps its one-way messages on a SEQPACKET connection.
NO_PIPE_CHANNEL = os.environ.get("FAKE_NO_PIPE_CHANNEL") == "1"
# FAKE_CHANNEL_ERRNO=N: refuse every CHANNEL with errno N (EMFILE: a user with too many).
CHANNEL_ERRNO = int(os.environ.get("FAKE_CHANNEL_ERRNO", "0"))
NOREPLY = 0x8000
KEEP = 0x4000
IPPROTO_TCP, TCP_NODELAY, TCP_CORK, TCP_QUICKACK = 6, 1, 3, 12
OP_NAMES = {1: "CONNECT", 2: "BIND", 3: "LISTEN", 4: "GETSOCKOPT", 5: "SETSOCKOPT", 6: "GETNAME",
            7: "UDP_OPEN", 8: "CHANNEL"}
F_NONBLOCK, F_NEW = 1, 2
ST_UNBOUND, ST_BOUND, ST_CONNECTING, ST_CONNECTED, ST_LISTENING, ST_CLOSED = range(6)
TCP, UDP = 6, 17
SOL_SOCKET, SO_ERROR = 1, 4

REQ_HDR = struct.Struct("<IHHII")         # 16
REP_HDR = struct.Struct("<IHHIiiI")       # 24
SOCKOPTS = struct.Struct("<IIiiiiiiiI")   # 40
SOCK_REQ = struct.Struct("<24sHBBI40siI")  # 80
LISTEN_REQ = struct.Struct("<iI")         # 8
SOCKOPT = struct.Struct("<iiII16s")       # 32
SOCKINFO = struct.Struct("<BBBBi24s24sIQIQQ")  # 88: ..., flags, secret (LE u64), reserved, dev, ino
ACCEPT_MSG = struct.Struct("<II24s24sQQQ") # 80: ..., secret, dev, ino
ADDR = struct.Struct("<16sHHI")            # 24: IPv6 bytes (IPv4 as ::ffff:a.b.c.d), port, ...
assert (REQ_HDR.size, REP_HDR.size, SOCKOPTS.size, SOCK_REQ.size, LISTEN_REQ.size, SOCKOPT.size,
        SOCKINFO.size, ACCEPT_MSG.size, ADDR.size) == (16, 24, 40, 80, 8, 32, 88, 80, 24)
AF_INET, AF_INET6 = 2, 10
F_V6ONLY, SI_V6ONLY = 8, 1
MAX_MSG = 640

STACK_IP = "10.200.0.2"
PEER_IP = "10.200.0.1"
STACK_IP6 = "fd00:200::2"   # the fake network's IPv6 prefix is fd00:200::/64
PEER_IP6 = "fd00:200::1"


def pack_addr(ip, port):
    """A ztrpc_addr: an IPv4 address travels v4-mapped, "::" (or "") is all zero."""
    if ":" in ip or not ip:
        raw = socket.inet_pton(socket.AF_INET6, ip or "::")
    else:
        raw = b"\0" * 10 + b"\xff\xff" + socket.inet_aton(ip)
    return ADDR.pack(raw, socket.htons(port), 0, 0)


def unpack_addr(b):
    """(ip, port): a v4-mapped address as dotted IPv4, all zero as "::", else IPv6 text."""
    raw, port, _, _ = ADDR.unpack(b[:24])
    port = socket.ntohs(port)
    if raw[:12] == b"\0" * 10 + b"\xff\xff":
        return socket.inet_ntoa(raw[12:]), port
    return socket.inet_ntop(socket.AF_INET6, raw), port


def is_none(addr):
    return addr[0] in ("::", "0.0.0.0") and addr[1] == 0


def inode(fd):
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


class Sock:
    """One socket of the fake stack, keyed by the inode of the app's end."""

    def __init__(self, proto, family=AF_INET, v6only=False):
        self.proto = proto
        self.family = family
        self.v6only = v6only
        self.state = ST_UNBOUND
        self.local = ("::", 0)   # all zero: none
        self.peer = ("::", 0)
        self.error = 0
        self.data = None          # daemon end of the data socketpair
        self.accept_chan = None   # daemon end of the accept channel (listeners)
        self.opts = {}
        self.backlog = 0
        self.done = threading.Event()  # connect outcome known (set unless connecting)
        self.done.set()
        # TCP: names it in one-way messages without an fd (ztrpc.h "References"); never 0.
        self.secret = int.from_bytes(os.urandom(8), "little") | 1 if proto == TCP else 0
        self.key = (0, 0)   # the app end's identity, as sockinfo gives it

    def info(self):
        shut = self.opts.get((0x7A74, 1), b"\0\0\0\0")   # ZTRPC_SOL_ZTAP / ZTRPC_ZT_SHUTDOWN
        return SOCKINFO.pack(self.proto, self.state, struct.unpack("<i", shut[:4])[0] & 3,
                             self.family, self.backlog, pack_addr(*self.local),
                             pack_addr(*self.peer), SI_V6ONLY if self.v6only else 0, self.secret,
                             0, *self.key)


class Fake:
    def __init__(self, path, log_path):
        self.path = path
        self.log = open(log_path, "a", buffering=1)
        self.lock = threading.Lock()
        # Messages by sender pid and request id, for ztapd's ordering: a process's one-way
        # messages apply before its later requests (ids grow by one per message per process).
        self.order = threading.Condition()
        self.done_ids = {}
        self.socks = {}
        self.next_port = 50000

    def record(self, entry):
        with self.lock:
            self.log.write(json.dumps(entry) + "\n")

    def ephemeral(self):
        with self.lock:
            self.next_port += 1
            return self.next_port

    # ---- data paths -------------------------------------------------------------------------
    def tcp_echo(self, s, greeting=None):
        sock = socket.socket(fileno=s)
        try:
            if greeting:
                sock.sendall(greeting)
            while True:
                b = sock.recv(65536)
                if not b:
                    sock.shutdown(socket.SHUT_WR)   # FIN for FIN: half-close echoed
                    self.record({"event": "eof"})
                    break
                sock.sendall(b)
        except OSError:
            pass
        finally:
            time.sleep(0.2)
            sock.close()

    def http_server(self, s):
        sock = socket.socket(fileno=s)
        try:
            req = b""
            while b"\r\n\r\n" not in req:
                b = sock.recv(4096)
                if not b:
                    return
                req += b
            self.record({"event": "http_request", "line": req.split(b"\r\n")[0].decode()})
            body = b"hello ztap!\n"
            sock.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (len(body), body))
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
        except OSError:
            pass
        finally:
            sock.close()

    def http_client(self, s):
        sock = socket.socket(fileno=s)
        try:
            sock.sendall(b"GET / HTTP/1.0\r\nHost: 10.200.0.2\r\n\r\n")
            resp = b""
            sock.settimeout(5)
            while True:
                b = sock.recv(65536)
                if not b:
                    break
                resp += b
            self.record({"event": "http_response", "data": resp[:400].decode(errors="replace")})
        except OSError as ex:
            self.record({"event": "http_response", "error": repr(ex)})
        finally:
            sock.close()

    def udp_echo(self, so):
        sock = socket.socket(fileno=so.data)
        try:
            while True:
                b = sock.recv(70000)
                if not b:
                    break
                if len(b) < 24:
                    self.record({"protocol_error": "short datagram"})
                    continue
                dst = unpack_addr(b[:24])
                if is_none(dst):
                    dst = so.peer
                self.record({"event": "udp", "dst": list(dst), "len": len(b) - 24})
                sock.send(pack_addr(*dst) + b[24:])
        except OSError:
            pass
        finally:
            sock.close()

    @staticmethod
    def unplug(so, plug, drain):
        app, filler, sndbuf = plug
        if drain:
            left = filler
            while left > 0:
                b = os.read(so.data, min(left, 65536))
                if not b:
                    break
                left -= len(b)
        s = socket.socket(fileno=app)
        if sndbuf > 0:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        s.close()

    def start_connect(self, so, dst, nonblock, plug=None):
        ip, port = dst
        so.peer = dst
        if so.local[1] == 0:
            so.local = (STACK_IP6 if ":" in ip else STACK_IP, self.ephemeral())
        outcome, delay = 0, 0.0
        if not ip.startswith("10.200.0.") and not ip.startswith("fd00:200::"):
            outcome = E.ENETUNREACH
        elif ip == "10.200.0.99":
            outcome = E.EHOSTUNREACH
        elif port == 1:
            outcome = E.ECONNREFUSED
        elif port == 2:
            outcome, delay = E.ECONNREFUSED, 0.3
        elif port == 3:
            outcome, delay = E.ETIMEDOUT, 1.0
        elif port == 8:
            delay = 1.0   # long enough that a loaded machine still sees it pending
        so.state = ST_CONNECTING
        so.done.clear()

        if outcome == E.ENETUNREACH:
            # No route: known at once, like Linux (nothing started; unplug for the library).
            if plug:
                self.unplug(so, plug, drain=True)
            so.state, so.error = ST_BOUND, 0
            return -1, outcome

        def finish():
            if delay:
                time.sleep(delay)
            if outcome:
                so.state, so.error = ST_CLOSED, outcome
                # Our end first, then the plug (as ztapd does, ztrpc.h CONNECT): the app end is
                # never writable without the hang-up, which the library reads as "connected".
                try:
                    os.close(so.data)
                except OSError:
                    pass
                if plug:
                    self.unplug(so, plug, drain=False)
            else:
                # Connected before unplugged: the writable app end must find the outcome known
                # (as in ztapd: a request right after POLLOUT sees CONNECTED).
                so.state = ST_CONNECTED
                if plug:
                    self.unplug(so, plug, drain=True)
                serve = self.http_server if port == 80 else self.tcp_echo
                threading.Thread(target=serve, args=(so.data,), daemon=True).start()
            so.done.set()

        threading.Thread(target=finish, daemon=True).start()
        if nonblock:
            # Like ztapd: a handshake that started is EINPROGRESS, however fast it ends (the
            # outcome, even one known by now, is the fd's to show).
            return -1, E.EINPROGRESS
        so.done.wait()
        if so.error:
            return -1, so.error   # kept for SO_ERROR in case the library stopped waiting
        return 0, 0

    def run_listener(self, so):
        time.sleep(0.2)
        http = so.local[1] == 8081
        for i in ((1,) if http else (1, 2)):
            a, d = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            # A dual-stack listener on :: gets one IPv4 and one IPv6 client.
            v6 = so.family == AF_INET6 and (i == 2 or so.v6only or so.local[0] != "::")
            peer = (PEER_IP6 if v6 else PEER_IP, 40000 + i)
            msg = ACCEPT_MSG.pack(MAGIC, 0, pack_addr(*so.local), pack_addr(*peer), 0, 0, 0)   # not kept: no secret; identity by fstat
            try:
                so.accept_chan.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                array.array("i", [a.fileno()]))])
            except OSError:
                a.close(); d.close()
                return
            a.close()
            if http:
                threading.Thread(target=self.http_client, args=(d.detach(),), daemon=True).start()
            else:
                threading.Thread(target=self.tcp_echo,
                                 args=(d.detach(), b"hello from %d" % peer[1]), daemon=True).start()

    # ---- RPC ----------------------------------------------------------------------------------
    def handle(self, conn):
        # A connection whose first message has ZTRPC_OP_NOREPLY is its process's one-way channel:
        # any number of such messages, never a reply (ztrpc.h); anything else: one request.
        while self.handle_one(conn):
            pass
        conn.close()

    def wait_earlier(self, pid, rid):
        """ztapd reads a process's one-way channel before serving its next request; this fake
        serves each connection on its own thread, so a request waits (briefly) for the messages
        its process sent just before it (ids one apart) to be applied first."""
        deadline = time.monotonic() + 0.05   # one-way messages apply in well under a millisecond
        with self.order:
            while True:
                seen = self.done_ids.get(pid, set())
                if not seen or all(i in seen for i in range(max(min(seen), rid - 4), rid)):
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self.order.wait(left)

    def note_done(self, pid, rid):
        with self.order:
            ids = self.done_ids.setdefault(pid, set())
            ids.add(rid)
            if len(ids) > 64:
                ids.discard(min(ids))
            self.order.notify_all()

    def handle_one(self, conn):
        """One message; True when the connection stays open for another (a one-way channel)."""
        try:
            data, anc, flags, _ = conn.recvmsg(MAX_MSG, socket.CMSG_SPACE(4 * 8) + socket.CMSG_SPACE(12))
        except OSError:
            return False
        if not data:
            return False
        oneway = len(data) >= 8 and struct.unpack_from("<H", data, 6)[0] & NOREPLY
        keep = len(data) >= 8 and struct.unpack_from("<H", data, 6)[0] & KEEP
        fds = []
        for level, typ, cdata in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(cdata[: len(cdata) - len(cdata) % 4])
                fds.extend(a)
        entry = {"nfds": len(fds)}
        pid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
        if oneway:
            entry.update(oneway=True, channel=conn.fileno(), pid=pid)
        else:
            entry["_pid"] = pid
        rid0 = struct.unpack_from("<I", data, 8)[0] if len(data) >= 12 else None
        if rid0 is not None and not oneway:
            self.wait_earlier(pid, rid0)
        try:
            magic, ver, op, rid, blen = REQ_HDR.unpack_from(data)
            op &= ~(NOREPLY | KEEP)
            body = data[16:]
            entry.update(op=OP_NAMES.get(op, op), id=rid)
            if magic != MAGIC or ver != VERSION or blen != len(body):
                entry["protocol_error"] = "bad header"
                result, err, rbody = -1, E.EPROTO, b""
            elif oneway and not (op == OP_SETSOCKOPT and len(body) >= 12 and
                                 struct.unpack_from("<iiI", body) [0] == IPPROTO_TCP and
                                 struct.unpack_from("<iiI", body)[1] in (TCP_NODELAY, TCP_CORK, TCP_QUICKACK) and
                                 struct.unpack_from("<iiI", body)[2] >= 4):
                entry["protocol_error"] = "one-way message that needs an answer"
                result, err, rbody = -1, E.EPROTO, b""
            else:
                result, err, rbody = self.dispatch(op, body, fds, entry)
            # Log before replying: once the reply is out, the test may read the log.
            self.record({k: v for k, v in entry.items() if k not in ("_keep", "_forget", "_pid")})
            entry["_logged"] = True
            self.note_done(pid, rid)
            if oneway:
                return True
            try:
                conn.send(REP_HDR.pack(MAGIC, VERSION, op, rid, result, err, len(rbody)) + rbody)
                if "_forget" in entry:
                    with self.lock:
                        self.socks.pop(entry["_forget"], None)
                if keep:
                    return True   # a session (ztrpc.h ZTRPC_OP_KEEP): the next request follows
            except (BrokenPipeError, ConnectionResetError):
                # The library stopped waiting (EINTR, SO_SNDTIMEO).
                self.record({"reply_undelivered": rid, "addr": entry.get("addr")})
        except Exception as ex:  # a fake: report, never crash
            entry["exception"] = repr(ex)
        finally:
            for fd in fds:
                if fd not in entry.get("_keep", ()):
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            entry.pop("_keep", None)
            entry.pop("_forget", None)
            entry.pop("_pid", None)
            if not entry.pop("_logged", False):
                self.record(entry)
        return False

    def pipe_channel(self, fd, pid):
        """A process's one-way channel as a pipe (ztrpc.h ZTRPC_OP_CHANNEL): whole messages, one
        after another; each applied like one from a SEQPACKET channel."""
        buf = b""
        os.set_blocking(fd, True)   # the library made the pipe non-blocking; this thread waits
        with os.fdopen(fd, "rb", buffering=0) as f:
            while True:
                try:
                    chunk = f.read(8192)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while len(buf) >= 16:
                    magic, ver, op, rid, blen = REQ_HDR.unpack_from(buf)
                    if magic != MAGIC or ver != VERSION or blen > MAX_MSG:
                        self.record({"protocol_error": "pipe channel lost its framing", "pid": pid})
                        return
                    if len(buf) < 16 + blen:
                        break
                    body, buf = buf[16:16 + blen], buf[16 + blen:]
                    entry = {"nfds": 0, "oneway": True, "channel": "pipe:%d" % fd, "pid": pid,
                             "op": OP_NAMES.get(op & ~(NOREPLY | KEEP), op), "id": rid}
                    if not op & NOREPLY:
                        entry["protocol_error"] = "a pipe message that needs an answer"
                    else:
                        self.dispatch(op & ~(NOREPLY | KEEP), body, [], entry)
                    self.record(entry)
                    self.note_done(pid, rid)

    def dispatch(self, op, body, fds, entry):
        if op == OP_CHANNEL:
            if NO_PIPE_CHANNEL:
                return -1, E.EOPNOTSUPP, b""
            if CHANNEL_ERRNO:
                return -1, CHANNEL_ERRNO, b""
            if not fds or not stat.S_ISFIFO(os.fstat(fds[0]).st_mode):
                return -1, E.EBADF, b""
            entry["_keep"] = (fds[0],)
            entry["pipe_channel"] = True
            threading.Thread(target=self.pipe_channel, args=(fds[0], entry.get("_pid", 0)),
                             daemon=True).start()
            return 0, 0, b""
        if not fds and entry.get("oneway") and op == OP_SETSOCKOPT and len(body) == 32 + 24:
            # By reference (ztrpc.h "References"): identity and secret must both match.
            dev, ino, secret = struct.unpack_from("<QQQ", body, 32)
            so = self.socks.get((dev, ino))
            entry["by_reference"] = True
            if so is None or secret == 0 or so.secret != secret:
                entry["protocol_error"] = "unknown reference"
                return -1, E.EBADF, b""
            level, name, optlen, _, value = SOCKOPT.unpack(body[:32])
            entry.update(level=level, name=name, optlen=optlen, value=value[:optlen].hex())
            so.opts[(level, name)] = value[:optlen]
            return 0, 0, b""
        if not fds:
            entry["protocol_error"] = "no fds"
            return -1, E.EBADF, b""
        key = inode(fds[0])
        if op in (OP_CONNECT, OP_BIND, OP_UDP_OPEN):
            addr, flags, proto, family, filler, opts, sndbuf, _ = SOCK_REQ.unpack(
                body[:80].ljust(80, b"\0"))
            dst = unpack_addr(addr)
            entry.update(addr=list(dst), flags=flags, proto=proto, family=family,
                         opts=list(SOCKOPTS.unpack(opts)))
            # Options set before interception beyond ztrpc_sockopts: ztrpc_optlist + records.
            if len(body) >= 88:
                count, _ = struct.unpack("<II", body[80:88])
                recs = []
                for i in range(count):
                    r = body[88 + 32 * i:120 + 32 * i]
                    if len(r) < 32:
                        break
                    lv, nm, ol, _, val = SOCKOPT.unpack(r)
                    recs.append([lv, nm, val[:ol].hex()])
                entry["preopts"] = recs
            if flags & F_NEW:
                if len(fds) != 2:
                    entry["protocol_error"] = "NEW without 2 fds"
                    return -1, E.EBADF, b""
                so = Sock(proto, family or AF_INET, bool(flags & F_V6ONLY))
                so.key = key
                so.data = fds[1]
                # Its file status flags are ours to set (the library makes the pair with the
                # app socket's O_NONBLOCK); this fake's threads read and write blocking.
                os.set_blocking(fds[1], True)
                entry["_keep"] = (fds[1],)
                m = SOCKOPTS.unpack(opts)
                so.opts["mask"], so.opts["bools"] = m[0], m[1]
                with self.lock:
                    self.socks[key] = so
            else:
                so = self.socks.get(key)
                if so is None:
                    return -1, E.EBADF, b""
            if op == OP_BIND:
                ip, port = dst
                if ip not in ("0.0.0.0", "::", STACK_IP, STACK_IP6):
                    self.socks.pop(key, None)
                    entry.pop("_keep", None)
                    return -1, E.EADDRNOTAVAIL, b""
                so.local = (STACK_IP if ip == "0.0.0.0" else ip, port or self.ephemeral())
                so.state = ST_BOUND
                if proto == UDP:
                    threading.Thread(target=self.udp_echo, args=(so,), daemon=True).start()
                return 0, 0, so.info()
            if op == OP_UDP_OPEN or so.proto == UDP:
                fresh = so.local[1] == 0
                if fresh:
                    so.local = ("::" if so.family == AF_INET6 else STACK_IP, self.ephemeral())
                    threading.Thread(target=self.udp_echo, args=(so,), daemon=True).start()
                if op == OP_CONNECT:
                    so.peer = dst
                    so.state = ST_UNBOUND if is_none(dst) else ST_CONNECTED
                    if so.state == ST_UNBOUND:
                        so.state = ST_BOUND
                else:
                    so.state = ST_BOUND
                return 0, 0, so.info()
            # TCP connect
            if so.state == ST_CONNECTING:
                return -1, E.EALREADY, so.info()
            if so.state == ST_CONNECTED:
                return -1, E.EISCONN, so.info()
            plug = None
            if filler:
                # The library plugged the app end (ztrpc.h CONNECT): keep it until the outcome.
                plug = (os.dup(fds[0]), filler, sndbuf)
                entry["filler"] = filler
            result, err = self.start_connect(so, dst, flags & F_NONBLOCK, plug)
            if result < 0 and err != E.EINPROGRESS and flags & F_NEW:
                # Forgotten once the library got the failure (it then keeps its kernel socket);
                # an abandoned reply leaves the socket for SO_ERROR, as ztapd does.
                entry["_forget"] = key
            return result, err, so.info()
        so = self.socks.get(key)
        if op == OP_GETNAME:
            if so is None:
                return -1, E.ENOTSOCK, b""
            return 0, 0, so.info()
        if so is None:
            entry["protocol_error"] = "unknown socket"
            return -1, E.EBADF, b""
        if op == OP_LISTEN:
            backlog, _ = LISTEN_REQ.unpack(body[:8])
            entry.update(backlog=backlog)
            if so.state == ST_LISTENING:
                so.backlog = backlog
                return 0, 0, b""
            if len(fds) != 3:
                entry["protocol_error"] = "LISTEN without 3 fds"
                return -1, E.EBADF, b""
            if so.state != ST_BOUND or so.proto != TCP:
                return -1, E.EINVAL, b""
            os.close(so.data)
            so.data = None
            so.accept_chan = socket.socket(fileno=fds[1])
            entry["_keep"] = (fds[1],)
            so.state, so.backlog = ST_LISTENING, backlog
            with self.lock:
                del self.socks[key]
                so.key = inode(fds[2])
                self.socks[so.key] = so
            threading.Thread(target=self.run_listener, args=(so,), daemon=True).start()
            return 0, 0, b""
        if op in (OP_GETSOCKOPT, OP_SETSOCKOPT):
            level, name, optlen, _, value = SOCKOPT.unpack(body[:32])
            entry.update(level=level, name=name, optlen=optlen)
            if op == OP_SETSOCKOPT and optlen > 16:
                value = body[16:16 + min(optlen, 384)]   # the value runs past the struct
            if op == OP_SETSOCKOPT:
                if (level, name) == (0x7A74, 1):   # shutdown bits accumulate, as in ztapd
                    old = struct.unpack("<i", so.opts.get((level, name), b"\0\0\0\0")[:4])[0]
                    value = struct.pack("<i", old | struct.unpack("<i", value[:4])[0])
                    optlen = 4
                so.opts[(level, name)] = value[:optlen]
                entry["value"] = value[:optlen].hex()
                return 0, 0, b""
            if (level, name) == (SOL_SOCKET, SO_ERROR):
                err, so.error = so.error, 0   # never waits: 0 while the connect is pending
                return 0, 0, SOCKOPT.pack(level, name, 4, 0, struct.pack("<i", err).ljust(16, b"\0"))
            v = so.opts.get((level, name))
            if v is None:
                v = struct.pack("<i", 0)
            return 0, 0, SOCKOPT.pack(level, name, len(v), 0, v.ljust(16, b"\0"))
        return -1, E.EOPNOTSUPP, b""

    def serve(self):
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        srv.bind(self.path)
        srv.listen(64)
        print("ready", flush=True)
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    Fake(sys.argv[1], sys.argv[2]).serve()
