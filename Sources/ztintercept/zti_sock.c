/* SPDX-License-Identifier: MIT */
/*
 * zti_sock.c - connect, bind, listen, accept, names, socket options, dup: the control calls.
 *
 * A kernel AF_INET socket becomes a ztap socket at the first connect/bind/sendto whose address
 * belongs to the network: the library creates a socketpair, hands ztapd its end (and the app end,
 * for identity) in the request, and on success dup3()s the app end onto the app's fd number. On
 * failure the app's fd is untouched. Options the app set on the kernel socket beforehand were
 * recorded by setsockopt() and travel with the creating request (zti_opts.c).
 */
#include "zti.h"

#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/syscall.h>

/* Safety limit for waits whose real bound is ztapd's own TCP connect timeout. */
#define ZTI_LONG_WAIT_MS (180 * 1000)
/* Ordinary requests: ztapd answers at once; this only protects against a wedged daemon. */
#define ZTI_SHORT_WAIT_MS (10 * 1000)

static int zti_is_ztap(int kind)
{
    return kind == ZTI_TCP || kind == ZTI_LISTEN || kind == ZTI_UDP;
}

/* errno for an RPC that could not reach ztapd, per operation (see docs/INTERCEPT.md). */
static int zti_down_errno(int err, int fallback)
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

/* Kernel socket kind usable for interception: 1 TCP, 2 UDP, 0 other. */
static int zti_inet_kind(int fd, int *proto)
{
    int dom, type, prot;
    if (zti_socket_type(fd, &dom, &type, &prot) < 0 || dom != AF_INET)
        return 0;
    if (type == SOCK_STREAM && prot == IPPROTO_TCP) {
        *proto = IPPROTO_TCP;
        return 1;
    }
    if (type == SOCK_DGRAM && prot == IPPROTO_UDP) {
        *proto = IPPROTO_UDP;
        return 2;
    }
    return 0;
}

static struct ztrpc_addr zti_addr_of(const struct sockaddr_in *sin)
{
    struct ztrpc_addr a = { .addr = sin->sin_addr.s_addr, .port = sin->sin_port, .reserved = 0 };
    return a;
}

/* How long a blocking TCP connect waits: SO_SNDTIMEO if set (then EINPROGRESS), like the
 * kernel, else until ztapd's own connect timeout. */
static int zti_connect_timeout(int fd, int *sndtimeo_set)
{
    struct timeval tv;
    socklen_t l = sizeof tv;
    *sndtimeo_set = 0;
    if (zti_real.getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &l) == 0 && (tv.tv_sec || tv.tv_usec)) {
        long ms = (long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
        *sndtimeo_set = 1;
        return ms > ZTI_LONG_WAIT_MS ? ZTI_LONG_WAIT_MS : (int)(ms ? ms : 1);
    }
    return ZTI_LONG_WAIT_MS;
}

static int zti_fail(int err)
{
    errno = err;
    return -1;
}

/* ---------------------------------------------------------------------------------------------
 * Creating a ztap socket
 */

/**
 * zti_plug() - make a TCP socket's app end unwritable until ztapd knows the connect's outcome
 *
 * Every TCP connect is plugged, blocking ones too: one interrupted by a signal or SO_SNDTIMEO
 * goes on in the background and must not look writable before its outcome either.
 * @fd: the app end (a SOCK_STREAM socketpair end)
 * @rq: gets the filler count and the SO_SNDBUF to restore
 *
 * A socketpair end is writable at once, but a connecting TCP socket is not: POLLOUT must mean
 * "the outcome is known". The app end's send buffer is shrunk to the minimum and filled; ztapd
 * restores the buffer at the outcome (which wakes pollers) and drops exactly the filler bytes on
 * success (ztrpc.h, CONNECT). The filler is a few KiB: two or three small sends.
 *
 * Return: 0, or -1 with errno (the socket is then left as it was).
 */
static int zti_plug(int fd, struct ztrpc_sock_req *rq)
{
    static const char pad[4096];
    int orig;
    socklen_t l = sizeof orig;
    if (zti_real.getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &orig, &l) < 0)
        return -1;
    int tiny = 0;
    if (zti_real.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &tiny, sizeof tiny) < 0)
        return -1;
    uint32_t total = 0;
    while (total < (1u << 20)) {
        ssize_t n = zti_real.send(fd, pad, sizeof pad, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* EAGAIN: plugged */
        total += (uint32_t)n;
    }
    rq->filler = total;
    rq->sndbuf = orig / 2; /* setsockopt doubles what it is given */
    return 0;
}

/* The state an answered request implies, whatever the reply body said (a terse daemon may send
 * an empty one): the cache must never claim less than the app was told. */
