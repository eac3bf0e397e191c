"""The sandboxed service (issue 12): the systemd unit's confinement score and filter, the ztapd
system user, ztapd's own system-call filter, and a full join -> traffic -> leave run of ztapd as
a non-root user holding only CAP_NET_ADMIN. Everything runs in the test's own namespace."""
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import BIN, REPO, run, wait_until

UNIT = os.path.join(REPO, "systemd", "ztapd.service")
UID = 64999          # no passwd entry needed: ztapd runs fine as a bare uid
NET_ADMIN = 1 << 12


def need(tool):
    if not shutil.which(tool):
        pytest.skip(f"{tool} not installed")


def expand(group):
    """The system calls of a systemd syscall group, nested groups resolved."""
    out = run(["systemd-analyze", "syscall-filter", group]).stdout
    names = set()
    for line in out.splitlines():
        t = line.strip()
        if not t or t.startswith("#") or t == group:
            continue
        names |= expand(t) if t.startswith("@") else {t.split()[0]}
    return names


def test_unit_exposure_score_is_at_most_2(tmpdir_world):
    need("systemd-analyze")
    r = run(["systemd-analyze", "security", "--offline=true", UNIT], check=False)
    m = re.search(r"Overall exposure level for ztapd.service: ([0-9.]+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    print(f"systemd-analyze security: {m.group(1)}")
    assert float(m.group(1)) <= 2.0, r.stdout


def test_unit_filter_admits_every_call_ztapd_makes():
    """What ztapd's own allow-list has must not be refused by the unit's SystemCallFilter=
    (a refused call would fail with EPERM there). The chown family is the known exception:
    without CAP_CHOWN the ztapd user could not give files away anyway."""
    need("systemd-analyze")
    unit = open(UNIT).read()
    filters = re.findall(r"^SystemCallFilter=(.*)$", unit, re.M)
    allowed = set()
    for f in filters:
        if f.startswith("~"):
            for g in f[1:].split():
                allowed -= expand(g) if g.startswith("@") else {g}
        else:
            for g in f.split():
                allowed |= expand(g) if g.startswith("@") else {g}
    src = open(os.path.join(REPO, "Sources", "CSandbox", "sandbox.c")).read()
    lists = re.findall(r"zt_(?:plain|conditional)\[\] = \{(.*?)\};", src, re.S)
    ours = set(re.findall(r'"([a-z0-9_]+)"', "".join(lists))) - {"clone3"}
    missing = ours - allowed - {"chown", "fchown", "fchownat"}
    assert not missing, sorted(missing)
    assert "SystemCallErrorNumber=EPERM" in unit


def test_sysusers_and_tmpfiles_apply(tmpdir_world):
    """Applied offline into a scratch root: the user exists, networks.d is its own."""
    need("systemd-sysusers")
    need("systemd-tmpfiles")
    root = os.path.join(tmpdir_world, "root")
    os.makedirs(os.path.join(root, "etc"))
    run(["systemd-sysusers", f"--root={root}", os.path.join(REPO, "packaging", "debian", "ztapd.sysusers")])
    passwd = open(os.path.join(root, "etc", "passwd")).read()
    entry = [l for l in passwd.splitlines() if l.startswith("ztapd:")]
    assert entry and entry[0].split(":")[6] == "/usr/sbin/nologin", passwd
    uid = int(entry[0].split(":")[2])
    assert 0 < uid < 1000, entry
    run(["systemd-tmpfiles", f"--root={root}", "--create", os.path.join(REPO, "packaging", "debian", "ztapd.tmpfiles")])
    st = os.stat(os.path.join(root, "etc", "ztapd", "networks.d"))
    assert st.st_uid == uid and st.st_mode & 0o777 == 0o755


def test_check_sandbox_trips_with_a_clear_line():
    r = subprocess.run([os.path.join(BIN, "ztapd"), "--check-sandbox"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 159, (r.returncode, r.stdout, r.stderr)
    assert "socket(AF_INET): refused (EAFNOSUPPORT)" in r.stdout and "new thread: started" in r.stdout, r.stdout
    assert "ztapd: seccomp: blocked system call 101 (ptrace)" in r.stderr, r.stderr


def seccomp_mode(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("Seccomp:"):
            return int(line.split()[1])
    return None


def test_filter_is_on_by_default_and_off_only_by_config(daemon_factory):
    d = daemon_factory().start()
    assert seccomp_mode(d.pid) == 2, "SECCOMP_MODE_FILTER"
    for tid in os.listdir(f"/proc/{d.pid}/task"):
        st = open(f"/proc/{d.pid}/task/{tid}/status").read()
        assert "Seccomp:\t2" in st, tid
    assert "system-call filter installed" in d.logs()
    # A network joined later runs on a thread started under the filter.
    d.ctl("join", "late", "--address", "10.79.0.2/24", "--interface", "ztlate")
    assert len(os.listdir(f"/proc/{d.pid}/task")) >= 2
    assert all("Seccomp:\t2" in open(f"/proc/{d.pid}/task/{t}/status").read() for t in os.listdir(f"/proc/{d.pid}/task"))
    # ... with every TAP offload (TUNSETVNETHDRSZ/TUNSETOFFLOAD are on the list), and an
    # SO_BINDTODEVICE-style name lookup (SIOCGIFNAME) does not trip the filter either.
    logs = d.logs()
    assert "offload fallback" not in logs and "blocked system call" not in logs, logs[-2000:]
    assert re.search(r"TAP offloads network=late offloads=vnet_hdr csum tso4", logs), logs[-2000:]
    d.ctl("leave", "late")
    d.stop()
    off = daemon_factory(daemon_conf="[Daemon]\nSyscallFilter=no\n").start()
    assert seccomp_mode(off.pid) == 0
    assert "SyscallFilter=no" in off.logs()


# ztapd as UID with CAP_NET_ADMIN only, as the unit runs it (User=, AmbientCapabilities=).
# /dev/net/tun may be 0600 where udev does not run (containers): a private mount namespace
# gets a 0666 node of its own, the host's stays as it is.
SETPRIV = ("mount -t tmpfs -o mode=755 tmpfs /dev/net && mknod -m 666 /dev/net/tun c 10 200 && "
           f"exec setpriv --reuid={UID} --regid={UID} --clear-groups --inh-caps=-all,+net_admin "
           "--ambient-caps=-all,+net_admin --bounding-set=-all,+net_admin \"$0\" \"$@\"")

SERVER = """
    import socket, sys
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("10.81.0.1", 9300))
    srv.listen(4)
    print("READY", flush=True)
    c, _ = srv.accept()
    data = b""
    while len(data) < 100000:
        b = c.recv(65536)
        if not b:
            break
        data += b
    c.sendall(data[::-1])
    c.close()
"""

CLIENT = """
    import socket
    s = socket.create_connection(("10.81.0.1", 9300), timeout=20)
    msg = bytes(range(256)) * 400
    s.sendall(msg[:100000])
    got = b""
    while len(got) < 100000:
        b = s.recv(65536)
        if not b:
            break
        got += b
    print("OK" if got == msg[:100000][::-1] else "BAD %d" % len(got), flush=True)
"""


def test_non_root_with_only_cap_net_admin_join_traffic_leave(daemon_factory, netns, tmpdir_world):
    need("setpriv")
    need("unshare")
    lib = os.path.join(REPO, ".build", "intercept", "libztintercept.so")
    if not os.path.exists(lib):
        run([os.path.join(REPO, "scripts", "build-intercept.sh")])
    d = daemon_factory(prefix=["unshare", "-m", "sh", "-c", SETPRIV])
    os.makedirs(d.run_dir, exist_ok=True)
    for p in (d.config_dir, os.path.join(d.config_dir, "networks.d"), d.run_dir):
        os.chown(p, UID, UID)
    d.start()
    status = open(f"/proc/{d.pid}/status").read()
    fields = dict(l.split(":\t", 1) for l in status.splitlines() if ":\t" in l)
    assert fields["Uid"].split()[1] == str(UID), fields["Uid"]
    assert int(fields["CapEff"], 16) == NET_ADMIN and int(fields["CapPrm"], 16) == NET_ADMIN
    assert int(fields["CapBnd"], 16) == NET_ADMIN
    assert fields["Seccomp"].strip() == "2"
    assert "nothing to drop" in d.logs()
    # join: TAP creation and netlink with CAP_NET_ADMIN alone; the file is written as UID.
    d.ctl("join", "t", "--address", "10.81.0.2/24", "--kernel-address", "10.81.0.1/24", "--interface", "ztt0")
    assert netns.link("ztt0") is not None and netns.addrs("ztt0") == ["10.81.0.1/24"]
    assert os.stat(d.network_path("t")).st_uid == UID
    # traffic: the kernel pings the stack, and an app under the intercept talks to a kernel server.
    netns.exec("ping", "-c", "2", "-W", "5", "10.81.0.2")
    server = netns.popen(sys.executable, "-c", textwrap.dedent(SERVER), stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "READY"
        r = netns.exec(os.path.join(BIN, "ztctl"), "run", "t", "--run-dir", d.run_dir, "--",
                       sys.executable, "-c", textwrap.dedent(CLIENT), timeout=120)
        assert r.stdout.strip() == "OK", (r.stdout, r.stderr, d.logs()[-3000:])
    finally:
        server.kill()
        server.wait()
    # leave: the interface and the file go.
    d.ctl("leave", "t")
    assert wait_until(lambda: netns.link("ztt0") is None)
    assert not os.path.exists(d.network_path("t"))
    assert "blocked system call" not in d.logs()
    assert d.stop(signal.SIGTERM) == 0
