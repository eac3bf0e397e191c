"""Unit tests of libztintercept.so against fake_ztapd.py (no ztapd, no network traffic).

Builds the library with scripts/build-intercept.sh and the probe program (probe.c), starts the
fake daemon on a socket in a temporary directory, and runs each probe case under LD_PRELOAD.
The fake network is 10.200.0.0/24, which exists only inside the fake: the probe never sends a
packet; everything else it uses is loopback or AF_UNIX.

Every program runs in a private network namespace (unshare --net, loopback only; it vanishes
when the program exits), so even a regression that let a socket slip past the library could not
send a packet anywhere: it would get ENETUNREACH.

Run: python3 -m pytest -q Tests/intercept
"""
import errno
import glob
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(REPO, ".build", "intercept")
LIB = os.path.join(OUT, "libztintercept.so")
PROBE = os.path.join(OUT, "probe")
# probe.c (main, helpers) and probe_*.c (the cases by subject)
PROBE_SOURCES = sorted(glob.glob(os.path.join(HERE, "probe*.c")))


def _isolation_prefix():
    """Command prefix that runs a program in a fresh network namespace with only loopback up."""
    unshare = shutil.which("unshare")
    ip = shutil.which("ip") or "/usr/sbin/ip"
    if not unshare or not os.path.exists(ip):
        return None
    inner = ["sh", "-c", f'{ip} link set lo up && exec "$@"', "sh"]
    for extra in ([] if os.geteuid() == 0 else None, ["--map-root-user"]):
        if extra is None:
            continue
        cmd = [unshare, "--net", *extra]
        if subprocess.run(cmd + inner + ["true"], capture_output=True).returncode == 0:
            return cmd + inner
    return None


ISOLATE = _isolation_prefix()


def isolated(argv):
    if ISOLATE is None:
        pytest.skip("cannot create a private network namespace (need root or user namespaces)")
    return ISOLATE + list(argv)


@pytest.fixture(scope="session")
def built():
    subprocess.run([os.path.join(REPO, "scripts", "build-intercept.sh")], check=True,
                   capture_output=True)
    cc = shutil.which("cc") or shutil.which("gcc")
    subprocess.run([cc, "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-o", PROBE,
                    *PROBE_SOURCES, "-lpthread"], check=True)
    return LIB


@pytest.fixture()
def fake(tmp_path, built):
    sock = str(tmp_path / "lab.sock")
    log = str(tmp_path / "rpc.jsonl")
    open(log, "w").close()
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_ztapd.py"), sock, log],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    yield {"sock": sock, "log": log, "tmp": tmp_path}
    proc.terminate()
    proc.wait(5)


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def run_probe(case, sock, extra_env=None, timeout=30):
    env = dict(os.environ)
    for k in ("ZTAP_DEBUG", "ZTAP_DEFAULT_ROUTE", "ZTAP_BIND_ANY"):
        env.pop(k, None)
    env.update({"LD_PRELOAD": LIB, "ZTAP_NETWORK": "lab", "ZTAP_RPC": sock,
                "ZTAP_ROUTES": "10.200.0.0/24,fd00:200::/64"})
    env.update(extra_env or {})
    t0 = time.monotonic()
    p = subprocess.run(isolated([PROBE, case]), env=env, capture_output=True, text=True,
                       timeout=timeout)
    return p, time.monotonic() - t0


def assert_ok(p, case):
    assert p.returncode == 0, f"{case}: rc={p.returncode}\nstdout:{p.stdout}\nstderr:{p.stderr}"
    assert f"OK {case}" in p.stdout


def assert_clean_protocol(log):
    bad = [e for e in log if "protocol_error" in e or "exception" in e]
    assert bad == [], bad


CASES = ["udp_copies", "fork_race", "bound_sndtimeo", "connect_blocking", "connect_nonblock", "connect_errors", "sockopts", "preopts", "oneway", "sessions", "listen_accept",
         "udp", "fork", "dup", "exec", "errno", "threads", "interrupted", "accept_blocking",
         "ipv6_tcp", "ipv6_listen", "ipv6_udp"]


@pytest.mark.parametrize("case", CASES)
def test_probe_case(fake, case):
    # node's listen(port) binds [::]: only ours with --bind-any (ZTAP_BIND_ANY).
    p, _ = run_probe(case, fake["sock"], {"ZTAP_BIND_ANY": "1"} if case == "ipv6_listen" else None)
    assert_ok(p, case)
    # Nothing on stderr when ztapd is reachable and ZTAP_DEBUG is off.
    assert p.stderr == ""
    assert_clean_protocol(read_log(fake["log"]))


