#!/usr/bin/env python3
"""Writes the seed corpora of the ZTapFuzz targets (Tests/Fuzz/rpc, control, ini): valid and
near-valid inputs in each target's format (see Sources/ZTapFuzz/Fuzz.swift and
Sources/ZTService/Fuzzing.swift). The fuzz rig's stack is 10.99.0.2/24 with the echo service.

rpc input: [flags][message]; flags bit 7 truncated, bit 6 BIND a new TCP socket s0 first,
bit 5 open a UDP socket q0 first, bits 0-1 fd count, bits 2-4 fd set (0: s0 s1 q0, 1: q0 q1 s0,
2: s0 q1 q0, 3: p0 p1 s0, 4: s1 s0 q1, 5: q0 s1 p0, 6: s0 s0 s0, 7: p1 q0 q1).
control input: [flags][request line]; flags bit 0: the peer may control ztapd."""
import json
import os
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fuzz")
MAGIC, VERSION = 0x5052545A, 1
CONNECT, BIND, LISTEN, GETSOCKOPT, SETSOCKOPT, GETNAME, UDP_OPEN = range(1, 8)
F_NONBLOCK, F_NEW = 1, 2


def req(op, body=b"", rid=1):
    return struct.pack("<IHHII", MAGIC, VERSION, op, rid, len(body)) + body


def addr(ip, port):
    return bytes(int(x) for x in ip.split(".")) + struct.pack(">H", port) + b"\0\0"


def sock_req(ip, port, flags=0, proto=6, opts=b"\0" * 40):
    return addr(ip, port) + struct.pack("<HBBI", flags, proto, 0, 0) + opts


def opts(mask=0, bools=0, linger=(0, 0), rcvbuf=0, sndbuf=0):
    return struct.pack("<IIiiiiiiiI", mask, bools, linger[0], linger[1], rcvbuf, sndbuf, 0, 0, 0, 0)


def sockopt(level, name, value=0, optlen=4):
    return struct.pack("<iiIi", level, name, optlen, value) + b"\0" * 16


def fds(count, fdset):
    return (fdset << 2) | count


def rpc_seeds():
    s = {}
    s["connect-new-tcp"] = bytes([fds(2, 0)]) + req(CONNECT, sock_req("10.99.0.1", 7, F_NEW))
    s["connect-new-tcp-nonblock"] = bytes([fds(2, 0)]) + req(CONNECT, sock_req("10.99.0.1", 7, F_NEW | F_NONBLOCK))
    s["connect-new-udp"] = bytes([fds(2, 1)]) + req(CONNECT, sock_req("10.99.0.1", 7, F_NEW, proto=17))
    s["bind-new-tcp"] = bytes([fds(2, 0)]) + req(BIND, sock_req("10.99.0.2", 8080, F_NEW, opts=opts(1 | 0x20, 1, rcvbuf=65536)))
    s["bind-privileged"] = bytes([fds(2, 0)]) + req(BIND, sock_req("10.99.0.2", 80, F_NEW))
    s["bind-service-port"] = bytes([fds(2, 0)]) + req(BIND, sock_req("10.99.0.2", 7, F_NEW))
    s["udp-open"] = bytes([fds(2, 1)]) + req(UDP_OPEN, sock_req("0.0.0.0", 0, F_NEW, proto=17))
    # On the socket bound first (flags bit 6; port from the message's last two bytes).
    s["listen-bound"] = bytes([0x40 | fds(3, 2)]) + req(LISTEN, struct.pack("<iI", 16, 0x1f90))
    s["getname-bound"] = bytes([0x40 | fds(1, 0)]) + req(GETNAME) + b"\x1f\x91"
    s["getsockopt-so-error"] = bytes([0x40 | fds(1, 0)]) + req(GETSOCKOPT, sockopt(1, 4))
    s["setsockopt-rcvbuf"] = bytes([0x40 | fds(1, 0)]) + req(SETSOCKOPT, sockopt(1, 8, 1 << 20))
    s["setsockopt-nodelay"] = bytes([0x40 | fds(1, 0)]) + req(SETSOCKOPT, sockopt(6, 1, 1))
    s["connect-bound"] = bytes([0x40 | fds(1, 0)]) + req(CONNECT, sock_req("10.99.0.1", 9))
    s["connect-unspec"] = bytes([0x40 | fds(1, 0)]) + req(CONNECT, sock_req("0.0.0.0", 0))
    s["udp-connect"] = bytes([0x20 | fds(1, 1)]) + req(CONNECT, sock_req("10.99.0.1", 7, proto=17))
    s["udp-getsockopt"] = bytes([0x20 | fds(1, 1)]) + req(GETSOCKOPT, sockopt(1, 7))
    # Wrong fds and malformed messages.
    s["foreign-fds"] = bytes([fds(2, 3)]) + req(CONNECT, sock_req("10.99.0.1", 7, F_NEW))
    s["same-fd-thrice"] = bytes([fds(3, 6)]) + req(LISTEN, struct.pack("<iI", 1, 0))
    s["no-fds"] = bytes([0]) + req(GETNAME)
    s["bad-magic"] = bytes([fds(1, 0)]) + struct.pack("<IHHII", 0xDEADBEEF, 1, GETNAME, 1, 0)
    s["bad-version"] = bytes([fds(1, 0)]) + struct.pack("<IHHII", MAGIC, 99, GETNAME, 1, 0)
    s["truncated"] = bytes([0x80 | fds(2, 0)]) + req(CONNECT, sock_req("10.99.0.1", 7, F_NEW))
    s["length-lies"] = bytes([fds(1, 0)]) + struct.pack("<IHHII", MAGIC, 1, CONNECT, 1, 5000) + b"\0" * 56
    s["unknown-op"] = bytes([fds(1, 0)]) + req(200)
    s["short"] = bytes([0]) + b"abc"
    return s


