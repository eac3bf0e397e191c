"""Many connections (issue 11): Linux-like ephemeral ports for outgoing connections — ztapd's
ip_local_port_range, uniqueness by 4-tuple, TIME-WAIT taken over when timestamps make it safe —
and memory that follows the load (ztapd's RSS back near idle after a burst of bulk downloads).
Each test runs ztapd in the test's own namespace; the peers are kernel sockets on the TAP's side
of that namespace. The C clients and servers are bench/connrate.c and bench/tcpblast.c, built
here. Figures are printed, never asserted (BENCHMARKS.md has them)."""
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import REPO, run, wait_until
from intercept_env import KERNEL, STACK, Env
from test_soak import rss_kib, settled_rss

ECHO_PORT = 7007


def net(extra=""):
    return f"""[Network]
Interface=ztscale0
MTU=2800
Address={STACK}/24
KernelAddress={KERNEL}/24

[Stack]
MaxConnections=65536
{extra}"""


# Enough intercepted sockets for 10k concurrent connections of one user (root).
LIMITS = "[Limits]\nTCPSocketsPerUser=30000\nPendingRequestsPerUser=1024\n"


@pytest.fixture(scope="module")
def tools(tmp_path_factory):
    """connrate and tcpblast, compiled for this run."""
    out = tmp_path_factory.mktemp("conn-tools")
    os.chmod(out, 0o755)
    paths = {}
    for name, extra in (("connrate", []), ("tcpblast", ["-pthread"])):
        p = str(out / name)
        run(["cc", "-O2", "-o", p, os.path.join(REPO, "bench", name + ".c"), *extra])
        paths[name] = p
    return paths


def metric(env, name, **labels):
    """One sample of `ztctl metrics` for network n (0 if absent)."""
    r = env.d.ctl("metrics")
    want = {"network": "n", **labels}
    for line in r.stdout.splitlines():
        if not line.startswith(name + "{"):
            continue
        body, value = line[len(name) + 1:].rsplit("} ", 1)
        got = dict(kv.split("=", 1) for kv in body.split(","))
        if {k: v.strip('"') for k, v in got.items()} == want:
            return float(value)
    return 0.0


def start(daemon_factory, netns, tmpdir_world, extra="", port_range=None):
    if port_range:
        # Per namespace: ztapd reads it when it starts, like the kernel's own sockets there.
        netns.exec("sysctl", "-q", "-w", f"net.ipv4.ip_local_port_range={port_range[0]} {port_range[1]}")
    d = daemon_factory(networks={"n": net(extra)}, daemon_conf=LIMITS).start()
    return Env(d, netns, tmpdir_world)


# Under the intercept: N times connect, one byte echoed, close; prints the count of failures
# and the lowest and highest local port used.
CHURN = f"""
    import errno, socket, sys
    n = int(sys.argv[1]); fail = 0; lo = 65536; hi = 0; first = None
    for _ in range(n):
        s = socket.socket()
        try:
            s.settimeout(10)
            s.connect(("{KERNEL}", {ECHO_PORT}))
            p = s.getsockname()[1]
            lo, hi = min(lo, p), max(hi, p)
            s.sendall(b"x")
            assert s.recv(1) == b"x"
        except OSError as e:
            fail += 1
            first = first or errno.errorcode.get(e.errno, str(e))
        finally:
            s.close()
    print(fail, lo, hi, first, flush=True)
"""

# Under the intercept: holds two connections to each of two destinations at once.
HOLD_FOUR = f"""
    import socket
    held = []
    for port in ({ECHO_PORT}, {ECHO_PORT + 1}, {ECHO_PORT}, {ECHO_PORT + 1}):
        s = socket.create_connection(("{KERNEL}", port), timeout=10)
        held.append(s)
    local = sorted(s.getsockname()[1] for s in held)
    four = {{(s.getsockname()[1], s.getpeername()[1]) for s in held}}
    for s in held:
        s.sendall(b"y")
        assert s.recv(1) == b"y"
    print(len(four), *local, flush=True)
"""


def test_one_local_port_serves_different_destinations(daemon_factory, netns, tmpdir_world, tools):
    """A range of two ports carries four connections: each port to two destinations (4-tuple
    uniqueness, as Linux's connect()); a fifth to one destination has no 4-tuple left."""
    env = start(daemon_factory, netns, tmpdir_world, port_range=(50000, 50001))
    try:
        for p in (ECHO_PORT, ECHO_PORT + 1):
            env.spawn(tools["connrate"], "tcpserve", KERNEL, str(p))
        wait_until(lambda: netns.exec("ss", "-Hltn", f"sport = :{ECHO_PORT + 1}").stdout.strip() != "")
        out = env.run(sys.executable, "-c", textwrap.dedent(HOLD_FOUR)).stdout.split()
        assert out == ["4", "50000", "50000", "50001", "50001"], out
        # The range is exhausted towards one destination while connections hold both ports.
        # (The four above left TIME-WAITs; after a second they may be taken over.)
        time.sleep(1.5)
        code = textwrap.dedent(f"""
            import errno, socket
            a = [socket.create_connection(("{KERNEL}", {ECHO_PORT}), timeout=10) for _ in range(2)]
            try:
                socket.create_connection(("{KERNEL}", {ECHO_PORT}), timeout=10)
                print("connected")
            except OSError as e:
                print(errno.errorcode[e.errno])
        """)
        assert env.run(sys.executable, "-c", code).stdout.split() == ["EADDRNOTAVAIL"]
    finally:
        env.stop_all()


