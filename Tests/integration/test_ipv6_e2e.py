"""IPv6 and dual stack end to end through the intercept (issue 10, "How it is checked").

Each test: a namespace of its own, ztapd in it with network n holding an IPv4 and an IPv6 address
on each side (NetStack 10.76.0.2 and fd76::2, the TAP's kernel side 10.76.0.1 and fd76::1),
programs under `ztctl run n -- ...`, their peers on the namespace's own kernel stack. Every test
checks the addresses each side saw: the stack's IPv6 address is the source the kernel peer sees,
the kernel's IPv6 (or v4-mapped IPv4) address is the peer the app sees. Traffic never leaves the
namespace; processes are stopped by PID.
"""
import ast
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import wait_ipv6_ready, wait_until
from intercept_env import Env, intercept_built, make_file, sha256, wait_connectable  # noqa: F401
from test_seccomp_e2e import GOPROBE, build_goprobe

STACK4, KERNEL4 = "10.76.0.2", "10.76.0.1"
STACK6, KERNEL6 = "fd76::2", "fd76::1"
IFNAME = "zte2e6"
NET = f"""[Network]
Interface={IFNAME}
MTU=2800
Address={STACK4}/24 {STACK6}/64
KernelAddress={KERNEL4}/24 {KERNEL6}/64
"""
BIND_ANY = ("--bind-any",)


@pytest.fixture
def env(daemon_factory, netns, tmpdir_world):
    d = daemon_factory(networks={"n": NET}).start()
    wait_ipv6_ready(d, netns, IFNAME)
    e = Env(d, netns, tmpdir_world)
    yield e
    e.stop_all()


def url(host, port, path):
    return f"http://[{host}]:{port}{path}" if ":" in host else f"http://{host}:{port}{path}"


def wait_kernel_listener(ns, addr, port, timeout=15):
    """A listener on the namespace's kernel stack (ss sees it; the stack's do not show there)."""
    want = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"

    def listening():
        return want in ns.exec("ss", "-Hltn", check=False).stdout
    assert wait_until(listening, timeout=timeout), f"nothing listens on {want}"


def kernel_listeners(ns, port):
    """The kernel's TCP listeners on `port` in the test's namespace."""
    return [l for l in ns.exec("ss", "-Hltn", check=False).stdout.splitlines() if re.search(rf":{port}\s", l)]


def http_server(env, addr, directory, port):
    """python3 -m http.server on the kernel side; returns the path of its log (client addresses)."""
    log = os.path.join(env.tmp, f"http-{port}.log")
    env.spawn(sys.executable, "-m", "http.server", "--bind", addr, "--directory", directory, str(port),
              stderr=open(log, "wb"))
    wait_kernel_listener(env.ns, addr, port)
    return log


def clients_of(log):
    with open(log) as f:
        return re.findall(r"^(\S+) - - .*\"GET ", f.read(), re.M)


# --- TCP clients under the intercept ------------------------------------------------------------

def test_curl6_downloads_from_kernel_http_server(env):
    src = os.path.join(env.tmp, "www")
    os.makedirs(src)
    want = make_file(os.path.join(src, "big.bin"), 20)
    log = http_server(env, KERNEL6, src, 8000)
    out = os.path.join(env.tmp, "out.bin")
    r = env.run("curl", "-6", "-g", "-sS", "--fail", "-o", out, "-w", "%{local_ip} %{remote_ip}",
                url(KERNEL6, 8000, "/big.bin"))
    assert sha256(out) == want
    # curl's getsockname/getpeername on its AF_INET6 socket, and the source the server saw.
    assert r.stdout.split() == [STACK6, KERNEL6], r.stdout
    assert clients_of(log) == [STACK6], clients_of(log)


def test_go_client6_in_seccomp_mode(env):
    """A Go program (raw system calls, the seccomp supervisor) fetching over IPv6."""
    build_goprobe()
    src = os.path.join(env.tmp, "www")
    os.makedirs(src)
    want = make_file(os.path.join(src, "big.bin"), 10)
    log = http_server(env, KERNEL6, src, 8000)
    out = os.path.join(env.tmp, "out.bin")
    r = env.run(GOPROBE, "get", url(KERNEL6, 8000, "/big.bin"), out)
    assert r.stdout.strip() == f"status=200 bytes={10 << 20}", r.stdout
    assert sha256(out) == want
    assert clients_of(log) == [STACK6], clients_of(log)


