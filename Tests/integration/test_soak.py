"""Soak (issue 12): connection churn through the intercept with clients SIGKILLed mid-flight and
the network left and joined again under load; afterwards ztapd's fds and RSS are back where they
were. 100k connections by default (CI); ZTAP_SOAK_CONNECTIONS=N for longer runs. Runs in the
test's own namespace; the peer is the namespace's kernel side."""
import os

import pytest
import random
import signal
import subprocess
import sys
import textwrap
import time

from conftest import BIN, fd_count, wait_until
from intercept_env import KERNEL, STACK, Env

TOTAL = int(os.environ.get("ZTAP_SOAK_CONNECTIONS", "100000"))
WORKERS = 4
NET = f"""[Network]
Interface=ztsoak0
MTU=2800
Address={STACK}/24
KernelAddress={KERNEL}/24
"""

# Kernel side: accepts, reads, closes after the client's FIN; non-blocking so one thread keeps
# up. Closing after the FIN keeps TIME-WAIT on the stack's side: kernel-side TIME-WAIT entries
# outlive a leave/join, and the new stack's SYNs on those 4-tuples are answered with ACKs until
# its retransmission (its ISN and timestamps do not continue the old instance's; a NetStack matter).
SERVER = f"""
    import selectors, socket
    sel = selectors.DefaultSelector()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("{KERNEL}", 9400))
    srv.listen(4096)
    srv.setblocking(False)
    sel.register(srv, selectors.EVENT_READ)
    print("READY", flush=True)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if s is srv:
                for _ in range(64):
                    try:
                        c, _ = srv.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    sel.register(c, selectors.EVENT_READ)
            else:
                try:
                    data = s.recv(64)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(s)
                    s.close()
"""

# Under the intercept: connect, one byte, close, until told how many; errors (the network is
# away during the leave/join) are counted and retried.
WORKER = f"""
    import socket, sys, time
    n = int(sys.argv[1]); ok = fail = 0
    while ok < n:
        try:
            s = socket.create_connection(("{KERNEL}", 9400), timeout=10)
            s.sendall(b"x")
            s.close()
            ok += 1
        except OSError:
            fail += 1
            time.sleep(0.02)
    print(ok, fail, flush=True)
"""

# Killed with SIGKILL while it holds connections, a blocking connect and unread data.
VICTIM = f"""
    import socket, time
    held = []
    for _ in range(40):
        try:
            s = socket.create_connection(("{KERNEL}", 9400), timeout=5)
            s.sendall(b"y")
            held.append(s)
        except OSError:
            pass
    n = socket.socket(); n.setblocking(False)
    try:
        n.connect(("{KERNEL}", 9400))
    except OSError:
        pass
    print("HOLDING", flush=True)
    time.sleep(60)
"""


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def settled_rss(pid, samples=10):
    """The lowest RSS over a couple of seconds: freed memory goes back to the kernel only as the
    allocator trims, so one sample can catch a passing high-water mark (seen: +27 MiB for a
    moment, then back)."""
    low = rss_kib(pid)
    for _ in range(samples):
        time.sleep(0.25)
        low = min(low, rss_kib(pid))
    return low


