"""The far side of the differential harness: services for probe.c, run in the peer namespace.

    peer.py PEER_IP SELF_IP CONTROL_PATH [PEER6_IP SELF6_IP]

Both environments run this same program on a kernel stack (the veth peer for the Linux
reference, the TAP's kernel side under ztap), so anything that differs between the two probe
transcripts comes from the probe's side. Services on PEER_IP (ports shared with probe.h):

  TCP 7001 echo        echoes until EOF, then closes
  TCP 7002 discard     reads until EOF, then closes
  TCP 7003 close       closes right after accept (FIN)
  TCP 7004 rst         resets right after accept (SO_LINGER {1, 0})
  TCP 7005 stall       never reads, keeps the connection
  TCP 7006 hello-close sends "hello", closes
  TCP 7007 hello-rec   sends "hello", reads until EOF/error, records the outcome
  TCP 7008 blackhole   a listener whose accept queue is full: SYNs are dropped
  TCP 7009 hello-rst   sends "hello", resets 50 ms later
  TCP 7010 (nothing: refused; UDP 7010 too: ICMP port unreachable)
  TCP 7011 collect     reads until EOF, 100 ms later replies "got N", closes
  TCP 7012 recorder    reads until EOF/error, records the outcome
  TCP 7013 whoami      sends "IP PORT\\n" of the client as seen here, then waits for EOF
  TCP 7014 oob         sends "ab", then "c" as urgent data (MSG_OOB), waits for EOF
  TCP 7017 oob-bulk    sends 200000 "x", then "c" as urgent data, then "de", waits for EOF
  TCP 7018 oob-read    reads until EOF taking urgent data out of band (select's except set, then
                       recv MSG_OOB), replies "normal=BYTES urgent=BYTE|none", closes
  UDP 7001 echo        each datagram back to its sender (zero-length ones too)
  UDP 7015 ttl         replies "ttl=N tos=N" from the datagram's IP header
  UDP 7016 sender      source port of the control command "udpsend"
On PEER6_IP (IPv6, when given): TCP 7001 echo, 7003 close, 7013 whoami (7010 refused); UDP 7001
echo, UDP 7015 hoplimit (replies "hlim=N tclass=N" from the datagram's IPv6 header), UDP 7016
sender of "udpsend6".

Control (AF_UNIX stream at CONTROL_PATH, never through the stack under test), one line each:
  connect PORT N MODE TIMEOUT_MS [6] -> "connected K": N sequential connections from PEER to
        SELF:PORT (with 6: from PEER6 to SELF6), each given TIMEOUT_MS; MODE hold (kept until the control connection closes),
        data (send "hi", keep), close (FIN), rst (SO_LINGER {1,0} close), datclose ("hi", FIN),
        rec (read until EOF/error, recorded under PORT for "report PORT").
  report PORT   -> the recorded outcome of the connection from SELF:PORT ("EOF after N bytes",
        "ECONNRESET after N bytes", ...), waiting up to 3 s; "none" if there is none.
  udpsend PORT TEXT -> "sent": one datagram TEXT from PEER:7016 to SELF:PORT.
  udpsend6 PORT TEXT -> "sent": the same from [PEER6]:7016 to [SELF6]:PORT.

Prints "READY" once every service listens; runs until killed (the harness stops it by PID).
"""
import errno
import os
import socket
import struct
import sys
import threading
import time

PEER, SELF, CONTROL = sys.argv[1], sys.argv[2], sys.argv[3]
PEER6, SELF6 = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else (None, None)
LINGER0 = struct.pack("ii", 1, 0)
records = {}            # client port -> outcome text
records_cv = threading.Condition()