static void zti_fix_state(struct zti_ent *e, uint16_t op, struct ztrpc_addr addr, int installed_err)
{
    int dissolve = addr.addr == 0 && addr.port == 0;
    if (op == ZTRPC_OP_CONNECT) {
        if (e->kind == ZTI_UDP) {
            e->state = dissolve ? ZTRPC_STATE_BOUND : ZTRPC_STATE_CONNECTED;
            e->peer = dissolve ? (struct ztrpc_addr){ 0, 0, 0 } : addr;
        } else {
            e->state = installed_err ? ZTRPC_STATE_CONNECTING : ZTRPC_STATE_CONNECTED;
            if (!e->peer.port)
                e->peer = addr;
        }
    } else if (e->state == ZTRPC_STATE_UNBOUND) {
        e->state = ZTRPC_STATE_BOUND;
    }
}

/**
 * zti_create() - turn a kernel TCP/UDP socket into a ztap socket with a CONNECT/BIND/UDP_OPEN
 * @fd: the app's kernel socket
 * @op: ZTRPC_OP_CONNECT, ZTRPC_OP_BIND or ZTRPC_OP_UDP_OPEN
 * @proto: IPPROTO_TCP or IPPROTO_UDP
 * @addr: destination or local address
 * @rec: the kernel socket's fd table entry with the options recorded on it (may be NULL)
 * @e: filled with the new entry on success (also with EINPROGRESS/EINTR for CONNECT)
 * @down: errno to report when ztapd is unreachable
 *
 * Return: 0 on success; -1 with errno (EINPROGRESS and EINTR leave the socket installed).
 */
static int zti_create(int fd, uint16_t op, int proto, struct ztrpc_addr addr,
                      const struct zti_ent *rec, struct zti_ent *e, int down)
{
    int fl = zti_real.fcntl(fd, F_GETFL);
    if (fl < 0)
        return -1;
    int nonblock = (fl & O_NONBLOCK) != 0;
    int sv[2];
    int type = (proto == IPPROTO_TCP ? SOCK_STREAM : SOCK_SEQPACKET) | SOCK_CLOEXEC;
    if (zti_real.socketpair(AF_UNIX, type, 0, sv) < 0)
        return -1;

    struct ztrpc_sock_req rq;
    memset(&rq, 0, sizeof rq);
    rq.addr = addr;
    rq.proto = (uint8_t)proto;
    rq.flags = ZTRPC_F_NEW | (op == ZTRPC_OP_CONNECT && nonblock ? ZTRPC_F_NONBLOCK : 0);
    if (rec)
        rq.opts = rec->opts;
    /* The request is followed by the other options set before interception (ztrpc_optlist). */
    struct {
        struct ztrpc_sock_req rq;
        struct ztrpc_optlist list;
        struct ztrpc_sockopt recs[ZTRPC_MAX_PREOPTS];
    } body;
    struct zti_preopts pre;
    zti_preopts_collect(fd, rec, &pre);
    int packed = zti_preopts_pack(&pre, &body.list, body.recs);
    uint32_t blen = (uint32_t)sizeof body.rq;
    if (packed)
        blen += (uint32_t)(sizeof body.list + (size_t)packed * sizeof body.recs[0]);

    int timeout = ZTI_SHORT_WAIT_MS;
    int sndtimeo_set = 0;
    if (op == ZTRPC_OP_CONNECT && !nonblock && proto == IPPROTO_TCP)
        timeout = zti_connect_timeout(fd, &sndtimeo_set);

    if (op == ZTRPC_OP_CONNECT && proto == IPPROTO_TCP && zti_plug(sv[0], &rq) < 0) {
        int e = errno;
        zti_close(sv[0]);
        zti_close(sv[1]);
        return zti_fail(e);
    }

    struct ztrpc_rep_hdr rep;
    struct ztrpc_sockinfo si;
    int err = 0;
    /* Only a blocking TCP connect is interruptible: everything else answers at once. */
    body.rq = rq;
    int r = zti_rpc(op, &body, blen, sv, 2, &rep, &si, sizeof si, timeout,
                    op == ZTRPC_OP_CONNECT && !nonblock && proto == IPPROTO_TCP ? ZTI_RPC_INTERRUPTIBLE : 0,
                    &err);
    zti_close(sv[1]); /* ztapd holds its own copy now (or never will) */

    int installed_err = 0; /* errno to return after installing (EINPROGRESS/EINTR) */
    if (r < 0) {
        if (op == ZTRPC_OP_CONNECT && (err == EINTR || (err == ETIMEDOUT && sndtimeo_set))) {
            /* Like the kernel: the connect continues in the background. */
            memset(&si, 0, sizeof si);
            si.proto = (uint8_t)proto;
            si.state = ZTRPC_STATE_CONNECTING;
            si.peer = addr;
            installed_err = err == EINTR ? EINTR : EINPROGRESS;
        } else {
            zti_close(sv[0]);
            zti_dbg("ztapd request failed, errno ", NULL, NULL, err, NULL);
            return zti_fail(zti_down_errno(err, down));
        }
    } else if (rep.result < 0) {
        if (rep.err != EINPROGRESS) {
            zti_close(sv[0]);
            return zti_fail(rep.err ? rep.err : EIO);
        }
        installed_err = EINPROGRESS;
    }

    int ir = zti_install(fd, sv[0]);
    if (ir < 0) {
        zti_close(sv[0]);
        return zti_fail(-ir);
    }
    zti_ent_from_info(e, proto == IPPROTO_UDP ? ZTI_UDP : ZTI_TCP, &si, fd);
    e->proto = (uint8_t)proto;
    zti_fix_state(e, op, addr, installed_err);
    zti_table_put(fd, e);
    if (packed < pre.n)
        zti_preopts_replay(fd, &pre, packed);
    zti_dbg(op == ZTRPC_OP_CONNECT ? "connect intercepted, fd "
            : op == ZTRPC_OP_BIND  ? "bind intercepted, fd "
                                   : "sendto intercepted (implicit bind), fd ",
            NULL, NULL, fd, NULL);
    if (installed_err)
        return zti_fail(installed_err);
    return 0;
}

