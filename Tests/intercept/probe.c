/* SPDX-License-Identifier: MIT */
/*
 * probe.c - test program run under LD_PRELOAD=libztintercept.so against fake_ztapd.py.
 *
 * Usage: probe CASE [args]. Each case checks the socket API the way an app uses it and exits 0
 * when every check passed; a failed check prints "FAIL file:line: what (errno)" and exits 1.
 * The fake network is 10.200.0.0/24 (see fake_ztapd.py); nothing here touches a real network:
 * every other address used is loopback.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *g_self;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: %s (errno %d %s)\n", __FILE__, __LINE__, #cond, errno,    \
                    strerror(errno));                                                              \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static struct sockaddr_in sin_of(const char *ip, int port)
{
    struct sockaddr_in s;
    memset(&s, 0, sizeof s);
    s.sin_family = AF_INET;
    s.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, ip, &s.sin_addr);
    return s;
}

static int is_addr(const struct sockaddr_in *s, const char *ip, int port)
{
    struct sockaddr_in w = sin_of(ip, port);
    return s->sin_family == AF_INET && s->sin_addr.s_addr == w.sin_addr.s_addr &&
           (port < 0 || s->sin_port == w.sin_port);
}

static int tcp_connect(const char *ip, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = sin_of(ip, port);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    return fd;
}

static int opt_int(int fd, int level, int name)
{
    int v = -12345;
    socklen_t l = sizeof v;
    CHECK(getsockopt(fd, level, name, &v, &l) == 0);
    CHECK(l == sizeof v);
    return v;
}

static void echo_roundtrip(int fd, const char *msg)
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

static void peer_is(int fd, const char *ip, int port)
{
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    memset(&a, 0, sizeof a);
    CHECK(getpeername(fd, (struct sockaddr *)&a, &l) == 0);
    CHECK(l == sizeof a);
    CHECK(is_addr(&a, ip, port));
}

static int local_port(int fd, const char *ip)
{
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    CHECK(getsockname(fd, (struct sockaddr *)&a, &l) == 0);
    CHECK(l == sizeof a);
    CHECK(is_addr(&a, ip, -1));
    return ntohs(a.sin_port);
}

/* ------------------------------------------------------------------------------------------- */

static int case_connect_blocking(void)
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

static int case_connect_nonblock(void)
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

static int case_connect_errors(void)
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

static int case_sockopts(void)
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

/* The unix sockets connected to the fake ztapd's RPC path other than @except: the one-way
 * channel (the app may close such numbers behind the library's back, as closefrom does). */
static int rpc_channels(int *out, int max)
{
    const char *path = getenv("ZTAP_RPC");
    int n = 0;
    for (int fd = 3; fd < 1024 && n < max; fd++) {
        struct sockaddr_un u;
        socklen_t l = sizeof u;
        memset(&u, 0, sizeof u);
        if (getpeername(fd, (struct sockaddr *)&u, &l) == 0 && u.sun_family == AF_UNIX && path &&
            !strcmp(u.sun_path, path))
            out[n++] = fd;
    }
    return n;
}

/* The RPC connections in @all that are not in @except. */
static int rpc_except(int *all, int n, const int *except, int ne, int *out)
{
    int k = 0;
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int j = 0; j < ne; j++)
            seen |= all[i] == except[j];
        if (!seen)
            out[k++] = all[i];
    }
    return k;
}

/* Requests that wait for an answer share a session (ztrpc.h ZTRPC_OP_KEEP): one RPC connection
 * however many requests; a child opens its own; a session number the app closed and reused is
 * never written to; concurrent threads use a few sessions at most. */
static int g_sess_fd;
static void *sess_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 200; i++)
        if (opt_int(g_sess_fd, SOL_SOCKET, SO_KEEPALIVE) != 0)
            return (void *)1;
    return NULL;
}

