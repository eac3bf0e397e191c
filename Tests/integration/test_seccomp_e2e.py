"""Programs that bypass libc on a ztap network: seccomp mode of `ztctl run` (issue 15).

Static busybox and a Go program (CGO_ENABLED=0: raw system calls) under plain `ztctl run`, as
clients and servers, TCP and UDP, against the real ztapd; the mode `ztctl run` picks by itself;
a shell in "both" mode running dynamic, static and Go programs; unprivileged users; [Access]
checked with the program's own credentials; Python's socket-semantics program in pure seccomp
mode (the same checks test_intercept_e2e.py runs through the library).

Each test: a namespace of its own, ztapd with network n (NetStack 10.70.0.2, kernel 10.70.0.1),
peers on the namespace's kernel stack; processes are stopped by PID.
"""
import os
import re
import shutil
import signal
import sys
import textwrap

import pytest

from conftest import BIN, REPO, run, wait_until
from intercept_env import (KERNEL, STACK, HERE, env, intercept_built, make_file, sha256,  # noqa: F401
                           wait_connectable, wait_port)

GOPROBE = os.path.join(REPO, ".build", "intercept", "goprobe")
BUSYBOX = shutil.which("busybox") or "/bin/busybox"

# The kernel side's UDP echo that tells the sender which source address it saw.
UDP_SEEN = textwrap.dedent(f"""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("{KERNEL}", 9999))
    print("READY", flush=True)
    while True:
        d, a = s.recvfrom(2048)
        s.sendto(d + f" seen-from {{a[0]}}:{{a[1]}}".encode(), a)
    """)


@pytest.fixture(scope="module", autouse=True)
def seccomp_tools():
    """busybox-static and Go come from scripts/install-deps.sh; the Go program is built once
    (standard library only, no module downloads; the build cache stays in .build/gocache)."""
    if not os.path.exists(BUSYBOX) or "statically linked" not in run(["file", "-L", BUSYBOX]).stdout:
        pytest.fail("busybox-static is not installed (scripts/install-deps.sh installs it)")
    build_goprobe()


def build_goprobe():
    go = shutil.which("go")
    if not go:
        pytest.fail("go is not installed (scripts/install-deps.sh installs golang-go)")
    if not os.path.exists(os.path.join(REPO, ".build", "intercept", "ztap-seccomp")):
        run([os.path.join(REPO, "scripts", "build-intercept.sh")])
    src = os.path.join(HERE, "goprobe")
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod", GOPROXY="off",
               GOCACHE=os.path.join(REPO, ".build", "gocache"), GOPATH=os.path.join(REPO, ".build", "gopath"))
    run([go, "build", "-o", GOPROBE, "."], cwd=src, env=env, timeout=600)
    assert "statically linked" in run(["file", GOPROBE]).stdout


def http_server(env, directory, port=8000):
    """python3 -m http.server on the kernel side; returns the path of its log (client addresses)."""
    log = os.path.join(env.tmp, f"http-{port}.log")
    env.spawn(sys.executable, "-m", "http.server", "--bind", KERNEL, "--directory", directory, str(port),
              stderr=open(log, "wb"))
    wait_port(env.ns, KERNEL, port)
    return log


def clients_of(log):
    with open(log) as f:
        return re.findall(r"^(\S+) - - .*\"GET ", f.read(), re.M)


def child_pid(pid):
    """The program under `ztctl run` in seccomp mode: the supervisor's (ztctl's) child."""
    def find():
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                kids = f.read().split()
            return int(kids[0]) if kids else None
        except OSError:
            return None
    return wait_until(find, timeout=10)


def ztrun_mode(env, mode, *cmd):
    """argv for `ztctl run n --mode MODE -- cmd`."""
    return [os.path.join(BIN, "ztctl"), "run", "n", "--run-dir", env.d.run_dir, "--mode", mode, "--", *cmd]


def mode_of(env, *cmd):
    argv = [os.path.join(BIN, "ztctl"), "run", "n", "--run-dir", env.d.run_dir, "--debug", "--", *cmd]
    r = env.ns.exec(*argv, check=False, timeout=60)
    m = re.search(r"ztctl: running \S+ in (\w+) mode", r.stderr)
    return m.group(1) if m else r.stderr


# --- static busybox ---------------------------------------------------------------------------

