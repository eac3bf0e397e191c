/* SPDX-License-Identifier: MIT */
/*
 * probe_util.c - transcript helpers of the differential probe: how an observation becomes a
 * line that is the same on every run (errno names, symbolic masks, address tokens).
 */
#include "probe.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *g_self_exe;
const char *g_ctl_path;

void out(const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof buf - 2)
        n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    int e = errno;
    for (int off = 0; off < n;) {
        ssize_t w = write(1, buf + off, (size_t)(n - off));
        if (w <= 0 && errno != EINTR)
            break;
        if (w > 0)
            off += (int)w;
    }
    errno = e;
}

/* A rotating set of buffers so several strings can appear in one out() call. */
static char *scratch(void)
{
    static char bufs[8][512];
    static int i;
    i = (i + 1) % 8;
    bufs[i][0] = 0;
    return bufs[i];
}

const char *errname(int e)
{
    switch (e) {
#define E(n) case n: return #n;
    E(EPERM) E(ENOENT) E(ESRCH) E(EINTR) E(EIO) E(ENXIO) E(EBADF) E(ECHILD) E(EAGAIN)
    E(ENOMEM) E(EACCES) E(EFAULT) E(EBUSY) E(EEXIST) E(ENOTDIR) E(EINVAL) E(ENFILE) E(EMFILE)
    E(ENOTTY) E(ENOSPC) E(EPIPE) E(ERANGE) E(ENOSYS) E(ENOTSOCK) E(EDESTADDRREQ) E(EMSGSIZE)
    E(EPROTOTYPE) E(ENOPROTOOPT) E(EPROTONOSUPPORT) E(ESOCKTNOSUPPORT) E(EOPNOTSUPP)
    E(EPFNOSUPPORT) E(EAFNOSUPPORT) E(EADDRINUSE) E(EADDRNOTAVAIL) E(ENETDOWN) E(ENETUNREACH)
    E(ENETRESET) E(ECONNABORTED) E(ECONNRESET) E(ENOBUFS) E(EISCONN) E(ENOTCONN) E(ESHUTDOWN)
    E(ETIMEDOUT) E(ECONNREFUSED) E(EHOSTDOWN) E(EHOSTUNREACH) E(EALREADY) E(EINPROGRESS)
    E(EPROTO) E(EDOM) E(ENODATA) E(ENAMETOOLONG) E(ELOOP) E(EBADFD) E(ENOTUNIQ) E(EREMOTEIO)
#undef E
    }
    char *b = scratch();
    snprintf(b, 512, "E#%d", e);
    return b;
}

static const char *maskstr(unsigned v, const unsigned *bits, const char *const *names, int n)
{
    if (v == 0)
        return "0";
    char *b = scratch();
    for (int i = 0; i < n; i++) {
        if (v & bits[i]) {
            if (*b)
                strcat(b, "|");
            strcat(b, names[i]);
            v &= ~bits[i];
        }
    }
    if (v) {
        char t[32];
        snprintf(t, sizeof t, "%s0x%x", *b ? "|" : "", v);
        strcat(b, t);
    }
    return b;
}

const char *pollstr(int revents)
{
    /* POLLRDNORM/POLLWRNORM etc. are not requested, so they cannot show up. */
    static const unsigned bits[] = { POLLIN, POLLPRI, POLLOUT, POLLRDHUP, POLLERR, POLLHUP, POLLNVAL };
    static const char *const names[] = { "POLLIN", "POLLPRI", "POLLOUT", "POLLRDHUP", "POLLERR", "POLLHUP", "POLLNVAL" };
    return maskstr((unsigned)(revents & 0xffff), bits, names, 7);
}

const char *epollstr(uint32_t ev)
{
    static const unsigned bits[] = { EPOLLIN, EPOLLPRI, EPOLLOUT, EPOLLRDHUP, EPOLLERR, EPOLLHUP };
    static const char *const names[] = { "EPOLLIN", "EPOLLPRI", "EPOLLOUT", "EPOLLRDHUP", "EPOLLERR", "EPOLLHUP" };
    return maskstr(ev, bits, names, 6);
}

