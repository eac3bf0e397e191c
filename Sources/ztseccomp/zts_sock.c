/* SPDX-License-Identifier: MIT */
/*
 * zts_sock.c - accept, names and socket options of traced programs, and the helpers every
 * handler shares (answering, installing an fd, writing addresses and option values).
 *
 * The same decisions and the same RPCs as the library's zti_sock.c, taken by the supervisor on
 * the target's behalf; zts_connect.c makes ztap sockets (connect, bind, listen).
 *
 * CONTINUE and TOCTOU: a continued call runs with whatever the target's memory holds by then,
 * which another thread may have changed since the supervisor read it. The supervisor continues
 * only calls that are harmless whatever their arguments become: calls on sockets that are not
 * ztap sockets (the kernel then does exactly what it would do without ztap, with the program's
 * own rights: interception routes traffic, it does not confine), and, on ztap sockets, the
 * options that act on the AF_UNIX socket itself (timeouts, low-water marks). Every call whose
 * outcome the supervisor shapes is performed by the supervisor from its own copy of the
 * arguments and answered with a value.
 *
 * A blocking accept waits for the accept channel to become readable in the supervisor's loop
 * (SO_RCVTIMEO bounds it), serving other calls meanwhile.
 */
#include "zts.h"

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/syscall.h>

/* Safety limits, as in the library: ordinary requests, and a connect's outcome. */
#define ZTS_SHORT_WAIT_MS (10 * 1000)

int zts_down_errno(int err, int fallback)
{
    switch (err) {
    case EINTR:
    case ETIMEDOUT:
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM:
        return err;
    default:
        return fallback;
    }
}

int zts_is_ztap(int kind)
{
    return kind == ZTS_K_TCP || kind == ZTS_K_LISTEN || kind == ZTS_K_UDP;
}

long zts_timeo_ms(int fd, int opt)
{
    struct timeval tv;
    socklen_t l = sizeof tv;
    if (getsockopt(fd, SOL_SOCKET, opt, &tv, &l) < 0 || (!tv.tv_sec && !tv.tv_usec))
        return 0;
    long ms = (long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    return ms ? ms : 1;
}

int zts_file_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && (fl & O_NONBLOCK);
}

/**
 * zts_install() - put one of our sockets in place of the target's fd number
 * @c: the call
 * @targetfd: the target's fd number (replaced atomically)
 * @newfd: our socket (an app end); keeps the old file's O_NONBLOCK, the old fd's FD_CLOEXEC and
 *         the options that act on the fd itself (SO_RCVTIMEO, SO_SNDTIMEO, SO_RCVLOWAT)
 * @cloexec_out: may be NULL
 *
 * Return: 0 or -errno.
 */
/* EACCES if datagrams from fd (a kernel socket, or an app end, which mirrors SO_BROADCAST) may
 * not go to a: a broadcast address without SO_BROADCAST, as Linux refuses them. Else 0. */
int zts_broadcast_denied(int fd, const struct ztrpc_addr *a)
{
    if (!zti_addr_is_broadcast(a))
        return 0;
    int on = 0;
    socklen_t l = sizeof on;
    if (getsockopt(fd, SOL_SOCKET, SO_BROADCAST, &on, &l) < 0)
        on = 0;
    return on ? 0 : EACCES;
}

int zts_install(struct zts_call *c, int targetfd, int newfd, int *cloexec_out)
{
    int nb = c->fd >= 0 && zts_file_nonblock(c->fd);
    int fl = fcntl(newfd, F_GETFL);
    if (fl < 0 || fcntl(newfd, F_SETFL, (fl & ~O_NONBLOCK) | (nb ? O_NONBLOCK : 0)) < 0)
        return -errno;
    if (c->fd >= 0) {
        static const int carried[] = { SO_RCVTIMEO, SO_SNDTIMEO, SO_RCVLOWAT, SO_BROADCAST };
        for (size_t i = 0; i < sizeof carried / sizeof carried[0]; i++) {
            union { struct timeval tv; int v; } val;
            socklen_t len = sizeof val;
            if (getsockopt(c->fd, SOL_SOCKET, carried[i], &val, &len) == 0)
                (void)setsockopt(newfd, SOL_SOCKET, carried[i], &val, len);
        }
    }
    int cloexec = zts_fd_cloexec(c, targetfd);
    if (cloexec < 0)
        cloexec = 0;
    if (cloexec_out)
        *cloexec_out = cloexec;
    int r = zts_addfd(c, newfd, targetfd, cloexec, 0);
    return r < 0 ? r : 0;
}

