"""Socket option probe: set/get every option of SOL_SOCKET, IPPROTO_IP, IPPROTO_TCP and
IPPROTO_UDP on real sockets and print what the kernel (or ztapd, under `ztctl run`) answers.

    sockopt_probe.py peer ADDR PORT
        Kernel-side helper: accepts TCP connections and holds them open; a connection whose first
        line is "CONNECT IP PORT" makes it connect to IP:PORT (and hold that one). Prints READY.

    sockopt_probe.py probe --peer IP:PORT --bind IP --ifname NAME [--out FILE]
        Runs every case and writes one JSON object {case: answer}. A case is
        "kind|level|name|step"; kinds are the socket states options are tried on:
          tcp       connected TCP client            tcp-pre   set before connect, read after
          listen    TCP listener                    accepted  a connection accept() returned
          udp       bound, connected UDP socket      udp-pre   set before bind, read after
          inherit   set on a listener, read on a connection it accepted
        Answers: "ok", "E:ERRNO", or the hex bytes getsockopt returned ("" for none).

The same run on a kernel socket and under the intercept must give the same answers except
where the integration test documents why not (Tests/integration/test_sockopts.py).
"""
import argparse
import errno
import json
import socket
import struct
import sys
import threading
import time

LEVELS = {"SOL": socket.SOL_SOCKET, "IP": socket.IPPROTO_IP, "TCP": socket.IPPROTO_TCP, "UDP": socket.IPPROTO_UDP}
NAMES = {"SOL": range(1, 86), "IP": list(range(1, 53)) + [64, 65, 66, 67, 80, 96, 97, 98, 99],
         "TCP": range(1, 48), "UDP": [1, 10, 11, 100, 101, 102, 103, 104, 105]}
INTS = [0, 1, 2, -1, 5, 7, 64, 88, 255, 256, 1000, 65535, 1 << 20, 0x7FFFFFFF]
PRE_INTS = [0, 1, 7, 1000]
# Options whose set changes what a socket can do afterwards in ways the probe cannot undo, or
# that only make sense with pointers into the prober's memory: tried with the int sweep only.
KINDS_TCP = ("tcp", "listen", "accepted")
NOT_BEFORE = {("TCP", n) for n in (19, 20, 21, 22, 29)}   # TCP_REPAIR*: connect would skip the handshake
STRINGS = {
    ("SOL", 25): ["", "lo", "@IF", "@IF\0", "nosuchdev0", "0123456789abcdefXYZ"],   # SO_BINDTODEVICE
    ("TCP", 13): ["cubic", "reno", "bbr", "nosuch", "", "cubic\0junk", "renoX"],      # TCP_CONGESTION
    ("TCP", 31): ["tls", "nosuch", ""],                                                # TCP_ULP
    ("IP", 4): [b"\x01\x01\x01\x00", b"\x01\x00\x00\x00", b""],                         # IP_OPTIONS
}
PAIRS = [(0, 0), (1, 0), (1, 5), (0, 5), (1, -1), (1, 100000), (7, 0), (1, 255)]


def ename(e):
    return "E:" + errno.errorcode.get(e, str(e))


def getopt(s, level, name, size):
    try:
        return s.getsockopt(level, name, size).hex()
    except OSError as e:
        return ename(e.errno)


def setopt(s, level, name, value):
    try:
        if isinstance(value, str):
            value = value.encode()
        if isinstance(value, int):
            s.setsockopt(level, name, struct.pack("<i", value))
        else:
            s.setsockopt(level, name, value)
        return "ok"
    except OSError as e:
        return ename(e.errno)