/**
 * zti_udp_open() - implicit bind of a kernel UDP socket that sends to the network (UDP_OPEN)
 * @fd: the app's kernel UDP socket
 * @e: filled with the new entry
 *
 * Return: 0, or -1 with errno (ENETUNREACH when ztapd is unreachable).
 */
int zti_udp_open(int fd, struct zti_ent *e)
{
    struct zti_ent old;
    struct stat st;
    int k = zti_table_get(fd, &old);
    int valid = k == ZTI_INET && fstat(fd, &st) == 0 && old.dev == (uint64_t)st.st_dev &&
                old.ino == (uint64_t)st.st_ino;
    struct ztrpc_addr any = { 0, 0, 0 };
    return zti_create(fd, ZTRPC_OP_UDP_OPEN, IPPROTO_UDP, any, valid ? &old : NULL, e,
                      ENETUNREACH);
}

/* Refresh an entry from ztapd (GETNAME). Return: 0 or -1 with errno. */
static int zti_refresh(int fd, struct zti_ent *e)
{
    struct ztrpc_rep_hdr rep;
    struct ztrpc_sockinfo si;
    int err;
    if (zti_rpc(ZTRPC_OP_GETNAME, NULL, 0, &fd, 1, &rep, &si, sizeof si, ZTI_SHORT_WAIT_MS, 0, &err) < 0)
        return zti_fail(zti_down_errno(err, ENOTCONN));
    if (rep.result < 0)
        return zti_fail(rep.err ? rep.err : EIO);
    int kind = e->kind;
    zti_ent_from_info(e, kind, &si, fd);
    zti_table_put(fd, e);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * connect / bind / listen
 */

/**
 * connect() - connect a socket; network destinations go through ztapd
 * @fd: socket
 * @addr: destination
 * @len: size of @addr
 *
 * Return: 0, or -1 with errno as connect(2) (EINPROGRESS for non-blocking sockets).
 */
ZTI_EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    zti_init_real();
    if (!zti_cfg.enabled || !addr || len < sizeof(sa_family_t))
        return zti_real.connect(fd, addr, len);
    int saved = errno;
    struct zti_ent e;
    sa_family_t fam = addr->sa_family;
    if (fam != AF_INET && fam != AF_UNSPEC) {
        /* A ztap socket is AF_INET to the app: other families are refused like the kernel. */
        if (zti_hot_kind(fd) != ZTI_NONE && zti_is_ztap(zti_classify(fd, &e, 0)))
            return zti_fail(EAFNOSUPPORT);
        return zti_real.connect(fd, addr, len);
    }
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    if (fam == AF_INET) {
        if (len < sizeof sin)
            return zti_real.connect(fd, addr, len);
        memcpy(&sin, addr, sizeof sin);
    }

    int k = zti_classify(fd, &e, 1);
    if (zti_is_ztap(k)) {
        if (k == ZTI_LISTEN)
            return zti_fail(EISCONN);
        int fl = zti_real.fcntl(fd, F_GETFL);
        int nonblock = fl >= 0 && (fl & O_NONBLOCK);
        struct ztrpc_sock_req rq;
        memset(&rq, 0, sizeof rq);
        rq.addr = zti_addr_of(&sin);
        rq.proto = e.proto;
        rq.flags = nonblock ? ZTRPC_F_NONBLOCK : 0;
        /* Only a connect that will start a handshake is plugged; ztapd unplugs on any answer. */
        if (k == ZTI_TCP && fam == AF_INET &&
            (e.state == ZTRPC_STATE_UNBOUND || e.state == ZTRPC_STATE_BOUND) && zti_plug(fd, &rq) < 0)
            return -1;
        struct ztrpc_rep_hdr rep;
        struct ztrpc_sockinfo si;
        int err;
        int blocking_tcp = !nonblock && k == ZTI_TCP;
        int sndtimeo_set = 0;
        int timeout = blocking_tcp ? zti_connect_timeout(fd, &sndtimeo_set) : ZTI_SHORT_WAIT_MS;
        if (zti_rpc(ZTRPC_OP_CONNECT, &rq, sizeof rq, &fd, 1, &rep, &si, sizeof si, timeout,
                    blocking_tcp ? ZTI_RPC_INTERRUPTIBLE : 0, &err) < 0) {
            if (blocking_tcp && rq.filler && (err == EINTR || (err == ETIMEDOUT && sndtimeo_set))) {
                /* Like the kernel: the connect goes on in the background (SO_ERROR, POLLOUT). */
                e.state = ZTRPC_STATE_CONNECTING;
                e.peer = rq.addr;
                zti_table_put(fd, &e);
                return zti_fail(err == EINTR ? EINTR : EINPROGRESS);
            }
            return zti_fail(zti_down_errno(err, k == ZTI_UDP ? ENETUNREACH : ECONNREFUSED));
        }
        if (rep.result == 0 || rep.err == EINPROGRESS) {
            uint8_t proto = e.proto;
            zti_ent_from_info(&e, k, &si, fd);
            e.proto = proto;
            zti_fix_state(&e, ZTRPC_OP_CONNECT, rq.addr, rep.result == 0 ? 0 : EINPROGRESS);
            zti_table_put(fd, &e);
        }
        if (rep.result < 0)
            return zti_fail(rep.err ? rep.err : EIO);
        errno = saved;
        return 0;
    }
    if (fam != AF_INET || !zti_dest_selected(sin.sin_addr.s_addr))
        return zti_real.connect(fd, addr, len);
    int proto;
    if (!zti_inet_kind(fd, &proto))
        return zti_real.connect(fd, addr, len);
    if (zti_create(fd, ZTRPC_OP_CONNECT, proto, zti_addr_of(&sin), k == ZTI_INET ? &e : NULL,
                   &e, proto == IPPROTO_TCP ? ECONNREFUSED : ENETUNREACH) < 0)
        return -1;
    errno = saved;
    return 0;
}