def control_seeds():
    lines = {
        "status": {"version": 1, "command": "status"},
        "list": {"version": 1, "command": "list"},
        "list-one": {"version": 1, "command": "list", "name": "n"},
        "join": {"version": 1, "command": "join", "name": "fz",
                 "join": {"addresses": ["10.98.0.2/24"], "kernelAddresses": ["10.98.0.1/24"], "mtu": 1500,
                          "interface": "ztfz0", "mac": "02:00:00:00:98:02", "bridge": None}},
        "join-bad": {"version": 1, "command": "join", "name": "Bad_Name"},
        "leave": {"version": 1, "command": "leave", "name": "fz"},
        "get": {"version": 1, "command": "get", "name": "fz", "key": "MTU"},
        "set": {"version": 1, "command": "set", "name": "fz", "assignments": ["MTU=1500", "Address=10.98.0.2/24"]},
        "reload": {"version": 1, "command": "reload"},
        "connections": {"version": 1, "command": "connections"},
        "future-version": {"version": 99, "command": "status"},
    }
    s = {}
    for name, obj in lines.items():
        line = json.dumps(obj).encode()
        s[name] = bytes([1]) + line
        s[name + "-user"] = bytes([0]) + line
    s["not-json"] = bytes([1]) + b"not json"
    s["unknown-command"] = bytes([0]) + b'{"version":1,"command":"explode"}'
    return s


def ini_seeds():
    return {
        "network-full": """# comment
[Network]
Interface=zt-a
MACAddress=02:ab:cd:00:00:01
MTU=9000
Address=10.1.0.2/24 fd00::2/64
KernelAddress=10.1.0.1/24
Gateway=10.1.0.254
DefaultRoute=yes
Route=192.168.0.0/16 10.9.9.9
Bridge=br0
Services=echo chargen discard
[Stack]
TCPReceiveBuffer=64K
TCPSendBuffer=4M
MaxConnections=100
[Access]
AllowUsers=alice 1001
AllowGroups=ztap
AllowPrivilegedPorts=yes
""",
        "daemon-full": """[Daemon]
User=ztapd
LogLevel=debug
ControlUsers=alice
ControlGroup=wheel
SyscallFilter=no
[Limits]
ControlClients=10
ControlClientsPerUser=2
ControlIdleTimeout=2min
ControlOutputBuffer=256K
PendingRequestsPerUser=7
TCPSocketsPerUser=100
UDPSocketsPerUser=50
BufferMemoryPerUser=auto
""",
        "resets-and-crlf": "[Network]\r\nAddress=10.0.0.2/24\r\nAddress=\r\nAddress = 10.0.1.2/24\r\n; semi\r\n",
        "repeated-sections": "[Network]\nMTU=1500\n[Access]\nAllowUsers=a\n[Network]\nRoute=10.2.0.0/16\n",
        "errors": "[Network]\nMTU=99999\n",
        "no-section": "MTU=1500\n",
        "empty": "",
        "no-trailing-newline": "[Network]\nMTU=1500",
    }


def write(target, seeds):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
    print(f"{target}: {len(seeds)} seeds in {d}", file=sys.stderr)


if __name__ == "__main__":
    write("rpc", rpc_seeds())
    write("control", control_seeds())
    write("ini", ini_seeds())