def test_busybox_wget_static_client(env):
    src = os.path.join(env.tmp, "www")
    os.makedirs(src)
    want = make_file(os.path.join(src, "big.bin"), 10)
    log = http_server(env, src)
    out = os.path.join(env.tmp, "out.bin")
    env.run(BUSYBOX, "wget", "-q", "-O", out, f"http://{KERNEL}:8000/big.bin")
    assert sha256(out) == want
    assert clients_of(log) == [STACK], clients_of(log)
    # The issue as a user met it: forced onto the library, the static wget bypasses it and
    # reaches the server from the kernel's own address.
    env.ns.exec(*ztrun_mode(env, "preload", BUSYBOX, "wget", "-q", "-O", out, f"http://{KERNEL}:8000/big.bin"))
    assert clients_of(log) == [STACK, KERNEL], clients_of(log)


def test_busybox_httpd_static_server(env):
    www = os.path.join(env.tmp, "www")
    os.makedirs(www)
    want = make_file(os.path.join(www, "big.bin"), 10)
    p = env.spawn(*env.ztrun(BUSYBOX, "httpd", "-f", "-p", f"{STACK}:8080", "-h", www))
    wait_connectable(STACK, 8080, env.ns)
    out = os.path.join(env.tmp, "got.bin")
    env.ns.exec("curl", "-sS", "--fail", "-o", out, f"http://{STACK}:8080/big.bin", timeout=120)
    assert sha256(out) == want
    # A library-served listener next to it: `ztctl connections` tells them apart.
    env.spawn(*env.ztrun(sys.executable, "-m", "http.server", "--bind", STACK, "--directory", www, "8081"))
    wait_connectable(STACK, 8081, env.ns)
    httpd = child_pid(p.pid)
    rows = {c["local"]: c for c in env.connections() if c["state"] == "LISTEN"}
    assert rows[f"{STACK}:8080"]["mode"] == "seccomp" and rows[f"{STACK}:8080"]["pid"] == httpd, rows
    assert rows[f"{STACK}:8081"]["mode"] == "preload", rows


# --- Go (CGO_ENABLED=0) -----------------------------------------------------------------------

def test_go_http_client(env):
    src = os.path.join(env.tmp, "www")
    os.makedirs(src)
    want = make_file(os.path.join(src, "big.bin"), 10)
    log = http_server(env, src)
    out = os.path.join(env.tmp, "out.bin")
    r = env.run(GOPROBE, "get", f"http://{KERNEL}:8000/big.bin", out)
    assert r.stdout.strip() == f"status=200 bytes={10 << 20}", r.stdout
    assert sha256(out) == want
    assert clients_of(log) == [STACK], clients_of(log)


def test_go_http_server_sees_the_real_peer(env):
    www = os.path.join(env.tmp, "www")
    os.makedirs(www)
    want = make_file(os.path.join(www, "big.bin"), 10)
    env.spawn(*env.ztrun(GOPROBE, "serve", f"{STACK}:8081", www), ready=True)
    wait_connectable(STACK, 8081, env.ns)
    seen = env.ns.exec("curl", "-sS", "--fail", f"http://{STACK}:8081/peer", timeout=60).stdout
    peer, local = seen.split()
    assert peer.startswith(f"{KERNEL}:") and local == f"{STACK}:8081", seen
    out = os.path.join(env.tmp, "got.bin")
    env.ns.exec("curl", "-sS", "--fail", "-o", out, f"http://{STACK}:8081/big.bin", timeout=120)
    assert sha256(out) == want


def test_go_udp_round_trips(env):
    env.spawn(sys.executable, "-c", UDP_SEEN, ready=True)
    # Connected socket: Write/Read are plain write(2)/read(2) on an fd of the datagram range.
    r = env.run(GOPROBE, "udp", f"{KERNEL}:9999", "hello")
    m = re.fullmatch(rf"reply=hello seen-from {re.escape(STACK)}:(\d+) local={re.escape(STACK)}:(\d+)", r.stdout.strip())
    assert m and m.group(1) == m.group(2), r.stdout
    # Unconnected, bound to the stack address: WriteTo/ReadFrom (sendto/recvfrom with addresses).
    r = env.run(GOPROBE, "udpfrom", f"{STACK}:5555", f"{KERNEL}:9999", "hi")
    assert r.stdout.strip() == f"reply=hi seen-from {STACK}:5555 from={KERNEL}:9999 local={STACK}:5555", r.stdout


# --- choosing the mode, "both", users ----------------------------------------------------------