static int case_sessions(void)
{
    int fd = tcp_connect("10.200.0.1", 7);
    CHECK(fd >= 0);
    int s0[8];
    CHECK(rpc_channels(s0, 8) == 1);
    for (int i = 0; i < 50; i++)
        CHECK(opt_int(fd, SOL_SOCKET, SO_KEEPALIVE) == 0);
    int s1[8];
    CHECK(rpc_channels(s1, 8) == 1 && s1[0] == s0[0]);
    struct stat parent_st;
    CHECK(fstat(s0[0], &parent_st) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int ok = opt_int(fd, SOL_SOCKET, SO_KEEPALIVE) == 0;
        int mine[8];
        struct stat st;
        ok = ok && rpc_channels(mine, 8) == 1 && fstat(mine[0], &st) == 0 && st.st_ino != parent_st.st_ino;
        _exit(ok ? 0 : 3);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* Threads at once: every request answered, at most 4 sessions kept. */
    g_sess_fd = fd;
    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        CHECK(pthread_create(&t[i], NULL, sess_thread, NULL) == 0);
    for (int i = 0; i < 8; i++) {
        void *r;
        CHECK(pthread_join(t[i], &r) == 0 && r == NULL);
    }
    int s2[8];
    int n2 = rpc_channels(s2, 8);
    CHECK(n2 >= 1 && n2 <= 4);
    /* The app puts a socket of its own on the session's number: never written to. */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
    for (int i = 0; i < n2; i++)
        CHECK(dup2(sv[0], s2[i]) == s2[i]);
    CHECK(opt_int(fd, SOL_SOCKET, SO_KEEPALIVE) == 0);
    char buf[64];
    CHECK(recv(sv[1], buf, sizeof buf, MSG_DONTWAIT) == -1 && errno == EAGAIN);
    int s3[8];
    CHECK(rpc_channels(s3, 8) == 1);
    for (int i = 0; i < n2; i++)
        CHECK(s3[0] != s2[i]);
    for (int i = 0; i < n2; i++)
        close(s2[i]);
    close(sv[0]);
    close(sv[1]);
    close(fd);
    return 0;
}

/* The process's one-way channels: pipe write ends (ztrpc.h ZTRPC_OP_CHANNEL), or with
 * PROBE_SEQPACKET_CHANNEL set (the fake refuses pipes) the RPC connections that are not in @sess. */
static int one_way_channels(const int *sess, int ns, int *out)
{
    if (getenv("PROBE_SEQPACKET_CHANNEL")) {
        int all[8];
        return rpc_except(all, rpc_channels(all, 8), sess, ns, out);
    }
    int n = 0;
    for (int fd = 3; fd < 1024 && n < 8; fd++) {
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode) && (fcntl(fd, F_GETFL) & O_ACCMODE) == O_WRONLY)
            out[n++] = fd;
    }
    return n;
}

/* TCP_NODELAY/TCP_CORK/TCP_QUICKACK go one-way over one channel per process; a child opens its
 * own; a channel number the app closed and reused is never written to. */
static int case_oneway(void)
{
    int fd = tcp_connect("10.200.0.1", 7);
    CHECK(fd >= 0);
    /* The connect's session (case_sessions); the channel is not it. */
    int sess[8];
    int ns = rpc_channels(sess, 8);
    CHECK(ns == 1);
    int one = 1, zero = 0;
    CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &zero, sizeof zero) == 0);
    CHECK(setsockopt(fd, IPPROTO_TCP, TCP_CORK, &one, sizeof one) == 0);
    CHECK(setsockopt(fd, IPPROTO_TCP, TCP_CORK, &zero, sizeof zero) == 0);
    CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
    /* A NULL value is EFAULT before anything is sent (a short optlen goes to ztapd and waits
     * for its EINVAL: the diff harness compares that with Linux). */
    CHECK(setsockopt(fd, IPPROTO_TCP, TCP_CORK, NULL, 4) == -1 && errno == EFAULT);
    int ch[8];
    CHECK(one_way_channels(sess, ns, ch) == 1);
    int rpc[8];
    if (!getenv("PROBE_SEQPACKET_CHANNEL"))
        CHECK(rpc_channels(rpc, 8) == 1 && rpc[0] == sess[0]); /* the pipe was given on the session */
    struct stat parent_st;
    CHECK(fstat(ch[0], &parent_st) == 0);
    /* A child has a channel of its own (the inherited copy of the parent's is closed). */
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int ok = setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one) == 0;
        int mine[8], none[1] = { -1 };
        struct stat mine_st;
        int nm = one_way_channels(none, 0, mine);
        ok = ok && nm == 1 && fstat(mine[0], &mine_st) == 0 && mine_st.st_ino != parent_st.st_ino;
        if (!ok)
            fprintf(stderr, "child: %d channels (first %d, ino %lu, parent's %lu)\n", nm, nm ? mine[0] : -1,
                    nm ? (unsigned long)mine_st.st_ino : 0UL, (unsigned long)parent_st.st_ino);
        _exit(ok ? 0 : 3);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* The app closes the channel's number and a socket of its own takes it. */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
    CHECK(dup2(sv[0], ch[0]) == ch[0]);
    CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &zero, sizeof zero) == 0);
    char buf[64];
    CHECK(recv(sv[1], buf, sizeof buf, MSG_DONTWAIT) == -1 && errno == EAGAIN);
    int now[8];
    CHECK(one_way_channels(sess, ns, now) == 1 && now[0] != ch[0]);
    CHECK(opt_int(fd, IPPROTO_TCP, TCP_NODELAY) == 0);
    close(sv[0]);
    close(sv[1]);
    close(ch[0]);
    close(fd);
    return 0;
}