long res(const char *label, long rv)
{
    int e = errno;
    if (rv < 0)
        out("%s = -1 %s", label, errname(e));
    else
        out("%s = %ld", label, rv);
    errno = e;
    return rv;
}

int fdres(const char *label, int rv)
{
    int e = errno;
    if (rv < 0)
        out("%s = -1 %s", label, errname(e));
    else
        out("%s = fd", label);
    errno = e;
    return rv;
}

struct sockaddr_in sin_of(const char *ip, int port)
{
    struct sockaddr_in s;
    memset(&s, 0, sizeof s);
    s.sin_family = AF_INET;
    s.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, ip, &s.sin_addr);
    return s;
}

static int g_eph_lo = -1, g_eph_hi = -1;

int ephemeral_ok(int port)
{
    if (g_eph_lo < 0) {
        FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
        if (!f || fscanf(f, "%d %d", &g_eph_lo, &g_eph_hi) != 2) {
            g_eph_lo = 32768;
            g_eph_hi = 60999;
        }
        if (f)
            fclose(f);
    }
    return port >= g_eph_lo && port <= g_eph_hi;
}

/* Ports below 10000 are the fixed ones of the plan; anything above is ephemeral and printed as
 * "eph", so the transcript does not depend on which port was picked. Whether ephemeral ports
 * come from ip_local_port_range is checked once, by the ephemeral_ports case. */
static const char *portstr(int port)
{
    char *b = scratch();
    if (port < 10000)
        snprintf(b, 512, "%d", port);
    else
        snprintf(b, 512, "eph");
    return b;
}

static const char *ipstr(uint32_t a)
{
    struct { const char *ip, *tok; } toks[] = {
        { SELF_IP, "SELF" }, { PEER_IP, "PEER" }, { UNREACH_IP, "UNREACH" },
        { BCAST_IP, "BCAST" }, { "0.0.0.0", "ANY" }, { "127.0.0.1", "LOOPBACK" },
    };
    for (size_t i = 0; i < sizeof toks / sizeof toks[0]; i++) {
        struct in_addr x;
        inet_pton(AF_INET, toks[i].ip, &x);
        if (x.s_addr == a)
            return toks[i].tok;
    }
    char *b = scratch();
    inet_ntop(AF_INET, &a, b, 64);
    return b;
}

/* SELF6, PEER6, ANY6, LOOPBACK6; a v4-mapped address as ::ffff: and its IPv4 token. */
static const char *ip6str(const struct in6_addr *a)
{
    static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    if (memcmp(a->s6_addr, mapped, sizeof mapped) == 0) {
        uint32_t v4;
        memcpy(&v4, a->s6_addr + 12, 4);
        char *b = scratch();
        snprintf(b, 512, "::ffff:%s", ipstr(v4));
        return b;
    }
    struct { const char *ip, *tok; } toks[] = {
        { SELF6_IP, "SELF6" }, { PEER6_IP, "PEER6" }, { "::", "ANY6" }, { "::1", "LOOPBACK6" },
    };
    for (size_t i = 0; i < sizeof toks / sizeof toks[0]; i++) {
        struct in6_addr x;
        inet_pton(AF_INET6, toks[i].ip, &x);
        if (memcmp(&x, a, sizeof x) == 0)
            return toks[i].tok;
    }
    char *b = scratch();
    inet_ntop(AF_INET6, a, b, 64);
    return b;
}