# --- TCP servers under the intercept ------------------------------------------------------------

def test_python_http_server6_under_intercept(env):
    src = os.path.join(env.tmp, "www")
    os.makedirs(src)
    want = make_file(os.path.join(src, "f.bin"), 20)
    log = os.path.join(env.tmp, "app-http.log")
    env.spawn(*env.ztrun(sys.executable, "-m", "http.server", "--bind", STACK6, "--directory", src, "8080"),
              stderr=open(log, "wb"))
    wait_connectable(STACK6, 8080, env.ns)
    out = os.path.join(env.tmp, "got.bin")
    r = env.ns.exec("curl", "-6", "-g", "-sS", "--fail", "-o", out, "-w", "%{local_ip} %{remote_ip}",
                    url(STACK6, 8080, "/f.bin"), timeout=120)
    assert sha256(out) == want
    assert r.stdout.split() == [KERNEL6, STACK6], r.stdout
    # The address the app's accept() returned: the kernel's IPv6 address.
    assert clients_of(log) == [KERNEL6], clients_of(log)
    # The listener is the stack's, not the kernel's.
    assert kernel_listeners(env.ns, 8080) == []
    rows = env.connections()
    assert any(c["proto"] == "tcp" and c["local"] == f"[{STACK6}]:8080" and c["state"] == "LISTEN" for c in rows), rows


NODE_SERVER = textwrap.dedent("""
    const http = require("http");
    const server = http.createServer((req, res) => {
        const s = req.socket;
        res.end(JSON.stringify({remoteAddress: s.remoteAddress, remoteFamily: s.remoteFamily,
                                localAddress: s.localAddress, localPort: s.localPort}));
    });
    server.listen(+process.argv[2], () => console.log(JSON.stringify(server.address())));
    """)


def test_node_default_listen_reached_over_both_families(env):
    """The issue's own example: node's `server.listen(port)` opens one AF_INET6 socket on [::]
    (IPV6_V6ONLY 0); under --bind-any it listens on the network and takes both families."""
    script = os.path.join(env.tmp, "server.js")
    with open(script, "w") as f:
        f.write(NODE_SERVER)
    p = env.spawn(*env.ztrun("node", script, "8095", opts=BIND_ANY), stdout=subprocess.PIPE)
    line = p.stdout.readline()
    assert json.loads(line) == {"address": "::", "family": "IPv6", "port": 8095}, line
    assert kernel_listeners(env.ns, 8095) == [], "node's listener landed on the kernel"
    seen = {}
    for family, stack in (("-4", STACK4), ("-6", STACK6)):
        wait_connectable(stack, 8095, env.ns)
        r = env.ns.exec("curl", family, "-g", "-sS", "--fail", url(stack, 8095, "/"), timeout=60)
        seen[family] = json.loads(r.stdout)
    assert seen["-4"]["remoteAddress"] == f"::ffff:{KERNEL4}" and seen["-4"]["remoteFamily"] == "IPv6", seen
    assert seen["-4"]["localAddress"] == f"::ffff:{STACK4}" and seen["-4"]["localPort"] == 8095, seen
    assert seen["-6"]["remoteAddress"] == KERNEL6 and seen["-6"]["remoteFamily"] == "IPv6", seen
    assert seen["-6"]["localAddress"] == STACK6 and seen["-6"]["localPort"] == 8095, seen
    rows = [c for c in env.connections() if c["state"] == "LISTEN" and c["local"].endswith(":8095")]
    assert len(rows) == 1 and rows[0]["local"] == "[::]:8095", rows


def test_go_default_listen_reached_over_both_families(env):
    """Go's `net.Listen("tcp", ":port")` is the same dual-stack socket, made through raw system
    calls: the seccomp supervisor serves it."""
    build_goprobe()
    www = os.path.join(env.tmp, "www")
    os.makedirs(www)
    want = make_file(os.path.join(www, "big.bin"), 10)
    env.spawn(*env.ztrun(GOPROBE, "serve", ":8081", www, opts=BIND_ANY), ready=True)
    assert kernel_listeners(env.ns, 8081) == [], "Go's listener landed on the kernel"
    for family, stack, kernel in (("-4", STACK4, f"{KERNEL4}:"), ("-6", STACK6, f"[{KERNEL6}]:")):
        wait_connectable(stack, 8081, env.ns)
        seen = env.ns.exec("curl", family, "-g", "-sS", "--fail", url(stack, 8081, "/peer"), timeout=60).stdout
        peer, local = seen.split()
        # Go shows a v4-mapped peer as plain IPv4.
        assert peer.startswith(kernel) and local == "[::]:8081", (family, seen)
        out = os.path.join(env.tmp, f"got{family}.bin")
        env.ns.exec("curl", family, "-g", "-sS", "--fail", "-o", out, url(stack, 8081, "/big.bin"), timeout=120)
        assert sha256(out) == want, family