/**
 * bind() - bind a socket; addresses of the network go through ztapd
 * @fd: socket
 * @addr: local address
 * @len: size of @addr
 *
 * Return: 0, or -1 with errno as bind(2).
 */
ZTI_EXPORT int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    zti_init_real();
    if (!zti_cfg.enabled || !addr || len < sizeof(struct sockaddr_in) || addr->sa_family != AF_INET)
        return zti_real.bind(fd, addr, len);
    int saved = errno;
    struct sockaddr_in sin;
    memcpy(&sin, addr, sizeof sin);
    struct zti_ent e;
    int k = zti_classify(fd, &e, 1);
    if (zti_is_ztap(k))
        return zti_fail(EINVAL); /* already bound, as the kernel says */
    int proto;
    if (!zti_bind_selected(sin.sin_addr.s_addr) || !zti_inet_kind(fd, &proto))
        return zti_real.bind(fd, addr, len);
    if (zti_create(fd, ZTRPC_OP_BIND, proto, zti_addr_of(&sin), k == ZTI_INET ? &e : NULL, &e,
                   EADDRNOTAVAIL) < 0)
        return -1;
    errno = saved;
    return 0;
}

/**
 * listen() - listen on a socket; a ztap TCP socket gets an accept channel from ztapd
 * @fd: socket
 * @backlog: as listen(2)
 *
 * Return: 0, or -1 with errno as listen(2).
 */