/* A daemon that refuses the process a channel: every option still applies (as a request of its
 * own), and the library stops asking for a channel after a few refusals. */
static int case_oneway_refused(void)
{
    int fd = tcp_connect("10.200.0.1", 7);
    CHECK(fd >= 0);
    for (int i = 0; i < 20; i++) {
        int v = i % 2;
        CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) == 0);
    }
    CHECK(opt_int(fd, IPPROTO_TCP, TCP_NODELAY) == 1);
    close(fd);
    return 0;
}

/* Options beyond ztrpc_sockopts set before connect travel as records; long values go whole. */
static int case_preopts(void)
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

static int case_carried(void)
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

static int case_listen_accept(void)
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

static int case_udp(void)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(fd >= 0);
    struct sockaddr_in d = sin_of("10.200.0.1", 5353);
    CHECK(sendto(fd, "q1", 2, 0, (struct sockaddr *)&d, sizeof d) == 2);
    char buf[64];
    struct sockaddr_in src;
    socklen_t sl = sizeof src;
    memset(&src, 0, sizeof src);
    CHECK(recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&src, &sl) == 2);
    CHECK(memcmp(buf, "q1", 2) == 0);
    CHECK(sl == sizeof src && is_addr(&src, "10.200.0.1", 5353));
    CHECK(local_port(fd, "10.200.0.2") > 0);
    CHECK(opt_int(fd, SOL_SOCKET, SO_TYPE) == SOCK_DGRAM);
    CHECK(opt_int(fd, SOL_SOCKET, SO_PROTOCOL) == IPPROTO_UDP);
    /* Unconnected: send without address is EDESTADDRREQ, getpeername ENOTCONN. */
    CHECK(send(fd, "x", 1, 0) == -1 && errno == EDESTADDRREQ);
    struct sockaddr_in pa;
    socklen_t pl = sizeof pa;
    CHECK(getpeername(fd, (struct sockaddr *)&pa, &pl) == -1 && errno == ENOTCONN);

    /* sendmsg/recvmsg with two iovecs and a name. */
    struct iovec iov[2] = { { "ab", 2 }, { "cde", 3 } };
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_name = &d;
    m.msg_namelen = sizeof d;
    m.msg_iov = iov;
    m.msg_iovlen = 2;
    CHECK(sendmsg(fd, &m, 0) == 5);
    char r1[3], r2[8];
    struct iovec riov[2] = { { r1, 3 }, { r2, sizeof r2 } };
    memset(&m, 0, sizeof m);
    memset(&src, 0, sizeof src);
    m.msg_name = &src;
    m.msg_namelen = sizeof src;
    m.msg_iov = riov;
    m.msg_iovlen = 2;
    CHECK(recvmsg(fd, &m, 0) == 5);
    CHECK(memcmp(r1, "abc", 3) == 0 && memcmp(r2, "de", 2) == 0);
    CHECK(m.msg_namelen == sizeof src && is_addr(&src, "10.200.0.1", 5353));

    /* Truncation reports MSG_TRUNC, MSG_PEEK leaves the datagram. */
    CHECK(sendto(fd, "0123456789", 10, 0, (struct sockaddr *)&d, sizeof d) == 10);
    CHECK(recv(fd, buf, 4, MSG_PEEK) == 4);
    CHECK(recv(fd, buf, 4, MSG_TRUNC) == 10);

    /* Connected UDP: send/recv/read/write go to/from the peer. */
    struct sockaddr_in peer = sin_of("10.200.0.1", 53);
    CHECK(connect(fd, (struct sockaddr *)&peer, sizeof peer) == 0);
    peer_is(fd, "10.200.0.1", 53);
    CHECK(send(fd, "q2", 2, 0) == 2);
    CHECK(recv(fd, buf, sizeof buf, 0) == 2 && memcmp(buf, "q2", 2) == 0);
    CHECK(write(fd, "q3", 2) == 2);
    CHECK(read(fd, buf, sizeof buf) == 2 && memcmp(buf, "q3", 2) == 0);
    /* Non-blocking receive with nothing queued. */
    CHECK(recv(fd, buf, sizeof buf, MSG_DONTWAIT) == -1 && errno == EAGAIN);
    /* shutdown like a kernel UDP socket: SHUT_WR makes sends fail, reading still works... */
    CHECK(send(fd, "q5", 2, 0) == 2);
    CHECK(shutdown(fd, SHUT_WR) == 0);
    CHECK(send(fd, "q6", 2, MSG_NOSIGNAL) == -1 && errno == EPIPE);
    CHECK(recv(fd, buf, sizeof buf, 0) == 2 && memcmp(buf, "q5", 2) == 0);
    /* ...and SHUT_RD makes reads return 0. */
    CHECK(shutdown(fd, SHUT_RD) == 0);
    CHECK(recv(fd, buf, sizeof buf, 0) == 0);
    close(fd);

    /* Explicit bind to the network address, then sendto/recvfrom. */
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in b = sin_of("10.200.0.2", 5000);
    CHECK(bind(fd, (struct sockaddr *)&b, sizeof b) == 0);
    CHECK(local_port(fd, "10.200.0.2") == 5000);
    CHECK(sendto(fd, "q4", 2, 0, (struct sockaddr *)&d, sizeof d) == 2);
    sl = sizeof src;
    CHECK(recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&src, &sl) == 2);
    CHECK(is_addr(&src, "10.200.0.1", 5353));
    /* sendmmsg / recvmmsg */
    struct mmsghdr mm[2];
    struct iovec mi[2] = { { "m1", 2 }, { "m22", 3 } };
    memset(mm, 0, sizeof mm);
    for (int i = 0; i < 2; i++) {
        mm[i].msg_hdr.msg_name = &d;
        mm[i].msg_hdr.msg_namelen = sizeof d;
        mm[i].msg_hdr.msg_iov = &mi[i];
        mm[i].msg_hdr.msg_iovlen = 1;
    }
    CHECK(sendmmsg(fd, mm, 2, 0) == 2 && mm[0].msg_len == 2 && mm[1].msg_len == 3);
    char rb[2][8];
    struct iovec ri[2] = { { rb[0], 8 }, { rb[1], 8 } };
    memset(mm, 0, sizeof mm);
    for (int i = 0; i < 2; i++) {
        mm[i].msg_hdr.msg_iov = &ri[i];
        mm[i].msg_hdr.msg_iovlen = 1;
    }
    CHECK(recvmmsg(fd, mm, 2, 0, NULL) == 2 && mm[0].msg_len == 2 && mm[1].msg_len == 3);
    close(fd);
    return 0;
}

