"""Differential socket test (issue 9, "Linux-identical sockets"): Linux is the reference.

The probe (probe_*.c) runs every case twice, and the two transcripts must be identical:

  (a) reference: two network namespaces joined by a veth; the probe uses Linux's own sockets
      in one (SELF 10.71.0.2 and fd71::2), peer.py serves in the other (PEER 10.71.0.1, fd71::1);
  (b) ztap: ztapd in a namespace with network "n" (stack SELF 10.71.0.2 and fd71::2, TAP kernel
      side PEER 10.71.0.1 and fd71::1), peer.py there on the kernel side; the probe runs under `ztctl run` in a
      third namespace that has only loopback, so a socket that slipped past the intercept could
      reach nothing (it would show as ENETUNREACH in the transcript).

Both environments run at the same time. Every packet stays inside the namespaces created here,
which are deleted afterwards; processes are stopped by PID.

KNOWN_DIFFERENCES lists the cases where ztap differs from Linux today, each with the reason.
The test of a case fails if it differs and is not listed, or if it is listed and now matches
(then remove it from the list: the lead's work list shrinks).

Pytest:  ZTAP_BIN_DIR=$PWD/.build/release python3 -m pytest -q Tests/diff     (root)
         ZTAP_DIFF_CASES=udp_connected,peer_close ... only those cases
By hand: python3 Tests/diff/run_diff.py [--ref-only|--ztap-only] [--quiet] [--timing] [--keep]
         [--save DIR] [CASE...]: prints both transcripts of each case and their diff (--keep leaves
         the namespaces up and prints the command that runs the probe in each).
Seccomp mode (ztap-seccomp): ZTAP_DIFF_MODE=seccomp (runs the cases under `ztctl run --mode
seccomp` and selects KNOWN_DIFFERENCES_BY_MODE["seccomp"]); ZTAP_DIFF_RUNNER overrides the runner.
"""
import difflib
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("ZTAP_BIN_DIR", os.path.join(REPO, ".build", "release"))
LIB = os.path.join(REPO, ".build", "intercept", "libztintercept.so")
PROBE = os.path.join(REPO, ".build", "diff", "probe")
PEER_PY = os.path.join(HERE, "peer.py")
SELF, PEER = "10.71.0.2", "10.71.0.1"
SELF6, PEER6 = "fd71::2", "fd71::1"
CASE_TIMEOUT = 15           # seconds per case before the probe kills it
DEFAULT_RUNNER = "{ztctl} run n --run-dir {run_dir} --bind-any --"
MODE = os.environ.get("ZTAP_DIFF_MODE", "preload")

