"""ztapd foundation: TAP + netlink configuration, ztctl, config handling, privileges, cleanup."""
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import REPO, BIN, fd_count, run, wait_until

NET_A = """# network a: comment kept
[Network]
# the interface
Interface=zta0
MACAddress=02:aa:bb:cc:dd:01
MTU=2800
Address=10.51.0.2/24
KernelAddress=10.51.0.1/24
KernelAddress=fd51::1/64
"""


def test_join_configures_tap_and_leave_removes_it(daemon_factory, netns):
    netns.ip("link", "add", "brt0", "type", "bridge")
    d = daemon_factory().start()
    r = d.ctl("join", "alpha", "--address", "10.60.0.2/24", "--kernel-address", "10.60.0.1/24",
              "--kernel-address", "fd60::1/64", "--mtu", "4000", "--mac", "02:11:22:33:44:55",
              "--interface", "ztalpha", "--bridge", "brt0")
    assert "joined alpha" in r.stdout
    link = netns.link("ztalpha")
    assert link is not None, d.logs()
    assert link["address"] == "02:11:22:33:44:55"
    assert link["mtu"] == 4000
    assert "UP" in link["flags"]
    assert link.get("master") == "brt0"
    addrs = netns.addrs("ztalpha")
    assert "10.60.0.1/24" in addrs and "fd60::1/64" in addrs
    # The file was written and is what `get` shows.
    assert os.path.exists(d.network_path("alpha"))
    assert d.ctl("get", "alpha", "MTU").stdout.strip() == "4000"
    listing, rc = d.ctl_json("list")
    assert rc == 0 and [n["name"] for n in listing["networks"]] == ["alpha"]
    assert listing["networks"][0]["state"] == "up"

    d.ctl("leave", "alpha")
    assert netns.link("ztalpha") is None
    assert not os.path.exists(d.network_path("alpha"))


def test_default_interface_name_and_mac_are_stable(daemon_factory, netns):
    d = daemon_factory().start()
    d.ctl("join", "beta", "--address", "10.61.0.2/24")
    names = [l["ifname"] for l in netns.ip_json("link", "show")]
    ztnames = [n for n in names if n != "lo"]
    assert len(ztnames) == 1 and len(ztnames[0]) <= 15
    mac1 = netns.link(ztnames[0])["address"]
    assert int(mac1.split(":")[0], 16) & 0x02, "locally administered"
    assert not int(mac1.split(":")[0], 16) & 0x01, "unicast"
    d.ctl("leave", "beta")
    d.ctl("join", "beta", "--address", "10.61.0.2/24")
    assert netns.link(ztnames[0])["address"] == mac1


def test_restart_rejoins_from_networks_d(daemon_factory, netns):
    d = daemon_factory(networks={"a": NET_A}).start()
    assert netns.link("zta0") is not None
    assert d.stop() == 0
    assert netns.link("zta0") is None, "SIGTERM must remove the interface"
    d.start()
    link = netns.link("zta0")
    assert link["address"] == "02:aa:bb:cc:dd:01" and link["mtu"] == 2800
    assert netns.addrs("zta0") == sorted(["10.51.0.1/24", "fd51::1/64"])


def test_join_failure_reports_errno_and_undoes(daemon_factory, netns):
    d = daemon_factory().start()
    r = d.ctl("join", "gamma", "--address", "10.62.0.2/24", "--bridge", "nosuchbr", check=False)
    assert r.returncode == 1
    assert "nosuchbr" in r.stderr and ("No such device" in r.stderr or "errno 19" in r.stderr), r.stderr
    assert not os.path.exists(d.network_path("gamma")), "a failed join must not leave a file behind"
    assert [l["ifname"] for l in netns.ip_json("link", "show") if l["ifname"] != "lo"] == []
    # Invalid MTU is refused before anything is created.
    r = d.ctl("join", "gamma", "--mtu", "100", check=False)
    assert r.returncode == 1 and "MTU" in r.stderr
    assert not os.path.exists(d.network_path("gamma"))


