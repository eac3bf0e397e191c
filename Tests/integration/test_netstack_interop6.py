"""NetStack over IPv6 against the Linux kernel's stack, through the TAP (issue 10): the IPv6 twins
of test_netstack_interop.py, and probes of Neighbor Discovery and the extension-header rules
written by hand (AF_PACKET in the test's namespace; scapy is not installed).

The kernel side is fd70::1 (and 10.71.0.1); NetStack is fd70::2 (and 10.71.0.2) with the
echo/discard/chargen services. Traffic never leaves the test's namespace.
"""

import subprocess

import pytest

from conftest import py, stack_addresses, wait_ipv6_ready, wait_until

STACK6 = "fd70::2"
KERNEL6 = "fd70::1"
NET = """[Network]
Interface=ztnet6
MTU=2800
Address=10.71.0.2/24 fd70::2/64
KernelAddress=10.71.0.1/24 fd70::1/64
Services=echo discard chargen
"""


@pytest.fixture
def net(daemon_factory, netns):
    d = daemon_factory(networks={"n": NET}).start()
    wait_ipv6_ready(d, netns, "ztnet6")
    return d, netns


def stack_mac(d, ns):
    """The stack's MAC, as the kernel side learnt it (ztctl shows the TAP's own MAC)."""
    ns.exec("ping", "-c", "1", "-W", "2", "10.71.0.2")
    neigh = ns.ip_json("-4", "neigh", "show", "dev", "ztnet6")
    return [n["lladdr"] for n in neigh if n["dst"] == "10.71.0.2"][0]


def echo_both_ways6(ns, size, timeout):
    out = py(ns, f"""
        import hashlib, os, socket, threading, time
        size = {size}
        data = os.urandom(min(size, 1 << 20))
        s = socket.create_connection(("{STACK6}", 7), timeout={timeout})
        assert s.family == socket.AF_INET6
        sent = hashlib.sha256()
        t0 = time.time()
        def writer():
            left = size
            while left:
                chunk = data[:min(left, len(data))]
                s.sendall(chunk)
                sent.update(chunk)
                left -= len(chunk)
            s.shutdown(socket.SHUT_WR)
        t = threading.Thread(target=writer)
        t.start()
        got = hashlib.sha256()
        n = 0
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            got.update(b)
            n += len(b)
        t.join()
        s.close()
        dt = time.time() - t0
        print(n, sent.hexdigest() == got.hexdigest(), "%.1f" % (n * 8 / dt / 1e6))
    """, timeout=600)
    n, same, mbps = out.split()
    return int(n), same == "True", mbps


def test_addresses_and_link_local(net):
    d, ns = net
    addrs = stack_addresses(d)
    assert "fd70::2/64" in addrs and "10.71.0.2/24" in addrs, addrs
    ll = [a for a in addrs if a.startswith("fe80::")]
    assert len(ll) == 1, addrs
    # The EUI-64 link-local address of the stack's MAC (RFC 4291 appendix A).
    mac = [int(x, 16) for x in stack_mac(d, ns).split(":")]
    iid = "%x:%x:%x:%x" % ((mac[0] ^ 2) << 8 | mac[1], mac[2] << 8 | 0xff, 0xfe << 8 | mac[3], mac[4] << 8 | mac[5])
    assert ll[0] == f"fe80::{iid}/64", (ll, iid)


def test_ping6_plain_fragmented_and_link_local(net):
    d, ns = net
    r = ns.exec("ping", "-6", "-c", "5", "-i", "0.2", "-W", "2", STACK6)
    assert " 0% packet loss" in r.stdout, r.stdout
    # 4000 bytes over MTU 2800: the kernel fragments, NetStack reassembles and fragments its
    # answer, the kernel reassembles.
    r = ns.exec("ping", "-6", "-c", "2", "-s", "4000", "-W", "2", STACK6)
    assert " 0% packet loss" in r.stdout and "4008 bytes from" in r.stdout, r.stdout
    ll = [a for a in stack_addresses(d) if a.startswith("fe80::")][0].split("/")[0]
    r = ns.exec("ping", "-6", "-c", "2", "-W", "2", f"{ll}%ztnet6")
    assert " 0% packet loss" in r.stdout, r.stdout
    # The kernel learnt the stack through Neighbor Discovery.
    neigh = ns.ip_json("-6", "neigh", "show", "dev", "ztnet6")
    assert any(n["dst"] == STACK6 and n.get("lladdr") == stack_mac(d, ns) for n in neigh), neigh