def test_soak_churn_kills_and_rejoin_leave_fds_and_rss_flat(daemon_factory, netns, tmpdir_world):
    d = daemon_factory(networks={"n": NET}).start()
    env = Env(d, netns, tmpdir_world)
    try:
        server = env.spawn(sys.executable, "-c", textwrap.dedent(SERVER), ready=True)

        def churn(count):
            per = count // WORKERS
            procs = [env.ns.popen(*env.ztrun(sys.executable, "-c", textwrap.dedent(WORKER), str(per)),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(WORKERS)]
            return procs, per * WORKERS

        def finish(procs):
            ok = fail = 0
            for p in procs:
                out, err = p.communicate(timeout=600)
                assert p.returncode == 0, err[-2000:]
                a, b = map(int, out.split())
                ok, fail = ok + a, fail + b
            return ok, fail

        def settled():
            # No intercepted socket left; the stack's own TIME-WAIT entries age out by themselves
            # (and make room for new connections at MaxConnections).
            out, _ = d.ctl_json("connections", "n")
            return all(c.get("pid") is None and c["state"] == "TIME-WAIT" for c in out.get("connections") or [])

        def rejoin():
            d.ctl("leave", "n")
            d.ctl("join", "n", "--address", f"{STACK}/24", "--kernel-address", f"{KERNEL}/24",
                  "--interface", "ztsoak0", "--mtu", "2800")

        # Warm-up (tables and allocator arenas reach their size), then a fresh network: the
        # baseline is ztapd with a network that holds no connection state.
        warm = min(20000, TOTAL // 5)
        ok, _ = finish(churn(warm)[0])
        assert ok >= warm - WORKERS
        # Listing ~4096 TIME-WAIT entries is ztapd's biggest answer: its allocator high-water
        # belongs in the baseline too.
        assert wait_until(settled, timeout=30)
        rejoin()
        base_fds, base_rss = fd_count(d.pid), settled_rss(d.pid)

        t0 = time.monotonic()
        procs, wanted = churn(TOTAL)
        killed = 0
        rejoined = False
        rng = random.Random(12)
        while any(p.poll() is None for p in procs):
            # A client dies with SIGKILL while it holds sockets; a second one right away.
            v = env.ns.popen(*env.ztrun(sys.executable, "-c", textwrap.dedent(VICTIM)),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            v.stdout.readline()
            time.sleep(rng.uniform(0.05, 0.3))
            v.send_signal(signal.SIGKILL)
            v.wait()
            killed += 1
            if not rejoined and killed >= 3:
                rejoin()   # while the workers keep connecting
                rejoined = True
            time.sleep(0.2)
        ok, fail = finish(procs)
        secs = time.monotonic() - t0
        assert ok == wanted, (ok, wanted)
        assert rejoined and killed >= 5, (rejoined, killed)
        assert d.ctl("status").returncode == 0
        assert wait_until(settled, timeout=60), d.ctl_json("connections", "n")[0]
        # Every fd back: failed connects linger for SO_ERROR up to TCPBridge.lingerTime (60 s);
        # a SIGKILLed client's pending connect goes with it (PlugOwners), as does every app end
        # ztapd held for a pending connect when the network left.
        if not wait_until(lambda: fd_count(d.pid) <= base_fds, timeout=70):
            fds = {f: os.readlink(f"/proc/{d.pid}/fd/{f}") for f in os.listdir(f"/proc/{d.pid}/fd")}
            raise AssertionError(f"{len(fds) - base_fds} fd(s) left after the churn: {fds}")
        loaded = settled_rss(d.pid)
        # The stack keeps up to MaxConnections (4096) TIME-WAIT entries: bounded, not per
        # connection (a leak of even 1 KB per connection would be +100 MiB here). Measured since
        # TIME-WAIT entries are freed at expiry: +20.3, +24.2, +25.5 MiB (the 4096 entries, the
        # tables' capacity, the arenas of the churn's bursts); when rings were malloc'd, the freed
        # ones stayed in the arenas: +50 MiB and more. The leak check proper is `clean` below.
        assert loaded - base_rss < 32768, (base_rss, loaded)
        # A fresh network again: what is left is ztapd's own. Measured over 8 rounds of 50k: it
        # settles within the first rounds (+6 MiB of arena) and then stays put.
        rejoin()
        clean = settled_rss(d.pid)
        print(f"soak: {ok} connections ({fail} refused while the network was away) in {secs:.0f} s, "
              f"{killed} clients SIGKILLed, one leave/join; ztapd fds {base_fds} -> {fd_count(d.pid)}, "
              f"RSS {base_rss} KiB fresh -> {loaded} KiB loaded -> {clean} KiB fresh")
        assert clean - base_rss < 12288, (base_rss, clean)
        assert fd_count(d.pid) <= base_fds
        assert "blocked system call" not in d.logs()
        server.kill()
    finally:
        env.stop_all()