def test_auto_mode_choice(env):
    script = os.path.join(env.tmp, "wrapper.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(script, 0o755)
    assert mode_of(env, BUSYBOX, "true") == "seccomp"
    assert mode_of(env, GOPROBE, "nothing") == "seccomp"
    assert mode_of(env, "curl", "--version") == "preload"
    assert mode_of(env, "sh", "-c", "true") == "both"
    assert mode_of(env, script) == "both"


def test_shell_in_both_mode_covers_dynamic_static_and_go_children(env):
    src = os.path.join(env.tmp, "www")
    os.makedirs(src)
    want = make_file(os.path.join(src, "big.bin"), 4)
    log = http_server(env, src)
    url = f"http://{KERNEL}:8000/big.bin"
    o1, o2, o3 = (os.path.join(env.tmp, n) for n in ("c.bin", "b.bin", "g.bin"))
    env.run("sh", "-c", f"curl -sS --fail -o {o1} {url} && {BUSYBOX} wget -q -O {o2} {url} && {GOPROBE} get {url} {o3}")
    assert [sha256(o) for o in (o1, o2, o3)] == [want] * 3
    assert clients_of(log) == [STACK] * 3, clients_of(log)


def test_unprivileged_user_and_access_with_the_programs_credentials(env):
    env.spawn(sys.executable, "-c", UDP_SEEN, ready=True)
    # ztctl itself run by nobody: no_new_privs, no root, no ptrace needed.
    r = env.run(GOPROBE, "udp", f"{KERNEL}:9999", "as-nobody", user="nobody")
    assert r.stdout.startswith(f"reply=as-nobody seen-from {STACK}:"), r.stdout + r.stderr
    # Root's ztctl, the program drops to another user: ztapd sees that user ([Access] allows
    # nobody only), as it would through the library.
    ok = env.ns.exec(*ztrun_mode(env, "seccomp", "runuser", "-u", "nobody", "--", GOPROBE, "udp", f"{KERNEL}:9999", "x"),
                     check=False, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith("reply=x"), ok.stdout + ok.stderr
    denied = env.ns.exec(*ztrun_mode(env, "seccomp", "runuser", "-u", "daemon", "--", GOPROBE, "get",
                                     f"http://{KERNEL}:9/", "/dev/null"), check=False, timeout=60)
    assert denied.returncode == 1 and "connect: permission denied" in denied.stderr, denied.stderr


def test_python_socket_semantics_in_pure_seccomp_mode(env):
    env.peer("echo", 9000)
    env.peer("udpecho", 9001)
    env.peer("callback", 9003)
    argv = ztrun_mode(env, "seccomp", sys.executable, os.path.join(HERE, "intercept_semantics.py"), STACK, KERNEL)
    r = env.ns.exec(*argv, timeout=120, check=False)
    assert r.returncode == 0 and "ALL OK" in r.stdout, r.stdout + r.stderr


def test_exit_status_in_seccomp_mode(env):
    assert env.ns.exec(*ztrun_mode(env, "seccomp", "sh", "-c", "exit 7"), check=False).returncode == 7
    # Killed by a signal: ztctl dies of the same signal (a shell shows 143).
    killed = env.ns.exec(*ztrun_mode(env, "seccomp", BUSYBOX, "sh", "-c", "kill -TERM $$"), check=False)
    assert killed.returncode == -signal.SIGTERM, killed.returncode
    assert env.ns.exec(*ztrun_mode(env, "seccomp", "/nonexistent-program"), check=False).returncode == 127


def test_denied_ptrace_access_is_reported(env):
    """Seccomp mode acts on the program through pidfd_getfd/process_vm_readv, which the kernel's
    ptrace rules govern: a program that makes itself non-dumpable shuts out an unprivileged
    supervisor. Its calls then go to the kernel unchanged, and the supervisor says so."""
    env.peer("echo", 9000)
    code = textwrap.dedent(f"""
        import ctypes, socket
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0
        s = socket.create_connection(("{KERNEL}", 9000), timeout=10)
        print("LOCAL", s.getsockname()[0])
        """)
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    r = env.ns.exec("runuser", "-u", "nobody", "--", *ztrun_mode(env, "seccomp", py, "-c", code), check=False, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"LOCAL {KERNEL}", r.stdout + r.stderr
    assert "Seccomp mode needs ptrace access to the program" in r.stderr, r.stderr