def test_hint_options_go_one_way_over_one_channel_per_process(fake):
    p, _ = run_probe("oneway", fake["sock"])
    assert_ok(p, "oneway")
    log = read_log(fake["log"])
    # The channel is a pipe given to the daemon (ztrpc.h ZTRPC_OP_CHANNEL): once per process.
    assert len([e for e in log if e.get("op") == "CHANNEL" and e.get("pipe_channel")]) == 3, log
    check_one_way_log(log)


def test_one_way_options_keep_a_seqpacket_channel_where_pipes_are_refused(tmp_path, built):
    """A daemon without ZTRPC_OP_CHANNEL (EOPNOTSUPP; the library does the same when the kernel
    lacks RWF_NOSIGNAL): the one-way channel is a SEQPACKET connection, with the same order."""
    sock, logf = str(tmp_path / "lab.sock"), str(tmp_path / "rpc.jsonl")
    open(logf, "w").close()
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_ztapd.py"), sock, logf],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, FAKE_NO_PIPE_CHANNEL="1"))
    try:
        assert proc.stdout.readline().strip() == "ready"
        p, _ = run_probe("oneway", sock, extra_env={"PROBE_SEQPACKET_CHANNEL": "1"})
        assert_ok(p, "oneway")
        log = read_log(logf)
        assert not [e for e in log if e.get("pipe_channel")], log
        check_one_way_log(log)
    finally:
        proc.terminate()
        proc.wait(5)


def test_a_refused_channel_is_asked_for_a_few_times_only(tmp_path, built):
    """A daemon that refuses the process a channel (EMFILE): each option goes as a request of
    its own, and the library gives up asking after 8 refusals (not once per option)."""
    sock, logf = str(tmp_path / "lab.sock"), str(tmp_path / "rpc.jsonl")
    open(logf, "w").close()
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_ztapd.py"), sock, logf],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, FAKE_CHANNEL_ERRNO=str(errno.EMFILE)))
    try:
        assert proc.stdout.readline().strip() == "ready"
        p, _ = run_probe("oneway_refused", sock)
        assert_ok(p, "oneway_refused")
        log = read_log(logf)
        assert len([e for e in log if e.get("op") == "CHANNEL"]) == 8, log
        sets = [e for e in log if e.get("op") == "SETSOCKOPT" and e.get("level") == 6]
        assert len(sets) == 20 and all(e["nfds"] == 1 and not e.get("oneway") for e in sets), sets
    finally:
        proc.terminate()
        proc.wait(5)


def check_one_way_log(log):
    # The fake serves each connection on a thread of its own: put the entries in request order.
    sets = sorted((e for e in log if e.get("op") == "SETSOCKOPT" and e.get("level") == 6), key=lambda e: e["id"])
    # NODELAY 0, CORK 1, CORK 0, NODELAY 1 in the parent: one-way, one channel, in order.
    first = sets[:4]
    assert [e.get("oneway") for e in first] == [True] * 4, first
    assert len({e["channel"] for e in first}) == 1
    assert [(e["name"], e["value"]) for e in first] == [(1, "00000000"), (3, "01000000"), (3, "00000000"),
                                                        (1, "01000000")]
    # The NULL value never left the library.
    assert len(sets) == 6, sets
    # The child's QUICKACK came from its own process on its own channel; the parent's last
    # NODELAY on a new channel after the old number was taken over.
    child = next(e for e in sets if e["name"] == 12)
    assert child["oneway"] and child["pid"] != first[0]["pid"]
    # (The child's request ids continue the parent's counter from the fork, so the child's one
    # may carry the same id as the parent's next: the parent's last is the last of its pid.)
    last = [e for e in sets if e["pid"] == first[0]["pid"]][-1]
    assert last["name"] == 1 and last["value"] == "00000000" and last["oneway"]
    # Each named its socket by reference (ztrpc.h "References"): no fd travelled, in the child too.
    assert all(e.get("by_reference") and e["nfds"] == 0 for e in sets), sets