def test_set_mtu_live_and_unknown_key_changes_nothing(daemon_factory, netns):
    d = daemon_factory(networks={"a": NET_A}).start()
    path = d.network_path("a")
    d.ctl("set", "a", "MTU=3000")
    assert netns.link("zta0")["mtu"] == 3000
    text = open(path).read()
    assert "# network a: comment kept" in text and "# the interface" in text
    assert "MTU=3000" in text and "MTU=2800" not in text
    # Order kept: MTU still after MACAddress and before Address.
    assert text.index("MACAddress=") < text.index("MTU=3000") < text.index("Address=10.51.0.2/24")

    before = open(path, "rb").read()
    r = d.ctl("set", "a", "MTU=1400", "NoSuchKey=1", check=False)
    assert r.returncode == 1 and "NoSuchKey" in r.stderr
    assert open(path, "rb").read() == before, "file must be byte-identical after a refused set"
    assert netns.link("zta0")["mtu"] == 3000
    r = d.ctl("set", "a", "MTU=99999", check=False)
    assert r.returncode == 1 and "MTU" in r.stderr
    assert open(path, "rb").read() == before


def test_set_kernel_address_live(daemon_factory, netns):
    d = daemon_factory(networks={"a": NET_A}).start()
    d.ctl("set", "a", "KernelAddress=10.51.0.1/24 10.52.0.1/24")
    assert netns.addrs("zta0") == sorted(["10.51.0.1/24", "10.52.0.1/24"])


def test_broken_network_file_reported_others_up(daemon_factory, netns):
    bad = "[Network]\nAddress=10.53.0.2/24\nMTU=banana\n"
    d = daemon_factory(networks={"a": NET_A, "bad": bad}).start()
    assert netns.link("zta0") is not None
    listing, _ = d.ctl_json("list")
    states = {n["name"]: n for n in listing["networks"]}
    assert states["a"]["state"] == "up"
    assert states["bad"]["state"] == "failed"
    assert "bad.conf:3:" in states["bad"]["error"] and "MTU" in states["bad"]["error"]
    assert "bad.conf:3:" in d.logs()
    assert d.proc.poll() is None


def test_reload_keeps_running_config_on_bad_file(daemon_factory, netns):
    d = daemon_factory(networks={"a": NET_A}).start()
    d.write_network("a", NET_A.replace("MTU=2800", "MTU=nope"))
    r = d.ctl("reload", check=False)
    assert r.returncode == 1 and "a.conf:" in r.stderr
    assert netns.link("zta0")["mtu"] == 2800
    # A good edit applied by SIGHUP.
    d.write_network("a", NET_A.replace("MTU=2800", "MTU=5000"))
    os.kill(d.pid, signal.SIGHUP)
    assert wait_until(lambda: netns.link("zta0")["mtu"] == 5000), d.logs()
    # A new file by reload joins; a removed one leaves.
    d.write_network("b", "[Network]\nInterface=ztb0\nAddress=10.54.0.2/24\n")
    d.ctl("reload")
    assert netns.link("ztb0") is not None
    os.unlink(d.network_path("b"))
    d.ctl("reload")
    assert netns.link("ztb0") is None


def test_control_socket_refuses_other_users(daemon_factory):
    d = daemon_factory().start()
    os.chmod(d.run_dir, 0o755)
    r = d.ctl("status", user="nobody", check=False)
    assert r.returncode == 4, (r.returncode, r.stdout, r.stderr)
    assert "permission denied" in r.stderr
    # Allowed by ControlUsers= after a reload.
    with open(os.path.join(d.config_dir, "ztapd.conf"), "w") as f:
        f.write("[Daemon]\nControlUsers=nobody\n")
    d.ctl("reload")
    r = d.ctl("status", user="nobody", check=False)
    assert r.returncode == 0, r.stderr


