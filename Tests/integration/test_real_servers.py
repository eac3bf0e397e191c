"""Real servers in their distribution's default habits under `ztctl run` (issue 9).

- nginx the way Debian runs it: a root master, workers as `www-data` (`user www-data;`), 2 workers,
  sendfile, `tcp_nopush on`, `tcp_nodelay on`, `listen ... deferred`; wrk from the kernel side with
  keep-alive and with `Connection: close`. Every request must succeed and nginx's error log must be
  free of alerts (a refused setsockopt shows there as `[alert]`).
- PostgreSQL started as the `postgres` user under `ztctl run` (its own network's [Access] admits
  it), pgbench from the kernel side: select-only (-S) and a new connection per transaction (-C).

Everything runs in the test's own network namespace; processes are stopped by PID.
"""
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import BIN, run, wait_until
from intercept_env import intercept_built  # noqa: F401 (autouse fixture)

STACK = "10.74.0.2"
KERNEL = "10.74.0.1"
NET = f"""[Network]
Interface=ztsrv0
MTU=1500
Address={STACK}/24
KernelAddress={KERNEL}/24

[Access]
AllowUsers=postgres
"""


@pytest.fixture
def net(daemon_factory, netns, tmpdir_world):
    d = daemon_factory(networks={"srv": NET}).start()
    procs = []
    yield d, netns, tmpdir_world, procs
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def ztrun(d, *cmd, user=None):
    argv = [os.path.join(BIN, "ztctl"), "run", "srv", "--run-dir", d.run_dir, "--", *cmd]
    return ["runuser", "-u", user, "--", *argv] if user else argv


def wait_connectable(ns, port, timeout=20):
    code = f"import socket; socket.create_connection(('{STACK}', {port}), timeout=1).close()"
    assert wait_until(lambda: ns.exec(sys.executable, "-c", code, check=False).returncode == 0,
                      timeout=timeout, interval=0.2), f"{STACK}:{port} never accepted a connection"


def need(*tools):
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        pytest.fail(f"{' '.join(missing)} not installed (scripts/install-deps.sh installs them)")


def wrk(ns, *args):
    r = ns.exec("wrk", "-t", "2", "-c", "20", "-d", "2s", *args, f"http://{STACK}:8080/", timeout=60)
    out = r.stdout
    m = re.search(r"(\d+) requests in", out)
    assert m and int(m.group(1)) > 100, out
    assert "Socket errors" not in out and "Non-2xx" not in out, out
    return int(m.group(1))


def test_postgres_as_its_user_under_pgbench(net):
    need("pgbench", "psql")
    d, ns, tmp, procs = net
    pgbin = next((p for p in ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin")
                  if os.path.exists(os.path.join(p, "postgres"))), None)
    if pgbin is None:
        pytest.fail("PostgreSQL server not installed (scripts/install-deps.sh installs it)")
    pg = pwd.getpwnam("postgres")
    data = os.path.join(tmp, "pgdata")
    sock = os.path.join(tmp, "pgsock")
    os.chmod(tmp, 0o755)
    for dir_ in (data, sock):
        os.makedirs(dir_)
        os.chown(dir_, pg.pw_uid, pg.pw_gid)
    os.chmod(data, 0o700)
    run(["runuser", "-u", "postgres", "--", f"{pgbin}/initdb", "-D", data, "-A", "trust", "-U", "postgres"],
        timeout=120)
    with open(os.path.join(data, "pg_hba.conf"), "a") as f:
        f.write(f"host all all {KERNEL}/32 trust\n")
    procs.append(ns.popen(*ztrun(d, f"{pgbin}/postgres", "-D", data, "-k", sock, "-c",
                                 f"listen_addresses={STACK}", "-p", "5432", user="postgres"),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_connectable(ns, 5432, timeout=60)
    env_args = ["-h", STACK, "-p", "5432", "-U", "postgres"]
    ns.exec("pgbench", "-i", "-s", "1", *env_args, "postgres", timeout=120)
    for mode in (["-S"], ["-S", "-C"]):
        r = ns.exec("pgbench", *mode, "-T", "3", "-c", "4", "-j", "2", *env_args, "postgres", timeout=120)
        m = re.search(r"number of transactions actually processed: (\d+)", r.stdout)
        assert m and int(m.group(1)) > 50, r.stdout + r.stderr
        assert "number of failed transactions: 0" in r.stdout or "failed" not in r.stdout, r.stdout
        print(f"pgbench {' '.join(mode)} under ztap: {m.group(1)} transactions in 3 s")
    # The server saw the kernel side's address: the connections really went through the stack.
    who = ns.exec("psql", *env_args, "-Atc", "select client_addr from pg_stat_activity where client_addr is not null",
                  "postgres", timeout=30).stdout.split()
    assert who and all(a == KERNEL for a in who), who


def test_nginx_with_debian_habits_under_wrk(net):
    need("nginx", "wrk")
    d, ns, tmp, procs = net
    root = os.path.join(tmp, "nginx")
    os.makedirs(os.path.join(root, "html"))
    os.makedirs(os.path.join(root, "tmp"))
    with open(os.path.join(root, "html", "index.html"), "w") as f:
        f.write("x" * 612)
    os.chmod(tmp, 0o755)
    run(["chmod", "-R", "a+rX", root])
    run(["chown", "-R", "www-data", os.path.join(root, "tmp")])
    log = os.path.join(root, "error.log")
    conf = os.path.join(root, "nginx.conf")
    with open(conf, "w") as f:
        f.write(textwrap.dedent(f"""\
            user www-data;
            worker_processes 2;
            pid {root}/nginx.pid;
            error_log {log} warn;
            events {{ worker_connections 768; }}
            http {{
                sendfile on;
                tcp_nopush on;
                tcp_nodelay on;
                keepalive_timeout 65;
                access_log off;
                client_body_temp_path {root}/tmp; proxy_temp_path {root}/tmp;
                fastcgi_temp_path {root}/tmp; uwsgi_temp_path {root}/tmp; scgi_temp_path {root}/tmp;
                server {{
                    listen {STACK}:8080 deferred;
                    root {root}/html;
                }}
            }}
            """))
    procs.append(ns.popen(*ztrun(d, "nginx", "-g", "daemon off;", "-c", conf, "-e", log),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_connectable(ns, 8080)
    # Workers really run as www-data.
    workers = ns.exec("pgrep", "-u", "www-data", "-f", "nginx: worker", check=False).stdout.split()
    assert len(workers) == 2, workers
    keepalive = wrk(ns)
    close = wrk(ns, "-H", "Connection: close")
    alerts = [l for l in open(log) if re.search(r"\[(alert|crit|emerg)\]", l)]
    assert not alerts, "".join(alerts[:10])
    print(f"nginx under ztap: {keepalive} keep-alive and {close} Connection: close requests in 2 s")


