/* SPDX-License-Identifier: MIT */
/*
 * probe_ipv6.c - IPv6 on the fake network fd00:200::/64 (its IPv4 hosts reached as
 * ::ffff:10.200.0.x): TCP, listen, UDP, and IPv6 sockets outside the network left untouched.
 */
#include "probe.h"

static struct sockaddr_in6 sin6_of(const char *ip, int port)
{
    struct sockaddr_in6 s;
    memset(&s, 0, sizeof s);
    s.sin6_family = AF_INET6;
    s.sin6_port = htons((uint16_t)port);
    CHECK(inet_pton(AF_INET6, ip, &s.sin6_addr) == 1);
    return s;
}

/* A sockaddr_in6 as Linux fills it: family, port, flowinfo 0, the address, scope 0. */
static int is_addr6(const struct sockaddr_in6 *s, const char *ip, int port)
{
    struct sockaddr_in6 w = sin6_of(ip, port);
    return s->sin6_family == AF_INET6 && !memcmp(&s->sin6_addr, &w.sin6_addr, 16) &&
           s->sin6_flowinfo == 0 && s->sin6_scope_id == 0 && (port < 0 || s->sin6_port == w.sin6_port);
}

static void name6_is(int fd, int peer, const char *ip, int port)
{
    struct sockaddr_in6 a;
    socklen_t l = sizeof a;
    memset(&a, 0xAA, sizeof a);
    CHECK((peer ? getpeername(fd, (struct sockaddr *)&a, &l) : getsockname(fd, (struct sockaddr *)&a, &l)) == 0);
    CHECK(l == sizeof a);
    CHECK(is_addr6(&a, ip, port));
}

int case_ipv6_tcp(void)
{
    /* An AF_INET6 socket to an IPv6 host of the network. */
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    struct sockaddr_in6 a = sin6_of("fd00:200::1", 7);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    name6_is(fd, 1, "fd00:200::1", 7);
    name6_is(fd, 0, "fd00:200::2", -1);
    CHECK(opt_int(fd, SOL_SOCKET, SO_DOMAIN) == AF_INET6);
    CHECK(opt_int(fd, SOL_SOCKET, SO_PROTOCOL) == IPPROTO_TCP);
    echo_roundtrip(fd, "over IPv6");
    /* Connected: any further connect is EISCONN, whatever the address (Linux checks the state
     * first), and an unconnected AF_INET6 TCP socket refuses a 16-byte sockaddr_in (EINVAL). */
    struct sockaddr_in v4 = sin_of("10.200.0.1", 7);
    CHECK(connect(fd, (struct sockaddr *)&v4, sizeof v4) == -1 && errno == EISCONN);
    /* A short sockaddr_in6 name buffer is truncated, the length says the full size. */
    unsigned char small[8];
    socklen_t sl = sizeof small;
    CHECK(getpeername(fd, (struct sockaddr *)small, &sl) == 0 && sl == sizeof(struct sockaddr_in6));
    CHECK(small[0] == (AF_INET6 & 0xff) && small[2] == 0 && small[3] == 7);
    close(fd);

    /* An AF_INET6 socket to ::ffff:10.200.0.1 (the network's IPv4 host): intercepted, and the
     * names stay v4-mapped IPv6 for the app. */
    fd = socket(AF_INET6, SOCK_STREAM, 0);
    a = sin6_of("::ffff:10.200.0.1", 7);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    name6_is(fd, 1, "::ffff:10.200.0.1", 7);
    name6_is(fd, 0, "::ffff:10.200.0.2", -1);
    CHECK(opt_int(fd, IPPROTO_IPV6, IPV6_V6ONLY) == 0);
    echo_roundtrip(fd, "mapped");
    close(fd);

    /* IPV6_V6ONLY: the same destination stays on the kernel, which refuses it. */
    fd = socket(AF_INET6, SOCK_STREAM, 0);
    int one = 1;
    CHECK(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) == 0);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == ENETUNREACH);
    close(fd);

    /* A sockaddr_in6 shorter than SIN6_LEN_RFC2133 (24): EINVAL on the kernel socket. */
    fd = socket(AF_INET6, SOCK_STREAM, 0);
    a = sin6_of("fd00:200::1", 7);
    CHECK(connect(fd, (struct sockaddr *)&a, 20) == -1 && errno == EINVAL);
    /* The 24-byte form (no scope id) is accepted. */
    CHECK(connect(fd, (struct sockaddr *)&a, 24) == 0);
    name6_is(fd, 1, "fd00:200::1", 7);
    close(fd);
    return 0;
}