static int case_fork(void)
{
    int fd = tcp_connect("10.200.0.1", 7);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        peer_is(fd, "10.200.0.1", 7);
        echo_roundtrip(fd, "from the child");
        _exit(0);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    echo_roundtrip(fd, "from the parent");
    close(fd);
    return 0;
}

static int case_dup(void)
{
    int fd = tcp_connect("10.200.0.1", 7);
    CHECK(dup2(fd, 50) == 50);
    CHECK(close(fd) == 0);
    peer_is(50, "10.200.0.1", 7);
    echo_roundtrip(50, "dup2");
    int d = dup(50);
    CHECK(d >= 0);
    CHECK(opt_int(d, SOL_SOCKET, SO_TYPE) == SOCK_STREAM);
    /* A copy made by fcntl is not seen by the library: found by asking ztapd. */
    int f = fcntl(50, F_DUPFD_CLOEXEC, 60);
    CHECK(f >= 60);
    peer_is(f, "10.200.0.1", 7);
    close(f);
    close(d);
    close(50);

    /* UDP through dup3: read/write framing follows the copy. */
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in peer = sin_of("10.200.0.1", 53);
    CHECK(connect(u, (struct sockaddr *)&peer, sizeof peer) == 0);
    CHECK(dup3(u, 70, O_CLOEXEC) == 70);
    CHECK(write(70, "dg", 2) == 2);
    char buf[8];
    CHECK(read(u, buf, sizeof buf) == 2 && memcmp(buf, "dg", 2) == 0);
    close(u);
    close(70);
    return 0;
}