/* Writes an address to the target's (addr, *lenp) as a socket of `family` shows it (sockaddr_in
 * or sockaddr_in6), truncated like the kernel. */
int zts_put_sockaddr(struct zts_call *c, uint64_t addr, uint64_t lenp, int family, const struct ztrpc_addr *a)
{
    struct sockaddr_storage ss;
    socklen_t full = zti_make_sockaddr(family, a, &ss);
    uint32_t len;
    if (zts_mem_read(c, lenp, &len, sizeof len) < 0)
        return -EFAULT;
    if ((int32_t)len < 0)
        return -EINVAL;
    size_t n = len < full ? len : full;
    if (n && zts_mem_write(c, addr, &ss, n) < 0)
        return -EFAULT;
    len = full;
    return zts_mem_write(c, lenp, &len, sizeof len) < 0 ? -EFAULT : 0;
}

int zts_read_sockaddr(struct zts_call *c, uint64_t ua, uint32_t len, int domain, int v4_on_v6, struct ztrpc_addr *a,
                      sa_family_t *fam)
{
    struct sockaddr_in6 sa;
    memset(&sa, 0, sizeof sa);
    memset(a, 0, sizeof *a);
    *fam = AF_UNSPEC;
    if (!ua || len < sizeof(sa_family_t))
        return EINVAL;
    size_t want = len < sizeof sa ? len : sizeof sa;
    if (zts_mem_read(c, ua, &sa, want) < 0)
        return -EFAULT;
    *fam = sa.sin6_family;
    return zti_addr_from_sockaddr(domain, (const struct sockaddr *)&sa, len, v4_on_v6, a);
}

static int zts_put_int(struct zts_call *c, uint64_t optval, uint64_t optlenp, int v)
{
    uint32_t len;
    if (!optlenp || zts_mem_read(c, optlenp, &len, sizeof len) < 0)
        return -EFAULT;
    if ((int32_t)len < 0)
        return -EINVAL;
    uint32_t n = len < sizeof v ? len : (uint32_t)sizeof v;
    if (n && zts_mem_write(c, optval, &v, n) < 0)
        return -EFAULT;
    return zts_mem_write(c, optlenp, &n, sizeof n) < 0 ? -EFAULT : 0;
}

int zts_finish(struct zts_call *c, long val, int err)
{
    (void)zts_reply(c, val, err);
    return ZTS_DONE;
}

int zts_pass(struct zts_call *c)
{
    (void)zts_continue(c);
    return ZTS_DONE;
}

/* ---------------------------------------------------------------------------------------------
 * accept, accept4
 */