def test_v6only_listener_refuses_ipv4(env):
    """IPV6_V6ONLY=1 on a [::] listener: IPv6 clients only, like Linux; the option reads back."""
    code = textwrap.dedent("""
        import socket, sys
        l = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        default = l.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        l.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind(("::", 8096))
        l.listen(8)
        print("READY", flush=True)
        print("V6ONLY", default, l.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY), flush=True)
        c, a = l.accept()
        print("ACCEPTED", a, c.getsockname(), flush=True)
        c.close()
        sys.stdin.read()
        """)
    p = env.spawn(*env.ztrun(sys.executable, "-c", code, opts=BIND_ANY), stdin=subprocess.PIPE, stdout=subprocess.PIPE, ready=True)
    assert p.stdout.readline().split() == [b"V6ONLY", b"0", b"1"]
    assert kernel_listeners(env.ns, 8096) == []
    probe = textwrap.dedent(f"""
        import socket
        try:
            socket.create_connection(("{STACK4}", 8096), timeout=5).close()
            print("v4 connected")
        except ConnectionRefusedError:
            print("v4 refused")
        s = socket.create_connection(("{STACK6}", 8096), timeout=5)
        print("v6 connected", s.getsockname()[0])
        s.close()
        """)
    r = env.ns.exec(sys.executable, "-c", probe, timeout=60)
    assert r.stdout.split("\n")[:2] == ["v4 refused", f"v6 connected {KERNEL6}"], r.stdout
    accepted = p.stdout.readline().decode()
    m = re.fullmatch(rf"ACCEPTED \('{re.escape(KERNEL6)}', (\d+), 0, 0\) \('{re.escape(STACK6)}', 8096, 0, 0\)\n", accepted)
    assert m, accepted
    p.stdin.close()


# --- UDP over IPv6 ----------------------------------------------------------------------------

# The kernel side's UDP echo that tells the sender which source address it saw (both families:
# one socket per address).
UDP_SEEN = textwrap.dedent(f"""
    import selectors, socket
    sel = selectors.DefaultSelector()
    for fam, addr in ((socket.AF_INET, "{KERNEL4}"), (socket.AF_INET6, "{KERNEL6}")):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.bind((addr, 9999))
        sel.register(s, selectors.EVENT_READ)
    print("READY", flush=True)
    while True:
        for key, _ in sel.select():
            d, a = key.fileobj.recvfrom(65536)
            key.fileobj.sendto(d + f" seen-from {{a[0]}} {{a[1]}}".encode(), a)
    """)


