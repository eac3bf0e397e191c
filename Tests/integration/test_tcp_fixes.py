"""Regressions for NetStack TCP bugs found against the Linux kernel through the TAP.

Same setup as test_netstack_interop.py: the namespace's kernel stack talks to NetStack's
services; every namespace is created and deleted by the test.
"""
import pytest

from conftest import py

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


def test_echo_on_every_open_connection(net):
    """All connections open first, then 10 bytes on each, without closing: every one gets its
    echo. Connections whose ISS fell in the upper half of the sequence space used to keep the
    reply behind Nagle forever (BYTES-IN 10, BYTES-OUT 0)."""
    d, ns = net
    out = py(ns, f"""
        import socket
        socks = [socket.create_connection(("{STACK}", 7), timeout=10) for _ in range(64)]
        def round_trip(fmt):
            for i, s in enumerate(socks):
                s.sendall(fmt % i)
            ok = 0
            for i, s in enumerate(socks):
                want = fmt % i
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
            return ok
        ok = round_trip(b"echo-%05d")
        # Second round on the same connections: the first reply's ACK must not hold the next.
        ok += round_trip(b"again-%04d")
        for s in socks:
            s.close()
        print(ok)
    """)
    assert int(out.strip()) == 128
