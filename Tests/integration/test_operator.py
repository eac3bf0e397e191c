"""Operator experience (issue 13): global options anywhere, capture, TCP internals, metrics.

Each test: its own namespace with ztapd and network "op" (NetStack 10.73.0.2, kernel side
10.73.0.1). Traffic stays inside the namespace; processes are stopped by PID.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import BIN, REPO, run, wait_until

STACK = "10.73.0.2"
KERNEL = "10.73.0.1"
HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "kernel_peer.py")
LIB = os.path.join(REPO, ".build", "intercept", "libztintercept.so")
NET = f"""[Network]
Interface=ztop0
MTU=1500
Address={STACK}/24
KernelAddress={KERNEL}/24
Services=echo
"""
ZTCTL = os.path.join(BIN, "ztctl")


@pytest.fixture
def daemon(daemon_factory):
    return daemon_factory(networks={"op": NET}).start()


def ztctl(*args, **kw):
    return run([ZTCTL, *args], check=False, **kw)


# --- global options before and after the command ------------------------------------------------

def test_global_options_anywhere(daemon):
    d = daemon
    for argv in (["-j", "--run-dir", d.run_dir, "list"], ["--json", "--run-dir", d.run_dir, "list"],
                 ["list", "-j", "--run-dir", d.run_dir], ["--run-dir", d.run_dir, "list", "--json"],
                 [f"--run-dir={d.run_dir}", "-j", "list"]):
        r = ztctl(*argv)
        assert r.returncode == 0, (argv, r.stderr)
        assert [n["name"] for n in json.loads(r.stdout)["networks"]] == ["op"], argv
    r = ztctl("--json", "--run-dir", d.run_dir, "status")
    assert r.returncode == 0 and json.loads(r.stdout)["status"]["pid"] == d.pid
    # A later --run-dir wins over an earlier one, as with repeated options elsewhere.
    r = ztctl("--run-dir", "/nonexistent", "status", "--run-dir", d.run_dir)
    assert r.returncode == 0, r.stderr
    # Environment default still applies when no option is given.
    r = run([ZTCTL, "-j", "status"], check=False, env={**os.environ, "ZTAPD_RUN_DIR": d.run_dir})
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True


def test_usage_errors_exit_64(daemon):
    for argv in (["frobnicate"], ["--run-dir", daemon.run_dir, "frobnicate"], ["list", "--no-such-option"],
                 ["--no-such-option", "list"], ["capture", "op", "-c", "0"]):
        r = ztctl(*argv)
        assert r.returncode == 64, (argv, r.returncode, r.stderr)
        assert "Usage" in r.stderr or "Error" in r.stderr, r.stderr


def test_global_options_after_terminator_belong_to_the_program(daemon, netns):
    """`ztctl run op -- prog -j --run-dir X`: everything after -- is the program's argv."""
    if not os.path.exists(LIB):
        run([os.path.join(REPO, "scripts", "build-intercept.sh")])
    r = netns.exec(ZTCTL, "-j", "run", "op", "--run-dir", daemon.run_dir, "--",
                   "printf", "%s\\n", "-j", "--json", "--run-dir", "X", check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["-j", "--json", "--run-dir", "X"]


def test_run_says_how_to_build_the_library(daemon, netns, tmpdir_world):
    r = netns.exec(ZTCTL, "run", "op", "--run-dir", daemon.run_dir, "--", "true", check=False,
                   env={**os.environ, "ZTAP_INTERCEPT": os.path.join(tmpdir_world, "missing.so")})
    assert r.returncode == 1
    assert "scripts/build-intercept.sh" in r.stderr and "swift build" in r.stderr, r.stderr


# --- capture --------------------------------------------------------------------------------------

def tcpdump_lines(path, *filter_):
    r = run(["tcpdump", "-n", "-r", path, *filter_])
    return [l for l in r.stdout.splitlines() if l.strip()]


def test_capture_of_a_ping_to_file(daemon, netns, tmpdir_world):
    pcap = os.path.join(tmpdir_world, "ping.pcap")
    cap = subprocess.Popen([ZTCTL, "capture", "op", "-w", pcap, "--run-dir", daemon.run_dir],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: capture_sessions(daemon) == 1, timeout=10), cap.stderr
        netns.exec("ping", "-c", "3", "-i", "0.2", "-W", "2", STACK)
        cap.send_signal(signal.SIGINT)   # frames already queued are still written
        out, err = cap.communicate(timeout=20)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait()
    assert cap.returncode == 0, err
    assert "0 dropped" in err, err
    lines = tcpdump_lines(pcap, "icmp")
    requests = [l for l in lines if f"{KERNEL} > {STACK}: ICMP echo request" in l]
    replies = [l for l in lines if f"{STACK} > {KERNEL}: ICMP echo reply" in l]
    assert len(requests) == 3 and len(replies) == 3, lines
    # Each request's reply, same id and seq, after it.
    for req, rep in zip(requests, replies):
        assert req.split("id ")[1].split(",")[:2] == rep.split("id ")[1].split(",")[:2], (req, rep)
        assert req.split()[0] <= rep.split()[0]
    # ARP went both ways through the capture too (the kernel resolved the stack first).
    assert any("ARP, Request who-has" in l for l in tcpdump_lines(pcap, "arp"))


def test_capture_count_limit(daemon, netns, tmpdir_world):
    pcap = os.path.join(tmpdir_world, "two.pcap")
    cap = subprocess.Popen([ZTCTL, "capture", "op", "-w", pcap, "-c", "2", "--run-dir", daemon.run_dir],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: capture_sessions(daemon) == 1, timeout=10)
        netns.exec("ping", "-c", "3", "-i", "0.2", "-W", "2", STACK)
        _, err = cap.communicate(timeout=20)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait()
    assert cap.returncode == 0 and "2 frames captured" in err, err
    assert len(tcpdump_lines(pcap)) == 2


def test_capture_to_stdout_pipes_into_tcpdump(daemon, netns):
    cap = subprocess.Popen(f"{ZTCTL} capture op -w - -c 4 --run-dir {daemon.run_dir} | tcpdump -n -r - icmp",
                           shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Keep pinging until the capture has its 4 frames (it may start after the first ping).
        deadline = time.time() + 20
        while cap.poll() is None and time.time() < deadline:
            netns.exec("ping", "-c", "1", "-W", "1", STACK, check=False)
        out, err = cap.communicate(timeout=10)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait()
    assert cap.returncode == 0, err
    assert "ICMP echo request" in out and "ICMP echo reply" in out, (out, err)


def test_capture_text_mode_and_interrupt(daemon, netns):
    cap = subprocess.Popen([ZTCTL, "capture", "op", "--run-dir", daemon.run_dir],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: capture_sessions(daemon) == 1, timeout=10)
        netns.exec("ping", "-c", "2", "-i", "0.2", "-W", "2", STACK)
        cap.send_signal(signal.SIGINT)
        out, err = cap.communicate(timeout=10)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait()
    assert cap.returncode == 0, err
    lines = out.splitlines()
    assert any(" in  " in l and f"IP {KERNEL} > {STACK}: ICMP echo request id" in l for l in lines), out
    assert any(" out " in l and f"IP {STACK} > {KERNEL}: ICMP echo reply id" in l for l in lines), out
    assert "frames captured" in err
    # The daemon noticed the reader leave.
    assert wait_until(lambda: capture_sessions(daemon) == 0, timeout=10)


def test_capture_ends_when_the_network_leaves(daemon, tmpdir_world):
    pcap = os.path.join(tmpdir_world, "gone.pcap")
    cap = subprocess.Popen([ZTCTL, "capture", "op", "-w", pcap, "--run-dir", daemon.run_dir],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: capture_sessions(daemon) == 1, timeout=10)
        daemon.ctl("leave", "op")
        _, err = cap.communicate(timeout=15)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait()
    assert cap.returncode == 1 and "capture ended by ztapd" in err, err
    # What was written is a valid pcap file, with nothing but the stack's own IPv6 link chatter
    # (MLD reports, DAD) that may go out at any moment.
    assert tcpdump_lines(pcap, "not", "ip6") == []


def test_capture_refusals(daemon):
    r = ztctl("capture", "nosuch", "--run-dir", daemon.run_dir, "-c", "1")
    assert r.returncode == 1 and "no running network named nosuch" in r.stderr
    # Not a control user: refused like any control command (exit 4), also for [Access] users.
    r = run(["runuser", "-u", "nobody", "--", ZTCTL, "capture", "op", "--run-dir", daemon.run_dir, "-c", "1"],
            check=False)
    assert r.returncode == 4 and "permission denied" in r.stderr, r.stderr
    assert capture_sessions(daemon) == 0


def test_slow_capture_reader_never_stalls_the_network(daemon, netns):
    """A capture nobody reads: frames are dropped for it (counted), the network keeps working."""
    cap = subprocess.Popen([ZTCTL, "capture", "op", "-w", "-", "--run-dir", daemon.run_dir],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: capture_sessions(daemon) == 1, timeout=10)
        cap.send_signal(signal.SIGSTOP)     # the reader stops reading
        # 8 MiB through the echo service: far more than the capture's 4 MiB buffer.
        code = f"""
import socket
s = socket.create_connection(("{STACK}", 7), timeout=30)
data = bytes(range(256)) * 4096
got = 0
for _ in range(8):
    s.sendall(data)
    need = len(data)
    while need:
        b = s.recv(need)
        assert b, "echo closed early"
        need -= len(b)
        got += len(b)
print(got)
"""
        r = netns.exec(sys.executable, "-c", code, timeout=120)
        assert r.stdout.strip() == str(8 << 20)
        m = metrics_dict(daemon)
        assert m[("ztap_capture_dropped_total", (("network", "op"),))] > 0
        assert m[("ztap_capture_sessions", (("network", "op"),))] == 1
    finally:
        cap.send_signal(signal.SIGCONT)
        cap.kill()
        cap.wait()


# --- connections: TCP internals ------------------------------------------------------------------

def test_connections_show_tcp_internals(daemon, netns):
    if not os.path.exists(LIB):
        run([os.path.join(REPO, "scripts", "build-intercept.sh")])
    server = netns.popen(sys.executable, PEER, "echo", KERNEL, "7070", stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    client = None
    try:
        assert server.stdout.readline().strip() == b"READY"
        code = f"""
import socket, sys, time
s = socket.create_connection(("{KERNEL}", 7070))
for i in range(20):
    s.sendall(b"x" * 1000)
    n = 0
    while n < 1000:
        n += len(s.recv(1000 - n))
print("READY", flush=True)
time.sleep(60)
"""
        client = netns.popen(ZTCTL, "run", "op", "--run-dir", daemon.run_dir, "--", sys.executable, "-c", code,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert client.stdout.readline().strip() == b"READY", client.stderr.read()
        out, rc = daemon.ctl_json("connections", "op")
        assert rc == 0
        mine = [c for c in out["connections"] if c["remote"] == f"{KERNEL}:7070"]
        assert len(mine) == 1, out
        c = mine[0]
        assert c["state"] == "ESTABLISHED" and c["pid"] is not None and c["uid"] == 0
        assert c["rttMicros"] > 0 and c["rtoMicros"] >= c["rttMicros"]
        assert c["cwnd"] >= c["mss"] > 0
        assert c["retransmits"] == 0
        assert c["sendQueue"] == 0 and c["receiveQueue"] == 0
        assert c["bytesOut"] == 20000 and c["bytesIn"] == 20000
        assert "ts" in c["options"] and c["congestionControl"] in ("cubic", "reno")
        # The table has the same figures; -i adds the ss-like line.
        table = daemon.ctl("connections", "op", "-i").stdout.splitlines()
        head = table[0].split()
        assert head[7:13] == ["MODE", "RECV-Q", "SEND-Q", "RTT", "CWND", "RETRANS"], head
        row = next(i for i, l in enumerate(table) if f"{KERNEL}:7070" in l)
        assert table[row].split()[7] == "preload" and table[row].split()[11] == str(c["cwnd"])
        assert table[row + 1].lstrip().startswith("rtt:") and "cwnd:" in table[row + 1] and "retrans:0" in table[row + 1]
    finally:
        for p in (client, server):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


# --- metrics --------------------------------------------------------------------------------------

def metrics_text(daemon):
    r = ztctl("metrics", "--run-dir", daemon.run_dir)
    assert r.returncode == 0, r.stderr
    return r.stdout


def metrics_dict(daemon):
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for fam in text_string_to_metric_families(metrics_text(daemon)):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def capture_sessions(daemon):
    return metrics_dict(daemon).get(("ztap_capture_sessions", (("network", "op"),)), -1)


def test_metrics_parse_and_count(daemon, netns):
    from prometheus_client.parser import text_string_to_metric_families
    before = metrics_dict(daemon)
    netns.exec("ping", "-c", "3", "-i", "0.2", "-W", "2", STACK)
    text = metrics_text(daemon)
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    # Counter families lose their _total in the parser's family names; samples keep it.
    for name in ("ztap_frames_received", "ztap_frames_sent", "ztap_bytes_received", "ztap_frames_dropped",
                 "ztap_rpc_requests", "ztap_rpc_errors", "ztap_control_requests"):
        assert fams[name].type == "counter", name
    for name in ("ztap_tcp_connections", "ztap_networks", "ztap_network_up", "process_open_fds",
                 "ztap_tcp_retransmits_live", "ztap_capture_sessions"):
        assert fams[name].type == "gauge", name
    after = metrics_dict(daemon)
    key = lambda n, **l: (n, tuple(sorted({"network": "op", **l}.items())))
    assert after[key("ztap_network_up")] == 1
    assert after[key("ztap_frames_received_total")] >= before[key("ztap_frames_received_total")] + 3
    assert after[key("ztap_frames_sent_total")] >= before[key("ztap_frames_sent_total")] + 3
    assert after[key("ztap_icmp_echo_requests_total")] == before[key("ztap_icmp_echo_requests_total")] + 3
    assert after[("ztap_networks", (("state", "up"),))] == 1
    assert after[key("ztap_tcp_connections", state="established")] == 0
    assert after[key("ztap_frames_dropped_total", reason="checksum")] == 0
    # Every per-network series carries the network label.
    for (name, labels) in after:
        if name.startswith("ztap_") and name not in ("ztap_build_info", "ztap_networks", "ztap_control_clients",
                                                     "ztap_control_requests_total", "ztap_daemon_start_time_seconds",
                                                     "ztap_daemon_uptime_seconds"):
            assert dict(labels).get("network") == "op", name
    # Control requests are counted by command and result.
    assert after[("ztap_control_requests_total", (("command", "metrics"), ("result", "ok")))] >= 2


def test_metrics_count_rpc_requests_and_errors(daemon, netns):
    if not os.path.exists(LIB):
        run([os.path.join(REPO, "scripts", "build-intercept.sh")])
    # A connect to a port nobody listens on: one connect RPC answered with ECONNREFUSED.
    code = f"""
import socket, errno
s = socket.socket()
try:
    s.connect(("{KERNEL}", 9))
except ConnectionRefusedError:
    print("refused")
"""
    r = netns.exec(ZTCTL, "run", "op", "--run-dir", daemon.run_dir, "--", sys.executable, "-c", code)
    assert r.stdout.strip() == "refused"
    m = metrics_dict(daemon)
    key = (("network", "op"), ("op", "connect"))
    assert m[("ztap_rpc_requests_total", key)] >= 1
    assert m[("ztap_rpc_errors_total", key)] >= 1


def test_metrics_json_and_failed_networks(daemon_factory):
    daemon = daemon_factory(networks={"op": NET, "broken": "[Network]\nAddress=not-an-address\n"}).start()
    out, rc = daemon.ctl_json("metrics")
    assert rc == 0
    fams = {f["name"]: f for f in out["metrics"]}
    up = {tuple(sorted(s["labels"].items())): s["value"] for s in fams["ztap_network_up"]["samples"]}
    assert up[(("network", "op"),)] == 1 and up[(("network", "broken"),)] == 0
    states = {s["labels"]["state"]: s["value"] for s in fams["ztap_networks"]["samples"]}
    assert states == {"up": 1, "failed": 1}