/* Copies of a ztap UDP socket the library did not make itself keep the datagram framing: one by
 * fcntl(F_DUPFD), one received over SCM_RIGHTS, one on an fd number above 65535. */
static int case_udp_copies(void)
{
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in peer = sin_of("10.200.0.1", 53);
    CHECK(connect(u, (struct sockaddr *)&peer, sizeof peer) == 0);
    char buf[8];
    int f = fcntl(u, F_DUPFD, 100);
    CHECK(f >= 100);
    CHECK(write(f, "fd", 2) == 2);
    CHECK(read(f, buf, sizeof buf) == 2 && memcmp(buf, "fd", 2) == 0);

    /* Passed over a unix socket: the receiver has never seen it. */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    union { struct cmsghdr align; char b[CMSG_SPACE(sizeof(int))]; } cb;
    struct iovec iov = { "x", 1 };
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = cb.b;
    m.msg_controllen = sizeof cb.b;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &u, sizeof u);
    CHECK(sendmsg(sv[0], &m, 0) == 1);
    char one;
    struct iovec riov = { &one, 1 };
    memset(&m, 0, sizeof m);
    memset(&cb, 0, sizeof cb);
    m.msg_iov = &riov;
    m.msg_iovlen = 1;
    m.msg_control = cb.b;
    m.msg_controllen = sizeof cb.b;
    CHECK(recvmsg(sv[1], &m, 0) == 1);
    int got;
    memcpy(&got, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof got);
    CHECK(write(got, "sc", 2) == 2);
    CHECK(read(got, buf, sizeof buf) == 2 && memcmp(buf, "sc", 2) == 0);
    close(got);
    close(sv[0]);
    close(sv[1]);

    /* A high fd number (the table grows past 65536 entries). */
    struct rlimit rl;
    CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    if (rl.rlim_max > 70010) {
        rl.rlim_cur = 70010;
        CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
        CHECK(dup2(u, 70000) == 70000);
        CHECK(write(70000, "hi", 2) == 2);
        CHECK(read(70000, buf, sizeof buf) == 2 && memcmp(buf, "hi", 2) == 0);
        peer_is(70000, "10.200.0.1", 53);
        close(70000);
    } else {
        printf("SKIP high fd: RLIMIT_NOFILE hard limit %llu\n", (unsigned long long)rl.rlim_max);
    }

    /* recvmmsg that gets fewer datagrams than asked for is a success: errno untouched. */
    CHECK(write(u, "a", 1) == 1 && write(u, "b", 1) == 1);
    usleep(100000);
    char rb[4][4];
    struct iovec ri[4] = { { rb[0], 4 }, { rb[1], 4 }, { rb[2], 4 }, { rb[3], 4 } };
    struct mmsghdr mm[4];
    memset(mm, 0, sizeof mm);
    for (int i = 0; i < 4; i++) {
        mm[i].msg_hdr.msg_iov = &ri[i];
        mm[i].msg_hdr.msg_iovlen = 1;
    }
    errno = 4242;
    CHECK(recvmmsg(u, mm, 4, MSG_DONTWAIT, NULL) == 2);
    CHECK(errno == 4242);

    /* shutdown(SHUT_WR) is the socket's, not the fd number's: a copy made after it sees it. */
    CHECK(shutdown(u, SHUT_WR) == 0);
    int f2 = fcntl(u, F_DUPFD, 200);
    CHECK(send(f2, "no", 2, MSG_NOSIGNAL) == -1 && errno == EPIPE);
    close(f2);
    close(f);
    close(u);
    return 0;
}

