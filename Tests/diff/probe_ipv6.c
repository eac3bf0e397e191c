/* SPDX-License-Identifier: MIT */
/*
 * probe_ipv6.c - IPv6 and dual-stack cases: AF_INET6 sockets reaching PEER6, IPv4 peers seen as
 * ::ffff:a.b.c.d on a dual-stack socket, IPV6_V6ONLY and the bind rules it changes, the IPv6
 * options and what they put on the wire.
 *
 * Listeners are never polled for a printed mask here: how a listener polls is compared by the
 * IPv4 cases (and differs, see run_diff.py's [listener-POLLOUT]); these cases wait silently.
 */
#include "probe.h"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int tcp6(void)
{
    return fdres("socket(AF_INET6, SOCK_STREAM)", socket(AF_INET6, SOCK_STREAM, 0));
}

static int udp6(void)
{
    return fdres("socket(AF_INET6, SOCK_DGRAM)", socket(AF_INET6, SOCK_DGRAM, 0));
}

static int listen6(const char *ip, int port, int v6only)
{
    int fd = tcp6();
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (v6only >= 0)
        opt_set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, v6only, "IPV6_V6ONLY");
    do_bind6(fd, ip, port);
    res("listen(8)", listen(fd, 8));
    return fd;
}

/* Waits (silently) for a pending connection, accepts it, prints the address accept returned and
 * the accepted socket's names. */
static int accept_show(int l)
{
    struct pollfd p = { .fd = l, .events = POLLIN };
    poll(&p, 1, 2000);
    struct sockaddr_storage ss;
    memset(&ss, 0xee, sizeof ss);
    socklen_t len = sizeof ss;
    int c = accept(l, (struct sockaddr *)&ss, &len);
    if (c < 0) {
        out("accept = -1 %s", errname(errno));
        return -1;
    }
    out("accept = fd, %s", astr(&ss, len));
    show_names(c);
    return c;
}

static long sendto6(int fd, const char *s, const char *ip, int port)
{
    struct sockaddr_in6 a = sin6_of(ip, port);
    char label[200];
    snprintf(label, sizeof label, "sendto %s \"%s\"", astr(&a, sizeof a), strlen(s) > 20 ? "..." : s);
    return res(label, sendto(fd, s, strlen(s), 0, (struct sockaddr *)&a, sizeof a));
}

/* One datagram (waiting up to 2 s), with its length, data and source. */
static void recvfrom_show(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    poll(&p, 1, 2000);
    char buf[70000];
    struct sockaddr_storage ss;
    memset(&ss, 0xee, sizeof ss);
    socklen_t len = sizeof ss;
    long n = recvfrom(fd, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&ss, &len);
    if (n < 0) {
        out("recvfrom = -1 %s", errname(errno));
        return;
    }
    char label[200];
    snprintf(label, sizeof label, "recvfrom = %ld from %s ", n, astr(&ss, len));
    show_data(label, buf, n);
}

void case_ipv6_tcp_connect(void)
{
    int fd = tcp6();
    do_connect6(fd, PEER6_IP, P_ECHO);
    show_names(fd);
    show_poll("", fd);
    do_send(fd, "six", MSG_NOSIGNAL);
    read_upto(fd, 3, 2000);
    opt_get_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY");
    opt_get_int(fd, IPPROTO_TCP, TCP_MAXSEG, "TCP_MAXSEG");
    opt_get_int(fd, IPPROTO_IPV6, IPV6_MTU, "IPV6_MTU");
    res("shutdown(SHUT_WR)", shutdown(fd, SHUT_WR));
    read_upto(fd, 10, 2000);
    close(fd);

    /* The address the peer sees is the one getsockname reports. */
    fd = tcp6();
    do_connect6(fd, PEER6_IP, P_WHOAMI);
    char line[100];
    read_line(fd, line, sizeof line);
    char ip[64] = "";
    int port = -1;
    sscanf(line, "%63s %d", ip, &port);
    struct sockaddr_in6 seen = sin6_of(ip, port), mine;
    socklen_t l = sizeof mine;
    getsockname(fd, (struct sockaddr *)&mine, &l);
    out("peer sees %s; getsockname %s; same: %s", astr(&seen, sizeof seen), astr(&mine, l),
        memcmp(&seen.sin6_addr, &mine.sin6_addr, 16) == 0 && seen.sin6_port == mine.sin6_port ? "yes" : "no");
    close(fd);

    /* The peer closes at once; nobody listens on P_CLOSED. */
    fd = tcp6();
    do_connect6(fd, PEER6_IP, P_CLOSE);
    read_upto(fd, 10, 2000);
    close(fd);
    fd = tcp6();
    do_connect6(fd, PEER6_IP, P_CLOSED);
    close(fd);
}