def test_blocking_connect_sends_new_socket_with_two_fds(fake):
    p, _ = run_probe("connect_blocking", fake["sock"])
    assert_ok(p, "connect_blocking")
    log = read_log(fake["log"])
    connects = [e for e in log if e.get("op") == "CONNECT"]
    first = connects[0]
    assert first["flags"] & 2 and first["nfds"] == 2          # ZTRPC_F_NEW with both ends
    assert not first["flags"] & 1                             # blocking
    assert first["addr"] == ["10.200.0.1", 7] and first["proto"] == 6
    # The second connect() on the connected socket carries only the socket (EISCONN).
    assert connects[-1]["flags"] == 0 and connects[-1]["nfds"] == 1


def test_nonblocking_connect_flag(fake):
    p, _ = run_probe("connect_nonblock", fake["sock"])
    assert_ok(p, "connect_nonblock")
    log = read_log(fake["log"])
    first = next(e for e in log if e.get("op") == "CONNECT")
    assert first["flags"] == 3                                # NEW | NONBLOCK
    # SO_ERROR while pending and after success, getpeername and getsockname: the app end and
    # the connect's reply answer them, no request (every non-blocking connect reads SO_ERROR).
    asked = [e["op"] for e in log if e.get("op") in ("GETSOCKOPT", "GETNAME")]
    assert asked == [], asked


def test_options_set_before_connect_travel_with_it(fake):
    p, _ = run_probe("sockopts", fake["sock"])
    assert_ok(p, "sockopts")
    log = read_log(fake["log"])
    first = next(e for e in log if e.get("op") == "CONNECT")
    mask, bools, lon, lsecs = first["opts"][:4]
    assert mask & 0x0008 and bools & 0x0008                   # TCP_NODELAY on
    assert mask & 0x0004 and bools & 0x0004                   # SO_KEEPALIVE on
    assert mask & 0x0010 and (lon, lsecs) == (1, 0)           # SO_LINGER {1, 0}
    sets = [e for e in log if e.get("op") == "SETSOCKOPT"]
    assert {(e["level"], e["name"]) for e in sets} == {(6, 4), (1, 7)}  # TCP_KEEPIDLE, SO_SNDBUF
    # SO_RCVTIMEO stayed native: never sent to ztapd.
    assert not any(e.get("name") == 20 and e.get("level") == 1 for e in log if "name" in e)


def test_timeouts_set_before_connect_act_on_the_replacement(fake):
    p, _ = run_probe("carried", fake["sock"])
    assert_ok(p, "carried")
    connects = [e for e in read_log(fake["log"]) if e.get("op") == "CONNECT"]
    assert len(connects) == 4 and all(e["flags"] & 2 for e in connects)   # each a new ztap socket


def test_other_options_set_before_connect_travel_as_records(fake):
    p, _ = run_probe("preopts", fake["sock"])
    assert_ok(p, "preopts")
    log = read_log(fake["log"])
    first = next(e for e in log if e.get("op") == "CONNECT")
    # Values as the kernel socket reads them back, in the library's table order.
    assert first["preopts"] == [
        [1, 12, "04000000"],               # SO_PRIORITY 4
        [0, 2, "09000000"],                # IP_TTL 9
        [6, 3, "01000000"],                # TCP_CORK on
        [6, 10, "204e0000"],               # TCP_WINDOW_CLAMP 20000
        [6, 13, "72656e6f" + "00" * 12],   # TCP_CONGESTION "reno", as the kernel's 16 bytes
    ], first["preopts"]
    sets = [e for e in log if e.get("op") == "SETSOCKOPT"]
    assert [(e["level"], e["name"], e["optlen"]) for e in sets] == [(0, 4, 24)]
    assert sets[0]["value"] == "0101010194040000" + "00" * 16   # IP_OPTIONS, all 24 bytes


def test_listen_passes_accept_channel(fake):
    p, _ = run_probe("listen_accept", fake["sock"])
    assert_ok(p, "listen_accept")
    log = read_log(fake["log"])
    bind = next(e for e in log if e.get("op") == "BIND")
    assert bind["addr"] == ["10.200.0.2", 8080] and bind["opts"][0] & 0x0001  # SO_REUSEADDR
    listen = next(e for e in log if e.get("op") == "LISTEN")
    assert listen["nfds"] == 3 and listen["backlog"] == 16