int case_ipv6_listen(void)
{
    /* node's listen(port): one AF_INET6 socket on [::], IPV6_V6ONLY 0, clients of both families. */
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    int one = 1;
    CHECK(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0);
    struct sockaddr_in6 a = sin6_of("::", 8090);
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(listen(fd, 16) == 0);
    name6_is(fd, 0, "::", 8090);
    CHECK(opt_int(fd, SOL_SOCKET, SO_DOMAIN) == AF_INET6);
    CHECK(opt_int(fd, IPPROTO_IPV6, IPV6_V6ONLY) == 0);
    struct sockaddr_in6 pa;
    socklen_t pl = sizeof pa;
    memset(&pa, 0xAA, sizeof pa);
    int c1 = accept(fd, (struct sockaddr *)&pa, &pl);
    CHECK(c1 >= 0 && pl == sizeof pa && is_addr6(&pa, "::ffff:10.200.0.1", 40001));
    name6_is(c1, 1, "::ffff:10.200.0.1", 40001);
    CHECK(opt_int(c1, SOL_SOCKET, SO_DOMAIN) == AF_INET6);
    pl = sizeof pa;
    memset(&pa, 0xAA, sizeof pa);
    int c2 = accept4(fd, (struct sockaddr *)&pa, &pl, SOCK_CLOEXEC);
    CHECK(c2 >= 0 && pl == sizeof pa && is_addr6(&pa, "fd00:200::1", 40002));
    name6_is(c2, 1, "fd00:200::1", 40002);
    char buf[64] = { 0 };
    CHECK(read(c2, buf, sizeof buf) == (ssize_t)strlen("hello from 40002"));
    echo_roundtrip(c2, "reply6");
    close(c1);
    close(c2);
    close(fd);

    /* IPV6_V6ONLY before bind travels with the bind and is fixed afterwards (EINVAL, as Linux). */
    fd = socket(AF_INET6, SOCK_STREAM, 0);
    CHECK(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) == 0);
    a = sin6_of("fd00:200::2", 8091);
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    name6_is(fd, 0, "fd00:200::2", 8091);
    CHECK(opt_int(fd, IPPROTO_IPV6, IPV6_V6ONLY) == 1);
    close(fd);

    /* A v4-mapped bind on an IPV6_V6ONLY socket stays on the kernel (EINVAL there, or
     * EADDRNOTAVAIL in this namespace): never ours. */
    fd = socket(AF_INET6, SOCK_STREAM, 0);
    CHECK(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) == 0);
    a = sin6_of("::ffff:10.200.0.2", 8092);
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == -1);
    close(fd);
    return 0;
}

/* IPv6 loopback and the unspecified address stay on the kernel (also with the default route:
 * ::1 and :: name no host of the network). */