class Prober:
    def __init__(self, peer, bind, ifname):
        self.peer = peer
        self.bind = bind
        self.ifname = ifname
        self.out = {}

    # --- sockets in each state ---------------------------------------------------------------

    def connected(self, pre=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        r = pre(s) if pre else None
        s.settimeout(3)
        try:
            s.connect(self.peer)
        except OSError as e:
            s.close()
            return None, r, ename(e.errno or errno.ETIMEDOUT)
        s.settimeout(None)
        return s, r, None

    def listener(self, pre=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        r = pre(s) if pre else None
        try:
            s.bind((self.bind, 0))
            s.listen(16)
        except OSError as e:
            s.close()
            return None, r, ename(e.errno)
        return s, r, None

    def accepted(self, pre=None):
        l, r, err = self.listener(pre)
        if err:
            return None, None, err
        ctl = socket.create_connection(self.peer, timeout=5)
        ctl.sendall(f"CONNECT {self.bind} {l.getsockname()[1]}\n".encode())
        l.settimeout(3)   # TCP_DEFER_ACCEPT of 7 s or more times out here, on both sides
        try:
            a, _ = l.accept()
        except OSError as e:
            return None, r, ename(e.errno or errno.ETIMEDOUT)
        finally:
            l.close()
            ctl.close()
        a.settimeout(None)
        return a, r, None

    def udp(self, pre=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        r = pre(s) if pre else None
        try:
            s.bind((self.bind, 0))
            s.connect((self.peer[0], 9))
        except OSError as e:
            s.close()
            return None, r, ename(e.errno)
        return s, r, None

    def make(self, kind, pre=None):
        if kind == "tcp":
            return self.connected(pre)
        if kind == "listen":
            return self.listener(pre)
        if kind == "accepted":
            return self.accepted(pre)
        return self.udp(pre)

    # --- cases ---------------------------------------------------------------------------------

    def values(self, lv, name):
        vals = [("i%d" % v, v) for v in INTS]
        vals += [("b1", b"\x05"), ("b2", b"\x05\x00"), ("b3", b"\x05\x00\x00")]
        vals += [("p%d,%d" % p, struct.pack("<ii", *p)) for p in PAIRS]
        vals += [("q%d" % v, struct.pack("<Q", v)) for v in (0, 1, 1 << 40, (1 << 64) - 1)]
        vals.append(("z16", bytes(16)))
        for v in STRINGS.get((lv, name), []):
            if isinstance(v, str):
                v = v.replace("@IF", self.ifname)
            vals.append(("s" + repr(v), v))
        return vals

    def record(self, key, value):
        self.out[key] = value

    def post_cases(self, kind, lv, name):
        level = LEVELS[lv]
        s, _, err = self.make(kind)
        if err:
            self.record(f"{kind}|{lv}|{name}|socket", err)
            return
        try:
            for size in (512, 8, 4, 2, 1):
                self.record(f"{kind}|{lv}|{name}|get{size}", getopt(s, level, name, size))
        finally:
            s.close()
        for tag, v in self.values(lv, name):
            s, _, err = self.make(kind)
            if err:
                self.record(f"{kind}|{lv}|{name}|{tag}|socket", err)
                continue
            try:
                self.record(f"{kind}|{lv}|{name}|set:{tag}", setopt(s, level, name, v))
                self.record(f"{kind}|{lv}|{name}|set:{tag}|get", getopt(s, level, name, 512))
            finally:
                s.close()

    def pre_cases(self, kind, lv, name):
        level = LEVELS[lv]
        base = "accepted" if kind == "inherit" else kind[:-4]
        vals = [("i%d" % v, v) for v in PRE_INTS] + [(t, v) for t, v in self.values(lv, name) if t.startswith("s")]
        if (lv, name) == ("SOL", 13):
            vals += [("p1,0", struct.pack("<ii", 1, 0)), ("p1,5", struct.pack("<ii", 1, 5))]
        for tag, v in vals:
            def pre(sock, v=v):
                return setopt(sock, level, name, v)
            s, r, err = self.make(base, pre)
            self.record(f"{kind}|{lv}|{name}|set:{tag}", r)
            if err:
                self.record(f"{kind}|{lv}|{name}|set:{tag}|socket", err)
                continue
            try:
                self.record(f"{kind}|{lv}|{name}|set:{tag}|get", getopt(s, level, name, 512))
            finally:
                s.close()

    def run(self, only=None):
        for lv, names in NAMES.items():
            for name in names:
                if only and (lv, name) not in only:
                    continue
                kinds = ["tcp", "listen", "accepted", "udp"]
                for kind in kinds:
                    self.post_cases(kind, lv, name)
                if (lv, name) not in NOT_BEFORE:
                    for kind in ("tcp-pre", "udp-pre", "inherit"):
                        if kind == "inherit" and lv == "UDP":
                            continue
                        self.pre_cases(kind, lv, name)
        return self.out


# --- the kernel-side peer --------------------------------------------------------------------

def peer(addr, port):
    held = []
    lock = threading.Lock()

    def handle(c):
        c.settimeout(2)
        try:
            line = b""
            while not line.endswith(b"\n") and len(line) < 100:
                chunk = c.recv(100)
                if not chunk:
                    break
                line += chunk
        except OSError:
            line = b""
        if line.startswith(b"CONNECT "):
            _, ip, p = line.decode().split()
            try:
                back = socket.create_connection((ip, int(p)), timeout=5)
                with lock:
                    held.append(back)
            except OSError:
                pass
            c.close()
            return
        c.settimeout(None)
        try:
            while c.recv(65536):
                pass
        except OSError:
            pass
        c.close()

    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(1024)
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()
        with lock:   # connections made for "accepted" cases are closed by the prober; drop ours
            if len(held) > 64:
                for b in held[:32]:
                    b.close()
                del held[:32]


def capeff():
    """The prober's effective capabilities (CAP_NET_ADMIN, CAP_NET_RAW decide some answers)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "peer":
        peer(sys.argv[2], int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["probe"])
    ap.add_argument("--peer", required=True)
    ap.add_argument("--bind", required=True)
    ap.add_argument("--ifname", required=True)
    ap.add_argument("--only", default="", help="comma-separated LEVEL:NAME, e.g. TCP:3,SOL:12")
    ap.add_argument("--out")
    a = ap.parse_args()
    ip, port = a.peer.rsplit(":", 1)
    only = None
    if a.only:
        only = {(x.split(":")[0], int(x.split(":")[1])) for x in a.only.split(",")}
    t0 = time.monotonic()
    res = Prober((ip, int(port)), a.bind, a.ifname).run(only)
    res["_meta"] = {"cases": len(res), "seconds": round(time.monotonic() - t0, 1),
                    "ifindex": socket.if_nametoindex(a.ifname), "capeff": capeff()}
    text = json.dumps(res, indent=0, sort_keys=True)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
