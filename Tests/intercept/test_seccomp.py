"""ztap-seccomp (seccomp mode of `ztctl run`) against fake_ztapd.py: no ztapd, no network traffic.

The probe cases of probe.c, built *statically* (so LD_PRELOAD could not reach it), run under the
supervisor and must behave as they do under the library; the few that cannot are listed in
SECCOMP_DIFFERS with the reason (docs/INTERCEPT.md, limits) and pinned by seccomp_probe.c.
Then "both": the library serves processes it is loaded in, the supervisor the others; the fake's
log tells who sent each request (ZTRPC_F_SECCOMP).

As in test_intercept.py every program runs in a private network namespace (loopback only).
Run: python3 -m pytest -q Tests/intercept/test_seccomp.py
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from test_intercept import CASES, HERE, LIB, OUT, PROBE, PROBE_SOURCES, REPO, isolated, read_log, assert_clean_protocol

SUPERVISOR = os.path.join(OUT, "ztap-seccomp")
PROBE_STATIC = os.path.join(OUT, "probe-static")
SPROBE = os.path.join(OUT, "seccomp_probe")
F_NEW, F_SECCOMP = 0x2, 0x4

# Cases whose seccomp-mode behaviour differs on purpose (see seccomp_probe.c for what it is):
SECCOMP_DIFFERS = {
    "dup": "dup3 of a datagram socket to fd 70, outside the trapped range: refused (EINVAL)",
    "udp_copies": "a datagram socket received over SCM_RIGHTS lands outside the range",
    "interrupted": "WAIT_KILLABLE_RECV: a handled signal is delivered after a blocking connect",
    "oneway": "the supervisor answers every option with a request of its own: the app waits anyway",
    "sessions": "the supervisor makes each request under its target's ids on a connection of its own (ZTI_RPC_ONESHOT), never on a session the app holds",
}
SECCOMP_CASES = [c for c in CASES if c not in SECCOMP_DIFFERS] + ["untouched", "inherited", "isolated"]


@pytest.fixture(scope="module")
def sbuilt():
    subprocess.run([os.path.join(REPO, "scripts", "build-intercept.sh")], check=True, capture_output=True)
    cc = shutil.which("cc") or shutil.which("gcc")
    for srcs, out in ((PROBE_SOURCES, PROBE_STATIC), ([os.path.join(HERE, "seccomp_probe.c"), os.path.join(HERE, "probe_util.c")], SPROBE)):
        r = subprocess.run([cc, "-static", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-o", out,
                            *srcs, "-lpthread"], capture_output=True, text=True)
        assert r.returncode == 0, f"static build of {out} failed (libc6-dev provides libc.a):\n{r.stderr}"
    if not os.path.exists(PROBE):
        subprocess.run([cc, "-O1", "-g", "-o", PROBE, *PROBE_SOURCES, "-lpthread"], check=True)
    return SUPERVISOR


@pytest.fixture()
def fake(tmp_path, sbuilt):
    sock = str(tmp_path / "lab.sock")
    log = str(tmp_path / "rpc.jsonl")
    open(log, "w").close()
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_ztapd.py"), sock, log],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    yield {"sock": sock, "log": log, "tmp": tmp_path}
    proc.terminate()
    proc.wait(5)


def env_for(sock, extra=None):
    env = dict(os.environ)
    for k in ("ZTAP_DEBUG", "ZTAP_DEFAULT_ROUTE", "ZTAP_BIND_ANY", "LD_PRELOAD"):
        env.pop(k, None)
    env.update({"ZTAP_NETWORK": "lab", "ZTAP_RPC": sock, "ZTAP_ROUTES": "10.200.0.0/24,fd00:200::/64"})
    env.update(extra or {})
    return env


def supervised(argv, sock, preload=None, timeout=30, extra_env=None, **kw):
    sup = [SUPERVISOR] + (["--preload", preload] if preload else []) + ["--"]
    return subprocess.run(isolated(sup + list(argv)), env=env_for(sock, extra_env), capture_output=True,
                          text=True, timeout=timeout, **kw)


def creations(log):
    """flags of every request that created a socket (ZTRPC_F_NEW)."""
    return [e["flags"] for e in read_log(log) if isinstance(e.get("flags"), int) and e["flags"] & F_NEW]


@pytest.mark.parametrize("case", SECCOMP_CASES)
def test_probe_case_static_under_seccomp(fake, case):
    p = supervised([PROBE_STATIC, case], fake["sock"],
                   extra_env={"ZTAP_BIND_ANY": "1"} if case == "ipv6_listen" else None)
    assert p.returncode == 0 and f"OK {case}" in p.stdout, f"{case}: rc={p.returncode}\n{p.stdout}\n{p.stderr}"
    assert p.stderr == ""
    log = read_log(fake["log"])
    assert_clean_protocol(log)
    made = creations(fake["log"])
    # Every socket the supervisor created says so (ztctl connections shows MODE seccomp).
    assert all(f & F_SECCOMP for f in made), made
    if case not in ("untouched", "isolated", "inherited"):
        assert made, "no socket was created through ztapd"
    else:
        # Loopback never reaches ztapd. A program's own socketpair costs one GETNAME on its first
        # control call (the library watches socketpair() instead; the supervisor does not trap it).
        assert made == [] and all(e["op"] == "GETNAME" for e in log) and len(log) <= 1, log


@pytest.mark.parametrize("case", ["udp_range", "io_uring", "signal_interrupts_connect", "timeouts"])
def test_seccomp_specific(fake, case):
    p = supervised([SPROBE, case], fake["sock"])
    assert p.returncode == 0 and f"OK {case}" in p.stdout, f"{case}: rc={p.returncode}\n{p.stdout}\n{p.stderr}"
    assert_clean_protocol(read_log(fake["log"]))


def test_dup2_refusal_is_logged_once(fake):
    p = supervised([SPROBE, "udp_range"], fake["sock"])
    assert p.returncode == 0, p.stderr
    lines = [l for l in p.stderr.splitlines() if l]
    assert len(lines) == 2, lines
    assert "dup2/dup3 of a network datagram socket to fd 70" in lines[0], lines
    assert "fd 72 is outside 768-1023" in lines[1], lines


def test_dynamic_program_in_pure_seccomp_mode(fake):
    """The supervisor does not need the program to be static: glibc's calls are syscalls too."""
    for case in ("connect_nonblock", "udp", "listen_accept"):
        p = supervised([PROBE, case], fake["sock"])
        assert p.returncode == 0 and f"OK {case}" in p.stdout, f"{case}:\n{p.stdout}\n{p.stderr}"
    made = creations(fake["log"])
    assert made and all(f & F_SECCOMP for f in made), made