ZTI_EXPORT int listen(int fd, int backlog)
{
    zti_init_real();
    if (!zti_cfg.enabled)
        return zti_real.listen(fd, backlog);
    int saved = errno;
    struct zti_ent e;
    int k = zti_classify(fd, &e, 1);
    if (!zti_is_ztap(k))
        return zti_real.listen(fd, backlog);
    if (k == ZTI_UDP)
        return zti_fail(EOPNOTSUPP);
    struct ztrpc_listen_req rq = { .backlog = backlog, .reserved = 0 };
    struct ztrpc_rep_hdr rep;
    int err;
    if (k == ZTI_LISTEN) {
        /* Already listening: only the backlog changes. */
        if (zti_rpc(ZTRPC_OP_LISTEN, &rq, sizeof rq, &fd, 1, &rep, NULL, 0, ZTI_SHORT_WAIT_MS, 0, &err) < 0)
            return zti_fail(zti_down_errno(err, ENETDOWN));
        if (rep.result < 0)
            return zti_fail(rep.err ? rep.err : EIO);
        errno = saved;
        return 0;
    }
    int sv[2];
    if (zti_real.socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -1;
    /* A listening socket is never writable on Linux; the channel's app end would be. Plugged
     * for good: a minimal send buffer, full of filler messages ztapd never reads (it watches the
     * channel only for the hang-up when the listener closes). */
    int tiny = 0;
    (void)zti_real.setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &tiny, sizeof tiny);
    for (int i = 0; i < 64; i++) {
        ssize_t n = zti_real.send(sv[0], "", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
    }
    int fds[3] = { fd, sv[1], sv[0] };
    int r = zti_rpc(ZTRPC_OP_LISTEN, &rq, sizeof rq, fds, 3, &rep, NULL, 0, ZTI_SHORT_WAIT_MS, 0, &err);
    zti_close(sv[1]);
    if (r < 0 || rep.result < 0) {
        zti_close(sv[0]);
        if (r < 0)
            return zti_fail(zti_down_errno(err, ENETDOWN));
        return zti_fail(rep.err ? rep.err : EIO);
    }
    int ir = zti_install(fd, sv[0]);
    if (ir < 0) {
        zti_close(sv[0]);
        return zti_fail(-ir);
    }
    struct stat st;
    e.kind = ZTI_LISTEN;
    e.state = ZTRPC_STATE_LISTENING;
    e.backlog = backlog;
    if (fstat(fd, &st) == 0) {
        e.dev = st.st_dev;
        e.ino = st.st_ino;
    }
    zti_table_put(fd, &e);
    zti_dbg("listen intercepted, fd ", NULL, NULL, fd, NULL);
    errno = saved;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * accept
 */

/**
 * zti_accept4() - accept one connection from a ztap listener's accept channel
 * @fd: listening socket
 * @addr: peer address out (may be NULL)
 * @len: in: size of @addr; out: sizeof(struct sockaddr_in)
 * @flags: SOCK_NONBLOCK, SOCK_CLOEXEC
 *
 * Return: new fd, or -1 with errno (EAGAIN for a non-blocking listener with nothing pending,
 * EINTR, EINVAL for a socket that is not listening). A kernel fd returns -2 (caller passes it on).
 */
int zti_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    struct zti_ent e;
    int k = zti_classify(fd, &e, 1);
    if (!zti_is_ztap(k))
        return -2;
    if (k == ZTI_UDP)
        return zti_fail(EOPNOTSUPP); /* as the kernel says for a datagram socket */
    if (k != ZTI_LISTEN)
        return zti_fail(EINVAL);
    if (flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC))
        return zti_fail(EINVAL);
    if (addr && !len)
        return zti_fail(EFAULT);
    int saved = errno;

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
    ssize_t n = zti_real.recvmsg(fd, &mh, (flags & SOCK_CLOEXEC) ? MSG_CMSG_CLOEXEC : 0);
    if (n < 0)
        return -1; /* EAGAIN, EINTR, ... exactly as the kernel reported them */
    int nfd = -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
        c->cmsg_len >= CMSG_LEN(sizeof(int)))
        memcpy(&nfd, CMSG_DATA(c), sizeof nfd);
    if (n == 0 && nfd < 0)
        return zti_fail(EINVAL); /* accept channel closed: listener shut down or ztapd gone */
    if (nfd < 0)
        return zti_fail((mh.msg_flags & MSG_CTRUNC) ? EMFILE : ECONNABORTED);
    if ((size_t)n != sizeof m || m.magic != ZTRPC_MAGIC) {
        zti_close(nfd);
        zti_log("malformed message on an accept channel, fd ", NULL, NULL, fd, NULL);
        return zti_fail(ECONNABORTED);
    }
    if (flags & SOCK_NONBLOCK) {
        int fl = zti_real.fcntl(nfd, F_GETFL);
        if (fl < 0 || zti_real.fcntl(nfd, F_SETFL, fl | O_NONBLOCK) < 0) {
            int err = errno;
            zti_close(nfd);
            return zti_fail(err);
        }
    }
    struct ztrpc_sockinfo si;
    memset(&si, 0, sizeof si);
    si.proto = IPPROTO_TCP;
    si.state = ZTRPC_STATE_CONNECTED;
    si.local = m.local;
    si.peer = m.peer;
    struct zti_ent ne;
    zti_ent_from_info(&ne, ZTI_TCP, &si, nfd);
    zti_table_put(nfd, &ne);
    if (addr)
        zti_fill_sockaddr(&m.peer, addr, len);
    errno = saved;
    return nfd;
}