def test_udp6_echo_and_port_unreachable(net):
    d, ns = net
    out = py(ns, f"""
        import socket
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.settimeout(3)
        for size in (1, 100, 1400, 2700, 6000):
            s.sendto(bytes(range(256)) * (size // 256) + b"x" * (size % 256), ("{STACK6}", 7))
            data, peer = s.recvfrom(65536)
            assert len(data) == size and peer[:2] == ("{STACK6}", 7), (len(data), peer)
        c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        c.connect(("{STACK6}", 4444))
        c.settimeout(3)
        c.send(b"hello")
        try:
            c.recv(100)
            print("no error")
        except ConnectionRefusedError:
            print("ok refused")
    """)
    assert out.strip() == "ok refused"


@pytest.mark.parametrize("size", [1, 1 << 20, 200 << 20])
def test_tcp6_echo_sha256(net, size):
    d, ns = net
    n, same, mbps = echo_both_ways6(ns, size, timeout=60)
    print(f"echo {size} bytes over IPv6: {mbps} Mbit/s")
    assert n == size and same


def test_tcp6_mss_and_services(net):
    d, ns = net
    out = py(ns, f"""
        import socket
        s = socket.create_connection(("{STACK6}", 19), timeout=10)
        mss = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
        got = b""
        while len(got) < 74 * 3:
            got += s.recv(4096)
        s.close()
        line = bytes(range(32, 127))
        expect = b"".join((line * 2)[i:i + 72] + b"\\r\\n" for i in range(3))
        try:
            socket.create_connection(("{STACK6}", 5555), timeout=5)
            refused = False
        except ConnectionRefusedError:
            refused = True
        print(mss, got[:74 * 3] == expect, refused)
    """)
    mss, pattern_ok, refused = out.split()
    # MTU 2800 - 40 (IPv6) - 20 (TCP) - 12 (timestamps): what the stack advertised, less options.
    assert int(mss) in (2728, 2740) and pattern_ok == "True" and refused == "True", out


@pytest.mark.parametrize("loss", [1, 5, 10])
def test_transfer6_under_random_loss(net, loss):
    d, ns = net
    rules = f"""
table inet ztloss6 {{
  chain in {{ type filter hook input priority 0; iifname "ztnet6" meta l4proto tcp numgen random mod 100 < {loss} drop; }}
  chain out {{ type filter hook output priority 0; oifname "ztnet6" meta l4proto tcp numgen random mod 100 < {loss} drop; }}
}}
"""
    ns.exec("nft", "-f", "-", input=rules)
    size = 20 << 20
    n, same, mbps = echo_both_ways6(ns, size, timeout=120)
    print(f"echo {size >> 20} MiB each way over IPv6 at {loss}% loss per direction: {mbps} Mbit/s goodput")
    assert n == size and same