def test_udp_datagrams_are_framed(fake):
    p, _ = run_probe("udp", fake["sock"])
    assert_ok(p, "udp")
    log = read_log(fake["log"])
    assert any(e.get("op") == "UDP_OPEN" for e in log)
    dgrams = [e for e in log if e.get("event") == "udp"]
    # Connected sends name no destination on the wire; the daemon uses the peer.
    assert ["10.200.0.1", 53] in [d["dst"] for d in dgrams]
    assert {"10.200.0.1"} == {d["dst"][0] for d in dgrams}
    assert [d["len"] for d in dgrams][:2] == [2, 5]


def test_exec_asks_ztapd_about_inherited_sockets(fake):
    p, _ = run_probe("exec", fake["sock"])
    assert_ok(p, "exec")
    names = [e for e in read_log(fake["log"]) if e.get("op") == "GETNAME"]
    assert len(names) >= 2                                    # the TCP and the UDP socket


def test_inherited_socketpair_asks_once(fake):
    p, _ = run_probe("inherited", fake["sock"])
    assert_ok(p, "inherited")
    log = read_log(fake["log"])
    assert [e["op"] for e in log] == ["GETNAME"]              # 150 reads + getsockopt, one RPC


def test_inherited_socketpair_without_ztapd(tmp_path, built):
    p, _ = run_probe("inherited", str(tmp_path / "missing.sock"))
    assert_ok(p, "inherited")
    # A speculative query is quiet: a process that never uses the network logs nothing.
    assert p.stderr == ""


def test_process_death_closes_the_connection(fake):
    p, _ = run_probe("die", fake["sock"])
    assert p.returncode != 0 and "OK die" in p.stdout        # killed by SIGABRT, after the echo
    deadline = time.monotonic() + 3
    while not any(e.get("event") == "eof" for e in read_log(fake["log"])):
        assert time.monotonic() < deadline, "ztapd side never saw the connection end"
        time.sleep(0.05)


def test_probes_run_without_any_route(fake):
    # The sandbox itself: outside the fake network there is nowhere to send a packet.
    p, _ = run_probe("isolated", fake["sock"])
    assert_ok(p, "isolated")
    assert read_log(fake["log"]) == []


def test_loopback_and_unix_untouched(fake):
    p, _ = run_probe("untouched", fake["sock"])
    assert_ok(p, "untouched")
    p, _ = run_probe("untouched6", fake["sock"])
    assert_ok(p, "untouched6")
    # Not a single RPC: loopback and AF_UNIX never reach ztapd (the app's own socketpair is not
    # mistaken for a ztap socket either: getsockname on it did not ask).
    assert read_log(fake["log"]) == []


def test_default_route_intercepts_without_routes(fake):
    p, _ = run_probe("connect_blocking", fake["sock"],
                     {"ZTAP_ROUTES": "", "ZTAP_DEFAULT_ROUTE": "1"})
    assert_ok(p, "connect_blocking")
    p, _ = run_probe("untouched", fake["sock"], {"ZTAP_ROUTES": "", "ZTAP_DEFAULT_ROUTE": "1"})
    assert_ok(p, "untouched")
    # ::1 and :: are the host's own: no RPC even with the default route.
    before = len(read_log(fake["log"]))
    p, _ = run_probe("untouched6", fake["sock"], {"ZTAP_ROUTES": "", "ZTAP_DEFAULT_ROUTE": "1"})
    assert_ok(p, "untouched6")
    assert read_log(fake["log"])[before:] == []


def test_no_routes_means_no_interception(fake):
    # Without routes or default route the library stays out of the way; "untouched" proves
    # loopback works and the fake sees nothing.
    p, _ = run_probe("untouched", fake["sock"], {"ZTAP_ROUTES": ""})
    assert_ok(p, "untouched")
    assert read_log(fake["log"]) == []


def test_ztapd_absent_fails_fast_with_one_line(tmp_path, built):
    p, elapsed = run_probe("absent", str(tmp_path / "missing.sock"))
    assert_ok(p, "absent")
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, p.stderr
    assert "cannot reach ztapd" in lines[0] and "missing.sock" in lines[0]
    assert elapsed < 5


def test_debug_logs_decisions(fake):
    p, _ = run_probe("connect_blocking", fake["sock"], {"ZTAP_DEBUG": "1"})
    assert_ok(p, "connect_blocking")
    assert "connect intercepted" in p.stderr