/**
 * accept4() - accept a connection (ztap listeners: from the accept channel)
 * Return: new fd or -1 with errno, as accept4(2).
 */
ZTI_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    zti_init_real();
    if (zti_cfg.enabled) {
        int r = zti_accept4(fd, addr, len, flags);
        if (r != -2)
            return r;
    }
    return zti_real.accept4(fd, addr, len, flags);
}

/**
 * accept() - accept a connection (ztap listeners: from the accept channel)
 * Return: new fd or -1 with errno, as accept(2).
 */
ZTI_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    zti_init_real();
    if (zti_cfg.enabled) {
        int r = zti_accept4(fd, addr, len, 0);
        if (r != -2)
            return r;
    }
    return zti_real.accept(fd, addr, len);
}

/**
 * syscall() - pass-through, except SYS_accept/SYS_accept4 (libuv calls accept4 this way)
 * Return: as syscall(2).
 */
ZTI_EXPORT long syscall(long number, ...)
{
    va_list ap;
    va_start(ap, number);
    long a1 = va_arg(ap, long), a2 = va_arg(ap, long), a3 = va_arg(ap, long);
    long a4 = va_arg(ap, long), a5 = va_arg(ap, long), a6 = va_arg(ap, long);
    va_end(ap);
    zti_init_real();
    if (zti_cfg.enabled) {
        int is_accept = number == SYS_accept4;
#ifdef SYS_accept
        is_accept = is_accept || number == SYS_accept;
#endif
        if (is_accept) {
            int r = zti_accept4((int)a1, (struct sockaddr *)a2, (socklen_t *)a3,
                                number == SYS_accept4 ? (int)a4 : 0);
            if (r != -2)
                return r;
        }
    }
    return zti_real.syscall(number, a1, a2, a3, a4, a5, a6);
}

/* ---------------------------------------------------------------------------------------------
 * Names
 */

/**
 * getsockname() - local address; for a ztap socket its address on the network
 * Return: 0 or -1 with errno, as getsockname(2).
 */
ZTI_EXPORT int getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
    zti_init_real();
    struct zti_ent e;
    if (!zti_cfg.enabled || !zti_is_ztap(zti_classify(fd, &e, 1)))
        return zti_real.getsockname(fd, addr, len);
    if (!len || (!addr && *len))
        return zti_fail(EFAULT);
    int saved = errno;
    if (e.local.port == 0 && e.kind != ZTI_LISTEN && zti_refresh(fd, &e) < 0)
        return -1;
    zti_fill_sockaddr(&e.local, addr, len);
    errno = saved;
    return 0;
}

/**
 * getpeername() - peer address; for a ztap socket the real remote address on the network
 * Return: 0 or -1 with errno (ENOTCONN while not connected), as getpeername(2).
 */