def test_dual_stack_services_and_connections_listing(net):
    """Both families reach the same services (listening on ::), and ztctl connections shows
    each connection with its own family's addresses."""
    d, ns = net
    p = ns.popen("python3", "-c", f"""
import socket, sys, time
a = socket.create_connection(("10.71.0.2", 7), timeout=5)
b = socket.create_connection(("{STACK6}", 7), timeout=5)
a.sendall(b"four"); b.sendall(b"six")
print(a.recv(10).decode(), b.recv(10).decode(), a.getsockname()[1], b.getsockname()[1], flush=True)
sys.stdin.read()
""", stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        four, six, pa, pb = p.stdout.readline().split()
        assert (four, six) == ("four", "six")
        r, _ = d.ctl_json("connections", "n")
        pairs = {(c["local"], c["remote"]) for c in r["connections"] if c["state"] == "ESTABLISHED"}
        assert ("10.71.0.2:7", f"10.71.0.1:{pa}") in pairs, pairs
        assert (f"[{STACK6}]:7", f"[{KERNEL6}]:{pb}") in pairs, pairs
    finally:
        p.communicate(timeout=10)


# --- Hand-made frames (AF_PACKET): Neighbor Discovery and extension-header rules ----------

PROBE = r'''
import os, select, socket, struct, time
IF = "ztnet6"
STACK_MAC = bytes.fromhex("%(mac)s".replace(":", ""))
STACK = socket.inet_pton(socket.AF_INET6, "%(stack)s")
KERNEL = socket.inet_pton(socket.AF_INET6, "%(kernel)s")
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86DD))
s.bind((IF, 0))
MY_MAC = s.getsockname()[4][:6]

def csum(b):
    if len(b) %% 2: b += b"\0"
    t = sum(struct.unpack("!%%dH" %% (len(b) // 2), b))
    while t >> 16: t = (t & 0xFFFF) + (t >> 16)
    return ~t & 0xFFFF

def icmp6(t, code, rest, body, src=KERNEL, dst=STACK):
    m = struct.pack("!BBHI", t, code, 0, rest) + body
    c = csum(src + dst + struct.pack("!IxxxB", len(m), 58) + m)
    return m[:2] + struct.pack("!H", c) + m[4:]

def ipv6(nh, payload, src=KERNEL, dst=STACK, hlim=64):
    return struct.pack("!IHBB", 0x60000000, len(payload), nh, hlim) + src + dst + payload

def frame(packet, dst=STACK_MAC):
    return dst + MY_MAC + b"\x86\xdd" + packet

def sol(a): return bytes.fromhex("ff0200000000000000000001ff") + a[13:]
def mmac(a): return b"\x33\x33" + a[12:]

def exchange(f, want, wait=1.0):
    """Sends frame f, returns the ICMPv6 messages (type, code, rest, body, src, dst, hlim, ethdst)
    the stack sent back within `wait` seconds that `want` accepts."""
    while select.select([s], [], [], 0)[0]: s.recv(70000)
    s.send(f)
    out, end = [], time.time() + wait
    while time.time() < end:
        if not select.select([s], [], [], max(0, end - time.time()))[0]: break
        r, addr = s.recvfrom(70000)
        if addr[2] == socket.PACKET_OUTGOING or r[6:12] != STACK_MAC or r[20] != 58: continue
        m = r[54:]
        item = (m[0], m[1], struct.unpack("!I", m[4:8])[0], m[8:], r[22:38], r[38:54], r[21], r[0:6])
        if want(item): out.append(item)
    return out

ECHO = icmp6(128, 0, 0x00770001, b"probe")
'''


def probe(ns, d, body):
    code = PROBE % {"mac": stack_mac(d, ns), "stack": STACK6, "kernel": KERNEL6} + body
    return ns.exec("python3", "-c", code, timeout=60).stdout.strip()


def test_ndp_rules(net):
    d, ns = net
    out = probe(ns, d, r'''
na = lambda m: m[0] == 136
ns_ = lambda hlim, src=KERNEL, opt=True, tgt=STACK: frame(ipv6(58, icmp6(135, 0, 0, tgt + (bytes([1, 1]) + MY_MAC if opt else b""),
                                       src=src, dst=sol(tgt)), src=src, dst=sol(tgt), hlim=hlim), dst=mmac(sol(tgt)))
res = []
# A solicitation that was forwarded (hop limit 254) is ignored.
res.append(len(exchange(ns_(254), na)))
# A proper one: solicited + override, target link-layer address = the stack's MAC, hop limit 255,
# to the asker.
r = exchange(ns_(255), na)
ok = len(r) == 1 and r[0][2] == 0x60000000 and r[0][3][:16] == STACK and r[0][3][16:24] == bytes([2, 1]) + STACK_MAC \
     and r[0][6] == 255 and r[0][5] == KERNEL and r[0][7] == MY_MAC
res.append(ok)
# A DAD probe (from ::, no option) for the stack's address: defended with an advertisement to
# all-nodes (override, not solicited).
r = exchange(ns_(255, src=bytes(16), opt=False), na)
res.append(len(r) == 1 and r[0][5] == bytes.fromhex("ff020000000000000000000000000001") and r[0][2] == 0x20000000)
# A DAD probe carrying a source link-layer address is invalid: ignored.
res.append(len(exchange(ns_(255, src=bytes(16), opt=True), na)))
# A solicitation for somebody else's address: nothing.
res.append(len(exchange(ns_(255, tgt=socket.inet_pton(socket.AF_INET6, "fd70::99")), na)))
print(res)
''')
    assert out == "[0, True, True, 0, 0]", out


def test_extension_header_rules(net):
    d, ns = net
    out = probe(ns, d, r'''
pp = lambda m: m[0] == 4
echo_reply = lambda m: m[0] == 129
def first(r): return (r[0][1], r[0][2]) if r else None
res = {}
# Unknown Destination Option, action 10: parameter problem code 2 at the option (40 + 2).
res["opt10"] = first(exchange(frame(ipv6(60, bytes([58, 0, 0x9E, 4, 0, 0, 0, 0]) + ECHO)), pp))
# Action 01: silently dropped. Action 00: skipped, the echo is answered.
res["opt01"] = len(exchange(frame(ipv6(60, bytes([58, 0, 0x5E, 4, 0, 0, 0, 0]) + ECHO)), lambda m: True))
res["opt00"] = len(exchange(frame(ipv6(60, bytes([58, 0, 0x1E, 4, 0, 0, 0, 0]) + ECHO)), echo_reply))
# Action 11 towards all-nodes: no error (multicast destination).
allnodes = bytes.fromhex("ff020000000000000000000000000001")
m = icmp6(128, 0, 1, b"m", dst=allnodes)
res["opt11mc"] = len(exchange(frame(ipv6(60, bytes([58, 0, 0xDE, 4, 0, 0, 0, 0]) + m, dst=allnodes), dst=mmac(allnodes)), pp))
# Hop-by-Hop after another header: code 1 pointing at the field that named it (offset 40).
res["hbh"] = first(exchange(frame(ipv6(60, bytes([0, 0, 1, 4, 0, 0, 0, 0]) + bytes([58, 0, 1, 4, 0, 0, 0, 0]) + ECHO)), pp))
# Routing type 0 with segments left (RFC 5095): code 0 at the routing type (40 + 2).
res["rh0"] = first(exchange(frame(ipv6(43, bytes([58, 2, 0, 1, 0, 0, 0, 0]) + KERNEL + ECHO)), pp))
# Routing header with segments left 0: ignored, the echo answered.
res["rh0done"] = len(exchange(frame(ipv6(43, bytes([58, 2, 0, 0, 0, 0, 0, 0]) + KERNEL + ECHO)), echo_reply))
# Unknown next header: code 1 at offset 6.
res["nh"] = first(exchange(frame(ipv6(253, bytes(8))), pp))
# Overlapping fragments (RFC 5722): the datagram is dropped, no answer.
big = icmp6(128, 0, 0x00770002, bytes(2000))
f1 = struct.pack("!BBHI", 58, 0, 0 | 1, 99) + big[:1024]
f2 = struct.pack("!BBHI", 58, 0, 1016 | 0, 99) + big[1016:]
exchange(frame(ipv6(44, f1)), lambda m: False, wait=0.1)
res["overlap"] = len(exchange(frame(ipv6(44, f2)), echo_reply))
# The same in order without overlap: answered.
g1 = struct.pack("!BBHI", 58, 0, 0 | 1, 100) + big[:1024]
g2 = struct.pack("!BBHI", 58, 0, 1024, 100) + big[1024:]
exchange(frame(ipv6(44, g1)), lambda m: False, wait=0.1)
res["frag"] = len(exchange(frame(ipv6(44, g2)), echo_reply))
print(sorted(res.items()))
''')
    want = sorted({"opt10": (2, 42), "opt01": 0, "opt00": 1, "opt11mc": 0, "hbh": (1, 40), "rh0": (0, 42),
                   "rh0done": 1, "nh": (1, 6), "overlap": 0, "frag": 1}.items())
    assert out == str(want), out


def test_stack_defends_its_address_and_detects_duplicates(net):
    """DAD both ways against the kernel: an address the kernel adds that the stack holds fails
    the kernel's DAD (the stack answers its probe); an address the stack gets that the kernel
    holds is found duplicate by the stack's DAD and never used."""
    d, ns = net
    ns.ip("-6", "addr", "add", f"{STACK6}/128", "dev", "ztnet6")
    def dadfailed():
        a = ns.ip_json("-6", "addr", "show", "dev", "ztnet6")
        return any(x["local"] == STACK6 and x.get("dadfailed") for x in a[0]["addr_info"])
    assert wait_until(dadfailed, timeout=10), ns.ip("-6", "addr", "show", "dev", "ztnet6").stdout
    ns.ip("-6", "addr", "del", f"{STACK6}/128", "dev", "ztnet6")
    ns.ip("-6", "addr", "add", "fd70::5/64", "dev", "ztnet6", "nodad")
    d.ctl("set", "n", "Address=10.71.0.2/24 fd70::2/64 fd70::5/64")
    assert wait_until(lambda: "fd70::5/64 duplicate" in stack_addresses(d), timeout=10), stack_addresses(d)
    assert "fd70::2/64" in stack_addresses(d)
    r = ns.exec("ping", "-6", "-c", "1", "-W", "2", STACK6)
    assert " 0% packet loss" in r.stdout