def test_interrupted_connect_abandons_only_the_reply(fake):
    p, _ = run_probe("interrupted", fake["sock"])
    assert_ok(p, "interrupted")
    deadline = time.monotonic() + 3
    while True:  # the fake notices the abandoned reply when the connect ends (up to 1 s)
        undelivered = [e for e in read_log(fake["log"]) if "reply_undelivered" in e]
        if len(undelivered) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [e["addr"][1] for e in undelivered] == [8, 3]     # the EINTR and the SO_SNDTIMEO one


def test_ldd_shows_only_libc(built):
    out = subprocess.run(["ldd", LIB], capture_output=True, text=True, check=True).stdout
    libs = [l.split()[0] for l in out.splitlines() if l.strip()]
    allowed = ("linux-vdso", "libc.so", "libdl.so", "/lib64/ld-linux", "/lib/ld-linux")
    assert libs and all(any(l.startswith(a) or a in l for a in allowed) for l in libs), out
    assert not any("swift" in l.lower() for l in libs)


def test_only_libc_replacements_are_exported(built):
    out = subprocess.run(["nm", "-D", "--defined-only", LIB], capture_output=True, text=True,
                         check=True).stdout
    names = {l.split()[-1] for l in out.splitlines() if l.strip()}
    expected = {"connect", "bind", "listen", "accept", "accept4", "getsockname", "getpeername",
                "getsockopt", "setsockopt", "send", "sendto", "sendmsg", "sendmmsg", "recv",
                "recvfrom", "recvmsg", "recvmmsg", "read", "write", "readv", "writev", "__read_chk", "__recv_chk",
                "__recvfrom_chk", "dup", "dup2", "dup3", "socketpair", "shutdown", "syscall", "fcntl",
                "fcntl64", "ioctl", "socket"}
    assert names == expected, names ^ expected