ZTI_EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *len)
{
    zti_init_real();
    struct zti_ent e;
    if (!zti_cfg.enabled || !zti_is_ztap(zti_classify(fd, &e, 1)))
        return zti_real.getpeername(fd, addr, len);
    if (!len || (!addr && *len))
        return zti_fail(EFAULT);
    int saved = errno;
    if (e.kind == ZTI_LISTEN)
        return zti_fail(ENOTCONN);
    if (e.state == ZTRPC_STATE_CONNECTED && e.kind == ZTI_TCP) {
        /* A hang-up on the app end means ztapd's end is closed or both directions are shut:
         * the connection may be over (Linux: ENOTCONN then). One poll; ask ztapd only then. */
        struct pollfd p = { .fd = fd, .events = POLLRDHUP };
        if (poll(&p, 1, 0) == 1 && (p.revents & POLLHUP))
            e.state = ZTRPC_STATE_CLOSED;
    }
    if (e.state != ZTRPC_STATE_CONNECTED && zti_refresh(fd, &e) < 0)
        return -1;
    if (e.state != ZTRPC_STATE_CONNECTED)
        return zti_fail(ENOTCONN); /* also once the connection is over, as Linux (TCP_CLOSE) */
    zti_fill_sockaddr(&e.peer, addr, len);
    errno = saved;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Socket options
 */

/* Options that act on the app's AF_UNIX fd itself (timeouts and low-water marks of read/write). */
static int zti_put_int(void *optval, socklen_t *optlen, int v)
{
    if (!optlen)
        return zti_fail(EFAULT);
    if ((int)*optlen < 0)
        return zti_fail(EINVAL);
    socklen_t n = *optlen < sizeof v ? *optlen : (socklen_t)sizeof v;
    if (n && !optval)
        return zti_fail(EFAULT);
    if (n)
        memcpy(optval, &v, n);
    *optlen = n;
    return 0;
}

/**
 * getsockopt() - socket options; for ztap sockets answered locally (SO_TYPE, SO_DOMAIN,
 * SO_PROTOCOL, SO_ACCEPTCONN), natively (timeouts) or by ztapd (everything else, SO_ERROR
 * included)
 * Return: 0 or -1 with errno, as getsockopt(2).
 */
ZTI_EXPORT int getsockopt(int fd, int level, int name, void *optval, socklen_t *optlen)
{
    zti_init_real();
    struct zti_ent e;
    if (!zti_cfg.enabled || !zti_is_ztap(zti_classify(fd, &e, 1)) || zti_native_opt(level, name, e.kind))
        return zti_real.getsockopt(fd, level, name, optval, optlen);
    int saved = errno;
    if (level == SOL_SOCKET) {
        int v = -1;
        switch (name) {
        case SO_TYPE:
            v = e.kind == ZTI_UDP ? SOCK_DGRAM : SOCK_STREAM;
            break;
        case SO_DOMAIN:
            v = AF_INET;
            break;
        case SO_PROTOCOL:
            v = e.kind == ZTI_UDP ? IPPROTO_UDP : IPPROTO_TCP;
            break;
        case SO_ACCEPTCONN:
            v = e.kind == ZTI_LISTEN;
            break;
        }
        if (v >= 0) {
            if (zti_put_int(optval, optlen, v) < 0)
                return -1;
            errno = saved;
            return 0;
        }
    }
    if (!optlen)
        return zti_fail(EFAULT);
    if ((int)*optlen < 0)
        return zti_fail(EINVAL);
    struct ztrpc_sockopt rq;
    /* The reply's value may run past the struct's 16 bytes (ztrpc.h GETSOCKOPT: TCP_INFO). */
    struct {
        struct ztrpc_sockopt o;
        unsigned char more[ZTRPC_MAX_OPTLEN - sizeof rq.value];
    } rs;
    memset(&rq, 0, sizeof rq);
    rq.level = level;
    rq.name = name;
    rq.optlen = *optlen < ZTRPC_MAX_OPTLEN ? *optlen : (uint32_t)ZTRPC_MAX_OPTLEN;
    struct ztrpc_rep_hdr rep;
    int err;
    int is_error = level == SOL_SOCKET && name == SO_ERROR;
    if (zti_rpc(ZTRPC_OP_GETSOCKOPT, &rq, sizeof rq, &fd, 1, &rep, &rs, sizeof rs, ZTI_SHORT_WAIT_MS, 0,
                &err) < 0) {
        if (is_error) {
            /* ztapd is gone, so is the connection: report it as the socket's error. */
            if (zti_put_int(optval, optlen, zti_down_errno(err, ECONNRESET)) < 0)
                return -1;
            errno = saved;
            return 0;
        }
        return zti_fail(zti_down_errno(err, ENETDOWN));
    }
    if (rep.result < 0)
        return zti_fail(rep.err ? rep.err : EIO);
    uint32_t n = rs.o.optlen < ZTRPC_MAX_OPTLEN ? rs.o.optlen : (uint32_t)ZTRPC_MAX_OPTLEN;
    if (n > *optlen)
        n = *optlen;
    if (n && !optval)
        return zti_fail(EFAULT);
    if (n)
        memcpy(optval, (unsigned char *)&rs + offsetof(struct ztrpc_sockopt, value), n);
    *optlen = n;
    if (is_error && e.kind == ZTI_TCP) {
        /* A failed connect left ECONNRESET on the app end itself (ztapd closed its end to make
         * it show POLLERR, ztrpc.h CONNECT): reading SO_ERROR clears it, as it clears the
         * kernel's, so later reads see the end of the connection instead of a stale error. */
        int native;
        socklen_t nl = sizeof native;
        (void)zti_real.getsockopt(fd, SOL_SOCKET, SO_ERROR, &native, &nl);
        if (e.state == ZTRPC_STATE_CONNECTING) {
            /* The outcome may be known now: refresh the cached names and state (best effort). */
            (void)zti_refresh(fd, &e);
        }
    }
    errno = saved;
    return 0;
}

/**
 * setsockopt() - socket options; for ztap sockets forwarded to ztapd (timeouts stay native)
 * Return: 0 or -1 with errno, as setsockopt(2).
 */
ZTI_EXPORT int setsockopt(int fd, int level, int name, const void *optval, socklen_t optlen)
{
    zti_init_real();
    struct zti_ent e;
    if (!zti_cfg.enabled)
        return zti_real.setsockopt(fd, level, name, optval, optlen);
    int saved = errno;
    int k = zti_classify(fd, &e, 1);
    if (!zti_is_ztap(k) || zti_native_opt(level, name, k)) {
        int r = zti_real.setsockopt(fd, level, name, optval, optlen);
        if (r == 0 && !zti_is_ztap(k)) {
            zti_record_opt(fd, level, name, optval, optlen);
            errno = saved;
        }
        return r;
    }
    if ((int)optlen < 0)
        return zti_fail(EINVAL);
    if (optlen && !optval)
        return zti_fail(EFAULT);
    /* Options Linux accepts on any TCP socket whenever optlen holds an int, which apps toggle
     * per response (nginx's tcp_nopush): the answer is known, so do not wait for it. */
    int flags = 0;
    if ((k == ZTI_TCP || k == ZTI_LISTEN) && level == IPPROTO_TCP && optlen >= (socklen_t)sizeof(int) &&
        (name == TCP_NODELAY || name == TCP_CORK || name == TCP_QUICKACK))
        flags = ZTI_RPC_NOREPLY;
    int err;
    if (zti_sockopt_rpc(fd, level, name, optval, optlen, flags, &err) < 0)
        return zti_fail(err == EINTR || err == ETIMEDOUT || err == EMFILE || err == ENFILE || err == ENOBUFS ||
                                err == ENOMEM || err == ENETDOWN
                            ? zti_down_errno(err, ENETDOWN)
                            : err);
    /* Also bound the unix buffers, and make SO_RCVLOWAT act on the fd's own reads. */
    if (level == SOL_SOCKET && (name == SO_RCVBUF || name == SO_SNDBUF || name == SO_RCVLOWAT))
        (void)zti_real.setsockopt(fd, level, name, optval, optlen);
    errno = saved;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * dup family: copy the table entry so the new number is known at once (data path included).
 */

/** dup() - as dup(2); a ztap socket's copy is a ztap socket. */
ZTI_EXPORT int dup(int oldfd)
{
    zti_init_real();
    int r = zti_real.dup(oldfd);
    if (r >= 0)
        zti_copy_entry(oldfd, r);
    return r;
}

/** dup2() - as dup2(2); a ztap socket's copy is a ztap socket. */
ZTI_EXPORT int dup2(int oldfd, int newfd)
{
    zti_init_real();
    int r = zti_real.dup2(oldfd, newfd);
    if (r >= 0 && oldfd != newfd)
        zti_copy_entry(oldfd, r);
    return r;
}

/** dup3() - as dup3(2); a ztap socket's copy is a ztap socket. */
ZTI_EXPORT int dup3(int oldfd, int newfd, int flags)
{
    zti_init_real();
    int r = zti_real.dup3(oldfd, newfd, flags);
    if (r >= 0)
        zti_copy_entry(oldfd, r);
    return r;
}

/**
 * fcntl() - as fcntl(2); the copy made by F_DUPFD/F_DUPFD_CLOEXEC of a ztap socket is one too
 * Return: as fcntl(2).
 */
ZTI_EXPORT int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    /* Every fcntl argument is an int, a long or a pointer: one register wide on Linux ABIs. */
    long arg = va_arg(ap, long);
    va_end(ap);
    zti_init_real();
    int r = zti_real.fcntl(fd, cmd, arg);
    if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) && zti_cfg.enabled) {
        int saved = errno;
        zti_copy_entry(fd, r);
        errno = saved;
    }
    return r;
}

