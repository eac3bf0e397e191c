/* SPDX-License-Identifier: MIT */
/*
 * probe_tcp.c - connect, options, listen and accept on the fake network: blocking and non-blocking
 * connects and their errors, options set before and after the socket becomes a ztap one, the
 * accept channel, a connect interrupted by a signal, SO_SNDTIMEO on an already-bound socket.
 */
#include "probe.h"

int case_connect_blocking(void)
{
    int fd = tcp_connect("10.200.0.1", 7);
    peer_is(fd, "10.200.0.1", 7);
    CHECK(local_port(fd, "10.200.0.2") > 0);
    CHECK(opt_int(fd, SOL_SOCKET, SO_TYPE) == SOCK_STREAM);
    CHECK(opt_int(fd, SOL_SOCKET, SO_DOMAIN) == AF_INET);
    CHECK(opt_int(fd, SOL_SOCKET, SO_PROTOCOL) == IPPROTO_TCP);
    CHECK(opt_int(fd, SOL_SOCKET, SO_ACCEPTCONN) == 0);
    CHECK(opt_int(fd, SOL_SOCKET, SO_ERROR) == 0);
    echo_roundtrip(fd, "ping");
    /* Half-close: our FIN reaches the peer (the fake echoes it), reading still works. */
    CHECK(shutdown(fd, SHUT_WR) == 0);
    char b[8];
    CHECK(read(fd, b, sizeof b) == 0);
    /* Not FD_CLOEXEC before, not after. */
    CHECK((fcntl(fd, F_GETFD) & FD_CLOEXEC) == 0);
    CHECK(close(fd) == 0);

    /* SOCK_CLOEXEC survives interception. */
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = sin_of("10.200.0.1", 7);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    /* A second connect on a connected socket: EISCONN, like the kernel. */
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == EISCONN);
    close(fd);
    return 0;
}

int case_connect_nonblock(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = sin_of("10.200.0.1", 8); /* 1 s handshake */
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == EINPROGRESS);
    CHECK(fcntl(fd, F_GETFL) & O_NONBLOCK);
    /* Like Linux: not writable, SO_ERROR 0 (never waits) and writes EAGAIN until the outcome. */
    struct pollfd pw = { .fd = fd, .events = POLLOUT };
    CHECK(poll(&pw, 1, 50) == 0);
    CHECK(opt_int(fd, SOL_SOCKET, SO_ERROR) == 0);
    CHECK(write(fd, "x", 1) == -1 && errno == EAGAIN);
    /* Like the kernel: no peer yet, and a second connect says EALREADY. */
    struct sockaddr_in p;
    socklen_t pl = sizeof p;
    CHECK(getpeername(fd, (struct sockaddr *)&p, &pl) == -1 && errno == ENOTCONN);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == EALREADY);
    fd_set w;
    FD_ZERO(&w);
    FD_SET(fd, &w);
    struct timeval tv = { 3, 0 };
    CHECK(select(fd + 1, NULL, &w, NULL, &tv) == 1);
    CHECK(opt_int(fd, SOL_SOCKET, SO_ERROR) == 0);
    peer_is(fd, "10.200.0.1", 8);
    CHECK(local_port(fd, "10.200.0.2") > 0);
    echo_roundtrip(fd, "nonblocking hello");
    char b[4];
    CHECK(read(fd, b, sizeof b) == -1 && errno == EAGAIN);
    close(fd);
    return 0;
}

int case_connect_errors(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = sin_of("10.200.0.1", 1);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == ECONNREFUSED);
    /* The app's fd stays a kernel AF_INET socket after a failed connect. */
    CHECK(opt_int(fd, SOL_SOCKET, SO_DOMAIN) == AF_INET);
    close(fd);

    fd = socket(AF_INET, SOCK_STREAM, 0);
    a = sin_of("10.200.0.99", 7);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == EHOSTUNREACH);
    close(fd);

    fd = socket(AF_INET, SOCK_STREAM, 0);
    a = sin_of("10.200.0.1", 3);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == ETIMEDOUT);
    close(fd);

    /* Non-blocking, refused later: EINPROGRESS, writable, SO_ERROR = ECONNREFUSED. */
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    a = sin_of("10.200.0.1", 2);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == EINPROGRESS);
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    CHECK(poll(&p, 1, 3000) == 1);
    CHECK(opt_int(fd, SOL_SOCKET, SO_ERROR) == ECONNREFUSED);
    /* ...and read/write see the end of the connection. */
    char b[4];
    struct pollfd pr = { .fd = fd, .events = POLLIN };
    CHECK(poll(&pr, 1, 3000) == 1);
    CHECK(read(fd, b, sizeof b) == 0);
    close(fd);
    return 0;
}