void case_ipv6_v6only(void)
{
    int fd = tcp6();
    opt_get_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY");
    opt_set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY");
    opt_get_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY");
    opt_set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0, "IPV6_V6ONLY");
    opt_get_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY");
    opt_set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY");
    /* An IPv6-only socket cannot reach a v4-mapped address. */
    do_connect6(fd, "::ffff:" PEER_IP, P_ECHO);
    close(fd);

    /* The option is IPv6's: an AF_INET socket does not have it. */
    int f4 = tcp_socket();
    opt_get_int(f4, IPPROTO_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY on AF_INET");
    close(f4);

    /* Fixed once the socket has a port. */
    fd = tcp6();
    do_connect6(fd, PEER6_IP, P_ECHO);
    opt_set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY after connect");
    opt_get_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY");
    close(fd);

    /* An IPv4 sockaddr on an AF_INET6 TCP socket: too short, then the wrong family. */
    fd = tcp6();
    struct sockaddr_in v4 = sin_of(PEER_IP, P_ECHO);
    res("connect AF_INET sockaddr len 16", connect(fd, (struct sockaddr *)&v4, sizeof v4));
    struct sockaddr_in6 big = sin6_of(PEER6_IP, P_ECHO);
    memcpy(&big, &v4, sizeof v4);
    res("connect AF_INET sockaddr len 28", connect(fd, (struct sockaddr *)&big, sizeof big));
    close(fd);

    /* UDP: IPv6-only refuses a v4-mapped destination; a dual-stack UDP socket may connect
     * with a plain IPv4 sockaddr (Linux takes it as ::ffff:a.b.c.d). */
    int u = udp6();
    opt_set_int(u, IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY");
    sendto6(u, "m", "::ffff:" PEER_IP, U_ECHO);
    res("connect AF_INET sockaddr", connect(u, (struct sockaddr *)&v4, sizeof v4));
    close(u);
    u = udp6();
    res("connect AF_INET sockaddr", connect(u, (struct sockaddr *)&v4, sizeof v4));
    show_names(u);
    do_send(u, "m4", 0);
    recvfrom_show(u);
    close(u);
}

void case_ipv6_listen_dual(void)
{
    /* A dual-stack listener on [::]: IPv4 clients appear v4-mapped. */
    int l = listen6("::", 8130, -1);
    show_name("listener ", l, 0);
    out("peer: %s", ctl("connect 8130 1 hold 2000"));
    int c = accept_show(l);
    if (c >= 0)
        close(c);
    out("peer: %s", ctl("connect 8130 1 hold 2000 6"));
    c = accept_show(l);
    if (c >= 0)
        close(c);
    /* A short address buffer: truncated, the full length returned. */
    out("peer: %s", ctl("connect 8130 1 data 2000 6"));
    struct pollfd p = { .fd = l, .events = POLLIN };
    poll(&p, 1, 2000);
    struct sockaddr_in6 small;
    socklen_t len = 16;
    memset(&small, 0xee, sizeof small);
    c = accept(l, (struct sockaddr *)&small, &len);
    out("accept with 16 bytes = %s, len %u, family %d", c >= 0 ? "fd" : errname(errno), (unsigned)len, small.sin6_family);
    if (c >= 0) {
        read_upto(c, 2, 2000);
        close(c);
    }
    close(l);

    /* IPv6-only: IPv4 clients are refused. */
    l = listen6("::", 8131, 1);
    out("peer: %s", ctl("connect 8131 1 hold 2000"));
    out("peer: %s", ctl("connect 8131 1 hold 2000 6"));
    c = accept_show(l);
    if (c >= 0)
        close(c);
    set_nonblock(l, 1);
    fdres("accept again", accept(l, NULL, NULL));
    close(l);

    /* A listener on SELF6 only, and one on a v4-mapped SELF. */
    l = listen6(SELF6_IP, 8132, -1);
    out("peer: %s", ctl("connect 8132 1 hold 2000"));
    out("peer: %s", ctl("connect 8132 1 hold 2000 6"));
    c = accept_show(l);
    if (c >= 0)
        close(c);
    close(l);
    l = listen6("::ffff:" SELF_IP, 8133, -1);
    out("peer: %s", ctl("connect 8133 1 hold 2000"));
    c = accept_show(l);
    if (c >= 0)
        close(c);
    close(l);
}

void case_ipv6_bind_rules(void)
{
    /* [::] without IPV6_V6ONLY holds the IPv4 port too. */
    int a = listen6("::", 8140, -1);
    int b = tcp_socket();
    do_bind(b, "0.0.0.0", 8140);
    int c = tcp_socket();
    do_bind(c, SELF_IP, 8140);
    int d = tcp6();
    do_bind6(d, SELF6_IP, 8140);
    close(b);
    close(c);
    close(d);
    close(a);
    /* With IPV6_V6ONLY it does not. */
    a = listen6("::", 8141, 1);
    b = tcp_socket();
    do_bind(b, "0.0.0.0", 8141);
    res("listen(8)", listen(b, 8));
    close(a);
    close(b);
    /* The reverse order: 0.0.0.0 first, then [::] dual-stack and IPv6-only. */
    b = tcp_socket();
    do_bind(b, "0.0.0.0", 8142);
    res("listen(8)", listen(b, 8));
    a = tcp6();
    do_bind6(a, "::", 8142);
    close(a);
    a = tcp6();
    opt_set_int(a, IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY");
    do_bind6(a, "::", 8142);
    close(a);
    close(b);
    /* A v4-mapped address on an IPv6-only socket; someone else's address; an IPv4 sockaddr. */
    a = tcp6();
    opt_set_int(a, IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY");
    do_bind6(a, "::ffff:" SELF_IP, 8143);
    close(a);
    a = tcp6();
    do_bind6(a, PEER6_IP, 8144);
    close(a);
    a = tcp6();
    struct sockaddr_in v4 = sin_of(SELF_IP, 8145);
    res("bind AF_INET sockaddr len 16", bind(a, (struct sockaddr *)&v4, sizeof v4));
    close(a);
    /* Port 0: an ephemeral port, named by getsockname. */
    a = tcp6();
    do_bind6(a, SELF6_IP, 0);
    show_name("", a, 0);
    close(a);
    /* UDP and TCP do not share ports. */
    a = listen6("::", 8146, -1);
    int u = udp6();
    do_bind6(u, "::", 8146);
    show_name("", u, 0);
    close(u);
    close(a);
}

void case_ipv6_udp(void)
{
    int u = udp6();
    sendto6(u, "u6", PEER6_IP, U_ECHO);
    recvfrom_show(u);
    show_name("", u, 0);
    /* The same dual-stack socket to an IPv4 peer, v4-mapped. */
    sendto6(u, "m", "::ffff:" PEER_IP, U_ECHO);
    recvfrom_show(u);
    /* 3000 bytes over MTU 1500: fragmented both ways. */
    char big[3001];
    memset(big, 'z', 3000);
    big[3000] = 0;
    sendto6(u, big, PEER6_IP, U_ECHO);
    recvfrom_show(u);
    close(u);

    /* Connected. */
    u = udp6();
    do_connect6(u, PEER6_IP, U_ECHO);
    show_names(u);
    do_send(u, "c6", 0);
    recvfrom_show(u);
    close(u);

    /* Bound to SELF6, a datagram from the peer. */
    u = udp6();
    do_bind6(u, SELF6_IP, 8160);
    out("peer: %s", ctl("udpsend6 8160 hi"));
    recvfrom_show(u);
    close(u);

    /* Bound to [::]: both families arrive, IPv4 ones v4-mapped. */
    u = udp6();
    do_bind6(u, "::", 8161);
    out("peer: %s", ctl("udpsend 8161 four"));
    recvfrom_show(u);
    out("peer: %s", ctl("udpsend6 8161 six"));
    recvfrom_show(u);
    close(u);

    /* ICMPv6 port unreachable on a connected socket. */
    u = udp6();
    do_connect6(u, PEER6_IP, U_CLOSED);
    do_send(u, "x", 0);
    msleep(300);
    do_recv(u, 10, MSG_DONTWAIT);
    do_recv(u, 10, MSG_DONTWAIT);
    close(u);
}

void case_ipv6_options(void)
{
    int t = tcp6();
    opt_get_int(t, IPPROTO_IPV6, IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS");
    opt_set_int(t, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 10, "IPV6_UNICAST_HOPS");
    opt_get_int(t, IPPROTO_IPV6, IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS");
    opt_set_int(t, IPPROTO_IPV6, IPV6_UNICAST_HOPS, -1, "IPV6_UNICAST_HOPS");
    opt_get_int(t, IPPROTO_IPV6, IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS");
    opt_set_int(t, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 256, "IPV6_UNICAST_HOPS");
    opt_set_int(t, IPPROTO_IPV6, IPV6_UNICAST_HOPS, -2, "IPV6_UNICAST_HOPS");
    opt_get_int(t, IPPROTO_IPV6, IPV6_TCLASS, "IPV6_TCLASS");
    opt_set_int(t, IPPROTO_IPV6, IPV6_TCLASS, 0x28, "IPV6_TCLASS");
    opt_get_int(t, IPPROTO_IPV6, IPV6_TCLASS, "IPV6_TCLASS");
    opt_set_int(t, IPPROTO_IPV6, IPV6_TCLASS, -1, "IPV6_TCLASS");
    opt_get_int(t, IPPROTO_IPV6, IPV6_TCLASS, "IPV6_TCLASS");
    opt_set_int(t, IPPROTO_IPV6, IPV6_TCLASS, 256, "IPV6_TCLASS");
    opt_get_int(t, IPPROTO_IPV6, IPV6_MTU, "IPV6_MTU unconnected");
    /* Set before connect, still there after (the socket moves to ztapd at connect). */
    opt_set_int(t, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 33, "IPV6_UNICAST_HOPS");
    opt_set_int(t, IPPROTO_IPV6, IPV6_TCLASS, 0x10, "IPV6_TCLASS");
    do_connect6(t, PEER6_IP, P_ECHO);
    opt_get_int(t, IPPROTO_IPV6, IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS");
    opt_get_int(t, IPPROTO_IPV6, IPV6_TCLASS, "IPV6_TCLASS");
    opt_get_int(t, IPPROTO_IPV6, IPV6_MTU, "IPV6_MTU");
    close(t);

    /* What the peer sees in the IPv6 header. */
    int u = udp6();
    opt_get_int(u, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, "IPV6_MULTICAST_HOPS");
    sendto6(u, "h?", PEER6_IP, U_TTL);
    recvfrom_show(u);
    opt_set_int(u, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 7, "IPV6_UNICAST_HOPS");
    opt_set_int(u, IPPROTO_IPV6, IPV6_TCLASS, 0x20, "IPV6_TCLASS");
    sendto6(u, "h?", PEER6_IP, U_TTL);
    recvfrom_show(u);
    close(u);
    u = udp6();
    do_connect6(u, PEER6_IP, U_TTL);
    opt_set_int(u, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 200, "IPV6_UNICAST_HOPS");
    do_send(u, "h?", 0);
    recvfrom_show(u);
    close(u);
}