int zts_h_accept(struct zts_call *c)
{
    int flags = c->n.data.nr == SYS_accept4 ? (int)c->n.data.args[3] : 0;
    uint64_t ua = c->n.data.args[1], ulen = c->n.data.args[2];
    struct zts_ent *e;
    int k = c->wait_fd >= 0 ? ZTS_K_LISTEN : zts_classify(c, &e);
    if (!zts_is_ztap(k))
        return zts_pass(c);
    if (k == ZTS_K_UDP)
        return zts_finish(c, -1, EOPNOTSUPP); /* as the kernel says for a datagram socket */
    if (k != ZTS_K_LISTEN || (flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)))
        return zts_finish(c, -1, EINVAL);
    if (ua && !ulen)
        return zts_finish(c, -1, EFAULT);
    uint32_t len = 0;
    if (ua && zts_mem_read(c, ulen, &len, sizeof len) < 0)
        return zts_finish(c, -1, EFAULT); /* checked before a connection is taken */
    if (c->timed_out)
        return zts_finish(c, -1, EAGAIN); /* SO_RCVTIMEO, as the kernel */

    struct ztrpc_accept_msg m;
    struct iovec iov = { .iov_base = &m, .iov_len = sizeof m };
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } cbuf;
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf.buf;
    mh.msg_controllen = sizeof cbuf.buf;
    ssize_t n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
        if (errno == EAGAIN && !zts_file_nonblock(c->fd)) {
            c->wait_fd = c->fd;
            c->wait_events = POLLIN_EVENTS;
            long ms = zts_timeo_ms(c->fd, SO_RCVTIMEO);
            c->deadline = ms ? zts_now_ms() + ms : 0;
            return ZTS_WAIT;
        }
        /* ECONNRESET: ztapd closed the channel with our plug's messages in it (the listener was
         * shut down): as the end of the channel, EINVAL (Linux's accept on a socket that no
         * longer listens). */
        return zts_finish(c, -1, errno == ECONNRESET ? EINVAL : errno);
    }
    int nfd = -1;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS && cm->cmsg_len >= CMSG_LEN(sizeof(int)))
        memcpy(&nfd, CMSG_DATA(cm), sizeof nfd);
    if (n == 0 && nfd < 0)
        return zts_finish(c, -1, EINVAL); /* accept channel closed: listener shut down or ztapd gone */
    if (nfd < 0)
        return zts_finish(c, -1, (mh.msg_flags & MSG_CTRUNC) ? EMFILE : ECONNABORTED);
    if ((size_t)n != sizeof m || m.magic != ZTRPC_MAGIC) {
        close(nfd);
        zts_log("malformed message on an accept channel (pid %d, fd %d)", (int)c->n.pid, (int)c->n.data.args[0]);
        return zts_finish(c, -1, ECONNABORTED);
    }
    /* ztapd made the end: O_RDWR, plus O_NONBLOCK when the message says so. */
    if (!!(flags & SOCK_NONBLOCK) != !!(m.flags & ZTRPC_AM_NONBLOCK) &&
        fcntl(nfd, F_SETFL, (flags & SOCK_NONBLOCK) ? O_RDWR | O_NONBLOCK : O_RDWR) < 0) {
        int err = errno;
        close(nfd);
        return zts_finish(c, -1, err);
    }
    /* The new socket has its listener's family. */
    struct zts_ent *le = c->ino_valid ? zts_table_get(c->dev, c->ino) : NULL;
    int family = le && le->family ? le->family : AF_INET;
    if (ua) {
        int r = zts_put_sockaddr(c, ua, ulen, family, &m.peer);
        if (r < 0) {
            close(nfd);
            return zts_finish(c, -1, -r);
        }
    }
    struct ztrpc_sockinfo si;
    memset(&si, 0, sizeof si);
    si.proto = IPPROTO_TCP;
    si.state = ZTRPC_STATE_CONNECTED;
    si.family = (uint8_t)family;
    si.flags = le && le->v6only ? ZTRPC_SI_V6ONLY : 0;
    si.local = m.local;
    si.peer = m.peer;
    struct stat st;
    int have = fstat(nfd, &st) == 0;
    (void)zts_table_put_fd(nfd, ZTS_K_TCP, &si);
    int r = zts_addfd(c, nfd, -1, (flags & SOCK_CLOEXEC) != 0, 1);
    close(nfd);
    if (r >= 0)
        return ZTS_DONE; /* the syscall returned the new fd number */
    if (have)
        zts_table_forget(st.st_dev, st.st_ino);
    if (r != -ENOENT)
        (void)zts_reply(c, -1, -r); /* EMFILE: the connection is dropped, as with the library */
    return ZTS_DONE;
}

/* ---------------------------------------------------------------------------------------------
 * Names and options
 */

int zts_h_name(struct zts_call *c)
{
    struct zts_ent *e;
    int k = zts_classify(c, &e);
    if (k == ZTS_K_INET_TCP && e && c->n.data.nr == SYS_getsockname) {
        /* A kernel socket whose connect failed shows the port it had taken, unless it got a name
         * of its own since (zts_note_failed_port). */
        struct sockaddr_storage ks;
        socklen_t kl = sizeof ks;
        if (getsockname(c->fd, (struct sockaddr *)&ks, &kl) == 0 &&
            ((ks.ss_family == AF_INET && ((struct sockaddr_in *)&ks)->sin_port == 0) ||
             (ks.ss_family == AF_INET6 && ((struct sockaddr_in6 *)&ks)->sin6_port == 0))) {
            int r = zts_put_sockaddr(c, c->n.data.args[1], c->n.data.args[2], ks.ss_family, &e->local);
            return zts_finish(c, r < 0 ? -1 : 0, r < 0 ? -r : 0);
        }
    }
    if (!zts_is_ztap(k))
        return zts_pass(c);
    uint64_t ua = c->n.data.args[1], ulen = c->n.data.args[2];
    uint32_t len;
    if (!ulen || zts_mem_read(c, ulen, &len, sizeof len) < 0 || (!ua && len))
        return zts_finish(c, -1, EFAULT);
    int r;
    if (c->n.data.nr == SYS_getsockname) {
        if (e->local.port == 0 && k != ZTS_K_LISTEN && (r = zts_refresh(c, e)) < 0)
            return zts_finish(c, -1, -r);
        r = zts_put_sockaddr(c, ua, ulen, e->family, &e->local);
        return zts_finish(c, r < 0 ? -1 : 0, r < 0 ? -r : 0);
    }
    if (k == ZTS_K_LISTEN)
        return zts_finish(c, -1, ENOTCONN);
    if (k == ZTS_K_TCP && e->state == ZTRPC_STATE_CONNECTED) {
        /* As the library: a hang-up on the app end means the connection may be over (Linux:
         * ENOTCONN in TCP_CLOSE). One poll; ask ztapd only then. */
        struct pollfd p = { .fd = c->fd, .events = POLLRDHUP };
        if (poll(&p, 1, 0) == 1 && (p.revents & POLLHUP))
            e->state = ZTRPC_STATE_CLOSED;
    }
    if (e->state != ZTRPC_STATE_CONNECTED && (r = zts_refresh(c, e)) < 0)
        return zts_finish(c, -1, -r);
    if (e->state != ZTRPC_STATE_CONNECTED)
        return zts_finish(c, -1, ENOTCONN); /* also once the connection is over, as Linux */
    r = zts_put_sockaddr(c, ua, ulen, e->family, &e->peer);
    return zts_finish(c, r < 0 ? -1 : 0, r < 0 ? -r : 0);
}

