"""The Debian package (issue 13): contents, lintian, and install/run/purge in a throwaway root.

packaging/try-deb.sh installs the package into an overlay of this machine's root on a tmpfs in a
private mount namespace (the real root is never written), runs the installed ztapd in network and
PID namespaces of its own, purges the package and reports anything left behind.
"""
import os
import shutil
import subprocess

import pytest

from conftest import REPO, require_root, run


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    require_root()
    out = tmp_path_factory.mktemp("deb")
    # Level 1: six times faster to compress than 6, and the contents are the same.
    r = run([os.path.join(REPO, "packaging", "build-deb.sh")], timeout=900,
            env={**os.environ, "OUT": str(out), "DEB_COMPRESS_LEVEL": "1"})
    path = r.stdout.strip().splitlines()[-1]
    assert path.endswith(".deb") and os.path.exists(path), r.stdout + r.stderr
    return path


def test_package_contents(deb):
    listing = run(["dpkg-deb", "-c", deb]).stdout
    files = {line.split()[-1].lstrip(".") for line in listing.splitlines()}
    for f in ["/usr/sbin/ztapd", "/usr/bin/ztctl", "/usr/lib/ztap/libztintercept.so",
              "/lib/systemd/system/ztapd.service", "/usr/lib/sysusers.d/ztapd.conf", "/usr/lib/tmpfiles.d/ztapd.conf",
              "/usr/share/man/man8/ztapd.8.gz", "/usr/share/man/man8/ztctl.8.gz", "/usr/share/man/man5/ztapd.conf.5.gz",
              "/usr/share/bash-completion/completions/ztctl", "/usr/share/zsh/vendor-completions/_ztctl",
              "/usr/share/fish/vendor_completions.d/ztctl.fish", "/etc/ztapd/ztapd.conf",
              "/usr/lib/NetworkManager/conf.d/90-ztap-unmanaged.conf", "/usr/lib/systemd/network/10-ztap-unmanaged.network",
              "/usr/share/doc/ztap/copyright", "/usr/share/doc/ztap/changelog.gz",
              "/usr/share/doc/ztap/examples/ztap-metrics.timer"]:
        assert f in files, f"{f} not in the package"
    info = run(["dpkg-deb", "-f", deb, "Package", "Depends"]).stdout
    assert "Package: ztap" in info and "libnl-route-3-200" in info and "libcap2" in info
    assert "libswift" not in info
    assert run(["dpkg-deb", "-I", deb, "conffiles"]).stdout.split() == ["/etc/ztapd/ztapd.conf"]
    # The unit starts the binary where the package puts it.
    r = subprocess.run(f"dpkg-deb --fsys-tarfile {deb} | tar -xOf - ./lib/systemd/system/ztapd.service",
                       shell=True, capture_output=True, text=True, check=True)
    assert "ExecStart=/usr/sbin/ztapd " in r.stdout


def test_lintian_clean(deb):
    if not shutil.which("lintian"):
        pytest.skip("lintian not installed (scripts/install-deps.sh installs it)")
    # Errors and warnings fail; the info tags that remain are overridden with reasons
    # (packaging/debian/lintian-overrides).
    r = run(["lintian", "--fail-on", "error,warning", "-I", "--pedantic", deb], check=False, timeout=300)
    tags = [l for l in r.stdout.splitlines() if l[:2] in ("E:", "W:", "I:", "P:")]
    assert r.returncode == 0 and tags == [], r.stdout + r.stderr


def test_install_run_purge_in_a_throwaway_root(deb):
    host_user = run(["getent", "passwd", "ztapd"], check=False).stdout
    host_conf = os.path.exists("/etc/ztapd")
    r = run([os.path.join(REPO, "packaging", "try-deb.sh"), deb], check=False, timeout=300)
    assert r.returncode == 0 and r.stdout.rstrip().endswith("try-deb: ok"), r.stdout + r.stderr
    for step in ("ztctl --version: ", "installed ztapd ran as ztapd", "nothing left behind"):
        assert step in r.stdout, r.stdout
    # The real machine is as it was.
    assert run(["getent", "passwd", "ztapd"], check=False).stdout == host_user
    assert os.path.exists("/etc/ztapd") == host_conf
    assert run(["dpkg-query", "-W", "ztap"], check=False).returncode != 0