def test_wire_sizes_match_header(built, tmp_path):
    # The header's _Static_asserts hold for a C compiler, and the Python fake's formats agree.
    src = tmp_path / "sizes.c"
    src.write_text('#include "ztrpc.h"\n#include <stdio.h>\nint main(void){printf("%zu %zu %zu %zu '
                   '%zu %zu %zu\\n", sizeof(struct ztrpc_req_hdr), sizeof(struct ztrpc_rep_hdr), '
                   'sizeof(struct ztrpc_sock_req), sizeof(struct ztrpc_sockopt), '
                   'sizeof(struct ztrpc_sockinfo), sizeof(struct ztrpc_accept_msg), '
                   'sizeof(struct ztrpc_sockref));}\n')
    exe = tmp_path / "sizes"
    subprocess.run(["cc", "-std=c11", "-Wall", "-I", os.path.join(REPO, "Sources", "CZTRPC",
                    "include"), "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["16", "24", "80", "32", "88", "80", "24"]


def test_header_imports_into_swift_with_field_types(tmp_path):
    # ztapd mirrors nothing by hand: it imports ztrpc.h as CZTRPC. Constants must carry the type
    # of the field they go in, and struct sizes must be what the header asserts.
    swiftc = shutil.which("swiftc") or "/opt/swift/usr/bin/swiftc"
    if not os.path.exists(swiftc):
        pytest.skip("swiftc not installed")
    header = os.path.join(REPO, "Sources", "CZTRPC", "include", "ztrpc.h")
    (tmp_path / "module.modulemap").write_text(f'module CZTRPC {{ header "{header}"\n export * }}\n')
    (tmp_path / "t.swift").write_text(
        "import CZTRPC\n"
        "var h = ztrpc_rep_hdr(); h.magic = ZTRPC_MAGIC; h.version = ZTRPC_VERSION\n"
        "h.op = ZTRPC_OP_GETSOCKOPT\n"
        "var r = ztrpc_sock_req(); r.flags = ZTRPC_F_NEW | ZTRPC_F_NONBLOCK\n"
        "r.opts.mask = ZTRPC_OPT_NODELAY | ZTRPC_OPT_LINGER\n"
        "var i = ztrpc_sockinfo(); i.state = ZTRPC_STATE_LISTENING\n"
        "print(MemoryLayout<ztrpc_req_hdr>.size, MemoryLayout<ztrpc_rep_hdr>.size,\n"
        "      MemoryLayout<ztrpc_sock_req>.size, MemoryLayout<ztrpc_sockopt>.size,\n"
        "      MemoryLayout<ztrpc_sockinfo>.size, MemoryLayout<ztrpc_accept_msg>.size,\n"
        "      MemoryLayout<ztrpc_dgram>.size, MemoryLayout<ztrpc_sockref>.size)\n")
    exe = tmp_path / "t"
    subprocess.run([swiftc, "-I", str(tmp_path), str(tmp_path / "t.swift"), "-o", str(exe)],
                   check=True, capture_output=True, timeout=300)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["16", "24", "80", "32", "88", "80", "24", "24"]


# ---- unmodified real programs against the fake (skipped when the program is not installed) ----

def app_env(sock):
    env = dict(os.environ)
    env.pop("ZTAP_DEBUG", None)
    env.update({"LD_PRELOAD": LIB, "ZTAP_NETWORK": "lab", "ZTAP_RPC": sock,
                "ZTAP_ROUTES": "10.200.0.0/24,fd00:200::/64"})
    return env


def need(tool):
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}") else None)
    if not path:
        pytest.skip(f"{tool} not installed")
    return path


def test_curl_http_get(fake):
    curl = need("curl")
    p = subprocess.run(isolated([curl, "-sS", "--max-time", "10", "-w", "\n%{remote_ip}:%{remote_port} "
                        "%{local_ip}", "http://10.200.0.1/"]), env=app_env(fake["sock"]),
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    body, addrs = p.stdout.rsplit("\n", 1)
    assert body == "hello ztap!\n"
    assert addrs == "10.200.0.1:80 10.200.0.2"          # real network addresses, not AF_UNIX
    assert any(e.get("event") == "http_request" for e in read_log(fake["log"]))


def test_node_http_get(fake):
    node = need("node")
    script = ("const http=require('http');http.get('http://10.200.0.1/',r=>{let d='';"
              "r.on('data',c=>d+=c);r.on('end',()=>{console.log(r.statusCode,JSON.stringify(d),"
              "r.socket.remoteAddress,r.socket.remotePort,r.socket.localAddress)})})"
              ".on('error',e=>{console.log('ERR',e.code);process.exit(1)})")
    p = subprocess.run(isolated([node, "-e", script]), env=app_env(fake["sock"]), capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.split() == ["200", '"hello', 'ztap!\\n"', "10.200.0.1", "80", "10.200.0.2"]


def test_node_refused_reports_econnrefused(fake):
    node = need("node")
    script = ("require('net').connect(1,'10.200.0.1').on('error',e=>{console.log(e.code)})"
              ".on('connect',()=>{console.log('connected')})")
    p = subprocess.run(isolated([node, "-e", script]), env=app_env(fake["sock"]), capture_output=True,
                       text=True, timeout=30)
    assert p.stdout.strip() == "ECONNREFUSED", p.stdout + p.stderr


def test_socat_udp_roundtrip(fake):
    socat = need("socat")
    p = subprocess.run(isolated([socat, "-t", "0.5", "-", "UDP:10.200.0.1:53"]), input="udp-ping\n",
                       env=app_env(fake["sock"]), capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "udp-ping\n"


def test_nginx_serves_on_the_network(fake):
    nginx = need("nginx")
    root = fake["tmp"] / "nginx"
    (root / "logs").mkdir(parents=True)
    conf = root / "nginx.conf"
    tmp = root / "tmp"
    conf.write_text(f"""daemon off;
worker_processes 2;
error_log {root}/logs/error.log info;
pid {root}/nginx.pid;
events {{ worker_connections 64; }}
http {{
  access_log {root}/logs/access.log;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  server {{ listen 10.200.0.2:8081; location / {{ return 200 "nginx via ztap\\n"; }} }}
}}
""")
    proc = subprocess.Popen(isolated([nginx, "-p", str(root), "-c", str(conf)]), env=app_env(fake["sock"]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        resp = []
        while time.monotonic() < deadline and not resp:
            time.sleep(0.1)
            resp = [e for e in read_log(fake["log"]) if e.get("event") == "http_response"]
    finally:
        proc.terminate()
        proc.wait(10)
    assert resp, read_log(fake["log"])
    assert resp[0].get("data", "").startswith("HTTP/1.1 200 OK"), resp[0]
    assert resp[0]["data"].endswith("nginx via ztap\n")
    # nginx logged the real peer address from accept().
    assert (root / "logs" / "access.log").read_text().startswith("10.200.0.1 ")