const char *astr(const void *sa, socklen_t len)
{
    char *b = scratch();
    const struct sockaddr *s = sa;
    if (len < sizeof(sa_family_t)) {
        snprintf(b, 512, "(len %u)", (unsigned)len);
        return b;
    }
    if (s->sa_family == AF_INET) {
        const struct sockaddr_in *in = sa;
        snprintf(b, 512, "%s:%s", ipstr(in->sin_addr.s_addr), portstr(ntohs(in->sin_port)));
        if (len != sizeof(struct sockaddr_in)) {
            char t[32];
            snprintf(t, sizeof t, " (len %u)", (unsigned)len);
            strcat(b, t);
        }
    } else if (s->sa_family == AF_INET6 && len >= 24) {
        /* Up to sin6_scope_id (24 bytes: RFC 2133's struct), printed when not 0. */
        struct sockaddr_in6 in6;
        memset(&in6, 0, sizeof in6);
        memcpy(&in6, sa, len < sizeof in6 ? len : sizeof in6);
        snprintf(b, 512, "[%s]:%s", ip6str(&in6.sin6_addr), portstr(ntohs(in6.sin6_port)));
        char t[64];
        if (in6.sin6_flowinfo) {
            snprintf(t, sizeof t, " flowinfo %u", (unsigned)ntohl(in6.sin6_flowinfo));
            strcat(b, t);
        }
        if (in6.sin6_scope_id) {
            snprintf(t, sizeof t, " scope %u", (unsigned)in6.sin6_scope_id);
            strcat(b, t);
        }
        if (len != sizeof(struct sockaddr_in6)) {
            snprintf(t, sizeof t, " (len %u)", (unsigned)len);
            strcat(b, t);
        }
    } else if (s->sa_family == AF_UNSPEC) {
        snprintf(b, 512, "AF_UNSPEC (len %u)", (unsigned)len);
    } else if (s->sa_family == AF_UNIX) {
        snprintf(b, 512, "AF_UNIX (len %u)", (unsigned)len);
    } else {
        snprintf(b, 512, "family %d (len %u)", s->sa_family, (unsigned)len);
    }
    return b;
}

void show_name(const char *label, int fd, int peer)
{
    struct sockaddr_storage ss;
    memset(&ss, 0xee, sizeof ss);
    socklen_t l = sizeof ss;
    int rc = peer ? getpeername(fd, (struct sockaddr *)&ss, &l) : getsockname(fd, (struct sockaddr *)&ss, &l);
    int e = errno;
    if (rc < 0)
        out("%s%s = -1 %s", label, peer ? "getpeername" : "getsockname", errname(e));
    else
        out("%s%s = %s", label, peer ? "getpeername" : "getsockname", astr(&ss, l));
}

void show_names(int fd)
{
    show_name("", fd, 0);
    show_name("", fd, 1);
}

void show_poll(const char *label, int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN | POLLOUT | POLLPRI | POLLRDHUP };
    int rc = poll(&p, 1, 0);
    int e = errno;
    if (rc < 0)
        out("%spoll = -1 %s", label, errname(e));
    else
        out("%spoll = %s", label, pollstr(rc ? p.revents : 0));
}

int wait_ev(int fd, int want, int ms)
{
    struct pollfd p = { .fd = fd, .events = (short)want };
    int rc;
    do
        rc = poll(&p, 1, ms);
    while (rc < 0 && errno == EINTR);
    out("wait %s: %s", pollstr(want), rc > 0 ? "ready" : rc == 0 ? "timeout" : errname(errno));
    /* Let a state change that comes in several steps (data, then FIN) finish. */
    msleep(30);
    show_poll("", fd);
    return rc > 0;
}

int opt_get_int(int fd, int level, int name, const char *label)
{
    int v = -12345;
    socklen_t l = sizeof v;
    int rc = getsockopt(fd, level, name, &v, &l);
    int e = errno;
    if (rc < 0)
        out("getsockopt %s = -1 %s", label, errname(e));
    else if (l != sizeof v)
        out("getsockopt %s = %d (len %u)", label, v, (unsigned)l);
    else
        out("getsockopt %s = %d", label, v);
    errno = e;
    return rc < 0 ? -12345 : v;
}

void opt_set_int(int fd, int level, int name, int v, const char *label)
{
    int rc = setsockopt(fd, level, name, &v, sizeof v);
    int e = errno;
    if (rc < 0)
        out("setsockopt %s=%d = -1 %s", label, v, errname(e));
    else
        out("setsockopt %s=%d = 0", label, v);
    errno = e;
}

void show_so_error(int fd)
{
    int v = -12345;
    socklen_t l = sizeof v;
    int rc = getsockopt(fd, SOL_SOCKET, SO_ERROR, &v, &l);
    int e = errno;
    if (rc < 0)
        out("getsockopt SO_ERROR = -1 %s", errname(e));
    else
        out("getsockopt SO_ERROR = %s", v ? errname(v) : "0");
}