int case_sockopts(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
    CHECK(setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) == 0);
    struct linger lg = { 1, 0 };
    CHECK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
    struct sockaddr_in a = sin_of("10.200.0.1", 7);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    /* After interception: forwarded to ztapd (the fake stores and returns them). */
    int seven = 7;
    CHECK(setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &seven, sizeof seven) == 0);
    CHECK(opt_int(fd, IPPROTO_TCP, TCP_KEEPIDLE) == 7);
    int big = 123456;
    CHECK(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big) == 0);
    /* Timeouts act on the fd itself (native). */
    struct timeval tv = { 2, 500000 }, tv2;
    socklen_t l = sizeof tv2;
    CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    CHECK(getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv2, &l) == 0);
    CHECK(tv2.tv_sec == 2 && tv2.tv_usec == 500000);
    /* Truncation like the kernel: optlen 2 for an int option. */
    short s = 0;
    l = sizeof s;
    CHECK(getsockopt(fd, SOL_SOCKET, SO_TYPE, &s, &l) == 0 && l == 2);
    close(fd);
    return 0;
}

/* Options beyond ztrpc_sockopts set before connect travel as records; long values go whole. */
int case_preopts(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1, ttl = 9, prio = 4, clamp = 20000;
    CHECK(setsockopt(fd, IPPROTO_TCP, TCP_CORK, &one, sizeof one) == 0);
    CHECK(setsockopt(fd, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl) == 0);
    CHECK(setsockopt(fd, SOL_SOCKET, SO_PRIORITY, &prio, sizeof prio) == 0);
    CHECK(setsockopt(fd, IPPROTO_TCP, TCP_WINDOW_CLAMP, &clamp, sizeof clamp) == 0);
    CHECK(setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, "reno", 4) == 0);
    struct sockaddr_in a = sin_of("10.200.0.1", 7);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    /* After interception: a value longer than 16 bytes travels whole (IP_OPTIONS: 4 NOPs + RA). */
    unsigned char ipopt[24] = { 1, 1, 1, 1, 148, 4, 0, 0 };
    CHECK(setsockopt(fd, IPPROTO_IP, IP_OPTIONS, ipopt, sizeof ipopt) == 0);
    close(fd);
    return 0;
}

/* Timeouts set on the kernel socket before it became a ztap one act on the replacement, however
 * they were set (through another fd of the socket, by a raw system call); a socket that set none
 * has none (the library reads them back only when one may have been set). */
static struct timeval tv_opt(int fd, int name)
{
    struct timeval tv = { -1, -1 };
    socklen_t l = sizeof tv;
    if (getsockopt(fd, SOL_SOCKET, name, &tv, &l) != 0)
        tv.tv_sec = -2;
    return tv;
}

int case_carried(void)
{
    struct sockaddr_in a = sin_of("10.200.0.1", 7);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval t = { 1, 500000 };   /* whole jiffies: the kernel rounds */
    CHECK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &t, sizeof t) == 0);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    struct timeval got = tv_opt(fd, SO_RCVTIMEO);
    CHECK(got.tv_sec == 1 && got.tv_usec == 500000);
    close(fd);

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == EINPROGRESS);
    got = tv_opt(fd, SO_RCVTIMEO);
    CHECK(got.tv_sec == 0 && got.tv_usec == 0);
    got = tv_opt(fd, SO_SNDTIMEO);
    CHECK(got.tv_sec == 0 && got.tv_usec == 0);
    CHECK(fcntl(fd, F_GETFL) & O_NONBLOCK);
    close(fd);

    fd = socket(AF_INET, SOCK_STREAM, 0);
    int other = dup(fd);
    t.tv_sec = 2;
    t.tv_usec = 0;
    CHECK(setsockopt(other, SOL_SOCKET, SO_SNDTIMEO, &t, sizeof t) == 0);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    got = tv_opt(fd, SO_SNDTIMEO);
    CHECK(got.tv_sec == 2 && got.tv_usec == 0);
    CHECK(!(fcntl(fd, F_GETFL) & O_NONBLOCK));
    close(other);
    close(fd);

    fd = socket(AF_INET, SOCK_STREAM, 0);
    t.tv_sec = 3;
    CHECK(syscall(SYS_setsockopt, fd, SOL_SOCKET, SO_RCVTIMEO, &t, sizeof t) == 0);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    got = tv_opt(fd, SO_RCVTIMEO);
    CHECK(got.tv_sec == 3 && got.tv_usec == 0);
    close(fd);
    return 0;
}