# Where ztap differs from Linux today (case -> what differs: "Linux X; ztap Y"). This is the work
# list for making the intercept Linux-identical; remove an entry when its case matches (the test
# then insists). Recurring root causes, named in brackets:
#   [RST]              after the peer's RST ztap shows POLLHUP but no POLLERR, reads 0 (Linux
#                      ECONNRESET once), SO_ERROR then ECONNRESET (Linux 0: the read consumed it):
#                      a unix socket can only carry the error when the app had bytes in flight
#   [UNCONNECTED]      a ztap socket made unconnected again (its connect failed, or AF_UNSPEC) keeps
#                      as its fd the unix stream its connection closed, until a new connect
#                      brings a new one: its mask has POLLIN|POLLRDHUP (EOF) where Linux's
#                      unconnected socket shows only POLLOUT|POLLHUP
KNOWN_DIFFERENCES = {
    "connect_af_unspec": "[UNCONNECTED] after connect(AF_UNSPEC) Linux POLLOUT|POLLERR|POLLHUP, recv ENOTCONN; ztap POLLIN|POLLOUT|POLLRDHUP|POLLERR|POLLHUP, recv 0. Names, SO_ERROR ECONNRESET, send EPIPE and the reconnect match",
    "connect_refused_bound": "[UNCONNECTED] after a bound socket's blocking connect failed: Linux POLLOUT|POLLHUP, ztap POLLIN|POLLOUT|POLLRDHUP|POLLHUP. Names, SO_ERROR and the reconnect from the bound port match",
    "select_masks": "[RST] mask without POLLERR",
    "accept_peer_rst_queued": "a connection reset while queued: Linux accepts it with POLLERR|POLLHUP (then getpeername ENOTCONN, SO_ERROR ECONNRESET, recv 0, send EPIPE, which ztap matches); ztap's accepted end lacks POLLERR (ztapd closed its copy of the app end at delivery, and only a byte unread in our end when it closes gives the app end ECONNRESET/POLLERR), or, when the RST is processed before ztapd takes the connection from NetStack's accept queue, the connection is gone (accept EAGAIN: NetStack drops a reset connection from its accept queue; Linux keeps it there and accept returns it). Branch diff-cases2-wip-accept-rst fixes the first part",
    "listen_shutdown": "shutdown(SHUT_RD) on a listener: Linux stops listening (mask POLLOUT|POLLHUP, SO_ACCEPTCONN 0, listen again 0); ztap's SHUT_RD is native on the accept channel (mask POLLIN|POLLRDHUP|POLLHUP, SO_ACCEPTCONN 1) and ztapd drops the listener at the hang-up (listen again -1 ENOTSOCK). Architectural for the mask: the socket would have to become an unconnected one (Linux: POLLOUT|POLLHUP), but a ztap socket's fd is a unix socket connected to ztapd (the connection is how ztapd sees the app's close), and a connected unix socket shows POLLHUP only with POLLIN|POLLRDHUP (sk_shutdown == SHUTDOWN_MASK); only an unconnected one shows POLLOUT|POLLHUP, and ztapd cannot see its close. (Stopping the listener, SO_ACCEPTCONN 0 and listen again could be done with a new data socketpair; the mask would still differ.)",
    "opt_so_rcvlowat": "SO_RCVLOWAT 5 with 2 bytes queued: Linux poll POLLOUT, ztap POLLIN|POLLOUT (the app end's poll is the kernel's unix socket)",
    "shutdown_rd": "data that arrives after SHUT_RD: Linux recv returns it (\"abc\"), ztap 0 (the SHUT_RD is native on the app end: ztapd can no longer write to it and drops what arrives)",
    "peer_close": "writing after the peer's FIN provokes an RST: Linux POLLERR|POLLHUP, SO_ERROR EPIPE, sends EPIPE, getpeername ENOTCONN; ztap no POLLHUP, SO_ERROR ECONNRESET, sends 1, getpeername PEER",
    "peer_rst_read": "[RST] recv 0 (Linux ECONNRESET), SO_ERROR ECONNRESET afterwards (Linux 0), send 1 (Linux EPIPE), getpeername PEER",
    "peer_rst_so_error": "[RST] masks lack POLLERR|POLLHUP (before and after reading SO_ERROR)",
    "peer_rst_write": "[RST] sends 1, 1 and write 1 without SIGPIPE (Linux ECONNRESET, EPIPE, EPIPE+SIGPIPE)",
    "peer_rst_after_data": "[RST] after \"hello\" recv 0 (Linux ECONNRESET), SO_ERROR ECONNRESET left (Linux 0)",
    "epipe_sigpipe": "the RST provoked by writing after the peer's FIN never shows: no POLLHUP, write/send succeed without SIGPIPE (Linux EPIPE and SIGPIPE)",
    "epoll_peer_close": "[RST] epoll after the provoked RST: EPOLLIN|EPOLLOUT|EPOLLRDHUP (Linux also EPOLLERR|EPOLLHUP)",
    "epoll_peer_rst": "[RST] epoll lacks EPOLLERR|EPOLLHUP; recv 0 instead of ECONNRESET",
    "names_states": "[RST] after a reset: mask without POLLERR",
    "udp_icmp_refused": "an ICMP port unreachable shows as POLLIN|POLLOUT (Linux POLLOUT|POLLERR); a pending error is not reported by send (Linux -1 ECONNREFUSED, ztap 1)",
    "udp_icmp_so_error": "an ICMP port unreachable shows as POLLIN (Linux POLLERR); SO_ERROR 0 (Linux ECONNREFUSED), the error comes on recv instead",
}