/* Options that act on the app's AF_UNIX fd itself. */
static int zts_native_opt(int level, int name)
{
    return level == SOL_SOCKET && (name == SO_RCVTIMEO || name == SO_SNDTIMEO ||
                                   name == SO_RCVLOWAT || name == SO_SNDLOWAT);
}

int zts_h_getsockopt(struct zts_call *c)
{
    int level = (int)c->n.data.args[1], name = (int)c->n.data.args[2];
    uint64_t uval = c->n.data.args[3], ulen = c->n.data.args[4];
    struct zts_ent *e;
    int k = zts_classify(c, &e);
    if (!zts_is_ztap(k) || zts_native_opt(level, name))
        return zts_pass(c);
    int r;
    if (level == SOL_SOCKET) {
        int v = -1;
        switch (name) {
        case SO_TYPE: v = k == ZTS_K_UDP ? SOCK_DGRAM : SOCK_STREAM; break;
        case SO_DOMAIN: v = e->family; break;
        case SO_PROTOCOL: v = k == ZTS_K_UDP ? IPPROTO_UDP : IPPROTO_TCP; break;
        case SO_ACCEPTCONN: v = k == ZTS_K_LISTEN; break;
        }
        if (v >= 0) {
            r = zts_put_int(c, uval, ulen, v);
            return zts_finish(c, r < 0 ? -1 : 0, r < 0 ? -r : 0);
        }
    }
    if (level == IPPROTO_IPV6 && name == IPV6_V6ONLY && e->family == AF_INET6) {
        r = zts_put_int(c, uval, ulen, e->v6only); /* fixed once the socket is ours */
        return zts_finish(c, r < 0 ? -1 : 0, r < 0 ? -r : 0);
    }
    uint32_t len;
    if (!ulen || zts_mem_read(c, ulen, &len, sizeof len) < 0)
        return zts_finish(c, -1, EFAULT);
    if ((int32_t)len < 0)
        return zts_finish(c, -1, EINVAL);
    struct ztrpc_sockopt rq;
    /* The reply's value may run past the struct's 16 bytes (ztrpc.h GETSOCKOPT: TCP_INFO). */
    struct {
        struct ztrpc_sockopt o;
        unsigned char more[ZTRPC_MAX_OPTLEN - sizeof rq.value];
    } rs;
    memset(&rq, 0, sizeof rq);
    rq.level = level;
    rq.name = name;
    rq.optlen = len < ZTRPC_MAX_OPTLEN ? len : (uint32_t)ZTRPC_MAX_OPTLEN;
    struct ztrpc_rep_hdr rep;
    int err;
    int is_error = level == SOL_SOCKET && name == SO_ERROR;
    if (zts_rpc(c, ZTRPC_OP_GETSOCKOPT, &rq, sizeof rq, &c->fd, 1, &rep, &rs, sizeof rs, ZTS_SHORT_WAIT_MS,
                &err) < 0) {
        if (is_error) {
            /* ztapd is gone, so is the connection: report it as the socket's error. */
            r = zts_put_int(c, uval, ulen, zts_down_errno(err, ECONNRESET));
            return zts_finish(c, r < 0 ? -1 : 0, r < 0 ? -r : 0);
        }
        return zts_finish(c, -1, zts_down_errno(err, ENETDOWN));
    }
    if (rep.result < 0)
        return zts_finish(c, -1, rep.err ? rep.err : EIO);
    uint32_t n = rs.o.optlen < ZTRPC_MAX_OPTLEN ? rs.o.optlen : (uint32_t)ZTRPC_MAX_OPTLEN;
    if (n > len)
        n = len;
    if ((n && zts_mem_write(c, uval, (unsigned char *)&rs + offsetof(struct ztrpc_sockopt, value), n) < 0) ||
        zts_mem_write(c, ulen, &n, sizeof n) < 0)
        return zts_finish(c, -1, EFAULT);
    if (is_error && k == ZTS_K_TCP) {
        /* As the library: a failed connect left ECONNRESET on the app end itself; reading
         * SO_ERROR clears it too. While connecting, the outcome may be known now. */
        int native;
        socklen_t nl = sizeof native;
        (void)getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &native, &nl);
        if (e->state == ZTRPC_STATE_CONNECTING)
            (void)zts_refresh(c, e);
    }
    return zts_finish(c, 0, 0);
}