/* fork() while another thread is updating a table slot: the child must not find the slot stuck. */
static volatile int g_spin_stop;
static int g_spin_fd;
static void *spin_dup2(void *arg)
{
    (void)arg;
    while (!g_spin_stop)
        dup2(g_spin_fd, 500);
    return NULL;
}

static int case_fork_race(void)
{
    g_spin_fd = tcp_connect("10.200.0.1", 7);
    CHECK(dup2(g_spin_fd, 500) == 500);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, spin_dup2, NULL) == 0);
    for (int i = 0; i < 1000; i++) {
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            struct sockaddr_in a;
            socklen_t l = sizeof a;
            /* At once (a stuck slot makes its waiter spin for about a second of CPU: measured
             * as the child's own CPU time, which a loaded machine does not inflate), and still
             * the ztap socket (AF_INET, the network address). */
            if (getsockname(500, (struct sockaddr *)&a, &l) != 0 || a.sin_family != AF_INET)
                _exit(1);
            struct rusage ru;
            getrusage(RUSAGE_SELF, &ru);
            long cpu_ms = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
                          (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
            _exit(cpu_ms > 200 ? 2 : 0);
        }
        int st;
        CHECK(waitpid(pid, &st, 0) == pid);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    g_spin_stop = 1;
    pthread_join(t, NULL);
    close(500);
    close(g_spin_fd);
    return 0;
}

/* A blocking connect on a socket that is already a ztap socket (bound first) honours SO_SNDTIMEO. */
static int case_bound_sndtimeo(void)
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

static int case_exec(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[2], "child") == 0) {
        int fd = atoi(argv[3]);
        int ufd = atoi(argv[4]);
        peer_is(fd, "10.200.0.1", 7);
        CHECK(opt_int(fd, SOL_SOCKET, SO_TYPE) == SOCK_STREAM);
        CHECK(local_port(fd, "10.200.0.2") > 0);
        echo_roundtrip(fd, "after exec");
        /* UDP inherited across exec: framing still applies (table rebuilt from ztapd). */
        CHECK(write(ufd, "ue", 2) == 2);
        char buf[8];
        CHECK(read(ufd, buf, sizeof buf) == 2 && memcmp(buf, "ue", 2) == 0);
        return 0;
    }
    int fd = tcp_connect("10.200.0.1", 7);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in peer = sin_of("10.200.0.1", 53);
    CHECK(connect(u, (struct sockaddr *)&peer, sizeof peer) == 0);
    char a[16], b[16];
    snprintf(a, sizeof a, "%d", fd);
    snprintf(b, sizeof b, "%d", u);
    execl(g_self, g_self, "exec", "child", a, b, (char *)NULL);
    CHECK(!"exec failed");
    return 1;
}

static int case_inherited(int argc, char **argv)
{
    /* An app's own socketpair inherited across exec looks like a ztap socket to the new image:
     * the library asks ztapd once, then remembers the answer (reads stay native and cheap). */
    if (argc >= 4 && strcmp(argv[2], "child") == 0) {
        int fd = atoi(argv[3]);
        char ch;
        for (int i = 0; i < 150; i++)
            CHECK(read(fd, &ch, 1) == 1 && ch == "abc"[i % 3]);
        CHECK(opt_int(fd, SOL_SOCKET, SO_DOMAIN) == AF_UNIX);
        return 0;
    }
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    for (int i = 0; i < 50; i++)
        CHECK(write(sv[1], "abc", 3) == 3);
    char a[16];
    snprintf(a, sizeof a, "%d", sv[0]);
    execl(g_self, g_self, "inherited", "child", a, (char *)NULL);
    CHECK(!"exec failed");
    return 1;
}

