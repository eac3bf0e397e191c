"""Unmodified programs on a ztap network through the intercept (issue: ztintercept + RPC).

Each test: a namespace of its own, ztapd in it with network "n" (NetStack 10.70.0.2, kernel side
10.70.0.1 on the TAP), programs under `ztctl run n -- ...` and their peers on the namespace's
own kernel stack (intercept_env.py). Traffic never leaves the namespace; processes are stopped by
PID. Back-pressure, urgent data and the no-spin checks are in test_intercept_flow.py.
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

from conftest import fd_count, wait_until
from intercept_env import (HERE, KERNEL, STACK, env, intercept_built, make_file,  # noqa: F401 (fixtures)
                           sha256, wait_connectable, wait_port)


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
