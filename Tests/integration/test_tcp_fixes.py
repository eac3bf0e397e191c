"""Regressions for NetStack TCP bugs found against the Linux kernel through the TAP.

Same setup as test_netstack_interop.py: the namespace's kernel stack talks to NetStack's
services; every namespace is created and deleted by the test.
"""
import textwrap

import pytest

STACK = "10.71.0.2"
KERNEL = "10.71.0.1"
NET = f"""[Network]
Interface=ztfix0
MTU=2800
Address={STACK}/24
KernelAddress={KERNEL}/24
Services=echo discard chargen
"""


@pytest.fixture
def net(daemon_factory, netns):
    d = daemon_factory(networks={"n": NET}).start()
    return d, netns


def py(netns, code, timeout=300):
    r = netns.exec("python3", "-c", textwrap.dedent(code), timeout=timeout)
    return r.stdout


def test_echo_on_every_open_connection(net):
    """All connections open first, then 10 bytes on each, without closing: every one gets its
    echo. Connections whose ISS fell in the upper half of the sequence space used to keep the
    reply behind Nagle forever (BYTES-IN 10, BYTES-OUT 0)."""
    d, ns = net
    out = py(ns, f"""
        import socket
        socks = [socket.create_connection(("{STACK}", 7), timeout=10) for _ in range(64)]
        for i, s in enumerate(socks):
            s.sendall(b"echo-%05d" % i)
        ok = 0
        for i, s in enumerate(socks):
            want = b"echo-%05d" % i
            got = b""
            try:
                while len(got) < len(want):
                    b = s.recv(64)
                    if not b:
                        break
                    got += b
            except socket.timeout:
                pass
            ok += got == want
        # Second round on the same connections: the first reply's ACK must not hold the next.
        for i, s in enumerate(socks):
            s.sendall(b"again-%04d" % i)
        for i, s in enumerate(socks):
            want = b"again-%04d" % i
            got = b""
            try:
                while len(got) < len(want):
                    b = s.recv(64)
                    if not b:
                        break
                    got += b
            except socket.timeout:
                pass
            ok += got == want
        for s in socks:
            s.close()
        print(ok)
    """)
    assert int(out.strip()) == 128