static int case_isolated(void)
{
    /* Run by the tests to prove the sandbox: an address outside the network stays on the
     * kernel, and in the private namespace the kernel has no route for it. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = sin_of("192.0.2.1", 80);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == ENETUNREACH);
    close(fd);
    return 0;
}

static int case_die(void)
{
    /* Process death without close(): the kernel drops the fd, ztapd sees the hangup. */
    int fd = tcp_connect("10.200.0.1", 7);
    echo_roundtrip(fd, "last words");
    printf("OK die\n");
    fflush(stdout);
    signal(SIGABRT, SIG_DFL);
    abort();
}

static int case_untouched(void)
{
    /* Loopback TCP stays on the kernel: the peer sees the real kernel addresses. */
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in la = sin_of("127.0.0.1", 0);
    CHECK(bind(l, (struct sockaddr *)&la, sizeof la) == 0);
    CHECK(listen(l, 4) == 0);
    socklen_t len = sizeof la;
    CHECK(getsockname(l, (struct sockaddr *)&la, &len) == 0);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(connect(c, (struct sockaddr *)&la, sizeof la) == 0);
    int s = accept(l, NULL, NULL);
    CHECK(s >= 0);
    CHECK(opt_int(c, SOL_SOCKET, SO_DOMAIN) == AF_INET);
    int one = 1;
    CHECK(setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
    CHECK(opt_int(c, IPPROTO_TCP, TCP_NODELAY) == 1);
    peer_is(c, "127.0.0.1", ntohs(la.sin_port));
    CHECK(write(c, "k", 1) == 1);
    char ch;
    CHECK(read(s, &ch, 1) == 1 && ch == 'k');
    close(s);
    close(c);
    close(l);

    /* Loopback UDP. */
    int u1 = socket(AF_INET, SOCK_DGRAM, 0), u2 = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in ua = sin_of("127.0.0.1", 0);
    CHECK(bind(u1, (struct sockaddr *)&ua, sizeof ua) == 0);
    len = sizeof ua;
    CHECK(getsockname(u1, (struct sockaddr *)&ua, &len) == 0);
    CHECK(sendto(u2, "u", 1, 0, (struct sockaddr *)&ua, sizeof ua) == 1);
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    CHECK(recvfrom(u1, &ch, 1, 0, (struct sockaddr *)&from, &fl) == 1 && ch == 'u');
    CHECK(is_addr(&from, "127.0.0.1", -1));
    close(u1);
    close(u2);

    /* AF_UNIX socketpair (the same kind of socket the library uses) is not mistaken for ours. */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(opt_int(sv[0], SOL_SOCKET, SO_DOMAIN) == AF_UNIX);
    struct sockaddr_un un;
    len = sizeof un;
    CHECK(getsockname(sv[0], (struct sockaddr *)&un, &len) == 0 && un.sun_family == AF_UNIX);
    CHECK(send(sv[0], "x", 1, 0) == 1 && recv(sv[1], &ch, 1, 0) == 1 && ch == 'x');
    int dg[2];
    CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, dg) == 0);
    CHECK(write(dg[0], "abc", 3) == 3 && read(dg[1], &ch, 1) == 1 && ch == 'a');
    return 0;
}

static int case_absent(void)
{
    /* ZTAP_RPC points nowhere: clear errnos, quickly, one line on stderr. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = sin_of("10.200.0.1", 7);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == ECONNREFUSED);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == ECONNREFUSED);
    close(fd);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(sendto(u, "x", 1, 0, (struct sockaddr *)&a, sizeof a) == -1 && errno == ENETUNREACH);
    struct sockaddr_in b = sin_of("10.200.0.2", 9000);
    CHECK(bind(u, (struct sockaddr *)&b, sizeof b) == -1 && errno == EADDRNOTAVAIL);
    close(u);
    return 0;
}

static int case_errno(void)
{
    int fd = tcp_connect("10.200.0.1", 7);
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    errno = 4242;
    CHECK(getsockname(fd, (struct sockaddr *)&a, &l) == 0);
    CHECK(errno == 4242);
    CHECK(getpeername(fd, (struct sockaddr *)&a, &l) == 0);
    int v;
    l = sizeof v;
    CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &v, &l) == 0);
    CHECK(write(fd, "e", 1) == 1);
    CHECK(errno == 4242);
    int fd2 = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in d = sin_of("10.200.0.1", 7);
    errno = 4243;
    CHECK(connect(fd2, (struct sockaddr *)&d, sizeof d) == 0);
    CHECK(errno == 4243);
    /* Bad fd: EBADF like libc. */
    CHECK(getsockname(9999, (struct sockaddr *)&a, &l) == -1 && errno == EBADF);
    CHECK(connect(9999, (struct sockaddr *)&d, sizeof d) == -1 && errno == EBADF);
    close(fd);
    close(fd2);
    return 0;
}