int case_listen_accept(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    CHECK(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0);
    struct sockaddr_in a = sin_of("10.200.0.2", 8080);
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(local_port(fd, "10.200.0.2") == 8080);
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == EINVAL);
    CHECK(listen(fd, 16) == 0);
    CHECK(opt_int(fd, SOL_SOCKET, SO_ACCEPTCONN) == 1);
    CHECK(opt_int(fd, SOL_SOCKET, SO_TYPE) == SOCK_STREAM);
    CHECK(local_port(fd, "10.200.0.2") == 8080);
    struct sockaddr_in pa;
    socklen_t pl = sizeof pa;
    CHECK(getpeername(fd, (struct sockaddr *)&pa, &pl) == -1 && errno == ENOTCONN);

    /* Non-blocking listener with nothing pending: EAGAIN. */
    CHECK(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0);
    CHECK(accept4(fd, NULL, NULL, 0) == -1 && errno == EAGAIN);
    struct pollfd p = { .fd = fd, .events = POLLIN };
    CHECK(poll(&p, 1, 3000) == 1 && (p.revents & POLLIN));

    /* accept4 with flags, address truncated like the kernel (4 of 16 bytes). */
    unsigned char small[4] = { 0 };
    socklen_t sl = sizeof small;
    int c1 = accept4(fd, (struct sockaddr *)small, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    CHECK(c1 >= 0);
    CHECK(sl == sizeof(struct sockaddr_in));
    CHECK(small[0] == (AF_INET & 0xff) && small[2] == (40001 >> 8) && small[3] == (40001 & 0xff));
    CHECK(fcntl(c1, F_GETFL) & O_NONBLOCK);
    CHECK(fcntl(c1, F_GETFD) & FD_CLOEXEC);
    peer_is(c1, "10.200.0.1", 40001);
    CHECK(local_port(c1, "10.200.0.2") == 8080);
    CHECK(opt_int(c1, SOL_SOCKET, SO_ACCEPTCONN) == 0);

    /* The way libuv used to call it: syscall(SYS_accept4, ...). */
    p.revents = 0;
    CHECK(poll(&p, 1, 3000) == 1);
    pl = sizeof pa;
    int c2 = (int)syscall(SYS_accept4, fd, (struct sockaddr *)&pa, &pl, 0);
    CHECK(c2 >= 0);
    CHECK(pl == sizeof pa && is_addr(&pa, "10.200.0.1", 40002));
    CHECK((fcntl(c2, F_GETFL) & O_NONBLOCK) == 0);
    CHECK((fcntl(c2, F_GETFD) & FD_CLOEXEC) == 0);
    char buf[64] = { 0 };
    CHECK(read(c2, buf, sizeof buf) == (ssize_t)strlen("hello from 40002"));
    CHECK(strcmp(buf, "hello from 40002") == 0);
    echo_roundtrip(c2, "reply");

    /* Kernel listener on loopback is untouched by the same calls. */
    int k = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in la = sin_of("127.0.0.1", 0);
    CHECK(bind(k, (struct sockaddr *)&la, sizeof la) == 0);
    CHECK(listen(k, 1) == 0);
    CHECK(fcntl(k, F_SETFL, O_NONBLOCK) == 0);
    CHECK(accept(k, NULL, NULL) == -1 && errno == EAGAIN);
    close(k);
    close(c1);
    close(c2);
    close(fd);
    return 0;
}

/* A blocking connect on a socket that is already a ztap socket (bound first) honours SO_SNDTIMEO. */
int case_bound_sndtimeo(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in b = sin_of("10.200.0.2", 0);
    CHECK(bind(fd, (struct sockaddr *)&b, sizeof b) == 0);
    struct timeval tv = { 0, 200000 };
    CHECK(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0);
    struct sockaddr_in a = sin_of("10.200.0.1", 3); /* times out after 1 s */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == EINPROGRESS);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    CHECK(ms >= 150 && ms < 900);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == EALREADY);
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    CHECK(poll(&p, 1, 5000) == 1);
    CHECK(opt_int(fd, SOL_SOCKET, SO_ERROR) == ETIMEDOUT);
    close(fd);
    return 0;
}