# Seccomp mode (ztap-seccomp, for programs that bypass libc) differs where the library does and
# where its data calls stay native: only the datagram fd range's are trapped, so reads of a TCP
# socket are the unix socket's own ([DATA]).
KNOWN_DIFFERENCES_SECCOMP_ONLY = {
    "connect_refused_nonblocking": "[DATA] recv after the refused non-blocking connect gives the unix socket's ECONNRESET (Linux the connection's ECONNREFUSED, which the library reports), and SO_ERROR then still ECONNREFUSED (Linux 0)",
    "tcp_urgent_data": "[DATA] after recv(MSG_OOB) took the urgent byte the fd stays readable (POLLIN|POLLOUT, Linux POLLOUT): the library empties the unix socket's mark with a 0-byte read, a native read leaves it",
    "scm_rights_udp": "a UDP socket received over SCM_RIGHTS lands outside the receiver's datagram fd range, whose data calls are the only ones trapped: its reads see ztap's framing and the datagram never arrives (TIMEOUT); docs/INTERCEPT.md, seccomp mode",
}
KNOWN_DIFFERENCES_BY_MODE = {"preload": KNOWN_DIFFERENCES,
                             "seccomp": {**KNOWN_DIFFERENCES, **KNOWN_DIFFERENCES_SECCOMP_ONLY}}
# The runner that selects seccomp mode (scripts/test.sh runs the cases in both modes).
SECCOMP_RUNNER = "{ztctl} run n --run-dir {run_dir} --bind-any --mode seccomp --"

# Host settings the reference depends on, pinned to Linux's defaults in every namespace here so
# the reference transcript is the same on any host (the host may use bbr, another port range).
# The congestion control is reno, not Linux's cubic: outside the initial namespace only what the
# host's tcp_allowed_congestion_control lists may become the default, and reno always is. ztapd
# takes its namespace's default as the kernel's sockets do (opt_tcp_congestion), and the send
# buffer Linux reports depends on it (opt_so_sndbuf: bbr triples the segments, cubic/reno double).
SYSCTLS = {
    "net.ipv4.ip_local_port_range": "32768 60999",
    "net.ipv4.tcp_timestamps": "1",
    "net.ipv4.tcp_sack": "1",
    "net.ipv4.tcp_window_scaling": "1",
    "net.ipv4.tcp_ecn": "2",
    "net.ipv4.tcp_syn_retries": "6",
    "net.ipv4.tcp_congestion_control": "reno",
    "net.ipv4.tcp_rmem": "4096 131072 6291456",   # the window scale Linux offers comes from its max
    "net.ipv4.tcp_wmem": "4096 16384 4194304",
    "net.ipv4.icmp_ratelimit": "0",      # every ICMP port unreachable is sent
    "net.ipv6.icmp.ratelimit": "0",
}

_counter = itertools.count()


def case_names():
    """The cases, in run order, from probe_cases.h (no build needed to list them)."""
    with open(os.path.join(HERE, "probe_cases.h")) as f:
        return re.findall(r"^X\((\w+),", f.read(), re.M)