static void on_alarm(int sig)
{
    (void)sig;
}

static int case_interrupted(void)
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

static int case_accept_blocking(void)
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

static void *thread_main(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10; i++) {
        int fd = tcp_connect("10.200.0.1", 7);
        echo_roundtrip(fd, "threaded");
        close(fd);
    }
    return NULL;
}

static int case_threads(void)
{
    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        CHECK(pthread_create(&t[i], NULL, thread_main, NULL) == 0);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    return 0;
}

/* ---- IPv6 (fake network fd00:200::/64; its IPv4 hosts reached as ::ffff:10.200.0.x) -------- */

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

static int case_ipv6_tcp(void)
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

static int case_ipv6_listen(void)
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
static int case_untouched6(void)
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

static int case_ipv6_udp(void)
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

int main(int argc, char **argv)
{
    g_self = argv[0];
    if (argc < 2) {
        fprintf(stderr, "usage: probe CASE\n");
        return 2;
    }
    const char *c = argv[1];
    int r;
    if (!strcmp(c, "connect_blocking")) r = case_connect_blocking();
    else if (!strcmp(c, "connect_nonblock")) r = case_connect_nonblock();
    else if (!strcmp(c, "connect_errors")) r = case_connect_errors();
    else if (!strcmp(c, "sockopts")) r = case_sockopts();
    else if (!strcmp(c, "preopts")) r = case_preopts();
    else if (!strcmp(c, "carried")) r = case_carried();
    else if (!strcmp(c, "oneway")) r = case_oneway();
    else if (!strcmp(c, "oneway_refused")) r = case_oneway_refused();
    else if (!strcmp(c, "sessions")) r = case_sessions();
    else if (!strcmp(c, "listen_accept")) r = case_listen_accept();
    else if (!strcmp(c, "udp")) r = case_udp();
    else if (!strcmp(c, "fork")) r = case_fork();
    else if (!strcmp(c, "dup")) r = case_dup();
    else if (!strcmp(c, "exec")) r = case_exec(argc, argv);
    else if (!strcmp(c, "untouched")) r = case_untouched();
    else if (!strcmp(c, "untouched6")) r = case_untouched6();
    else if (!strcmp(c, "absent")) r = case_absent();
    else if (!strcmp(c, "errno")) r = case_errno();
    else if (!strcmp(c, "threads")) r = case_threads();
    else if (!strcmp(c, "interrupted")) r = case_interrupted();
    else if (!strcmp(c, "inherited")) r = case_inherited(argc, argv);
    else if (!strcmp(c, "isolated")) r = case_isolated();
    else if (!strcmp(c, "die")) r = case_die();
    else if (!strcmp(c, "accept_blocking")) r = case_accept_blocking();
    else if (!strcmp(c, "udp_copies")) r = case_udp_copies();
    else if (!strcmp(c, "fork_race")) r = case_fork_race();
    else if (!strcmp(c, "bound_sndtimeo")) r = case_bound_sndtimeo();
    else if (!strcmp(c, "ipv6_tcp")) r = case_ipv6_tcp();
    else if (!strcmp(c, "ipv6_listen")) r = case_ipv6_listen();
    else if (!strcmp(c, "ipv6_udp")) r = case_ipv6_udp();
    else {
        fprintf(stderr, "unknown case %s\n", c);
        return 2;
    }
    if (r == 0)
        printf("OK %s\n", c);
    return r;
}
