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


@pytest.mark.parametrize("loss,min_mbps", [(5, 50), (10, 20)])
def test_echo_goodput_under_random_loss(net, loss, min_mbps):
    """nftables drops N% of TCP packets at random each way (the kernel's own output drops are
    retried locally, so in practice NetStack's data and ACKs suffer). NetStack's sender used to
    spend most of the time in 200 ms retransmission timeouts (about 8 Mbit/s at 5%, 2 at 10%);
    with RACK-TLP recovery it manages hundreds. The floor is set far below what a loaded
    machine measures."""
    d, ns = net
    rules = f"""
table inet ztloss {{
  chain in {{ type filter hook input priority 0; iifname "ztfix0" meta l4proto tcp numgen random mod 100 < {loss} drop; }}
  chain out {{ type filter hook output priority 0; oifname "ztfix0" meta l4proto tcp numgen random mod 100 < {loss} drop; }}
}}
"""
    ns.exec("nft", "-f", "-", input=rules)
    size = 20 << 20
    out = py(ns, f"""
        import hashlib, os, socket, threading, time
        size = {size}
        data = os.urandom(1 << 20)
        s = socket.create_connection(("{STACK}", 7), timeout=120)
        sent = hashlib.sha256()
        t0 = time.time()
        def writer():
            for i in range(size >> 20):
                s.sendall(data)
                sent.update(data)
            s.shutdown(socket.SHUT_WR)
        t = threading.Thread(target=writer)
        t.start()
        got = hashlib.sha256()
        n = 0
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            got.update(b)
            n += len(b)
        t.join()
        dt = time.time() - t0
        print(n, sent.hexdigest() == got.hexdigest(), "%.1f" % (n * 8 / dt / 1e6))
    """, timeout=600)
    n, same, mbps = out.split()
    print(f"echo {size >> 20} MiB each way at {loss}% loss per direction: {mbps} Mbit/s goodput")
    assert int(n) == size and same == "True"
    assert float(mbps) >= min_mbps