def spawn(fn, *args):
    threading.Thread(target=fn, args=args, daemon=True).start()


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def listener(port, backlog=128, addr=PEER):
    s = socket.socket(family(addr), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(backlog)
    return s


def serve(port, handler, addr=PEER):
    s = listener(port, addr=addr)

    def loop():
        while True:
            c, addr = s.accept()
            spawn(handler, c, addr)
    spawn(loop)


def drain(c):
    """Reads until EOF or error; returns the outcome as text."""
    n = 0
    try:
        while True:
            b = c.recv(65536)
            if not b:
                return f"EOF after {n} bytes"
            n += len(b)
    except OSError as e:
        return f"{errno.errorcode.get(e.errno, e.errno)} after {n} bytes"


def record(addr, text):
    with records_cv:
        records[addr[1]] = text
        records_cv.notify_all()


def h_echo(c, _):
    with c:
        try:
            while True:
                b = c.recv(65536)
                if not b:
                    break
                c.sendall(b)
        except OSError:
            pass


def h_discard(c, _):
    with c:
        drain(c)


def h_close(c, _):
    c.close()


def h_rst(c, _):
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
    c.close()


held = []


def h_stall(c, _):
    held.append(c)


def h_hello_close(c, _):
    with c:
        c.sendall(b"hello")


def h_hello_rec(c, addr):
    with c:
        try:
            c.sendall(b"hello")
        except OSError:
            pass
        record(addr, drain(c))


def h_hello_rst(c, _):
    c.sendall(b"hello")
    time.sleep(0.05)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
    c.close()


def h_collect(c, _):
    with c:
        n = 0
        try:
            while True:
                b = c.recv(65536)
                if not b:
                    break
                n += len(b)
            time.sleep(0.1)     # the app looks at its socket right after its FIN
            c.sendall(f"got {n}".encode())
        except OSError:
            pass


def h_recorder(c, addr):
    with c:
        record(addr, drain(c))


def h_whoami(c, addr):
    with c:
        try:
            c.sendall(f"{addr[0]} {addr[1]}\n".encode())
            drain(c)
        except OSError:
            pass


def h_oob_bulk(c, _):
    with c:
        try:
            c.sendall(b"x" * 200000)
            c.send(b"c", socket.MSG_OOB)
            c.sendall(b"de")
            drain(c)
        except OSError:
            pass


def h_oob_read(c, _):
    import select
    with c:
        normal, urgent = b"", None
        try:
            while True:
                r, _, x = select.select([c], [], [c], 3)
                if x and urgent is None:
                    try:
                        urgent = c.recv(1, socket.MSG_OOB)
                    except OSError:
                        pass   # the pointer came before the byte
                if not r and not x:
                    break
                if r:
                    b = c.recv(65536)
                    if not b:
                        break
                    normal += b
            if urgent is None:
                try:
                    urgent = c.recv(1, socket.MSG_OOB | socket.MSG_DONTWAIT)
                except OSError:
                    pass
            c.sendall(b"normal=%s urgent=%s\n" % (normal, urgent if urgent else b"none"))
        except OSError:
            pass


def h_oob(c, _):
    with c:
        try:
            c.sendall(b"ab")
            time.sleep(0.02)
            c.send(b"c", socket.MSG_OOB)
            drain(c)
        except OSError:
            pass


def blackhole(port):
    """A listener with backlog 0 and one connection queued, never accepted: Linux drops
    further SYNs while the accept queue is full, so connects to it stay pending."""
    s = listener(port, backlog=0)
    filler = socket.create_connection((PEER, port))
    held.extend([s, filler])


def udp_echo(port, addr=PEER):
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    s.bind((addr, port))

    def loop():
        while True:
            data, addr = s.recvfrom(70000)
            s.sendto(data, addr)
    spawn(loop)


def udp_ttl(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_RECVTTL", 12), 1)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
    s.bind((PEER, port))

    def loop():
        while True:
            _, anc, _, addr = s.recvmsg(70000, 256)
            ttl = tos = -1
            for level, typ, val in anc:
                if level == socket.IPPROTO_IP and typ == socket.IP_TTL:
                    ttl = struct.unpack("i", val[:4])[0]
                elif level == socket.IPPROTO_IP and typ == socket.IP_TOS:
                    tos = val[0]
            s.sendto(f"ttl={ttl} tos={tos}".encode(), addr)
    spawn(loop)


def udp_hoplimit6(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVTCLASS, 1)
    s.bind((PEER6, port))

    def loop():
        while True:
            _, anc, _, addr = s.recvmsg(70000, 256)
            hlim = tclass = -1
            for level, typ, val in anc:
                if level == socket.IPPROTO_IPV6 and typ == socket.IPV6_HOPLIMIT:
                    hlim = struct.unpack("i", val[:4])[0]
                elif level == socket.IPPROTO_IPV6 and typ == socket.IPV6_TCLASS:
                    tclass = struct.unpack("i", val[:4])[0]
            s.sendto(f"hlim={hlim} tclass={tclass}".encode(), addr)
    spawn(loop)


udp_sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp_sender6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) if PEER6 else None


def peer_connect(port, mode, timeout_ms, keep, six=False):
    c = socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(timeout_ms / 1000.0)
    try:
        if six:
            c.bind((PEER6, 0))
        c.connect((SELF6 if six else SELF, port))
    except OSError:
        c.close()
        return False
    c.settimeout(None)
    if mode in ("data", "datclose"):
        c.sendall(b"hi")
    if mode == "rec":
        def rec():
            with c:
                record((None, port), drain(c))
        spawn(rec)
    elif mode in ("close", "datclose"):
        c.close()
    elif mode == "rst":
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
        c.close()
    else:
        keep.append(c)
    return True


def control_client(c):
    keep = []
    f = c.makefile("rwb", buffering=0)
    try:
        for line in f:
            words = line.decode().split()
            if not words:
                continue
            if words[0] == "connect":
                port, n, mode, tmo = int(words[1]), int(words[2]), words[3], int(words[4])
                six = words[5:6] == ["6"]
                k = sum(peer_connect(port, mode, tmo, keep, six) for _ in range(n))
                f.write(f"connected {k}\n".encode())
            elif words[0] == "report":
                port = int(words[1])
                with records_cv:
                    records_cv.wait_for(lambda: port in records, timeout=3)
                    text = records.pop(port, "none")
                f.write((text + "\n").encode())
            elif words[0] == "udpsend":
                udp_sender.sendto(" ".join(words[2:]).encode(), (SELF, int(words[1])))
                f.write(b"sent\n")
            elif words[0] == "udpsend6":
                udp_sender6.sendto(" ".join(words[2:]).encode(), (SELF6, int(words[1])))
                f.write(b"sent\n")
            else:
                f.write(b"error unknown command\n")
    except OSError:
        pass
    finally:
        for k in keep:
            k.close()
        c.close()


def main():
    udp_sender.bind((PEER, 7016))
    for port, h in ((7001, h_echo), (7002, h_discard), (7003, h_close), (7004, h_rst),
                    (7005, h_stall), (7006, h_hello_close), (7007, h_hello_rec),
                    (7009, h_hello_rst), (7011, h_collect), (7012, h_recorder),
                    (7013, h_whoami), (7014, h_oob), (7017, h_oob_bulk), (7018, h_oob_read)):
        serve(port, h)
    blackhole(7008)
    udp_echo(7001)
    udp_ttl(7015)
    if PEER6:
        udp_sender6.bind((PEER6, 7016))
        for port, h in ((7001, h_echo), (7003, h_close), (7013, h_whoami)):
            serve(port, h, addr=PEER6)
        udp_echo(7001, addr=PEER6)
        udp_hoplimit6(7015)
    if os.path.exists(CONTROL):
        os.unlink(CONTROL)
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ctl.bind(CONTROL)
    ctl.listen(16)
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    while True:
        c, _ = ctl.accept()
        spawn(control_client, c)


if __name__ == "__main__":
    main()