/**
 * zts_sockopt_rpc() - SETSOCKOPT of ztap socket `sock` (the handler's, or a new one's replayed
 * pre-options)
 * @value: the option's bytes, at least min(@len, ZTRPC_MAX_OPTLEN) of them
 * @len: the program's optlen (ztapd judges it, as the kernel would)
 *
 * The value runs past the struct when longer than its 16 bytes (ztrpc.h SETSOCKOPT).
 * Return: 0, or -errno (ztapd's answer, or an ENETDOWN-class one when it is unreachable).
 */
int zts_sockopt_rpc(struct zts_call *c, int sock, int level, int name, const void *value, uint32_t len)
{
    struct {
        struct ztrpc_sockopt o;
        unsigned char more[ZTRPC_MAX_OPTLEN - sizeof(((struct ztrpc_sockopt *)0)->value)];
    } rq;
    uint32_t n = len < ZTRPC_MAX_OPTLEN ? len : (uint32_t)ZTRPC_MAX_OPTLEN;
    memset(&rq, 0, sizeof rq);
    rq.o.level = level;
    rq.o.name = name;
    rq.o.optlen = len;
    if (n)
        memcpy(rq.o.value, value, n);
    uint32_t blen = (uint32_t)sizeof rq.o + (n > sizeof rq.o.value ? n - (uint32_t)sizeof rq.o.value : 0);
    struct ztrpc_rep_hdr rep;
    int err;
    if (zts_rpc(c, ZTRPC_OP_SETSOCKOPT, &rq, blen, &sock, 1, &rep, NULL, 0, ZTS_SHORT_WAIT_MS, &err) < 0)
        return -zts_down_errno(err, ENETDOWN);
    if (rep.result < 0)
        return -(rep.err ? rep.err : EIO);
    return 0;
}

int zts_h_setsockopt(struct zts_call *c)
{
    int level = (int)c->n.data.args[1], name = (int)c->n.data.args[2];
    uint64_t uval = c->n.data.args[3];
    uint32_t len = (uint32_t)c->n.data.args[4];
    struct zts_ent *e;
    int k = zts_classify(c, &e);
    if (!zts_is_ztap(k) || zts_native_opt(level, name))
        return zts_pass(c); /* kernel sockets: their options are read back at interception */
    if ((int32_t)len < 0)
        return zts_finish(c, -1, EINVAL);
    unsigned char val[ZTRPC_MAX_OPTLEN];
    uint32_t n = len < ZTRPC_MAX_OPTLEN ? len : (uint32_t)ZTRPC_MAX_OPTLEN;
    if (n && (!uval || zts_mem_read(c, uval, val, n) < 0))
        return zts_finish(c, -1, EFAULT);
    int r = zts_sockopt_rpc(c, c->fd, level, name, val, len);
    if (r < 0)
        return zts_finish(c, -1, -r);
    /* As the library: also bound the unix buffers, and keep SO_BROADCAST where the UDP sends
     * look for it (zts_broadcast_denied). */
    if (level == SOL_SOCKET && (name == SO_RCVBUF || name == SO_SNDBUF || name == SO_BROADCAST) && n >= sizeof(int))
        (void)setsockopt(c->fd, level, name, val, n);
    return zts_finish(c, 0, 0);
}