def test_both_mode_leaves_library_processes_to_the_library(fake):
    for case in ("connect_blocking", "udp", "accept_blocking", "fork"):
        p = supervised([PROBE, case], fake["sock"], preload=LIB)
        assert p.returncode == 0 and f"OK {case}" in p.stdout, f"{case}:\n{p.stdout}\n{p.stderr}"
    made = creations(fake["log"])
    assert made and not any(f & F_SECCOMP for f in made), made


def test_both_mode_serves_a_static_program_a_dynamic_one_starts(fake):
    p = supervised(["sh", "-c", f"{PROBE} connect_blocking && exec {PROBE_STATIC} udp"], fake["sock"], preload=LIB)
    assert p.returncode == 0 and "OK connect_blocking" in p.stdout and "OK udp" in p.stdout, p.stdout + p.stderr
    made = creations(fake["log"])
    assert any(f & F_SECCOMP for f in made) and any(not f & F_SECCOMP for f in made), made


def test_ztapd_absent(tmp_path, sbuilt):
    p = supervised([PROBE_STATIC, "absent"], str(tmp_path / "nothing.sock"))
    assert p.returncode == 0 and "OK absent" in p.stdout, p.stdout + p.stderr
    lines = [l for l in p.stderr.splitlines() if l]
    assert len(lines) == 1 and "cannot reach ztapd" in lines[0], lines


def test_exit_status_signal_and_missing_program(fake):
    assert supervised([SPROBE, "exit7"], fake["sock"]).returncode == 7
    # Killed by a signal: the supervisor dies of the same signal (a shell sees 128+15).
    p = supervised([SPROBE, "sigterm_self"], fake["sock"])
    assert p.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM), p.returncode
    p = supervised(["/nonexistent-program"], fake["sock"])
    assert p.returncode == 127 and "cannot run /nonexistent-program" in p.stderr, p.stderr


def test_sigterm_is_forwarded_to_the_program(fake):
    sup = isolated([SUPERVISOR, "--", SPROBE, "wait_term"])
    p = subprocess.Popen(sup, env=env_for(fake["sock"]), stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "READY"
        # The supervisor is the last process of the isolation prefix (exec'd): signal it.
        sup_pid = p.pid
        deadline = time.time() + 5
        while time.time() < deadline:
            with open(f"/proc/{sup_pid}/comm") as f:
                if f.read().strip() == "ztap-seccomp":
                    break
            time.sleep(0.02)
        os.kill(sup_pid, signal.SIGTERM)
        assert p.wait(timeout=10) == 3
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
