#!/usr/bin/env python3
"""Writes the NetStackFuzz seed corpus (Tests/Fuzz/corpus): valid frames towards the harness's
stack (MAC 02:00:00:00:00:01, 10.0.0.1/24, fd00::1/64) in the harness's record format
[advance ms: 1 byte][length: 2 bytes LE][frame]; `vrec` records (advance byte's high bit) are
TAP frames with a 10-byte virtio header: partial checksums, TCP super-segments, UDP USO."""
import os, struct, sys

OUR_MAC = bytes([2, 0, 0, 0, 0, 1]); PEER_MAC = bytes([2, 0, 0, 0, 0, 2])
OUR_IP = bytes([10, 0, 0, 1]); PEER_IP = bytes([10, 0, 0, 2])

def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF

def eth(payload, etype, dst=OUR_MAC): return dst + PEER_MAC + struct.pack('!H', etype) + payload

def ipv4(proto, payload, ident=1, flags_off=0, src=PEER_IP, dst=OUR_IP):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), ident, flags_off, 64, proto, 0, src, dst)
    h = h[:10] + struct.pack('!H', csum(h)) + h[12:]
    return h + payload

def udp(sport, dport, data):
    h = struct.pack('!HHHH', sport, dport, 8 + len(data), 0)
    pseudo = PEER_IP + OUR_IP + struct.pack('!BBH', 0, 17, 8 + len(data))
    c = csum(pseudo + h + data) or 0xFFFF
    return struct.pack('!HHHH', sport, dport, 8 + len(data), c) + data

def tcp(sport, dport, seq, ack, flags, data=b'', opts=b''):
    off = (20 + len(opts)) // 4
    h = struct.pack('!HHIIBBHHH', sport, dport, seq, ack, off << 4, flags, 65535, 0, 0) + opts
    pseudo = PEER_IP + OUR_IP + struct.pack('!BBH', 0, 6, len(h) + len(data))
    c = csum(pseudo + h + data)
    return h[:16] + struct.pack('!H', c) + h[18:] + data

def icmp_echo(data, ident=1, seq=1):
    h = struct.pack('!BBHHH', 8, 0, 0, ident, seq)
    return struct.pack('!BBHHH', 8, 0, csum(h + data), ident, seq) + data

def arp(op, tpa=OUR_IP):
    return struct.pack('!HHBBH', 1, 0x0800, 6, 4, op) + PEER_MAC + PEER_IP + bytes(6) + tpa

# IPv6 (fd00::2 -> fd00::1; the peer's link-local fe80::2).
OUR_IP6 = bytes.fromhex('fd000000000000000000000000000001'); PEER_IP6 = bytes.fromhex('fd000000000000000000000000000002')
PEER_LL = bytes.fromhex('fe800000000000000000000000000002')
ALL_NODES = bytes.fromhex('ff020000000000000000000000000001')

def sol_node(a): return bytes.fromhex('ff0200000000000000000001ff') + a[13:]
def mcast_mac(a): return b'\x33\x33' + a[12:]

def ipv6(nh, payload, src=PEER_IP6, dst=OUR_IP6, hlim=64):
    return struct.pack('!IHBB', 0x60000000, len(payload), nh, hlim) + src + dst + payload

def l4sum6(proto, seg, src=PEER_IP6, dst=OUR_IP6, at=2):
    pseudo = src + dst + struct.pack('!IxxxB', len(seg), proto)
    c = csum(pseudo + seg[:at] + b'\0\0' + seg[at + 2:])
    if proto == 17 and c == 0: c = 0xFFFF
    return seg[:at] + struct.pack('!H', c) + seg[at + 2:]

def icmp6(t, code, rest, body, src=PEER_IP6, dst=OUR_IP6):
    return l4sum6(58, struct.pack('!BBHI', t, code, 0, rest) + body, src, dst)

def udp6(sport, dport, data, src=PEER_IP6, dst=OUR_IP6):
    return l4sum6(17, struct.pack('!HHHH', sport, dport, 8 + len(data), 0) + data, src, dst, at=6)

def tcp6(sport, dport, seq, ack, flags, data=b'', opts=b''):
    off = (20 + len(opts)) // 4
    h = struct.pack('!HHIIBBHHH', sport, dport, seq, ack, off << 4, flags, 65535, 0, 0) + opts
    return l4sum6(6, h + data, at=16)

def frag6(nh, data, off, more, ident=77):
    return struct.pack('!BBHI', nh, 0, off | (1 if more else 0), ident) + data

