"""What the intercept end-to-end tests share: ztapd with network "n" in the test's namespace
(NetStack 10.70.0.2, kernel side 10.70.0.1 on the TAP), programs under `ztctl run n -- ...`, their
kernel-side peers (kernel_peer.py), and the checks several tests make (files, RSS, idle CPU).
"""
import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import BIN, REPO, run, wait_until

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
            stop_proc(p)


def stop_proc(p):
    """SIGTERM to a process the test started (by its Popen), SIGKILL if it lingers 5 s."""
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
