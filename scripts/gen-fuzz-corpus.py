#!/usr/bin/env python3
"""Writes the NetStackFuzz seed corpus (Tests/Fuzz/corpus): valid frames towards the harness's
stack (MAC 02:00:00:00:00:01, 10.0.0.1/24) in the harness's record format
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
    # TAP frames with a virtio header (the offload path).
    'virtio-tcp-super': vrec(eth(arp(1), 0x0806, dst=b'\xff' * 6))
        + vrec(eth(ipv4(6, tcp(40004, 9, 500, 0, 0x02, opts=syn_opts)), 0x0800))
        + vrec(eth(ipv4(6, pseudo_only(tcp(40004, 9, 501, 1, 0x10, big * 2), 6), flags_off=0x4000), 0x0800),
               vnet(1, 1, 54, 1448, 34, 16), 1),
    'virtio-udp-uso': vrec(eth(arp(1), 0x0806, dst=b'\xff' * 6))
        + vrec(eth(ipv4(17, pseudo_only(udp(4000, 5000, big), 17)), 0x0800), vnet(1, 5, 42, 1000, 34, 6)),
    'virtio-csum-valid': vrec(eth(arp(1), 0x0806, dst=b'\xff' * 6))
        + vrec(eth(ipv4(17, udp(4000, 7, b'verified')[:6] + b'\x12\x34' + b'verified'), 0x0800), vnet(2)),
}
for name, data in seeds.items():
    with open(os.path.join(out, name), 'wb') as f: f.write(data)
print('wrote %d seeds to %s' % (len(seeds), out))