def rec(frame, adv=0): return bytes([adv]) + struct.pack('<H', len(frame)) + frame

def vnet(flags=0, gso=0, hdr_len=0, gso_size=0, start=0, off=0):
    return struct.pack('<BBHHHH', flags, gso, hdr_len, gso_size, start, off)

def vrec(frame, hdr=None, adv=0):
    return rec((hdr if hdr is not None else vnet()) + frame, adv | 0x80)

def pseudo_only(seg, proto):
    """The segment with its checksum field holding only the pseudo-header sum (NEEDS_CSUM)."""
    s = sum(struct.unpack('!4H', PEER_IP + OUR_IP)) + proto + len(seg)
    while s >> 16: s = (s & 0xFFFF) + (s >> 16)
    at = 16 if proto == 6 else 6
    return seg[:at] + struct.pack('!H', s) + seg[at + 2:]

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..', 'Tests', 'Fuzz', 'corpus')
os.makedirs(out, exist_ok=True)
arp_req = rec(eth(arp(1), 0x0806, dst=b'\xff' * 6))
syn_opts = bytes([2, 4, 5, 0xB4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7])
big = bytes(range(256)) * 12
ns = rec(eth(ipv6(58, icmp6(135, 0, 0, OUR_IP6 + bytes([1, 1]) + PEER_MAC, dst=sol_node(OUR_IP6)),
                   dst=sol_node(OUR_IP6), hlim=255), 0x86DD, dst=mcast_mac(sol_node(OUR_IP6))))