def test_only_cap_net_admin_after_start(daemon_factory):
    d = daemon_factory(networks={"a": NET_A}).start()
    status = open(f"/proc/{d.pid}/status").read()
    caps = dict(l.split(":\t") for l in status.splitlines() if l.startswith("Cap"))
    net_admin = 1 << 12
    assert int(caps["CapEff"], 16) == net_admin, caps
    assert int(caps["CapPrm"], 16) == net_admin, caps
    assert int(caps["CapBnd"], 16) == net_admin, caps
    assert int(caps["CapAmb"], 16) == 0
    # Every thread (network loops included) holds no more than that.
    for tid in os.listdir(f"/proc/{d.pid}/task"):
        st = open(f"/proc/{d.pid}/task/{tid}/status").read()
        eff = [l for l in st.splitlines() if l.startswith("CapEff")][0].split(":\t")[1]
        assert int(eff, 16) & ~net_admin == 0, (tid, eff)
    # And it can still join networks (netlink works with CAP_NET_ADMIN only).
    d.ctl("join", "later", "--address", "10.55.0.2/24", "--interface", "ztlater")


def test_sigterm_removes_interfaces_and_sockets(daemon_factory, netns):
    d = daemon_factory(networks={"a": NET_A}).start()
    d.ctl("join", "c", "--address", "10.56.0.2/24", "--interface", "ztc0")
    assert d.stop(signal.SIGTERM) == 0
    assert [l["ifname"] for l in netns.ip_json("link", "show") if l["ifname"] != "lo"] == []
    assert os.listdir(d.run_dir) == []
    assert "shutting down" in d.logs()


def test_sigint_stops_cleanly(daemon_factory, netns):
    d = daemon_factory(networks={"a": NET_A}).start()
    assert d.stop(signal.SIGINT) == 0
    assert netns.link("zta0") is None


def test_no_fd_leak_after_100_join_leave_cycles(daemon_factory, netns):
    d = daemon_factory().start()
    d.ctl("join", "warm", "--address", "10.57.0.2/24", "--interface", "ztwarm")
    d.ctl("leave", "warm")
    # ztctl's own connection may still be open in ztapd for a moment after ztctl exits.
    before = min(fd_count(d.pid) for _ in range(5) if time.sleep(0.05) is None)
    threads_before = len(os.listdir(f"/proc/{d.pid}/task"))
    for i in range(100):
        d.ctl("join", "cyc", "--address", "10.58.0.2/24", "--interface", "ztcyc")
        d.ctl("leave", "cyc")
    # The reply to the last `leave` may be read before the control connection's own fd is
    # closed on the daemon's side; a leak stays, so wait briefly and then show what is open.
    if not wait_until(lambda: fd_count(d.pid) == before, timeout=10):
        fds = {f: os.readlink(f"/proc/{d.pid}/fd/{f}") for f in os.listdir(f"/proc/{d.pid}/fd")}
        pytest.fail(f"fds {len(fds)} != {before} after 100 join/leave cycles: {fds}")
    assert len(os.listdir(f"/proc/{d.pid}/task")) == threads_before
    assert netns.link("ztcyc") is None


def test_malformed_control_requests_get_errors(daemon_factory):
    d = daemon_factory().start()
    path = os.path.join(d.run_dir, "control.sock")
    for payload, expect in [(b"not json\n", "malformed request"),
                            (b'{"command":"explode"}\n', "malformed request"),
                            (b'{"version":99,"command":"status"}\n', "unsupported control protocol version")]:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(path)
        s.sendall(payload)
        line = s.makefile().readline()
        s.close()
        assert expect in line and '"ok":false' in line, line
    # Oversized request: error and the channel is closed; the daemon serves others afterwards.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    try:
        s.sendall(b"x" * 200000)
    except (BrokenPipeError, ConnectionResetError):
        pass
    s.close()
    assert d.ctl("status").returncode == 0