int tcp_socket(void)
{
    return fdres("socket(AF_INET, SOCK_STREAM)", socket(AF_INET, SOCK_STREAM, 0));
}

int udp_socket(void)
{
    return fdres("socket(AF_INET, SOCK_DGRAM)", socket(AF_INET, SOCK_DGRAM, 0));
}

static const char *ipport(const char *ip, int port)
{
    struct sockaddr_in a = sin_of(ip, port);
    return astr(&a, sizeof a);
}

long do_connect(int fd, const char *ip, int port)
{
    struct sockaddr_in a = sin_of(ip, port);
    char label[128];
    snprintf(label, sizeof label, "connect %s", ipport(ip, port));
    return res(label, connect(fd, (struct sockaddr *)&a, sizeof a));
}

long do_bind(int fd, const char *ip, int port)
{
    struct sockaddr_in a = sin_of(ip, port);
    char label[128];
    snprintf(label, sizeof label, "bind %s", ipport(ip, port));
    return res(label, bind(fd, (struct sockaddr *)&a, sizeof a));
}

struct sockaddr_in6 sin6_of(const char *ip, int port)
{
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_port = htons((uint16_t)port);
    inet_pton(AF_INET6, ip, &a.sin6_addr);
    return a;
}

long do_connect6(int fd, const char *ip, int port)
{
    struct sockaddr_in6 a = sin6_of(ip, port);
    char label[160];
    snprintf(label, sizeof label, "connect %s", astr(&a, sizeof a));
    return res(label, connect(fd, (struct sockaddr *)&a, sizeof a));
}

long do_bind6(int fd, const char *ip, int port)
{
    struct sockaddr_in6 a = sin6_of(ip, port);
    char label[160];
    snprintf(label, sizeof label, "bind %s", astr(&a, sizeof a));
    return res(label, bind(fd, (struct sockaddr *)&a, sizeof a));
}

int tcp_connect(int port)
{
    int fd = tcp_socket();
    do_connect(fd, PEER_IP, port);
    return fd;
}

int tcp_listen_self(int port, int backlog)
{
    int fd = tcp_socket();
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    do_bind(fd, SELF_IP, port);
    char label[64];
    snprintf(label, sizeof label, "listen(%d)", backlog);
    res(label, listen(fd, backlog));
    return fd;
}

void set_nonblock(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

void show_flags(int fd)
{
    int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
    out("flags: %s %s", (fl & O_NONBLOCK) ? "O_NONBLOCK" : "blocking",
        (fdfl & FD_CLOEXEC) ? "FD_CLOEXEC" : "no-cloexec");
}

void show_data(const char *label, const char *buf, long n)
{
    if (n > 64) {
        out("%s%ld bytes", label, n);
        return;
    }
    char esc[300];
    int j = 0;
    for (long i = 0; i < n && j < 290; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c >= 32 && c < 127 && c != '\\' && c != '"')
            esc[j++] = (char)c;
        else
            j += snprintf(esc + j, sizeof esc - (size_t)j, "\\x%02x", c);
    }
    esc[j] = 0;
    out("%s\"%s\"", label, esc);
}

static const char *msgflags(int flags)
{
    static const unsigned bits[] = { MSG_PEEK, MSG_DONTWAIT, MSG_WAITALL, MSG_TRUNC, MSG_OOB, MSG_NOSIGNAL };
    static const char *const names[] = { "MSG_PEEK", "MSG_DONTWAIT", "MSG_WAITALL", "MSG_TRUNC", "MSG_OOB", "MSG_NOSIGNAL" };
    return maskstr((unsigned)flags, bits, names, 6);
}

long do_send(int fd, const char *s, int flags)
{
    char label[200];
    snprintf(label, sizeof label, "send \"%s\" %s", s, msgflags(flags));
    return res(label, send(fd, s, strlen(s), flags));
}

