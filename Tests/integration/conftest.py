"""Shared fixtures for ztap integration tests.

Every test runs ztapd inside a network namespace it creates (``ztt-<pid>-<n>``) and deletes
afterwards; traffic only flows inside that namespace. Processes are stopped by the PIDs we
started, never by name. Tests need root (CI is root); otherwise they skip and say why.
"""
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("ZTAP_BIN_DIR", os.path.join(REPO, ".build", "release"))
_counter = itertools.count()


def require_root():
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces and TAP devices (CI runs as root)")


def run(cmd, check=True, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    r = subprocess.run(cmd, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd!r} failed ({r.returncode}): {r.stdout}\n{r.stderr}")
    return r


class Netns:
    """A network namespace owned by one test; deleted (with everything in it) on close."""

    def __init__(self):
        self.name = f"ztt-{os.getpid()}-{next(_counter)}"
        run(["ip", "netns", "add", self.name])
        run(["ip", "-n", self.name, "link", "set", "lo", "up"])

    def ip(self, *args, check=True):
        return run(["ip", "-n", self.name, *args], check=check)

    def ip_json(self, *args):
        out = run(["ip", "-n", self.name, "-j", *args]).stdout
        return json.loads(out) if out.strip() else []

    def exec(self, *cmd, check=True, **kw):
        return run(["ip", "netns", "exec", self.name, *cmd], check=check, **kw)

    def popen(self, *cmd, **kw):
        return subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], **kw)

    def link(self, ifname):
        links = [l for l in self.ip_json("link", "show") if l["ifname"] == ifname]
        return links[0] if links else None

    def addrs(self, ifname):
        info = self.ip_json("addr", "show", "dev", ifname)
        return sorted(f"{a['local']}/{a['prefixlen']}" for a in info[0]["addr_info"]
                      if not a["local"].startswith("fe80:")) if info else []

    def close(self):
        run(["ip", "netns", "del", self.name], check=False)


class Daemon:
    """ztapd started by the test inside `ns`, with its own config and run directories."""

    def __init__(self, ns, tmp, networks=None, daemon_conf=None, env=None, prefix=None):
        self.ns = ns
        # argv put before ztapd's (e.g. prlimit, setpriv); each must exec ztapd, so the PID we
        # get is ztapd's.
        self.prefix = prefix or []
        self.tmp = tmp
        self.config_dir = os.path.join(tmp, "etc")
        self.run_dir = os.path.join(tmp, "run")
        os.makedirs(os.path.join(self.config_dir, "networks.d"), exist_ok=True)
        if daemon_conf is not None:
            with open(os.path.join(self.config_dir, "ztapd.conf"), "w") as f:
                f.write(daemon_conf)
        for name, text in (networks or {}).items():
            self.write_network(name, text)
        self.log_path = os.path.join(tmp, "ztapd.log")
        self.env = env
        self.proc = None

    def write_network(self, name, text):
        with open(self.network_path(name), "w") as f:
            f.write(text)

    def network_path(self, name):
        return os.path.join(self.config_dir, "networks.d", name + ".conf")

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self.proc = self.ns.popen(*self.prefix, os.path.join(BIN, "ztapd"), "--config-dir", self.config_dir,
                                  "--run-dir", self.run_dir, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        if wait:
            self.wait_ready()
        return self

    @property
    def pid(self):
        """PID of ztapd itself (ip netns exec execs it, so it is the Popen PID)."""
        return self.proc.pid

    def wait_ready(self, timeout=20):
        sock = os.path.join(self.run_dir, "control.sock")
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"ztapd exited with {self.proc.returncode}:\n{self.logs()}")
            if os.path.exists(sock):
                r = self.ctl("status", check=False)
                if r.returncode == 0:
                    return
            time.sleep(0.05)
        raise AssertionError(f"ztapd not ready after {timeout}s:\n{self.logs()}")

    def logs(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def ctl(self, *args, check=True, user=None, json_out=False):
        cmd = [os.path.join(BIN, "ztctl"), *args, "--run-dir", self.run_dir]
        if json_out:
            cmd.append("--json")
        if user:
            cmd = ["runuser", "-u", user, "--", *cmd]
        return run(cmd, check=check)

    def ctl_json(self, *args, check=True):
        r = self.ctl(*args, check=check, json_out=True)
        return json.loads(r.stdout), r.returncode

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"ztapd did not stop on {sig!r}:\n{self.logs()}")


@pytest.fixture
def netns():
    require_root()
    ns = Netns()
    yield ns
    ns.close()


@pytest.fixture
def tmpdir_world():
    """A temp dir that other users (nobody) can traverse."""
    d = tempfile.mkdtemp(prefix="ztap-it-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemon_factory(netns, tmpdir_world):
    started = []

    def make(**kw):
        d = Daemon(netns, tmpdir_world, **kw)
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()


def py(netns, code, timeout=300):
    """Runs python3 code inside the namespace (the kernel side) and returns stdout."""
    r = netns.exec("python3", "-c", textwrap.dedent(code), timeout=timeout)
    return r.stdout


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_until(pred, timeout=10, interval=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return pred()
