"""A ztap network spanning hosts over the kernel's VXLAN ([VXLAN], issue 14; docs/MULTIHOST.md).

Three network namespaces are the hosts A, B, C (underlay 10.99.0.1-3/24 on veths into a fourth
namespace holding the underlay bridge). Each runs its own ztapd with network "mh": stacks
10.98.0.2/.3/.4, kernel addresses (on the bridge ztapd makes) .11/.12/.13, MTU 1400, VNI 4242.
A joins with `ztctl join --vxlan`; B and C read files, and B runs as User=nobody. Every ztapd
keeps only CAP_NET_ADMIN after setup, so live changes run with just that. Traffic stays inside these namespaces; every process is stopped by its PID.

The tests share the three hosts (module fixture) and run in file order; the last one makes C leave.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap

import pytest

from conftest import BIN, REPO, Daemon, Netns, run, wait_until
from intercept_env import sha256, stop_proc

LIB = os.path.join(REPO, ".build", "intercept", "libztintercept.so")
HOSTS = "ABC"
UNDER = {h: f"10.99.0.{i + 1}" for i, h in enumerate(HOSTS)}
STACK = {h: f"10.98.0.{i + 2}" for i, h in enumerate(HOSTS)}
KERNEL = {h: f"10.98.0.{i + 11}" for i, h in enumerate(HOSTS)}
TAP, BR, VX = "zt-mh", "zt-mh-br", "zt-mh-vx"


def net_file(h):
    remotes = "".join(f"Remote={UNDER[o]}\n" for o in HOSTS if o != h)
    return textwrap.dedent(f"""\
        # network mh on host {h}
        [Network]
        MTU=1400
        Address={STACK[h]}/24
        KernelAddress={KERNEL[h]}/24
        Services=echo

        [VXLAN]
        VNI=4242
        Local={UNDER[h]}
        """) + remotes


class Host:
    def __init__(self, name, ns, daemon):
        self.name, self.ns, self.d = name, ns, daemon
        self.procs = []

    def ztrun(self, *cmd):
        return [os.path.join(BIN, "ztctl"), "run", "mh", "--run-dir", self.d.run_dir, "--", *cmd]

    def spawn(self, *argv):
        p = self.ns.popen(*argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def fdb_remotes(self):
        out = self.ns.exec("bridge", "-j", "fdb", "show", "dev", VX).stdout
        return sorted(e["dst"] for e in json.loads(out or "[]")
                      if e.get("mac") == "00:00:00:00:00:00" and "dst" in e)

    def links(self):
        return sorted(l["ifname"] for l in self.ns.ip_json("link", "show"))

    def ping(self, addr, count=1):
        return self.ns.exec("ping", "-c", str(count), "-W", "2", addr, check=False).returncode == 0


@pytest.fixture(scope="module")
def hosts():
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces, bridges and VXLAN devices (CI runs as root)")
    if not os.path.exists(LIB):
        run([os.path.join(REPO, "scripts", "build-intercept.sh")])
    tmp = tempfile.mkdtemp(prefix="ztap-mh-")
    os.chmod(tmp, 0o755)
    sw = Netns()
    made, daemons = [sw], []
    try:
        sw.ip("link", "add", "ubr", "type", "bridge")
        sw.ip("link", "set", "ubr", "up")
        hs = {}
        for i, h in enumerate(HOSTS):
            ns = Netns()
            made.append(ns)
            # Made inside the namespaces: nothing appears in the root namespace, not even briefly.
            b = f"port{h}"
            ns.ip("link", "add", "under0", "type", "veth", "peer", "name", b, "netns", sw.name)
            ns.ip("addr", "add", f"{UNDER[h]}/24", "dev", "under0")
            ns.ip("link", "set", "under0", "up")
            sw.ip("link", "set", b, "master", "ubr")
            sw.ip("link", "set", b, "up")
            d = Daemon(ns, os.path.join(tmp, h),
                       networks=None if h == "A" else {"mh": net_file(h)},
                       daemon_conf="[Daemon]\nUser=nobody\n" if h == "B" else None)
            daemons.append(d)
            d.start()
            hs[h] = Host(h, ns, d)
        # A joins through ztctl: the [VXLAN] section comes from the command line.
        hs["A"].d.ctl("join", "mh", "--address", f"{STACK['A']}/24", "--kernel-address", f"{KERNEL['A']}/24",
                      "--mtu", "1400", "--vxlan", "4242", "--local", UNDER["A"],
                      "--remote", UNDER["B"], UNDER["C"])
        hs["A"].d.ctl("set", "mh", "Services=echo")
        yield hs
    finally:
        for h in locals().get("hs", {}).values():
            for p in h.procs:
                stop_proc(p)
        for d in daemons:
            d.stop()
        for ns in made:
            ns.close()
        shutil.rmtree(tmp, ignore_errors=True)


def vxlan_info(host):
    link = host.ns.ip_json("-d", "link", "show", "dev", VX)[0]
    return link["linkinfo"]["info_data"]


# --- the fabric each ztapd made -------------------------------------------------------------

def test_join_writes_vxlan_section(hosts):
    text = open(hosts["A"].d.network_path("mh")).read()
    section = text[text.index("[VXLAN]"):]
    assert "VNI=4242" in section and f"Local={UNDER['A']}" in section
    assert f"Remote={UNDER['B']}\nRemote={UNDER['C']}" in section, text
    assert hosts["A"].d.ctl("get", "mh", "Remote").stdout.split() == [UNDER["B"], UNDER["C"]]
    # VXLAN options without --vxlan and --local are a usage error of ztctl.
    r = hosts["A"].d.ctl("join", "other", "--remote", UNDER["B"], check=False)
    assert r.returncode == 64 and "need --vxlan VNI and --local IP" in r.stderr, r.stderr
    assert not os.path.exists(hosts["A"].d.network_path("other"))


def test_each_host_has_bridge_vxlan_and_fdb(hosts):
    bridge_macs, vx_ids = set(), set()
    for h, host in hosts.items():
        assert {TAP, BR, VX} <= set(host.links()), host.links()
        tap, br, vx = host.ns.link(TAP), host.ns.link(BR), host.ns.link(VX)
        assert tap["master"] == BR and vx["master"] == BR
        assert tap["mtu"] == br["mtu"] == vx["mtu"] == 1400
        for l in (tap, br, vx):
            assert "UP" in l["flags"], l
        # KernelAddress= is on the bridge (the kernel's interface on the network), not the TAP.
        assert host.ns.addrs(BR) == [f"{KERNEL[h]}/24"]
        assert host.ns.addrs(TAP) == []
        info = vxlan_info(host)
        assert info["id"] == 4242 and info["port"] == 4789 and info["local"] == UNDER[h], info
        assert host.fdb_remotes() == sorted(UNDER[o] for o in HOSTS if o != h)
        for name in (BR, VX):
            assert host.ns.ip_json("-d", "link", "show", "dev", name)[0].get("ifalias") == "ztap network mh"
        bridge_macs.add(br["address"])
        vx_ids.add(info["id"])
    # One segment, so every host's bridge needs its own MAC.
    assert len(bridge_macs) == 3 and vx_ids == {4242}


def test_daemons_keep_only_cap_net_admin(hosts):
    for h, uid in (("A", "0"), ("B", "65534")):
        status = open(f"/proc/{hosts[h].d.pid}/status").read()
        fields = dict(l.split(":\t", 1) for l in status.splitlines() if ":\t" in l)
        assert fields["Uid"].split()[1] == uid
        assert int(fields["CapEff"], 16) == 1 << 12


# --- traffic --------------------------------------------------------------------------------

def test_every_kernel_pings_every_stack(hosts):
    for h, host in hosts.items():
        for o in HOSTS:
            assert host.ping(STACK[o], count=2), f"{h}'s kernel cannot ping {o}'s stack {STACK[o]}"
        for o in HOSTS:
            if o != h:
                assert host.ping(KERNEL[o]), f"{h}'s kernel cannot ping {o}'s kernel"
    # The stacks are distinct hosts on the segment: distinct MACs in A's neighbour table.
    neigh = {n["dst"]: n.get("lladdr") for n in hosts["A"].ns.ip_json("neigh", "show", "dev", BR)}
    macs = [neigh.get(STACK[o]) for o in HOSTS]
    assert None not in macs and len(set(macs)) == 3, neigh


def test_app_downloads_20mib_from_app_on_other_hosts(hosts):
    tmp = tempfile.mkdtemp(prefix="ztap-mh-www-")
    os.chmod(tmp, 0o755)
    try:
        src = os.path.join(tmp, "www")
        os.makedirs(src)
        with open(os.path.join(src, "f.bin"), "wb") as f:
            for _ in range(20):
                f.write(os.urandom(1 << 20))
        want = sha256(os.path.join(src, "f.bin"))
        for server in "BC":
            srv = hosts[server]
            srv.spawn(*srv.ztrun(sys.executable, "-m", "http.server", "--bind", STACK[server],
                                 "--directory", src, "8080"))
            probe = f"import socket; socket.create_connection(('{STACK[server]}', 8080), timeout=1).close()"
            assert wait_until(lambda: hosts["A"].ns.exec(sys.executable, "-c", probe, check=False).returncode == 0,
                              timeout=20, interval=0.2), f"{server}'s app never listened"
            # App on A (its stack) -> app on B/C (their stacks), across VXLAN.
            out = os.path.join(tmp, f"from-{server}.bin")
            r = hosts["A"].ns.exec(*hosts["A"].ztrun("curl", "-sS", "--fail", "-o", out,
                                                     f"http://{STACK[server]}:8080/f.bin"), check=False, timeout=180)
            assert r.returncode == 0, f"{r.stderr}\n--- A log ---\n{hosts['A'].d.logs()[-2000:]}"
            assert sha256(out) == want, f"stack-to-stack download from {server} corrupted"
            os.unlink(out)
        # A's kernel (no intercept) reaches B's app too.
        out = os.path.join(tmp, "kernel.bin")
        hosts["A"].ns.exec("curl", "-sS", "--fail", "-o", out, f"http://{STACK['B']}:8080/f.bin", timeout=180)
        assert sha256(out) == want
    finally:
        for h in hosts.values():
            for p in h.procs:
                stop_proc(p)
            h.procs.clear()
        shutil.rmtree(tmp, ignore_errors=True)


class EchoClient:
    """One TCP connection from a host's kernel to an echo service, kept open across steps."""

    CODE = textwrap.dedent("""
        import socket, sys
        s = socket.create_connection((sys.argv[1], 7), timeout=10)
        print("READY", flush=True)
        for line in sys.stdin:
            s.sendall(line.encode())
            got = b""
            while not got.endswith(b"\\n"):
                chunk = s.recv(4096)
                if not chunk:
                    print("EOF", flush=True); sys.exit(1)
                got += chunk
            print(got.decode().strip(), flush=True)
        """)

    def __init__(self, host, addr):
        self.p = host.ns.popen(sys.executable, "-c", self.CODE, addr, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
        assert self.p.stdout.readline().strip() == "READY"

    def echo(self, word):
        self.p.stdin.write(word + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=10)


def test_remote_changes_apply_live_without_dropping_connections(hosts):
    b = hosts["B"]  # runs as nobody with only CAP_NET_ADMIN
    before = {n: b.ns.link(n)["ifindex"] for n in (TAP, BR, VX)}
    conn = EchoClient(b, STACK["A"])
    try:
        assert conn.echo("one") == "one"
        # ztctl set: C's entry goes, A's stays.
        b.d.ctl("set", "mh", f"Remote={UNDER['A']}")
        assert b.fdb_remotes() == [UNDER["A"]]
        assert conn.echo("two") == "two"
        # A hand edit + reload puts C back.
        with open(b.d.network_path("mh"), "a") as f:
            f.write(f"Remote={UNDER['C']}\n")
        b.d.ctl("reload")
        assert b.fdb_remotes() == [UNDER["A"], UNDER["C"]]
        assert conn.echo("three") == "three"
        assert b.ping(STACK["C"])
    finally:
        conn.close()
    # Nothing was re-created: the same devices throughout.
    assert {n: b.ns.link(n)["ifindex"] for n in (TAP, BR, VX)} == before


def test_mtu_that_does_not_fit_the_underlay_is_refused(hosts):
    a = hosts["A"]
    path = a.d.network_path("mh")
    before = open(path, "rb").read()
    r = a.d.ctl("set", "mh", "MTU=1460", check=False)
    assert r.returncode == 1
    # Both numbers, and where: FILE:LINE of MTU=.
    assert "MTU=1460" in r.stderr and "under0 has MTU 1500" in r.stderr and "at most 1450" in r.stderr, r.stderr
    assert f"{path}:" in r.stderr
    assert open(path, "rb").read() == before
    assert a.ns.link(VX)["mtu"] == 1400
    # A new network whose file does not fit is refused and leaves nothing behind.
    links = a.links()
    r = a.d.ctl("join", "big", "--address", "10.97.0.2/24", "--mtu", "1451", "--interface", "ztbig",
                "--vxlan", "77", "--local", UNDER["A"], "--remote", UNDER["B"], check=False)
    assert r.returncode == 1 and "MTU=1451" in r.stderr and "at most 1450" in r.stderr, r.stderr
    assert a.links() == links
    assert not os.path.exists(a.d.network_path("big"))
    # The edge fits.
    a.d.ctl("join", "big", "--address", "10.97.0.2/24", "--mtu", "1450", "--interface", "ztbig",
            "--vxlan", "77", "--local", UNDER["A"], "--remote", UNDER["B"])
    assert a.ns.link("ztbig-vx")["mtu"] == 1450
    a.d.ctl("leave", "big")
    assert a.links() == links


def test_killed_daemon_leftovers_are_replaced_on_restart(hosts):
    b = hosts["B"]
    b.d.proc.send_signal(signal.SIGKILL)
    b.d.proc.wait(timeout=10)
    # The TAP went with the process; the bridge and VXLAN device stay until ztapd comes back.
    assert b.ns.link(TAP) is None and b.ns.link(BR) is not None
    b.d.start()
    assert b.ns.link(TAP)["master"] == BR
    assert b.fdb_remotes() == [UNDER["A"], UNDER["C"]]
    assert wait_until(lambda: hosts["A"].ping(STACK["B"]), timeout=10)


def test_a_host_that_leaves_leaves_nothing_and_the_others_go_on(hosts):
    c = hosts["C"]
    c.d.ctl("leave", "mh")
    assert c.links() == ["lo", "under0"], c.links()
    for h, o in (("A", "B"), ("B", "A")):
        assert hosts[h].ping(STACK[o]) and hosts[h].ping(KERNEL[o])
    assert not hosts["A"].ping(STACK["C"])


# --- encryption: VXLAN over a WireGuard underlay -------------------------------------------

def wireguard_missing():
    """The reason VXLAN over WireGuard cannot be tested here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    ns = Netns()
    try:
        r = ns.ip("link", "add", "wgprobe", "type", "wireguard", check=False)
        if r.returncode != 0:
            return f"this kernel has no WireGuard (ip link add type wireguard: {r.stderr.strip()})"
    finally:
        ns.close()
    if not shutil.which("wg"):
        return "wireguard-tools (wg) is not installed (scripts/install-deps.sh installs it)"
    return None


def test_vxlan_over_wireguard_underlay(tmp_path):
    reason = wireguard_missing()
    if reason:
        print(f"test_vxlan_over_wireguard_underlay: skipped, {reason}")
        pytest.skip(reason)
    os.chmod(tmp_path, 0o755)
    keys = {}
    for h in "AB":
        priv = run(["wg", "genkey"]).stdout.strip()
        pub = run(["wg", "pubkey"], input=priv).stdout.strip()
        keys[h] = (priv, pub)
    spaces, daemons = [], []
    try:
        for _ in "AB":
            spaces.append(Netns())
        a, b = spaces
        a.ip("link", "add", "under0", "type", "veth", "peer", "name", "under0", "netns", b.name)
        wg_addr = {"A": "10.96.0.1", "B": "10.96.0.2"}
        for i, (h, ns) in enumerate(zip("AB", spaces)):
            other = "B" if h == "A" else "A"
            ns.ip("addr", "add", f"10.95.0.{i + 1}/24", "dev", "under0")
            ns.ip("link", "set", "under0", "up")
            ns.ip("link", "add", "wg0", "type", "wireguard")
            keyfile = tmp_path / f"{h}.key"
            keyfile.write_text(keys[h][0])
            ns.exec("wg", "set", "wg0", "private-key", str(keyfile), "listen-port", "51820",
                    "peer", keys[other][1], "allowed-ips", f"{wg_addr[other]}/32",
                    "endpoint", f"10.95.0.{2 - i}:51820")
            ns.ip("addr", "add", f"{wg_addr[h]}/24", "dev", "wg0")
            ns.ip("link", "set", "wg0", "up")
            # Count plain VXLAN on the underlay: with Device=wg0 there must be none.
            ns.exec("nft", "add table inet mh; add chain inet mh out { type filter hook output priority 0; }; "
                    "add rule inet mh out oifname under0 udp dport 4789 counter")
            text = textwrap.dedent(f"""\
                [Network]
                MTU=1370
                Address=10.94.0.{i + 2}/24
                KernelAddress=10.94.0.{i + 11}/24
                [VXLAN]
                VNI=99
                Local={wg_addr[h]}
                Remote={wg_addr[other]}
                Device=wg0
                """)
            d = Daemon(ns, str(tmp_path / h), networks={"wgmh": text})
            daemons.append(d)
            d.start()
        assert b.link("zt-wgmh-vx")["master"] == "zt-wgmh-br"
        assert a.exec("ping", "-c", "3", "-W", "2", "10.94.0.3", check=False).returncode == 0, daemons[0].logs()
        assert b.exec("ping", "-c", "3", "-W", "2", "10.94.0.2", check=False).returncode == 0
        for ns in spaces:
            rules = ns.exec("nft", "-j", "list", "table", "inet", "mh").stdout
            counters = [x["counter"]["packets"] for obj in json.loads(rules)["nftables"] if "rule" in obj
                        for x in obj["rule"]["expr"] if "counter" in x]
            assert counters == [0], f"plain VXLAN left {ns.name} outside WireGuard: {counters}"
            tx = ns.ip_json("-s", "link", "show", "dev", "wg0")[0]["stats64"]["tx"]["packets"]
            assert tx > 0
        # 1371 does not fit: wg0's MTU 1420 minus 50.
        r = daemons[0].ctl("set", "wgmh", "MTU=1371", check=False)
        assert r.returncode == 1 and "wg0 has MTU 1420" in r.stderr and "at most 1370" in r.stderr, r.stderr
    finally:
        for d in daemons:
            d.stop()
        for ns in spaces:
            ns.close()