long do_recv(int fd, int max, int flags)
{
    char buf[70000];
    if (max > (int)sizeof buf)
        max = (int)sizeof buf;
    long n = recv(fd, buf, (size_t)max, flags);
    int e = errno;
    if (n < 0)
        out("recv(%d, %s) = -1 %s", max, msgflags(flags), errname(e));
    else if (n <= max) {
        char label[100];
        snprintf(label, sizeof label, "recv(%d, %s) = %ld ", max, msgflags(flags), n);
        show_data(label, buf, n);
    } else
        out("recv(%d, %s) = %ld", max, msgflags(flags), n);
    errno = e;
    return n;
}

void wait_inq(int fd, int n, int ms)
{
    for (int waited = 0; waited < ms; waited += 5) {
        int q = 0;
        if (ioctl(fd, FIONREAD, &q) == 0 && q >= n)
            return;
        msleep(5);
    }
}

long read_upto(int fd, long want, int ms)
{
    char buf[65536], first[64];
    long got = 0;
    int firstn = 0;
    const char *end = "complete";
    while (got < want) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int rc = poll(&p, 1, ms);
        if (rc == 0) {
            end = "timeout";
            break;
        }
        long chunk = want - got < (long)sizeof buf ? want - got : (long)sizeof buf;
        long n = read(fd, buf, (size_t)chunk);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n < 0) {
            end = errname(errno);
            break;
        }
        if (n == 0) {
            end = "EOF";
            break;
        }
        if (firstn < (int)sizeof first) {
            int c = (int)n < (int)sizeof first - firstn ? (int)n : (int)sizeof first - firstn;
            memcpy(first + firstn, buf, (size_t)c);
            firstn += c;
        }
        got += n;
    }
    char label[100];
    snprintf(label, sizeof label, "read up to %ld: %ld (%s) ", want, got, end);
    show_data(label, first, got < firstn ? got : firstn);
    return got;
}

static int g_ctl = -1;

const char *ctl(const char *fmt, ...)
{
    static char reply[512];
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    line[n++] = '\n';
    int e = errno;
    if (g_ctl < 0) {
        struct sockaddr_un u = { .sun_family = AF_UNIX };
        snprintf(u.sun_path, sizeof u.sun_path, "%s", g_ctl_path ? g_ctl_path : "");
        g_ctl = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (connect(g_ctl, (struct sockaddr *)&u, sizeof u) < 0) {
            out("control: cannot connect to %s: %s", u.sun_path, errname(errno));
            exit(3);
        }
    }
    if (write(g_ctl, line, (size_t)n) != n) {
        out("control: write failed");
        exit(3);
    }
    int got = 0;
    while (got < (int)sizeof reply - 1) {
        ssize_t r = read(g_ctl, reply + got, 1);
        if (r <= 0) {
            out("control: no reply");
            exit(3);
        }
        if (reply[got] == '\n')
            break;
        got++;
    }
    reply[got] = 0;
    errno = e;
    return reply;
}

void msleep(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static void on_alarm(int sig)
{
    (void)sig;
}

void arm_alarm(int ms)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm; /* no SA_RESTART: the blocked call returns EINTR */
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = { { 0, 0 }, { ms / 1000, (ms % 1000) * 1000 } };
    setitimer(ITIMER_REAL, &it, NULL);
}

void disarm_alarm(void)
{
    struct itimerval it = { { 0, 0 }, { 0, 0 } };
    setitimer(ITIMER_REAL, &it, NULL);
}

void show_so_error_guarded(int fd, int ms)
{
    /* In a child, so a call that blocks (ztap waits for a pending connect's outcome, and may
     * not give up on a signal) costs one line, not the case. The child's call acts on the
     * same socket, so reading (and clearing) the error has the same effect. */
    pid_t pid = fork();
    if (pid == 0) {
        show_so_error(fd);
        _exit(0);
    }
    int st;
    for (int waited = 0; waited <= ms; waited += 5) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            return;
        msleep(5);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    out("getsockopt SO_ERROR: no answer within %d ms", ms);
}

void read_line(int fd, char *line, int size)
{
    int n = 0;
    while (n < size - 1) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, 2000) <= 0)
            break;
        ssize_t r = read(fd, line + n, 1);
        if (r <= 0 || line[n] == '\n')
            break;
        n++;
    }
    line[n] = 0;
}