def run(cmd, check=True, timeout=120, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    r = subprocess.run(cmd, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{cmd!r} failed ({r.returncode}): {r.stdout}\n{r.stderr}")
    return r


def build_probe():
    os.makedirs(os.path.dirname(PROBE), exist_ok=True)
    cc = shutil.which("cc") or shutil.which("gcc")
    srcs = sorted(os.path.join(HERE, f) for f in os.listdir(HERE) if f.startswith("probe_") and f.endswith(".c"))
    run([cc, "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-std=gnu11", "-o", PROBE + ".tmp", *srcs])
    os.replace(PROBE + ".tmp", PROBE)


def build_intercept():
    if not os.path.exists(LIB):
        run([os.path.join(REPO, "scripts", "build-intercept.sh")])


class Netns:
    def __init__(self, tag):
        self.name = f"ztd-{tag}-{os.getpid()}-{next(_counter)}"
        run(["ip", "netns", "add", self.name])

    def setup(self):
        self.ip("link", "set", "lo", "up")
        for k, v in SYSCTLS.items():
            self.exec("sysctl", "-q", "-w", f"{k}={v}")

    def ip(self, *args, check=True):
        return run(["ip", "-n", self.name, *args], check=check)

    def exec(self, *cmd, check=True, **kw):
        return run(["ip", "netns", "exec", self.name, *cmd], check=check, **kw)

    def argv(self, *cmd):
        return ["ip", "netns", "exec", self.name, *cmd]

    def has_addr(self, addr):
        """The address is there and usable (an IPv6 one has passed duplicate address detection)."""
        six = ":" in addr
        out = self.ip("-6" if six else "-4", "addr", "show", check=False).stdout
        lines = [l for l in out.splitlines() if f"inet{'6' if six else ''} {addr}/" in l]
        return bool(lines) and "tentative" not in lines[0]

    def close(self):
        run(["ip", "netns", "del", self.name], check=False)


def stop(proc, timeout=10):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Env:
    """One side of the comparison: a peer namespace running peer.py, a probe namespace and the
    command prefix that runs the probe there."""

    kind = "?"

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix=f"ztdiff-{self.kind}-")
        os.chmod(self.tmp, 0o755)
        self.ctl_path = os.path.join(self.tmp, "peer.sock")
        self.namespaces = []
        self.procs = []
        self.peer_ns = self.probe_ns = None

    def netns(self, tag):
        ns = Netns(tag)
        self.namespaces.append(ns)
        ns.setup()
        return ns

    def start_peer(self):
        deadline = time.time() + 20
        for addr in (PEER, PEER6):
            while not self.peer_ns.has_addr(addr):
                if time.time() > deadline:
                    raise RuntimeError(f"{self.kind}: {addr} never appeared in the peer namespace")
                time.sleep(0.05)
        self.peer_log = open(os.path.join(self.tmp, "peer.log"), "w")
        p = subprocess.Popen(self.peer_ns.argv(sys.executable, PEER_PY, PEER, SELF, self.ctl_path, PEER6, SELF6),
                             stdout=subprocess.PIPE, stderr=self.peer_log, text=True)
        self.procs.append(p)
        line = p.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError(f"{self.kind}: peer.py did not start: {line!r} {self.logs()}")

    def prefix(self):
        raise NotImplementedError

    def run_probe(self, cases, timeout=None):
        argv = self.probe_ns.argv(*self.prefix(), PROBE, "--ctl", self.ctl_path, "--timeout", str(CASE_TIMEOUT), *cases)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout or (CASE_TIMEOUT + 5) * len(cases) + 30)
        self.stderr = r.stderr
        return r.stdout

    def logs(self):
        text = ""
        try:
            with open(os.path.join(self.tmp, "peer.log")) as f:
                text += "--- peer.py stderr ---\n" + f.read()[-3000:]
        except OSError:
            pass
        return text

    def close(self):
        for p in reversed(self.procs):
            stop(p)
        for ns in reversed(self.namespaces):
            ns.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class KernelEnv(Env):
    kind = "linux"

    def __init__(self):
        super().__init__()
        try:
            self.setup()
        except BaseException:
            self.close()
            raise

    def setup(self):
        self.peer_ns = self.netns("kp")
        self.probe_ns = self.netns("kc")
        # Both ends are created directly inside the namespaces: nothing touches the host's.
        self.peer_ns.ip("link", "add", "dpeer", "type", "veth", "peer", "name", "dprobe", "netns", self.probe_ns.name)
        self.peer_ns.ip("addr", "add", f"{PEER}/24", "dev", "dpeer")
        self.probe_ns.ip("addr", "add", f"{SELF}/24", "dev", "dprobe")
        # No DAD on the veth: the ends cannot collide, and the addresses are usable at once.
        self.peer_ns.ip("addr", "add", f"{PEER6}/64", "dev", "dpeer", "nodad")
        self.probe_ns.ip("addr", "add", f"{SELF6}/64", "dev", "dprobe", "nodad")
        self.peer_ns.ip("link", "set", "dpeer", "up")
        self.probe_ns.ip("link", "set", "dprobe", "up")
        self.start_peer()

    def prefix(self):
        return []


