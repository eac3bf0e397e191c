"""Unmodified programs on a ztap network through the intercept (issue: ztintercept + RPC).

Each test: a namespace of its own, ztapd in it with network "n" (NetStack 10.70.0.2, kernel side
10.70.0.1 on the TAP), programs under `ztctl run n -- ...` and their peers on the namespace's
own kernel stack. Traffic never leaves the namespace; processes are stopped by PID.
"""
import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import BIN, REPO, fd_count, run, wait_until

STACK = "10.70.0.2"
KERNEL = "10.70.0.1"
HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "kernel_peer.py")
LIB = os.path.join(REPO, ".build", "intercept", "libztintercept.so")
NET = f"""[Network]
Interface=ztnet0
MTU=2800
Address={STACK}/24
KernelAddress={KERNEL}/24

[Access]
AllowUsers=nobody
"""


@pytest.fixture(scope="module", autouse=True)
def intercept_built():
    if not os.path.exists(LIB):
        run([os.path.join(REPO, "scripts", "build-intercept.sh")])


class Env:
    """ztapd with network n in the test's namespace, plus the processes the test started."""

    def __init__(self, daemon, ns, tmp):
        self.d, self.ns, self.tmp = daemon, ns, tmp
        self.procs = []

    def ztrun(self, *cmd, user=None, opts=()):
        """argv for `ztctl run n [opts] -- cmd` (as `user` if given)."""
        argv = [os.path.join(BIN, "ztctl"), "run", "n", "--run-dir", self.d.run_dir, *opts, "--", *cmd]
        return ["runuser", "-u", user, "--", *argv] if user else argv

    def run(self, *cmd, user=None, timeout=300, check=True, opts=()):
        r = self.ns.exec(*self.ztrun(*cmd, user=user, opts=opts), timeout=timeout, check=False)
        if check and r.returncode != 0:
            raise AssertionError(f"{cmd[:3]!r} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}\n"
                                 f"--- ztapd log (tail) ---\n{self.d.logs()[-3000:]}")
        return r

    def spawn(self, *argv, ready=False, **kw):
        """A process in the namespace; with ready=True waits for its "READY" line."""
        kw.setdefault("stdout", subprocess.PIPE if ready else subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        p = self.ns.popen(*argv, **kw)
        self.procs.append(p)
        if ready:
            line = p.stdout.readline()
            assert line.strip() == b"READY", f"{argv!r} did not start: {line!r}"
        return p

    def peer(self, mode, port, *extra):
        return self.spawn(sys.executable, PEER, mode, KERNEL, str(port), *extra, ready=True)

    def connections(self):
        out, _ = self.d.ctl_json("connections", "n")
        return out.get("connections") or []

    def stop_all(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


@pytest.fixture
def env(daemon_factory, netns, tmpdir_world):
    d = daemon_factory(networks={"n": NET}).start()
    e = Env(d, netns, tmpdir_world)
    yield e
    e.stop_all()


def wait_port(ns, addr, port, timeout=15):
    def listening():
        r = ns.exec("ss", "-Hltn", f"src {addr}:{port}", check=False)
        return r.stdout.strip() != ""
    assert wait_until(listening, timeout=timeout), f"nothing listens on {addr}:{port}"


def wait_connectable(addr, port, ns, timeout=15):
    """Polls a TCP port from the kernel side (for servers behind NetStack, which ss cannot see)."""
    code = f"import socket; socket.create_connection(('{addr}', {port}), timeout=1).close()"
    assert wait_until(lambda: ns.exec(sys.executable, "-c", code, check=False).returncode == 0,
                      timeout=timeout, interval=0.2), f"{addr}:{port} never accepted a connection"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_file(path, mib):
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    os.chmod(path, 0o644)
    return sha256(path)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def settled_rss_kib(pid, samples=8):
    """The lowest RSS over ~2 s: the allocator returns freed memory as it trims, so a single
    sample can land on a passing high-water mark (seen under load: +2.7 MiB, gone a moment later)."""
    low = rss_kib(pid)
    for _ in range(samples):
        time.sleep(0.25)
        low = min(low, rss_kib(pid))
    return low


# --- clients under the intercept ------------------------------------------------------------

def test_curl_downloads_100mib_from_kernel_http_server(env):
    src = os.path.join(env.tmp, "www")
    os.makedirs(src)
    want = make_file(os.path.join(src, "big.bin"), 100)
    env.spawn(sys.executable, "-m", "http.server", "--bind", KERNEL, "--directory", src, "8000")
    wait_port(env.ns, KERNEL, 8000)
    out = os.path.join(env.tmp, "out.bin")
    t0 = time.monotonic()
    env.run("curl", "-sS", "--fail", "-o", out, f"http://{KERNEL}:8000/big.bin")
    secs = time.monotonic() - t0
    assert sha256(out) == want
    print(f"curl 100 MiB download: {secs:.2f} s ({100 * 8 * 1.048576 / secs:.0f} Mbit/s)")


def test_curl_uploads_to_kernel_server(env):
    up = os.path.join(env.tmp, "up")
    os.makedirs(up)
    want = make_file(os.path.join(env.tmp, "payload.bin"), 100)
    env.peer("put", 8001, up)
    r = env.run("curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{http_code}",
                "-T", os.path.join(env.tmp, "payload.bin"), f"http://{KERNEL}:8001/payload.bin")
    assert r.stdout.strip() == "201", r.stdout
    assert sha256(os.path.join(up, "payload.bin")) == want


def test_iperf3_client_under_intercept_both_directions(env):
    import json
    for reverse in (False, True):
        server = env.spawn("iperf3", "-s", "-1", "-B", KERNEL, "-p", "5201")
        wait_port(env.ns, KERNEL, 5201)
        args = ["iperf3", "-c", KERNEL, "-p", "5201", "-t", "3", "-J"] + (["-R"] if reverse else [])
        r = env.run(*args, timeout=60)
        res = json.loads(r.stdout)
        assert "error" not in res, res.get("error")
        bps = res["end"]["sum_received"]["bits_per_second"]
        assert res["end"]["sum_received"]["bytes"] > 10 * 1024 * 1024, res["end"]["sum_received"]
        print(f"iperf3 client under intercept {'<-' if reverse else '->'} kernel: {bps / 1e9:.2f} Gbit/s")
        assert server.wait(timeout=20) == 0


# --- servers under the intercept ------------------------------------------------------------

def test_python_http_server_under_intercept(env):
    src = os.path.join(env.tmp, "www")
    os.makedirs(src)
    want = make_file(os.path.join(src, "f.bin"), 20)
    env.spawn(*env.ztrun(sys.executable, "-m", "http.server", "--bind", STACK, "--directory", src, "8080"))
    wait_connectable(STACK, 8080, env.ns)
    out = os.path.join(env.tmp, "got.bin")
    env.ns.exec("curl", "-sS", "--fail", "-o", out, f"http://{STACK}:8080/f.bin", timeout=120)
    assert sha256(out) == want
    # The listener shows up in `ztctl connections` with its owner.
    rows = env.connections()
    assert any(c["proto"] == "tcp" and c["local"].endswith(":8080") and c["state"] == "LISTEN" for c in rows), [sorted(c.items()) for c in rows]


def test_nginx_under_intercept_serves_200_concurrent_clients(env):
    if not shutil.which("nginx"):
        pytest.fail("nginx is not installed (scripts/install-deps.sh installs it)")
    www = os.path.join(env.tmp, "www")
    os.makedirs(www)
    body = os.urandom(64 * 1024)
    with open(os.path.join(www, "index.bin"), "wb") as f:
        f.write(body)
    conf = os.path.join(env.tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(textwrap.dedent(f"""\
            daemon off;
            master_process on;
            worker_processes 2;
            user root;
            pid {env.tmp}/nginx.pid;
            error_log {env.tmp}/nginx-error.log warn;
            events {{ worker_connections 1024; }}
            http {{
                access_log off;
                client_body_temp_path {env.tmp}/nginx-tmp;
                proxy_temp_path {env.tmp}/nginx-tmp;
                fastcgi_temp_path {env.tmp}/nginx-tmp;
                uwsgi_temp_path {env.tmp}/nginx-tmp;
                scgi_temp_path {env.tmp}/nginx-tmp;
                server {{
                    listen {STACK}:8082 backlog=512;
                    root {www};
                }}
            }}
            """))
    env.spawn(*env.ztrun("nginx", "-c", conf, "-e", f"{env.tmp}/nginx-error.log"))
    wait_connectable(STACK, 8082, env.ns)
    # 200 kernel-side clients, all connected at once, then all requesting at once.
    code = textwrap.dedent(f"""
        import hashlib, socket
        conns = [socket.create_connection(("{STACK}", 8082), timeout=30) for _ in range(200)]
        for c in conns:
            c.sendall(b"GET /index.bin HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
        digests = set()
        for c in conns:
            data = b""
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, _, payload = data.partition(b"\\r\\n\\r\\n")
            assert head.startswith(b"HTTP/1.1 200"), head[:100]
            digests.add(hashlib.sha256(payload).hexdigest())
            c.close()
        print(len(conns), " ".join(digests))
        """)
    r = env.ns.exec(sys.executable, "-c", code, timeout=120)
    n, digest = r.stdout.split()
    assert n == "200" and digest == hashlib.sha256(body).hexdigest(), r.stdout


def test_iperf3_server_under_intercept_both_directions(env):
    import json
    for reverse in (False, True):
        server = env.spawn(*env.ztrun("iperf3", "-s", "-1", "-B", STACK, "-p", "5202"))
        # No probe connection: it would use up the one-off (-1) server. Retry instead.
        args = ["iperf3", "-c", STACK, "-p", "5202", "-t", "3", "-J"] + (["-R"] if reverse else [])
        r = None
        for _ in range(20):  # the server may still be starting: iperf3 then fails to connect
            r = env.ns.exec(*args, timeout=60, check=False)
            if r.returncode == 0 and "Connection refused" not in r.stdout:
                break
            time.sleep(0.25)
        assert r.returncode == 0, r.stdout + r.stderr
        res = json.loads(r.stdout)
        assert "error" not in res and "sum_received" in res["end"], r.stdout[-3000:]
        assert res["end"]["sum_received"]["bytes"] > 10 * 1024 * 1024, res["end"]["sum_received"]
        print(f"iperf3 server under intercept {'->' if reverse else '<-'} kernel: "
              f"{res['end']['sum_received']['bits_per_second'] / 1e9:.2f} Gbit/s")
        assert server.wait(timeout=20) == 0


# --- semantics, lifetime, access ------------------------------------------------------------

def test_socket_semantics_program(env):
    env.peer("echo", 9000)
    env.peer("udpecho", 9001)
    env.peer("callback", 9003)
    r = env.run(sys.executable, os.path.join(HERE, "intercept_semantics.py"), STACK, KERNEL,
                timeout=120, check=False)
    assert r.returncode == 0 and "ALL OK" in r.stdout, r.stdout + r.stderr
    for check in ("nonblocking connect", "connection refused", "getsockname", "SHUT_WR", "accept4",
                  "fork", "UDP"):
        assert check in r.stdout, r.stdout


def test_sigkill_mid_transfer_frees_the_connection(env):
    env.peer("stream", 9100)
    reader = textwrap.dedent(f"""
        import socket, sys, time
        s = socket.create_connection(("{KERNEL}", 9100))
        s.recv(1 << 20)
        print("CONNECTED", flush=True)
        while True:
            s.recv(4096)
            time.sleep(0.01)
        """)
    p = env.spawn(*env.ztrun(sys.executable, "-c", reader), stdout=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"CONNECTED"

    def mine():
        return [c for c in env.connections() if c["proto"] == "tcp" and c.get("pid") == p.pid]
    rows = wait_until(mine, timeout=10)
    assert rows and rows[0]["remote"] == f"{KERNEL}:9100" and rows[0]["bytesIn"] > 0, env.connections()
    fds_before = fd_count(env.d.pid)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert wait_until(lambda: not mine(), timeout=10), env.connections()
    assert wait_until(lambda: not [c for c in env.connections() if c["remote"] == f"{KERNEL}:9100"],
                      timeout=10), env.connections()
    assert fd_count(env.d.pid) < fds_before


def test_sigkill_during_a_connect_that_never_completes_frees_it(env):
    """A non-blocking connect whose SYNs go unanswered, and its process SIGKILLed: Linux drops the
    connecting socket with the process. ztapd holds the app end of a connecting socket (the plug
    that keeps it unwritable until the outcome), so it cannot see that close itself: it watches
    the owner instead, and lets go once the owner is gone."""
    env.peer("stream", 9101)
    # The kernel side answers nothing to the stack (its SYN-ACKs go to a blackhole route).
    env.ns.ip("route", "add", "blackhole", f"{STACK}/32")
    try:
        victim = textwrap.dedent(f"""
            import socket, time
            n = socket.socket(); n.setblocking(False)
            print(n.connect_ex(("{KERNEL}", 9101)), flush=True)
            time.sleep(120)
            """)
        fds_before = fd_count(env.d.pid)
        p = env.spawn(*env.ztrun(sys.executable, "-c", victim), stdout=subprocess.PIPE)
        assert p.stdout.readline().strip() == str(errno.EINPROGRESS).encode()

        def mine():
            return [c for c in env.connections() if c["proto"] == "tcp" and c["remote"] == f"{KERNEL}:9101"]
        rows = wait_until(mine, timeout=10)
        assert rows and rows[0]["state"] == "SYN-SENT", env.connections()
        time.sleep(1.5)   # longer than the owner check's period: the plug is still held
        assert mine()[0]["state"] == "SYN-SENT"
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert wait_until(lambda: not mine(), timeout=5), env.connections()
        assert wait_until(lambda: fd_count(env.d.pid) <= fds_before, timeout=5), \
            {f: os.readlink(f"/proc/{env.d.pid}/fd/{f}") for f in os.listdir(f"/proc/{env.d.pid}/fd")}
    finally:
        env.ns.ip("route", "del", "blackhole", f"{STACK}/32")


def test_leave_during_a_pending_connect_closes_every_end(env):
    """The network leaves while a connect is pending: the app end ztapd held for it (the plug)
    goes with the network, and the app's select sees the connect end."""
    env.ns.ip("route", "add", "blackhole", f"{STACK}/32")
    try:
        prog = textwrap.dedent(f"""
            import select, socket, sys
            n = socket.socket(); n.setblocking(False)
            print(n.connect_ex(("{KERNEL}", 9102)), flush=True)
            sys.stdin.readline()
            print(select.select([], [n], [], 10)[1] != [], flush=True)
            """)
        fds_before = fd_count(env.d.pid)
        p = env.spawn(*env.ztrun(sys.executable, "-c", prog), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE)
        assert p.stdout.readline().strip() == str(errno.EINPROGRESS).encode()
        assert wait_until(lambda: [c for c in env.connections() if c["remote"] == f"{KERNEL}:9102"], timeout=10)
        env.d.ctl("leave", "n")
        env.d.ctl("join", "n")
        p.stdin.write(b"go\n")
        p.stdin.flush()
        line = p.stdout.readline()
        assert line.split() == [b"True"], (line, p.stderr.read())
        p.wait(timeout=10)
        assert wait_until(lambda: fd_count(env.d.pid) <= fds_before, timeout=5), \
            {f: os.readlink(f"/proc/{env.d.pid}/fd/{f}") for f in os.listdir(f"/proc/{env.d.pid}/fd")}
    finally:
        env.ns.ip("route", "del", "blackhole", f"{STACK}/32")


def test_back_pressure_when_the_app_stops_reading(env):
    """A kernel sender facing an app that does not read is held back by TCP's window: ztapd
    buffers at most the stack's receive buffer, and every byte arrives once the app reads."""
    env.peer("stream", 9100)
    reader = textwrap.dedent(f"""
        import socket, sys
        s = socket.create_connection(("{KERNEL}", 9100))
        print("CONNECTED", flush=True)
        sys.stdin.readline()                 # not reading until told
        block = bytes(range(256)) * 256
        want, got = 64 << 20, 0
        buf = b""
        while got < want:
            chunk = s.recv(1 << 20)
            assert chunk, "EOF"
            buf += chunk
            n = len(buf) - len(buf) % len(block)
            assert buf[:n] == block * (n // len(block)), "pattern broken at %d" % got
            got += n
            buf = buf[n:]
        print("READ", got, flush=True)
        """)
    p = env.spawn(*env.ztrun(sys.executable, "-c", reader), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"CONNECTED"
    rss0 = rss_kib(env.d.pid)

    def bytes_in():
        rows = [c for c in env.connections() if c["remote"] == f"{KERNEL}:9100"]
        return rows[0]["bytesIn"] if rows else -1
    # The stack's window (4 MiB receive buffer) plus the socketpair's buffer fill up, then stop.
    time.sleep(1.5)
    first = bytes_in()
    time.sleep(1.5)
    second = bytes_in()
    assert 0 < first and second - first < 256 * 1024, (first, second)
    assert second < 16 * 1024 * 1024, second
    assert rss_kib(env.d.pid) - rss0 < 16 * 1024
    p.stdin.write(b"\n"); p.stdin.flush()
    line = p.stdout.readline().split()
    assert line[:1] == [b"READ"] and int(line[1]) >= 64 << 20, line
    assert p.wait(timeout=30) == 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def assert_idle(env, seconds=2.0):
    """ztapd must sleep in epoll when nothing can move (a level-triggered fd it cannot serve
    would make it spin at 100% CPU)."""
    before = cpu_seconds(env.d.pid)
    time.sleep(seconds)
    used = cpu_seconds(env.d.pid) - before
    assert used < 0.25 * seconds, f"ztapd used {used:.2f} s of CPU in {seconds} s while idle"


def test_no_spin_when_app_closes_with_a_full_send_buffer(env):
    # The kernel peer never reads: the app's 16 MiB cannot all leave, and the app closes.
    env.peer("stall", 9200)
    code = textwrap.dedent(f"""
        import socket
        s = socket.create_connection(("{KERNEL}", 9200))
        s.setblocking(False)
        sent = 0
        try:
            while sent < 16 << 20:
                sent += s.send(bytes(1 << 16))
        except BlockingIOError:
            pass
        print("SENT", sent, flush=True)
        s.close()
        """)
    r = env.run(sys.executable, "-c", code, timeout=60)
    assert r.stdout.startswith("SENT"), r.stdout
    assert_idle(env)
    # The connection is still there, draining towards the stalled peer.
    # The app is gone, its data still queued: the stack keeps sending (FIN after the data).
    rows = [c for c in env.connections() if c["remote"] == f"{KERNEL}:9200"]
    assert len(rows) == 1 and rows[0]["state"] == "FIN-WAIT-1" and rows[0]["bytesOut"] > 0, rows


def test_no_spin_after_a_reset_while_the_app_is_not_reading(env):
    env.peer("rst", 9300)
    code = textwrap.dedent(f"""
        import socket, sys, time
        s = socket.create_connection(("{KERNEL}", 9300))
        print("CONNECTED", flush=True)
        sys.stdin.readline()        # not reading while the peer sends and resets
        got = 0
        while True:
            try:
                b = s.recv(1 << 20)
            except ConnectionResetError:
                break
            if not b:
                break
            got += len(b)
        print("GOT", got, flush=True)
        """)
    p = env.spawn(*env.ztrun(sys.executable, "-c", code), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"CONNECTED"
    time.sleep(1.0)             # the data arrives, the socketpair fills, the RST comes
    assert_idle(env)
    p.stdin.write(b"\n"); p.stdin.flush()
    line = p.stdout.readline().split()
    assert line[:1] == [b"GOT"], line
    assert p.wait(timeout=20) == 0


def test_half_close_with_a_slow_reader_gets_every_byte(env):
    """shutdown(SHUT_WR), then the peer's large reply and FIN arrive while the app is not
    reading: none of the reply may be lost when the connection closes."""
    env.peer("echo", 9000)
    code = textwrap.dedent(f"""
        import hashlib, os, socket, threading, time
        s = socket.create_connection(("{KERNEL}", 9000))
        data = os.urandom(6 << 20)
        t = threading.Thread(target=s.sendall, args=(data,))
        t.start()
        got = bytearray()
        # Read just enough for the sender to finish, then stop reading for a while.
        while len(got) < (2 << 20):
            got += s.recv(1 << 16)
        t.join()
        s.shutdown(socket.SHUT_WR)
        time.sleep(1.5)
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            got += b
        print(len(got), hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest(), flush=True)
        """)
    r = env.run(sys.executable, "-c", code, timeout=120)
    assert r.stdout.split() == [str(6 << 20), "True"], r.stdout


def test_many_connections_leave_no_fd_or_memory_growth(env):
    env.peer("echo", 9000)
    churn = textwrap.dedent(f"""
        import socket
        for i in range(1000):
            s = socket.create_connection(("{KERNEL}", 9000), timeout=30)
            s.sendall(b"x" * 100)
            got = b""
            while len(got) < 100:
                got += s.recv(100)
            s.close()
        conns = [socket.create_connection(("{KERNEL}", 9000), timeout=30) for _ in range(500)]
        for c in conns:
            c.sendall(b"y" * 1000)
        for c in conns:
            got = b""
            while len(got) < 1000:
                chunk = c.recv(1000)
                assert chunk
                got += chunk
            c.close()
        print("DONE")
        """)
    pid = env.d.pid

    def idle_fds():
        # Settled once no intercept connection holds a client socket any more.
        return fd_count(pid)
    base_fds = idle_fds()

    def churn_runs(n):
        for _ in range(n):
            r = env.run(sys.executable, "-c", churn, timeout=300)
            assert "DONE" in r.stdout
        assert wait_until(lambda: idle_fds() <= base_fds, timeout=15), (idle_fds(), base_fds)
    # Warm-up: allocator arenas and tables grow, and TIME-WAIT fills up to MaxConnections
    # (4096; the oldest then make room). Measured on the development machine, RSS settles
    # after ~6 runs; what follows is the steady state, where a leak of 300 bytes per
    # connection would show.
    churn_runs(6)
    rss1 = settled_rss_kib(pid)
    churn_runs(6)
    rss2 = settled_rss_kib(pid)
    print(f"ztapd fds {base_fds} -> {idle_fds()}, RSS {rss1} KiB -> {rss2} KiB over 9000 more connections")
    assert rss2 - rss1 < 2560, (rss1, rss2)


def test_user_not_in_access_gets_eacces(env):
    env.peer("echo", 9000)
    code = textwrap.dedent(f"""
        import errno, socket
        s = socket.socket()
        try:
            s.connect(("{KERNEL}", 9000))
            s.sendall(b"hi"); print("CONNECTED", s.recv(2))
        except OSError as e:
            print("ERRNO", errno.errorcode.get(e.errno, e.errno))
        """)
    # The system python: other users cannot reach a python installed under /root.
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    allowed = env.run(py, "-c", code, user="nobody", timeout=60)
    assert allowed.stdout.strip() == "CONNECTED b'hi'", allowed.stdout + allowed.stderr
    denied = env.run(py, "-c", code, user="daemon", timeout=60)
    assert denied.stdout.strip() == "ERRNO EACCES", denied.stdout + denied.stderr
    # UDP: the first sendto is refused the same way.
    udp = textwrap.dedent(f"""
        import errno, socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.sendto(b"x", ("{KERNEL}", 9001)); print("SENT")
        except OSError as e:
            print("ERRNO", errno.errorcode.get(e.errno, e.errno))
        """)
    denied = env.run(py, "-c", udp, user="daemon", timeout=60)
    assert denied.stdout.strip() == "ERRNO EACCES", denied.stdout + denied.stderr


def test_holding_the_fd_is_the_capability(env):
    """A root master's socket used by a worker that dropped to a user outside [Access] (nginx,
    postgres, sshd): options, names and data on the held socket work; new presence is refused."""
    env.peer("echo", 9000)
    code = textwrap.dedent(f"""
        import errno, os, pwd, socket
        s = socket.socket()
        s.connect(("{KERNEL}", 9000))
        l = socket.socket()
        l.bind(("{STACK}", 0))
        l.listen(4)
        pid = os.fork()
        if pid == 0:
            os.setgid(pwd.getpwnam("daemon").pw_gid); os.setuid(pwd.getpwnam("daemon").pw_uid)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            print("NODELAY", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            print("NAME", s.getsockname()[0], s.getpeername())
            s.sendall(b"held"); print("ECHO", s.recv(4))
            print("LISTENER", l.getsockname()[0], l.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
            n = socket.socket()
            try:
                n.connect(("{KERNEL}", 9000)); print("NEW CONNECTED")
            except OSError as e:
                print("NEW", errno.errorcode.get(e.errno, e.errno))
            os._exit(0)
        os.waitpid(pid, 0)
        """)
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    out = env.run(py, "-c", code, timeout=60).stdout.split("\n")
    assert "NODELAY 1" in out, out
    assert f"NAME {STACK} ('{KERNEL}', 9000)" in out, out
    assert "ECHO b'held'" in out, out
    assert f"LISTENER {STACK} 1" in out, out
    assert "NEW EACCES" in out, out


# For programs under the intercept: how many RPC connections (sessions) the process holds.
SESSIONS = textwrap.indent(textwrap.dedent("""
    def sessions():
        n = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                s = socket.socket(fileno=os.dup(int(fd)))
            except OSError:
                continue
            try:
                n += s.family == socket.AF_UNIX and s.getpeername() == os.environ["ZTAP_RPC"]
            except OSError:
                pass
            s.close()
        return n
    """), "        ")


def test_a_session_judges_each_request_by_the_ids_it_was_sent_with(env):
    """The library keeps its RPC connection (a session) across requests. A process that opened it
    as root and then dropped to a user outside [Access] (and without CAP_NET_BIND_SERVICE) is
    refused new presence on that same connection: ztapd judges each request by the credentials
    the kernel attached to it, not by who opened the connection."""
    env.peer("echo", 9000)
    code = textwrap.dedent(f"""
        import errno, os, pwd, socket
{SESSIONS}
        s = socket.socket()
        s.connect(("{KERNEL}", 9000))
        print("ROOT", s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), sessions())
        os.setgid(pwd.getpwnam("daemon").pw_gid); os.setuid(pwd.getpwnam("daemon").pw_uid)
        for what, addr in (("CONNECT", ("{KERNEL}", 9000)), ("BIND80", None)):
            n = socket.socket()
            try:
                n.connect(addr) if addr else n.bind(("{STACK}", 80))
                print(what, "OK")
            except OSError as e:
                print(what, errno.errorcode.get(e.errno, e.errno))
        print("HELD", s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), sessions())
        """)
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    r = env.run(py, "-c", code, timeout=60)
    out = r.stdout.split("\n")
    # One session from first to last: the refusals came over the connection root opened.
    assert "ROOT 0 1" in out and "HELD 0 1" in out, r.stdout + r.stderr
    assert "CONNECT EACCES" in out and "BIND80 EACCES" in out, r.stdout + r.stderr


def test_a_session_closed_for_idling_is_replaced_without_an_error(env):
    """ztapd closes a session that idles for 10 s; the program's next request finds it closed
    and goes over a fresh one: the program sees nothing of it."""
    env.peer("echo", 9000)
    code = textwrap.dedent(f"""
        import os, socket, time
{SESSIONS}
        s = socket.socket()
        s.connect(("{KERNEL}", 9000))
        print("BEFORE", s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), sessions())
        time.sleep(12)
        print("AFTER", s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), s.getpeername(), sessions())
        """)
    r = env.run(sys.executable, "-c", code, timeout=60)
    out = r.stdout.split("\n")
    assert "BEFORE 0 1" in out, r.stdout + r.stderr
    assert f"AFTER 0 ('{KERNEL}', 9000) 1" in out, r.stdout + r.stderr
    assert "ztintercept" not in r.stderr, r.stderr


def test_exit_status_passes_through(env):
    assert env.run("sh", "-c", "exit 7", check=False).returncode == 7
    assert env.run("/nonexistent-program", check=False).returncode == 127
