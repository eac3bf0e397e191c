/* SPDX-License-Identifier: MIT */
/*
 * probe_util.c - helpers the probe cases share (addresses, connect, options, an echo round
 * trip, names); linked into the probe program and into seccomp_probe.
 */
#include "probe.h"

struct sockaddr_in sin_of(const char *ip, int port)
{
    struct sockaddr_in s;
    memset(&s, 0, sizeof s);
    s.sin_family = AF_INET;
    s.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, ip, &s.sin_addr);
    return s;
}

int is_addr(const struct sockaddr_in *s, const char *ip, int port)
{
    struct sockaddr_in w = sin_of(ip, port);
    return s->sin_family == AF_INET && s->sin_addr.s_addr == w.sin_addr.s_addr &&
           (port < 0 || s->sin_port == w.sin_port);
}

int tcp_connect(const char *ip, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = sin_of(ip, port);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    return fd;
}

int opt_int(int fd, int level, int name)
{
    int v = -12345;
    socklen_t l = sizeof v;
    CHECK(getsockopt(fd, level, name, &v, &l) == 0);
    CHECK(l == sizeof v);
    return v;
}

void echo_roundtrip(int fd, const char *msg)
{
    size_t n = strlen(msg);
    char buf[256];
    CHECK(write(fd, msg, n) == (ssize_t)n);
    size_t got = 0;
    while (got < n) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        CHECK(poll(&p, 1, 3000) == 1);
        ssize_t r = read(fd, buf + got, sizeof buf - got);
        if (r < 0 && errno == EAGAIN)
            continue;
        CHECK(r > 0);
        got += (size_t)r;
    }
    CHECK(got == n && memcmp(buf, msg, n) == 0);
}

void peer_is(int fd, const char *ip, int port)
{
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    memset(&a, 0, sizeof a);
    CHECK(getpeername(fd, (struct sockaddr *)&a, &l) == 0);
    CHECK(l == sizeof a);
    CHECK(is_addr(&a, ip, port));
}

int local_port(int fd, const char *ip)
{
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    CHECK(getsockname(fd, (struct sockaddr *)&a, &l) == 0);
    CHECK(l == sizeof a);
    CHECK(is_addr(&a, ip, -1));
    return ntohs(a.sin_port);
}