def test_udp6_client_under_intercept(env):
    env.spawn(sys.executable, "-c", UDP_SEEN, ready=True)
    code = textwrap.dedent(f"""
        import socket
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.settimeout(10)
        # Unconnected: sendto/recvfrom, the reply's address as a full sockaddr_in6.
        s.sendto(b"one", ("{KERNEL6}", 9999))
        d, a = s.recvfrom(65536)
        print("UNCONNECTED", d.decode(), "|", a, "|", s.getsockname())
        # 6000 bytes over MTU 2800: fragmented both ways.
        s.sendto(b"z" * 6000, ("{KERNEL6}", 9999))
        d, a = s.recvfrom(65536)
        print("BIG", d[:6000] == b"z" * 6000, d[6000:].decode())
        # The same dual-stack socket to a v4-mapped address: over the stack's IPv4.
        s.sendto(b"mapped", ("::ffff:{KERNEL4}", 9999))
        d, a = s.recvfrom(65536)
        print("MAPPED", d.decode(), "|", a)
        # Connected: send/recv, names.
        c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        c.settimeout(10)
        c.connect(("{KERNEL6}", 9999))
        c.send(b"two")
        print("CONNECTED", c.recv(65536).decode(), "|", c.getsockname(), "|", c.getpeername())
        """)
    lines = dict(l.split(" ", 1) for l in env.run(sys.executable, "-c", code, timeout=60).stdout.splitlines())
    # The implicit bind of an unconnected socket is to the wildcard, as on Linux.
    m = re.fullmatch(rf"one seen-from {re.escape(STACK6)} (\d+) \| \('{re.escape(KERNEL6)}', 9999, 0, 0\) \| "
                     rf"\('::', (\d+), 0, 0\)", lines["UNCONNECTED"])
    assert m and m.group(1) == m.group(2), lines
    assert lines["BIG"] == f"True  seen-from {STACK6} {m.group(1)}", lines
    assert lines["MAPPED"] == f"mapped seen-from {STACK4} {m.group(1)} | ('::ffff:{KERNEL4}', 9999, 0, 0)", lines
    m = re.fullmatch(rf"two seen-from {re.escape(STACK6)} (\d+) \| \('{re.escape(STACK6)}', (\d+), 0, 0\) \| "
                     rf"\('{re.escape(KERNEL6)}', 9999, 0, 0\)", lines["CONNECTED"])
    assert m and m.group(1) == m.group(2), lines


def test_go_udp6_in_seccomp_mode(env):
    build_goprobe()
    env.spawn(sys.executable, "-c", UDP_SEEN, ready=True)
    r = env.run(GOPROBE, "udp", f"[{KERNEL6}]:9999", "hello")
    m = re.fullmatch(rf"reply=hello seen-from {re.escape(STACK6)} (\d+) local=\[{re.escape(STACK6)}\]:(\d+)", r.stdout.strip())
    assert m and m.group(1) == m.group(2), r.stdout


# The app's UDP server: answers each datagram with the address it came from, as recvfrom gave it.
UDP_APP_SERVER = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], int(sys.argv[2])))
    print("READY", flush=True)
    while True:
        d, a = s.recvfrom(65536)
        s.sendto(d + (" from %r at %r" % (a, s.getsockname())).encode(), a)
    """)


def udp_ask(env, family_addr, dest, port, payload=b"ping"):
    """A kernel-side datagram to the app; returns (reply, the reply's source)."""
    code = textwrap.dedent(f"""
        import socket
        fam = socket.AF_INET6 if ":" in "{dest}" else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.bind(("{family_addr}", 0))
        s.settimeout(5)
        for _ in range(20):          # the app may still be starting: retry
            s.sendto({payload!r}, ("{dest}", {port}))
            try:
                d, a = s.recvfrom(65536)
                break
            except socket.timeout:
                continue
        print(repr((d.decode(), a[:2], s.getsockname()[1])))
        """)
    return ast.literal_eval(env.ns.exec(sys.executable, "-c", code, timeout=150).stdout.strip())


def test_udp6_server_under_intercept(env):
    env.spawn(*env.ztrun(sys.executable, "-c", UDP_APP_SERVER, STACK6, "5353"), ready=True)
    reply, src, myport = udp_ask(env, KERNEL6, STACK6, 5353)
    assert src == (STACK6, 5353), src
    assert reply == f"ping from ('{KERNEL6}', {myport}, 0, 0) at ('{STACK6}', 5353, 0, 0)", reply


def test_udp_dual_stack_server_under_bind_any(env):
    """A UDP socket on [::] (IPV6_V6ONLY 0) under --bind-any: datagrams of both families, the
    IPv4 ones seen as ::ffff:a.b.c.d, each answered from the address it was sent to."""
    env.spawn(*env.ztrun(sys.executable, "-c", UDP_APP_SERVER, "::", "5354", opts=BIND_ANY), ready=True)
    reply, src, myport = udp_ask(env, KERNEL4, STACK4, 5354)
    assert src == (STACK4, 5354), src
    assert reply == f"ping from ('::ffff:{KERNEL4}', {myport}, 0, 0) at ('::', 5354, 0, 0)", reply
    reply, src, myport = udp_ask(env, KERNEL6, STACK6, 5354)
    assert src == (STACK6, 5354), src
    assert reply == f"ping from ('{KERNEL6}', {myport}, 0, 0) at ('::', 5354, 0, 0)", reply