seeds = {
    'arp-request': arp_req,
    'arp-reply': rec(eth(arp(2), 0x0806)),
    'ping': arp_req + rec(eth(ipv4(1, icmp_echo(b'hello')), 0x0800)),
    'ping-fragmented': arp_req + rec(eth(ipv4(1, icmp_echo(big)[:1480], ident=9, flags_off=0x2000), 0x0800))
        + rec(eth(ipv4(1, icmp_echo(big)[1480:], ident=9, flags_off=1480 // 8), 0x0800)),
    'udp-socket': arp_req + rec(eth(ipv4(17, udp(4000, 5000, b'datagram')), 0x0800)),
    'udp-echo': arp_req + rec(eth(ipv4(17, udp(4000, 7, b'echo me')), 0x0800)),
    'udp-closed-port': arp_req + rec(eth(ipv4(17, udp(4000, 9999, b'x')), 0x0800)),
    'tcp-echo-session': arp_req + rec(eth(ipv4(6, tcp(40000, 7, 1000, 0, 0x02, opts=syn_opts)), 0x0800))
        + rec(eth(ipv4(6, tcp(40000, 7, 1001, 1, 0x10)), 0x0800), 1)
        + rec(eth(ipv4(6, tcp(40000, 7, 1001, 1, 0x18, b'hello echo')), 0x0800), 1)
        + rec(eth(ipv4(6, tcp(40000, 7, 1011, 1, 0x11)), 0x0800), 50),
    'tcp-syn-http': arp_req + rec(eth(ipv4(6, tcp(40001, 80, 5, 0, 0x02, opts=syn_opts)), 0x0800)),
    'tcp-chargen': arp_req + rec(eth(ipv4(6, tcp(40002, 19, 77, 0, 0x02, opts=syn_opts)), 0x0800)),
    'tcp-rst-closed': arp_req + rec(eth(ipv4(6, tcp(40003, 4444, 9, 0, 0x02)), 0x0800)),
    'ip-options': arp_req + rec(eth(bytes([0x46]) + ipv4(17, udp(4000, 5000, b'o'))[1:], 0x0800)),
    # IPv6: Neighbor Discovery, echo (also fragmented and to all-nodes), UDP, TCP, extension headers.
    'nd-solicitation': ns,
    'nd-advertisement': rec(eth(ipv6(58, icmp6(136, 0, 0x60000000, PEER_IP6 + bytes([2, 1]) + PEER_MAC), hlim=255), 0x86DD)),
    'nd-dad-probe': rec(eth(ipv6(58, icmp6(135, 0, 0, OUR_IP6, src=bytes(16), dst=sol_node(OUR_IP6)),
                                 src=bytes(16), dst=sol_node(OUR_IP6), hlim=255), 0x86DD, dst=mcast_mac(sol_node(OUR_IP6)))),
    'ping6': ns + rec(eth(ipv6(58, icmp6(128, 0, 0x00010001, b'hello six')), 0x86DD)),
    'ping6-all-nodes': rec(eth(ipv6(58, icmp6(128, 0, 0x00010002, b'all', src=PEER_LL, dst=ALL_NODES),
                                    src=PEER_LL, dst=ALL_NODES), 0x86DD, dst=mcast_mac(ALL_NODES))),
    'ping6-fragmented': ns + rec(eth(ipv6(44, frag6(58, icmp6(128, 0, 0x00020001, big)[:1448], 0, True)), 0x86DD))
        + rec(eth(ipv6(44, frag6(58, icmp6(128, 0, 0x00020001, big)[1448:], 1448, False)), 0x86DD)),
    'udp6-echo': ns + rec(eth(ipv6(17, udp6(4000, 7, b'echo six')), 0x86DD)),
    'udp6-socket': ns + rec(eth(ipv6(17, udp6(4000, 5000, b'datagram six')), 0x86DD)),
    'udp6-closed-port': ns + rec(eth(ipv6(17, udp6(4000, 9999, b'x')), 0x86DD)),
    'tcp6-echo-session': ns + rec(eth(ipv6(6, tcp6(40000, 7, 1000, 0, 0x02, opts=syn_opts)), 0x86DD))
        + rec(eth(ipv6(6, tcp6(40000, 7, 1001, 1, 0x10)), 0x86DD), 1)
        + rec(eth(ipv6(6, tcp6(40000, 7, 1001, 1, 0x18, b'hello echo six')), 0x86DD), 1)
        + rec(eth(ipv6(6, tcp6(40000, 7, 1015, 1, 0x11)), 0x86DD), 50),
    'tcp6-syn-http': ns + rec(eth(ipv6(6, tcp6(40001, 80, 5, 0, 0x02, opts=syn_opts)), 0x86DD)),
    'ipv6-ext-headers': ns
        + rec(eth(ipv6(0, bytes([60, 0, 1, 4, 0, 0, 0, 0]) + bytes([58, 0, 0x1e, 4, 0, 0, 0, 0])
                       + icmp6(128, 0, 1, b'opts')), 0x86DD))
        + rec(eth(ipv6(60, bytes([58, 0, 0x9e, 4, 0, 0, 0, 0]) + icmp6(128, 0, 1, b'report')), 0x86DD))
        + rec(eth(ipv6(43, bytes([58, 2, 0, 1, 0, 0, 0, 0]) + PEER_IP6 + icmp6(128, 0, 1, b'rh0')), 0x86DD))
        + rec(eth(ipv6(253, bytes(8)), 0x86DD)),
    'mld-query': rec(eth(ipv6(58, icmp6(130, 0, 1000 << 16, bytes(16) + bytes([2, 125, 0, 0]), src=PEER_LL, dst=ALL_NODES),
                              src=PEER_LL, dst=ALL_NODES, hlim=1), 0x86DD, dst=mcast_mac(ALL_NODES))),
    # TAP frames with a virtio header (the offload path).
    'virtio-tcp-super': vrec(eth(arp(1), 0x0806, dst=b'\xff' * 6))
        + vrec(eth(ipv4(6, tcp(40004, 9, 500, 0, 0x02, opts=syn_opts)), 0x0800))
        + vrec(eth(ipv4(6, pseudo_only(tcp(40004, 9, 501, 1, 0x10, big * 2), 6), flags_off=0x4000), 0x0800),
               vnet(1, 1, 54, 1448, 34, 16), 1),
    'virtio-udp-uso': vrec(eth(arp(1), 0x0806, dst=b'\xff' * 6))
        + vrec(eth(ipv4(17, pseudo_only(udp(4000, 5000, big), 17)), 0x0800), vnet(1, 5, 42, 1000, 34, 6)),
    'virtio-tcp6-super': vrec(ns[3:]) + vrec(eth(ipv6(6, tcp6(40005, 9, 500, 0, 0x02, opts=syn_opts)), 0x86DD))
        + vrec(eth(ipv6(6, tcp6(40005, 9, 501, 1, 0x10, big * 2)), 0x86DD), vnet(2, 4, 74, 1428), 1),
    'virtio-csum-valid': vrec(eth(arp(1), 0x0806, dst=b'\xff' * 6))
        + vrec(eth(ipv4(17, udp(4000, 7, b'verified')[:6] + b'\x12\x34' + b'verified'), 0x0800), vnet(2)),
}
for name, data in seeds.items():
    with open(os.path.join(out, name), 'wb') as f: f.write(data)
print('wrote %d seeds to %s' % (len(seeds), out))