class ZtapEnv(Env):
    kind = "ztap"

    def __init__(self, runner=None):
        super().__init__()
        self.runner = (runner or os.environ.get("ZTAP_DIFF_RUNNER") or
                       (SECCOMP_RUNNER if MODE == "seccomp" else DEFAULT_RUNNER))
        try:
            self.setup()
        except BaseException:
            self.close()
            raise

    def setup(self):
        self.peer_ns = self.netns("zp")
        self.probe_ns = self.netns("zc")
        self.config_dir = os.path.join(self.tmp, "etc")
        self.run_dir = os.path.join(self.tmp, "run")
        os.makedirs(os.path.join(self.config_dir, "networks.d"))
        with open(os.path.join(self.config_dir, "networks.d", "n.conf"), "w") as f:
            f.write(f"[Network]\nInterface=ztdiff0\nMTU=1500\nAddress={SELF}/24 {SELF6}/64\n"
                    f"KernelAddress={PEER}/24 {PEER6}/64\n")
        self.daemon_log = os.path.join(self.tmp, "ztapd.log")
        log = open(self.daemon_log, "ab")
        self.daemon = subprocess.Popen(self.peer_ns.argv(os.path.join(BIN, "ztapd"), "--config-dir", self.config_dir,
                                                         "--run-dir", self.run_dir), stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(self.daemon)
        self.wait_daemon()
        self.start_peer()

    def wait_daemon(self, timeout=20):
        deadline = time.time() + timeout
        sock = os.path.join(self.run_dir, "n.sock")
        while time.time() < deadline:
            if self.daemon.poll() is not None:
                raise RuntimeError(f"ztapd exited with {self.daemon.returncode}:\n{self.logs()}")
            if os.path.exists(sock) and self.stack_ipv6_ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"ztapd's {sock} never appeared or its IPv6 address never passed DAD:\n{self.logs()}")

    def stack_ipv6_ready(self):
        """The stack's IPv6 address has passed duplicate address detection (~1 s)."""
        r = run([os.path.join(BIN, "ztctl"), "list", "--run-dir", self.run_dir, "--json"], check=False)
        try:
            addrs = json.loads(r.stdout)["networks"][0].get("stackAddresses", [])
        except (ValueError, KeyError, IndexError):
            return False
        return f"{SELF6}/64" in addrs

    def prefix(self):
        return shlex.split(self.runner.format(ztctl=os.path.join(BIN, "ztctl"), run_dir=self.run_dir))

    def logs(self):
        text = super().logs()
        try:
            with open(self.daemon_log, errors="replace") as f:
                text += "\n--- ztapd log (tail) ---\n" + f.read()[-4000:]
        except OSError:
            pass
        return text


def parse(transcript):
    """{case: [lines]} from the probe's output (between === CASE and === END)."""
    cases, cur = {}, None
    for line in transcript.splitlines():
        m = re.match(r"^=== CASE (\w+)$", line)
        if m:
            cur = m.group(1)
            cases[cur] = []
            continue
        if cur is not None:
            cases[cur].append(line)
            if line.startswith(f"=== END {cur}:"):
                cur = None
    return cases