def test_invalid_names_and_unknown_network(daemon_factory):
    d = daemon_factory().start()
    r = d.ctl("join", "Bad_Name", check=False)
    assert r.returncode == 1 and "invalid network name" in r.stderr
    r = d.ctl("leave", "ghost", check=False)
    assert r.returncode == 1 and "no network named ghost" in r.stderr
    r = d.ctl("get", "ghost", check=False)
    assert r.returncode == 1


def test_ztctl_unreachable_daemon(tmpdir_world):
    r = run([os.path.join(BIN, "ztctl"), "status", "--run-dir", tmpdir_world], check=False)
    assert r.returncode == 3 and "cannot connect" in r.stderr


def test_sd_notify_ready(daemon_factory, tmpdir_world):
    path = os.path.join(tmpdir_world, "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(20)
    d = daemon_factory(networks={"a": NET_A}, env={"NOTIFY_SOCKET": path}).start(wait=False)
    msg = s.recv(4096).decode()
    s.close()
    assert "READY=1" in msg and "MAINPID=" in msg


def test_systemd_unit_verifies(tmpdir_world):
    if not shutil_which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed")
    unit = open(os.path.join(REPO, "systemd", "ztapd.service")).read()
    # verify checks that ExecStart exists: point it at the binary we built.
    unit = unit.replace("/usr/bin/ztapd", os.path.join(BIN, "ztapd"))
    path = os.path.join(tmpdir_world, "ztapd.service")
    with open(path, "w") as f:
        f.write(unit)
    r = run(["systemd-analyze", "verify", path], check=False)
    problems = [l for l in (r.stdout + r.stderr).splitlines() if "ztapd.service" in l]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr
    for needed in ["Type=notify", "CapabilityBoundingSet=CAP_NET_ADMIN", "AmbientCapabilities=CAP_NET_ADMIN",
                   "NoNewPrivileges=yes", "ProtectSystem=strict", "RuntimeDirectory=ztapd", "StateDirectory=ztapd",
                   "ConfigurationDirectory=ztapd", "DeviceAllow=/dev/net/tun"]:
        assert needed in unit


def shutil_which(name):
    import shutil
    return shutil.which(name)


def test_user_switch_keeps_only_cap_net_admin(daemon_factory, netns):
    d = daemon_factory(networks={"a": NET_A}, daemon_conf="[Daemon]\nUser=nobody\n").start()
    status = open(f"/proc/{d.pid}/status").read()
    fields = dict(l.split(":\t", 1) for l in status.splitlines() if ":\t" in l)
    assert fields["Uid"].split()[1] == "65534", fields["Uid"]
    assert int(fields["CapEff"], 16) == 1 << 12
    assert netns.link("zta0") is not None
    # Netlink still works for live changes after the switch.
    d.ctl("set", "a", "MTU=2900")
    assert netns.link("zta0")["mtu"] == 2900


def test_ztapd_run_dir_env_for_ztctl(daemon_factory):
    d = daemon_factory().start()
    env = dict(os.environ, ZTAPD_RUN_DIR=d.run_dir)
    r = subprocess.run([os.path.join(BIN, "ztctl"), "status"], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0 and "version" in r.stdout


def test_interface_deleted_from_outside_is_reported_not_spun(daemon_factory, netns):
    d = daemon_factory(networks={"a": NET_A}).start()
    netns.ip("link", "del", "zta0")
    def failed():
        listing, _ = d.ctl_json("list")
        n = listing["networks"][0]
        return n["state"] == "failed" and "errno" in (n.get("error") or "")
    assert wait_until(failed, timeout=10), d.logs()
    # No busy loop: the daemon uses almost no CPU afterwards.
    def cpu_ticks():
        f = open(f"/proc/{d.pid}/stat").read().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])
    t0 = cpu_ticks()
    time.sleep(1.0)
    assert cpu_ticks() - t0 < 20, "ztapd keeps spinning after its TAP went away"
    assert d.logs().count("TAP read failed") == 1
    # leave still cleans up, and the name can be joined again.
    d.ctl("leave", "a")
    d.write_network("a", NET_A)
    d.ctl("reload")
    assert netns.link("zta0") is not None