int case_untouched6(void)
{
    int l = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 la = sin6_of("::1", 0);
    CHECK(bind(l, (struct sockaddr *)&la, sizeof la) == 0);
    CHECK(listen(l, 4) == 0);
    socklen_t len = sizeof la;
    CHECK(getsockname(l, (struct sockaddr *)&la, &len) == 0);
    int c = socket(AF_INET6, SOCK_STREAM, 0);
    CHECK(connect(c, (struct sockaddr *)&la, sizeof la) == 0);
    int s = accept(l, NULL, NULL);
    CHECK(s >= 0);
    name6_is(c, 1, "::1", ntohs(la.sin6_port));
    char ch;
    CHECK(write(c, "6", 1) == 1 && read(s, &ch, 1) == 1 && ch == '6');
    close(s);
    close(c);
    /* A connect to [::]:port means the local host to Linux (::1). */
    struct sockaddr_in6 any = sin6_of("::", ntohs(la.sin6_port));
    c = socket(AF_INET6, SOCK_STREAM, 0);
    CHECK(connect(c, (struct sockaddr *)&any, sizeof any) == 0);
    s = accept(l, NULL, NULL);
    CHECK(s >= 0);
    name6_is(c, 1, "::1", ntohs(la.sin6_port));
    close(s);
    close(c);
    close(l);

    int u1 = socket(AF_INET6, SOCK_DGRAM, 0), u2 = socket(AF_INET6, SOCK_DGRAM, 0);
    struct sockaddr_in6 ua = sin6_of("::1", 0);
    CHECK(bind(u1, (struct sockaddr *)&ua, sizeof ua) == 0);
    len = sizeof ua;
    CHECK(getsockname(u1, (struct sockaddr *)&ua, &len) == 0);
    CHECK(sendto(u2, "u", 1, 0, (struct sockaddr *)&ua, sizeof ua) == 1);
    struct sockaddr_in6 from;
    socklen_t fl = sizeof from;
    CHECK(recvfrom(u1, &ch, 1, 0, (struct sockaddr *)&from, &fl) == 1 && ch == 'u');
    CHECK(fl == sizeof from && is_addr6(&from, "::1", -1));
    close(u1);
    close(u2);
    return 0;
}

int case_ipv6_udp(void)
{
    int fd = socket(AF_INET6, SOCK_DGRAM, 0);
    CHECK(fd >= 0);
    struct sockaddr_in6 d = sin6_of("fd00:200::1", 5353);
    CHECK(sendto(fd, "v6", 2, 0, (struct sockaddr *)&d, sizeof d) == 2);
    char buf[64];
    struct sockaddr_in6 src;
    socklen_t sl = sizeof src;
    memset(&src, 0xAA, sizeof src);
    CHECK(recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&src, &sl) == 2);
    CHECK(sl == sizeof src && is_addr6(&src, "fd00:200::1", 5353));
    CHECK(opt_int(fd, SOL_SOCKET, SO_DOMAIN) == AF_INET6);
    /* The same socket to an IPv4 host, v4-mapped: the source comes back v4-mapped. */
    struct sockaddr_in6 d4 = sin6_of("::ffff:10.200.0.1", 5354);
    CHECK(sendto(fd, "v4", 2, 0, (struct sockaddr *)&d4, sizeof d4) == 2);
    sl = sizeof src;
    memset(&src, 0xAA, sizeof src);
    CHECK(recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&src, &sl) == 2);
    CHECK(sl == sizeof src && is_addr6(&src, "::ffff:10.200.0.1", 5354));
    /* recvmsg fills a sockaddr_in6 too. */
    CHECK(sendto(fd, "m", 1, 0, (struct sockaddr *)&d, sizeof d) == 1);
    struct iovec iov = { buf, sizeof buf };
    struct msghdr m;
    memset(&m, 0, sizeof m);
    memset(&src, 0xAA, sizeof src);
    m.msg_name = &src;
    m.msg_namelen = sizeof src;
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    CHECK(recvmsg(fd, &m, 0) == 1 && m.msg_namelen == sizeof src && is_addr6(&src, "fd00:200::1", 5353));
    /* Connected: getpeername is the sockaddr_in6 of the peer. */
    CHECK(connect(fd, (struct sockaddr *)&d, sizeof d) == 0);
    name6_is(fd, 1, "fd00:200::1", 5353);
    CHECK(send(fd, "c", 1, 0) == 1 && recv(fd, buf, sizeof buf, 0) == 1 && buf[0] == 'c');
    close(fd);

    /* Bound to the network's IPv6 address. */
    fd = socket(AF_INET6, SOCK_DGRAM, 0);
    struct sockaddr_in6 b = sin6_of("fd00:200::2", 5001);
    CHECK(bind(fd, (struct sockaddr *)&b, sizeof b) == 0);
    name6_is(fd, 0, "fd00:200::2", 5001);
    CHECK(sendto(fd, "b", 1, 0, (struct sockaddr *)&d, sizeof d) == 1);
    CHECK(recv(fd, buf, sizeof buf, 0) == 1);
    close(fd);
    return 0;
}