def diff(ref, got, name):
    return "\n".join(difflib.unified_diff(ref, got, f"linux/{name}", f"ztap/{name}", lineterm="", n=2))


def run_both(cases, runner=None, which=("linux", "ztap"), keep=False):
    """Sets up the environments, runs the cases in both at once, tears everything down (with
    keep=True only after printing how to run the probe by hand and waiting for Enter).
    Returns ({env: {case: lines}}, {env: raw text}, {env: logs})."""
    envs, results, raw, logs, errors = {}, {}, {}, {}, {}
    timings = {}
    try:
        if "linux" in which:
            envs["linux"] = KernelEnv()
        if "ztap" in which:
            envs["ztap"] = ZtapEnv(runner)

        def work(kind):
            try:
                raw[kind] = envs[kind].run_probe(cases)
            except Exception as e:           # reported by the caller with the logs
                errors[kind] = e
        threads = [threading.Thread(target=work, args=(k,)) for k in envs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for kind, env in envs.items():
            err = getattr(env, "stderr", "")
            timings[kind] = {m.group(1): float(m.group(2)) for m in re.finditer(r"^probe: (\w+) took ([\d.]+) s$", err, re.M)}
            err = "\n".join(l for l in err.splitlines() if not l.startswith("probe: ") or " took " not in l)
            logs[kind] = env.logs() + ("\n--- probe stderr ---\n" + err[-3000:])
            if kind in errors:
                raise RuntimeError(f"{kind}: the probe failed: {errors[kind]}\n{logs[kind]}")
            results[kind] = parse(raw[kind])
        if keep:
            for kind, env in envs.items():
                argv = env.probe_ns.argv(*env.prefix(), PROBE, "--ctl", env.ctl_path, "CASE...")
                print(f"{kind}: {shlex.join(argv)}")
            input("environments kept; press Enter to delete them ")
    finally:
        for env in envs.values():
            env.close()
    run_both.timings = timings
    return results, raw, logs


# ------------------------------------------------------------------------------------------
# pytest

try:
    import pytest
except ImportError:         # the by-hand mode does not need it
    pytest = None

if pytest is not None:
    ALL_CASES = case_names()
    SELECTED = [c for c in os.environ.get("ZTAP_DIFF_CASES", "").split(",") if c] or ALL_CASES

    @pytest.fixture(scope="module")
    def transcripts():
        if os.geteuid() != 0:
            pytest.skip("needs root: creates network namespaces, a veth pair and a TAP device (CI runs as root)")
        for b in ("ztapd", "ztctl"):
            if not os.path.exists(os.path.join(BIN, b)):
                pytest.fail(f"{BIN}/{b} is missing: run `swift build -c release` (or set ZTAP_BIN_DIR)")
        build_intercept()
        build_probe()
        t0 = time.monotonic()
        results, _, logs = run_both(SELECTED)
        print(f"\ndiff harness: {len(SELECTED)} cases in both environments in {time.monotonic() - t0:.1f} s")
        return results, logs

    def test_known_differences_name_real_cases():
        known = KNOWN_DIFFERENCES_BY_MODE.get(MODE, {})
        unknown = sorted(set(known) - set(ALL_CASES))
        assert not unknown, f"KNOWN_DIFFERENCES names cases that do not exist: {unknown}"
        assert len(ALL_CASES) == len(set(ALL_CASES)), "duplicate case names in probe_cases.h"

    def test_probe_lists_every_case():
        build_probe()   # a probe left from an older checkout would list older cases
        listed = [l.split("\t")[0] for l in run([PROBE, "--list"]).stdout.splitlines()]
        assert listed == ALL_CASES

    @pytest.mark.parametrize("name", SELECTED)
    def test_case(transcripts, name):
        results, logs = transcripts
        ref, got = results["linux"].get(name), results["ztap"].get(name)
        if ref is None:
            pytest.fail(f"the reference printed nothing for {name}:\n{logs['linux']}", pytrace=False)
        # A broken reference would make every comparison meaningless.
        if ref[-1:] != [f"=== END {name}: exit 0"] or any(l.startswith("control:") for l in ref):
            pytest.fail(f"the Linux reference of {name} did not finish cleanly:\n" + "\n".join(ref) + "\n" + logs["linux"],
                        pytrace=False)
        if got is None:
            pytest.fail(f"ztap printed nothing for {name}:\n{logs['ztap']}", pytrace=False)
        known = KNOWN_DIFFERENCES_BY_MODE.get(MODE, {})
        d = diff(ref, got, name)
        if name in known:
            if not d:
                pytest.fail(f"{name} now matches Linux: remove it from KNOWN_DIFFERENCES ({known[name]})", pytrace=False)
            print(f"known difference ({known[name]}):\n{d}")
        elif d:
            pytest.fail(f"{name}: ztap differs from Linux (not in KNOWN_DIFFERENCES):\n{d}", pytrace=False)


# ------------------------------------------------------------------------------------------
# by hand

def main(argv):
    import argparse
    ap = argparse.ArgumentParser(description="Run probe cases on Linux and under ztap, show the transcripts and their diff.")
    ap.add_argument("cases", nargs="*", help="case names (default: all)")
    ap.add_argument("--ref-only", action="store_true", help="only the Linux reference")
    ap.add_argument("--ztap-only", action="store_true", help="only ztap")
    ap.add_argument("--runner", help=f"ztap runner template (default: {DEFAULT_RUNNER!r})")
    ap.add_argument("--quiet", action="store_true", help="only the diffs and a summary")
    ap.add_argument("--logs", action="store_true", help="also print peer/ztapd logs")
    ap.add_argument("--timing", action="store_true", help="print the slowest cases of each environment")
    ap.add_argument("--keep", action="store_true", help="keep the environments until Enter, printing the command that runs the probe in each")
    ap.add_argument("--save", metavar="DIR", help="write the raw transcripts to DIR/linux.txt and DIR/ztap.txt")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    cases = args.cases or case_names()
    which = ("linux",) if args.ref_only else ("ztap",) if args.ztap_only else ("linux", "ztap")
    build_intercept()
    build_probe()
    t0 = time.monotonic()
    results, raw, logs = run_both(cases, args.runner, which, keep=args.keep)
    secs = time.monotonic() - t0
    if args.save:
        os.makedirs(args.save, exist_ok=True)
        for kind, text in raw.items():
            with open(os.path.join(args.save, kind + ".txt"), "w") as f:
                f.write(text)
    differing = []
    for name in cases:
        ref = results.get("linux", {}).get(name)
        got = results.get("ztap", {}).get(name)
        if not args.quiet:
            for kind, lines in (("linux", ref), ("ztap", got)):
                if lines is not None:
                    print(f"----- {kind}: {name}")
                    print("\n".join(lines))
        if ref is not None and got is not None:
            d = diff(ref, got, name)
            if d:
                differing.append(name)
                print(d)
    if args.timing:
        for kind, t in run_both.timings.items():
            slow = sorted(t.items(), key=lambda kv: -kv[1])[:12]
            print(f"{kind}: {sum(t.values()):.1f} s in cases; slowest: " + ", ".join(f"{n} {v:.1f}" for n, v in slow))
    if args.logs:
        for kind, text in logs.items():
            print(f"===== {kind} logs\n{text}")
    if len(which) == 2:
        known = KNOWN_DIFFERENCES_BY_MODE.get(MODE, {})
        print(f"{len(cases)} cases, {len(differing)} differ ({secs:.1f} s)")
        print("differ, not in KNOWN_DIFFERENCES:", [c for c in differing if c not in known])
        print("in KNOWN_DIFFERENCES, now identical:", [c for c in cases if c in known and c not in differing])
    else:
        print(f"{len(cases)} cases ({secs:.1f} s)")


if __name__ == "__main__":
    main(sys.argv[1:])