static void on_alarm(int sig)
{
    (void)sig;
}

int case_interrupted(void)
{
    /* A signal (no SA_RESTART) interrupts a blocking connect: EINTR, and the connection goes on
     * in the background like the kernel's; SO_ERROR then reports its outcome. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    CHECK(sigaction(SIGALRM, &sa, NULL) == 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = sin_of("10.200.0.1", 8); /* 1 s handshake */
    struct itimerval it = { { 0, 0 }, { 0, 100000 } };
    CHECK(setitimer(ITIMER_REAL, &it, NULL) == 0);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == EINTR);
    /* Like Linux: still connecting (no peer yet); POLLOUT says when the outcome is known. */
    struct sockaddr_in pn;
    socklen_t pnl = sizeof pn;
    CHECK(getpeername(fd, (struct sockaddr *)&pn, &pnl) == -1 && errno == ENOTCONN);
    struct pollfd pw = { .fd = fd, .events = POLLOUT };
    CHECK(poll(&pw, 1, 5000) == 1);
    CHECK(opt_int(fd, SOL_SOCKET, SO_ERROR) == 0);
    peer_is(fd, "10.200.0.1", 8);
    echo_roundtrip(fd, "after EINTR");
    close(fd);

    /* SO_SNDTIMEO bounds a blocking connect; the kernel then says EINPROGRESS. */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = { 0, 200000 };
    CHECK(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0);
    a = sin_of("10.200.0.1", 3); /* times out after 1 s */
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == EINPROGRESS);
    /* Like Linux: the connect goes on; SO_ERROR is 0 until the outcome, which POLLOUT signals. */
    CHECK(opt_int(fd, SOL_SOCKET, SO_ERROR) == 0);
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    CHECK(poll(&p, 1, 0) == 0);
    CHECK(poll(&p, 1, 5000) == 1);
    CHECK(opt_int(fd, SOL_SOCKET, SO_ERROR) == ETIMEDOUT);
    close(fd);
    return 0;
}

int case_accept_blocking(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = sin_of("10.200.0.2", 0);
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    int port = local_port(fd, "10.200.0.2");
    CHECK(port > 0);
    CHECK(listen(fd, 4) == 0);
    /* epoll on the listener works natively. */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0);
    CHECK(epoll_wait(ep, &ev, 1, 3000) == 1 && ev.data.fd == fd);
    struct sockaddr_in pa;
    socklen_t pl = sizeof pa;
    int c = accept(fd, (struct sockaddr *)&pa, &pl);
    CHECK(c >= 0 && is_addr(&pa, "10.200.0.1", 40001));
    CHECK((fcntl(c, F_GETFD) & FD_CLOEXEC) == 0);
    /* Blocking accept waits for the next one. */
    int c2 = accept(fd, NULL, NULL);
    CHECK(c2 >= 0);
    peer_is(c2, "10.200.0.1", 40002);
    CHECK(local_port(c2, "10.200.0.2") == port);
    /* accept on a connected (non-listening) ztap socket: EINVAL. */
    CHECK(accept(c2, NULL, NULL) == -1 && errno == EINVAL);
    /* listen on a UDP ztap socket: EOPNOTSUPP. */
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in ub = sin_of("10.200.0.2", 0);
    CHECK(bind(u, (struct sockaddr *)&ub, sizeof ub) == 0);
    CHECK(listen(u, 1) == -1 && errno == EOPNOTSUPP);
    /* Source address truncation on recvfrom, like the kernel. */
    struct sockaddr_in d = sin_of("10.200.0.1", 9);
    CHECK(sendto(u, "t", 1, 0, (struct sockaddr *)&d, sizeof d) == 1);
    unsigned char small[4];
    socklen_t sl = sizeof small;
    char ch;
    CHECK(recvfrom(u, &ch, 1, 0, (struct sockaddr *)small, &sl) == 1 && ch == 't');
    CHECK(sl == sizeof(struct sockaddr_in) && small[3] == 9);
    close(u);
    close(c);
    close(c2);
    close(ep);
    close(fd);
    return 0;
}