/** fcntl64() - glibc's name for fcntl with 64-bit offsets (the same on 64-bit ABIs). */
ZTI_EXPORT int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    long arg = va_arg(ap, long);
    va_end(ap);
    return fcntl(fd, cmd, arg);
}

/* Mark an AF_UNIX socket the app created itself as "not ztap", so that control calls on it never
 * ask ztapd (it looks exactly like a ztap socket: an unnamed pair). */
static void zti_mark_notztap(int fd)
{
    struct stat st;
    struct zti_ent e;
    if (fstat(fd, &st) < 0)
        return;
    memset(&e, 0, sizeof e);
    e.kind = ZTI_NOTZTAP;
    e.dev = st.st_dev;
    e.ino = st.st_ino;
    zti_table_put(fd, &e);
}

/** socketpair() - as socketpair(2); AF_UNIX pairs are remembered as the app's own. */
ZTI_EXPORT int socketpair(int domain, int type, int protocol, int sv[2])
{
    zti_init_real();
    int r = zti_real.socketpair(domain, type, protocol, sv);
    if (r == 0 && domain == AF_UNIX && zti_cfg.enabled) {
        int saved = errno;
        zti_mark_notztap(sv[0]);
        zti_mark_notztap(sv[1]);
        errno = saved;
    }
    return r;
}