def test_ephemeral_range_from_proc_and_time_wait_taken_over(daemon_factory, netns, tmpdir_world, tools):
    """ip_local_port_range of ztapd's namespace is the range; 10000 ports carry 25000 short
    connections to one destination because each wrap of the range takes over the TIME-WAITs the
    last one left (they used timestamps and are more than a second old: a client faster than
    10000 connections a second would find none old enough, on Linux too)."""
    env = start(daemon_factory, netns, tmpdir_world, port_range=(50000, 59999))
    try:
        env.spawn(tools["connrate"], "tcpserve", KERNEL, str(ECHO_PORT))
        wait_until(lambda: netns.exec("ss", "-Hltn", f"sport = :{ECHO_PORT}").stdout.strip() != "")
        t0 = time.monotonic()
        out = env.run(sys.executable, "-c", textwrap.dedent(CHURN), "25000", timeout=600).stdout.split()
        secs = time.monotonic() - t0
        fail, lo, hi = int(out[0]), int(out[1]), int(out[2])
        reused = metric(env, "ztap_tcp_time_wait_reused_total")
        print(f"25000 connections over 10000 ports in {secs:.1f} s, {reused:.0f} TIME-WAITs taken over")
        assert fail == 0, out
        assert 50000 <= lo and hi <= 59999, out
        # Without the takeover the range is spent after 10000 (TIME-WAIT lasts 60 s).
        if secs < 55:
            assert reused >= 25000 - 10000, reused
    finally:
        env.stop_all()


def test_30k_short_connections_after_10k_to_one_destination(daemon_factory, netns, tmpdir_world, tools):
    """The issue's failure: 10k connections to one destination close (10k TIME-WAITs on the
    stack's side), then 30k short connections to the same destination follow at once, in
    Linux's default range (28232 ports): none fails."""
    env = start(daemon_factory, netns, tmpdir_world)
    try:
        env.spawn(tools["connrate"], "tcpserve", KERNEL, str(ECHO_PORT))
        wait_until(lambda: netns.exec("ss", "-Hltn", f"sport = :{ECHO_PORT}").stdout.strip() != "")
        p = env.ns.popen(*env.ztrun(tools["connrate"], "open", KERNEL, str(ECHO_PORT), "10000", "1"),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        phases = []
        for _ in range(3):
            p.stdin.write("go\n")
            p.stdin.flush()
            phases.append(p.stdout.readline().strip())
        p.stdin.close()
        err = p.stderr.read()
        assert p.wait(timeout=60) == 0 and [x.split()[0] for x in phases] == ["open", "burst", "closed"], \
            (phases, err[-2000:], env.d.logs()[-3000:])
        assert wait_until(lambda: metric(env, "ztap_tcp_connections", state="time_wait") >= 9000, timeout=30)
        t0 = time.monotonic()
        r = env.run(tools["connrate"], "count", KERNEL, str(ECHO_PORT), "30000", timeout=600, check=False)
        secs = time.monotonic() - t0
        reused = metric(env, "ztap_tcp_time_wait_reused_total")
        print(f"10k open: {phases}; then 30000 short connections in {secs:.1f} s "
              f"({30000 / secs:.0f}/s), {reused:.0f} TIME-WAITs taken over")
        assert r.returncode == 0 and r.stdout.split()[:2] == ["30000", "ok"], \
            (r.stdout, r.stderr[-2000:], env.d.logs()[-3000:])
        assert metric(env, "ztap_intercept_sockets", proto="tcp") == 0
    finally:
        env.stop_all()


def test_rss_back_near_idle_after_bulk_bursts(daemon_factory, netns, tmpdir_world, tools):
    """40 bulk downloads for 2 s, ended by the program exiting without closing (as in the
    issue), three times: a few seconds after each, ztapd's RSS is within 32 MiB of its idle
    size and no ring memory is held."""
    env = start(daemon_factory, netns, tmpdir_world)
    try:
        env.spawn(tools["tcpblast"], "serve", KERNEL)   # chargen on 19
        wait_until(lambda: netns.exec("ss", "-Hltn", "sport = :19").stdout.strip() != "")
        # Warm-up: one short download (the loop's own buffers, the intercept's first RPCs).
        env.run(tools["connrate"], "bulk", KERNEL, "19", "1", "0.2")
        time.sleep(2)
        idle = settled_rss(env.d.pid)
        for i in range(3):
            peak = [0]
            stop = threading.Event()

            def sample():
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_kib(env.d.pid))
                    time.sleep(0.05)
            t = threading.Thread(target=sample)
            t.start()
            r = env.run(tools["connrate"], "bulk", KERNEL, "19", "40", "2")
            stop.set()
            t.join()
            assert wait_until(lambda: metric(env, "ztap_intercept_sockets", proto="tcp") == 0, timeout=30)
            time.sleep(3)
            after = settled_rss(env.d.pid, samples=4)
            in_use = metric(env, "ztap_tcp_ring_bytes", kind="in_use")
            print(f"round {i}: {r.stdout.strip()} Gbit/s; ztapd RSS idle {idle // 1024} MiB, "
                  f"peak {peak[0] // 1024} MiB, 3 s after {after // 1024} MiB; ring bytes in use {in_use:.0f}")
            assert after - idle < 32 * 1024, (idle, peak[0], after)
            assert in_use == 0
    finally:
        env.stop_all()
