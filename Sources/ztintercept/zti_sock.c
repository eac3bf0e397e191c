/* SPDX-License-Identifier: MIT */
/*
 * zti_sock.c - socket, connect, bind, listen: the control calls (names: zti_names.c; accept:
 * zti_accept.c; dup: zti_fd.c; getsockopt/setsockopt: zti_opts.c).
 *
 * A kernel AF_INET or AF_INET6 socket becomes a ztap socket at the first connect/bind/sendto
 * whose address belongs to the network (an IPv4 one given to an AF_INET6 socket as
 * ::ffff:a.b.c.d too): the library creates a socketpair, hands ztapd its end (and the app end,
 * for identity) in the request, and on success dup3()s the app end onto the app's fd number. On
 * failure the app's fd is untouched. Options the app set on the kernel socket beforehand were
 * recorded by setsockopt() and travel with the creating request (zti_opts.c).
 */
#include "zti.h"

#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/syscall.h>


int zti_is_ztap(int kind)
{
    return kind == ZTI_TCP || kind == ZTI_LISTEN || kind == ZTI_UDP;
}

/* errno for an RPC that could not reach ztapd, per operation (see docs/INTERCEPT.md). */
int zti_down_errno(int err, int fallback)
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

/* Kernel socket kind usable for interception: 1 TCP, 2 UDP, 0 other; its family in *domain. */
static int zti_inet_kind(int fd, int *proto, int *domain)
{
    int dom, type, prot;
    if (zti_socket_type(fd, &dom, &type, &prot) < 0 || (dom != AF_INET && dom != AF_INET6))
        return 0;
    *domain = dom;
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

/* zti_inet_kind() from a valid ZTI_INET entry that knows the answer (k: zti_classify's), else
 * from the kernel. */
static int zti_inet_kind_of(int fd, const struct zti_ent *e, int k, int *proto, int *domain)
{
    if (k == ZTI_INET && (e->family == AF_INET || e->family == AF_INET6) &&
        (e->proto == IPPROTO_TCP || e->proto == IPPROTO_UDP)) {
        *proto = e->proto;
        *domain = e->family;
        return e->proto == IPPROTO_TCP ? 1 : 2;
    }
    return zti_inet_kind(fd, proto, domain);
}

/**
 * socket() - create a socket; a TCP or UDP one over IPv4/IPv6 is noted in the fd table
 * @domain, @type, @protocol: as socket(2)
 *
 * The entry (ZTI_INET, fresh) spares its first connect or bind the questions a kernel socket
 * of unknown origin needs (family, type, protocol, the options to carry over): one fstat here
 * instead of about ten calls there. Sockets made any other way just go the long way.
 *
 * Return: the fd, or -1 with errno, as socket(2).
 */
ZTI_EXPORT int socket(int domain, int type, int protocol)
{
    zti_init_real();
    int fd = zti_real.socket(domain, type, protocol);
    if (fd < 0 || !zti_cfg.enabled || (domain != AF_INET && domain != AF_INET6))
        return fd;
    int base = type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC);
    int proto = base == SOCK_STREAM && (protocol == 0 || protocol == IPPROTO_TCP) ? IPPROTO_TCP
                : base == SOCK_DGRAM && (protocol == 0 || protocol == IPPROTO_UDP) ? IPPROTO_UDP : 0;
    if (!proto)
        return fd;
    int saved = errno;
    struct stat st;
    if (fstat(fd, &st) == 0) {
        struct zti_ent e;
        memset(&e, 0, sizeof e);
        e.kind = ZTI_INET;
        e.family = (uint8_t)domain;
        e.proto = (uint8_t)proto;
        e.fresh = 1;
        e.dev = st.st_dev;
        e.ino = st.st_ino;
        zti_table_put(fd, &e);
    }
    errno = saved;
    return fd;
}

/* IPV6_V6ONLY of a kernel AF_INET6 socket (0 for any other). */
static int zti_kernel_v6only(int fd, int domain)
{
    int v = 0, saved = errno;
    socklen_t l = sizeof v;
    if (domain != AF_INET6 || zti_real.getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, &l) < 0)
        v = 0;
    errno = saved;
    return v != 0;
}

/* connect(AF_UNSPEC) / "no address": all zero. */
static int zti_addr_is_none(const struct ztrpc_addr *a)
{
    static const uint8_t zero[16];
    return a->port == 0 && memcmp(a->addr, zero, sizeof zero) == 0;
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

int zti_fail(int err)
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
 * @new_pair: @fd is a socketpair end made just now (its SO_SNDBUF is the default)
 *
 * A socketpair end is writable at once, but a connecting TCP socket is not: POLLOUT must mean
 * "the outcome is known". The app end's send buffer is shrunk to the minimum and filled; ztapd
 * restores the buffer at the outcome (which wakes pollers) and drops exactly the filler bytes on
 * success (ztrpc.h, CONNECT). The filler is a few KiB: one send that comes back short.
 *
 * Return: 0, or -1 with errno (the socket is then left as it was).
 */
static int zti_plug(int fd, struct ztrpc_sock_req *rq, int new_pair)
{
    /* More than the smallest send buffer holds (SOCK_MIN_SNDBUF, ~4.5 KiB): the first send
     * comes back short, which says "full" without a second send to see EAGAIN. */
    static const char pad[8192];
    /* A new socketpair end's SO_SNDBUF is net.core.wmem_default: read once per process. An
     * existing app end's may have been set by the app (setsockopt mirrors SO_SNDBUF on it). */
    static atomic_int pair_sndbuf;
    int orig = new_pair ? atomic_load_explicit(&pair_sndbuf, memory_order_relaxed) : 0;
    if (orig <= 0) {
        socklen_t l = sizeof orig;
        if (zti_real.getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &orig, &l) < 0)
            return -1;
        if (new_pair)
            atomic_store_explicit(&pair_sndbuf, orig, memory_order_relaxed);
    }
    int tiny = 0;
    if (zti_real.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &tiny, sizeof tiny) < 0)
        return -1;
    uint32_t total = 0;
    while (total < (1u << 20)) {
        /* Non-blocking: a short count means the buffer filled (no signal interrupts it). */
        ssize_t n = zti_real.send(fd, pad, sizeof pad, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* EAGAIN: plugged */
        total += (uint32_t)n;
        if ((size_t)n < sizeof pad)
            break;
    }
    rq->filler = total;
    rq->sndbuf = orig / 2; /* setsockopt doubles what it is given */
    return 0;
}

/* A blocking TCP connect that failed (refused, unreachable): Linux's socket keeps showing the
 * ephemeral port it had taken (getsockname ANY:eph: the address is reset, the port number is not,
 * though the port itself is released). The app keeps its kernel socket, so the library remembers
 * the port in the kernel socket's entry (local, address all zero) for getsockname. */
static void zti_note_failed_port(int fd, const struct zti_ent *rec, uint16_t port)
{
    struct stat st;
    if (!port || fstat(fd, &st) < 0)
        return;
    struct zti_ent e;
    if (rec && rec->kind == ZTI_INET && rec->dev == (uint64_t)st.st_dev && rec->ino == (uint64_t)st.st_ino) {
        e = *rec;
    } else {
        memset(&e, 0, sizeof e);
        e.kind = ZTI_INET;
        e.dev = st.st_dev;
        e.ino = st.st_ino;
    }
    memset(&e.local, 0, sizeof e.local);
    e.local.port = port;
    zti_table_put(fd, &e);
}

/* The state an answered request implies, whatever the reply body said (a terse daemon may send
 * an empty one): the cache must never claim less than the app was told. */
static void zti_fix_state(struct zti_ent *e, uint16_t op, struct ztrpc_addr addr, int installed_err)
{
    int dissolve = zti_addr_is_none(&addr);
    if (op == ZTRPC_OP_CONNECT) {
        if (e->kind == ZTI_UDP) {
            e->state = dissolve ? ZTRPC_STATE_BOUND : ZTRPC_STATE_CONNECTED;
            if (dissolve)
                memset(&e->peer, 0, sizeof e->peer);
            else
                e->peer = addr;
        } else if (dissolve) {
            /* connect(AF_UNSPEC): unconnected again (ztapd's reply says bound or unbound). */
            if (e->state == ZTRPC_STATE_CONNECTED || e->state == ZTRPC_STATE_CONNECTING)
                e->state = ZTRPC_STATE_BOUND;
            memset(&e->peer, 0, sizeof e->peer);
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
 * @domain: the socket's family, AF_INET or AF_INET6
 * @addr: destination or local address
 * @rec: the kernel socket's fd table entry with the options recorded on it (may be NULL)
 * @e: filled with the new entry on success (also with EINPROGRESS/EINTR for CONNECT)
 * @down: errno to report when ztapd is unreachable
 *
 * Return: 0 on success; -1 with errno (EINPROGRESS and EINTR leave the socket installed).
 */
static int zti_create(int fd, uint16_t op, int proto, int domain, struct ztrpc_addr addr,
                      const struct zti_ent *rec, struct zti_ent *e, int down)
{
    int fl = zti_real.fcntl(fd, F_GETFL);
    if (fl < 0)
        return -1;
    int nonblock = (fl & O_NONBLOCK) != 0;
    int sv[2];
    /* Made with the app socket's O_NONBLOCK, so installing it needs no fcntl. */
    int type = (proto == IPPROTO_TCP ? SOCK_STREAM : SOCK_SEQPACKET) | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0);
    if (zti_real.socketpair(AF_UNIX, type, 0, sv) < 0)
        return -1;

    struct ztrpc_sock_req rq;
    memset(&rq, 0, sizeof rq);
    rq.addr = addr;
    rq.proto = (uint8_t)proto;
    rq.family = (uint8_t)domain;
    int v6only = zti_kernel_v6only(fd, domain);
    rq.flags = ZTRPC_F_NEW | (op == ZTRPC_OP_CONNECT && nonblock ? ZTRPC_F_NONBLOCK : 0) |
               (v6only ? ZTRPC_F_V6ONLY : 0);
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

    if (op == ZTRPC_OP_CONNECT && proto == IPPROTO_TCP && zti_plug(sv[0], &rq, 1) < 0) {
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
            si.family = (uint8_t)domain;
            installed_err = err == EINTR ? EINTR : EINPROGRESS;
        } else {
            zti_close(sv[0]);
            zti_dbg("ztapd request failed, errno ", NULL, NULL, err, NULL);
            return zti_fail(zti_down_errno(err, down));
        }
    } else if (rep.result < 0) {
        if (rep.err != EINPROGRESS) {
            zti_close(sv[0]);
            if (op == ZTRPC_OP_CONNECT && proto == IPPROTO_TCP)
                zti_note_failed_port(fd, rec, si.local.port);
            return zti_fail(rep.err ? rep.err : EIO);
        }
        installed_err = EINPROGRESS;
    }

    /* A UDP socket shut down for reading before it was ours (Linux records a shutdown even on
     * an unconnected socket, and says ENOTCONN): carried over below. */
    uint8_t kshut = 0;
    if (proto == IPPROTO_UDP) {
        struct pollfd p = { .fd = fd, .events = POLLRDHUP };
        int saved = errno;
        if (poll(&p, 1, 0) == 1 && (p.revents & POLLRDHUP))
            kshut = (p.revents & POLLHUP) ? ZTI_SHUT_RD | ZTI_SHUT_WR : ZTI_SHUT_RD;
        errno = saved;
    }
    int ir = zti_install_known(fd, sv[0], rec && rec->kind == ZTI_INET && rec->fresh);
    if (ir < 0) {
        zti_close(sv[0]);
        return zti_fail(-ir);
    }
    zti_ent_from_info(e, proto == IPPROTO_UDP ? ZTI_UDP : ZTI_TCP, &si, fd);
    e->proto = (uint8_t)proto;
    e->family = (uint8_t)domain; /* what the app created, whatever a terse reply said */
    e->v6only = (uint8_t)v6only;
    zti_fix_state(e, op, addr, installed_err);
    zti_table_put(fd, e);
    if (kshut)
        zti_udp_shut(fd, e, kshut);
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
    int proto, domain;
    if (!zti_inet_kind_of(fd, &old, valid ? ZTI_INET : ZTI_NONE, &proto, &domain) || proto != IPPROTO_UDP)
        return zti_fail(EBADF);
    struct ztrpc_addr any;
    memset(&any, 0, sizeof any);
    return zti_create(fd, ZTRPC_OP_UDP_OPEN, IPPROTO_UDP, domain, any, valid ? &old : NULL, e,
                      ENETUNREACH);
}

/* Refresh an entry from ztapd (GETNAME). Return: 0 or -1 with errno. */
int zti_refresh(int fd, struct zti_ent *e)
{
    struct ztrpc_rep_hdr rep;
    struct ztrpc_sockinfo si;
    int err;
    if (zti_rpc(ZTRPC_OP_GETNAME, NULL, 0, &fd, 1, &rep, &si, sizeof si, ZTI_SHORT_WAIT_MS, 0, &err) < 0)
        return zti_fail(zti_down_errno(err, ENOTCONN));
    if (rep.result < 0)
        return zti_fail(rep.err ? rep.err : EIO);
    int kind = e->kind;
    uint8_t family = e->family, v6only = e->v6only;
    zti_ent_from_info(e, kind, &si, fd);
    if (!si.family) {
        e->family = family; /* a reply without the family: keep what we knew */
        e->v6only = v6only;
    }
    zti_table_put(fd, e);
    return 0;
}

/**
 * zti_renew() - give a TCP socket a new data socketpair (RENEW)
 * @fd: the app's fd, a ztap TCP socket whose pair ztapd closed at a failed connect (its
 *      CONNECT answered ZTRPC_E_RENEW)
 * @e: its entry; refreshed on success
 *
 * Linux lets a socket whose connect failed connect again; under ztap its pair died with the
 * failure, so a new one replaces it (the options and the binding stay in ztapd). The unix
 * buffer sizes the app set are mirrored on the app end: carried over like the fd's own options.
 *
 * Return: 0, or -1 with errno (the fd is then left as it was).
 */
static int zti_renew(int fd, struct zti_ent *e)
{
    int fl = zti_real.fcntl(fd, F_GETFL);
    if (fl < 0)
        return -1;
    int sv[2];
    if (zti_real.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | ((fl & O_NONBLOCK) ? SOCK_NONBLOCK : 0), 0, sv) < 0)
        return -1;
    static const int bufs[] = { SO_RCVBUF, SO_SNDBUF };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        int v = 0;
        socklen_t l = sizeof v;
        if (zti_real.getsockopt(fd, SOL_SOCKET, bufs[i], &v, &l) == 0 && (v /= 2) > 0)
            (void)zti_real.setsockopt(sv[0], SOL_SOCKET, bufs[i], &v, sizeof v);
    }
    int fds[3] = { fd, sv[1], sv[0] };
    struct ztrpc_rep_hdr rep;
    struct ztrpc_sockinfo si;
    int err;
    int r = zti_rpc(ZTRPC_OP_RENEW, NULL, 0, fds, 3, &rep, &si, sizeof si, ZTI_SHORT_WAIT_MS, 0, &err);
    zti_close(sv[1]);
    if (r < 0 || rep.result < 0) {
        zti_close(sv[0]);
        return zti_fail(r < 0 ? zti_down_errno(err, ECONNREFUSED) : rep.err ? rep.err : EIO);
    }
    int ir = zti_install_known(fd, sv[0], 0);
    if (ir < 0) {
        zti_close(sv[0]);
        return zti_fail(-ir);
    }
    uint8_t proto = e->proto, family = e->family, v6only = e->v6only;
    zti_ent_from_info(e, ZTI_TCP, &si, fd);
    e->proto = proto;
    e->family = family;
    e->v6only = v6only;
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
    if (fam != AF_INET && fam != AF_INET6 && fam != AF_UNSPEC) {
        /* Other families are refused like the kernel refuses them on an inet socket. */
        if (zti_hot_kind(fd) != ZTI_NONE && zti_is_ztap(zti_classify(fd, &e, 0)))
            return zti_fail(EAFNOSUPPORT);
        return zti_real.connect(fd, addr, len);
    }

    int k = zti_classify(fd, &e, 1);
    if (zti_is_ztap(k)) {
        if (k == ZTI_LISTEN)
            return zti_fail(EISCONN);
        struct ztrpc_sock_req rq;
        memset(&rq, 0, sizeof rq);
        /* An AF_INET6 UDP socket also takes a sockaddr_in (Linux sends it over IPv4). */
        int aerr = zti_addr_from_sockaddr(e.family, addr, len, k == ZTI_UDP, &rq.addr);
        if (aerr && k == ZTI_TCP && e.state == ZTRPC_STATE_CONNECTED)
            return zti_fail(EISCONN); /* Linux looks at the state before the address */
        if (aerr && k == ZTI_TCP && e.state == ZTRPC_STATE_CONNECTING)
            return zti_fail(EALREADY);
        if (aerr)
            return zti_fail(aerr);
        if (k == ZTI_UDP && e.v6only && fam == AF_INET)
            return zti_fail(EAFNOSUPPORT);
        if (k == ZTI_UDP && (aerr = zti_broadcast_denied(fd, &rq.addr)))
            return zti_fail(aerr);
        int fl = zti_real.fcntl(fd, F_GETFL);
        int nonblock = fl >= 0 && (fl & O_NONBLOCK);
        int renewed = 0;
    again:
        rq.proto = e.proto;
        rq.family = e.family;
        rq.flags = (nonblock ? ZTRPC_F_NONBLOCK : 0) | (e.v6only ? ZTRPC_F_V6ONLY : 0);
        /* Only a connect that will start a handshake is plugged; ztapd unplugs on any answer. */
        if (k == ZTI_TCP && fam != AF_UNSPEC &&
            (e.state == ZTRPC_STATE_UNBOUND || e.state == ZTRPC_STATE_BOUND) && zti_plug(fd, &rq, 0) < 0)
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
        if (rep.result < 0 && rep.err == ZTRPC_E_RENEW) {
            /* A failed connect took the socket's pair: a new one, then the connect again. The
             * dead end's buffer, shrunk if it was plugged, is what the new one inherits. */
            if (rq.sndbuf > 0)
                (void)zti_real.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &rq.sndbuf, sizeof rq.sndbuf);
            if (renewed || zti_renew(fd, &e) < 0)
                return zti_fail(renewed ? EIO : errno);
            renewed = 1;
            rq.filler = 0;
            rq.sndbuf = 0;
            goto again;
        }
        if (rep.result == 0 || rep.err == EINPROGRESS) {
            uint8_t proto = e.proto, family = e.family, v6only = e.v6only;
            zti_ent_from_info(&e, k, &si, fd);
            e.proto = proto;
            e.family = family;
            e.v6only = v6only;
            zti_fix_state(&e, ZTRPC_OP_CONNECT, rq.addr, rep.result == 0 ? 0 : EINPROGRESS);
            zti_table_put(fd, &e);
        }
        if (rep.result < 0)
            return zti_fail(rep.err ? rep.err : EIO);
        errno = saved;
        return 0;
    }
    /* A kernel socket: the address (read as its own family says, cheap) decides first; the
     * socket's kind and family are asked only for a destination on the network. */
    struct ztrpc_addr dst;
    if (fam == AF_UNSPEC || zti_addr_from_sockaddr(fam, addr, len, 0, &dst) != 0 || !zti_dest_selected(&dst))
        return zti_real.connect(fd, addr, len);
    int proto, domain;
    if (!zti_inet_kind_of(fd, &e, k, &proto, &domain) || (domain != fam && !zti_v4_on_v6(domain, fam, proto)))
        return zti_real.connect(fd, addr, len);
    /* An IPV6_V6ONLY socket cannot reach IPv4: the kernel says so (ENETUNREACH). */
    if (zti_addr_is_v4(&dst) && zti_kernel_v6only(fd, domain))
        return zti_real.connect(fd, addr, len);
    int berr;
    if (proto == IPPROTO_UDP && (berr = zti_broadcast_denied(fd, &dst)))
        return zti_fail(berr);
    if (zti_create(fd, ZTRPC_OP_CONNECT, proto, domain, dst, k == ZTI_INET ? &e : NULL,
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
    if (!zti_cfg.enabled || !addr || len < sizeof(sa_family_t) ||
        (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
        return zti_real.bind(fd, addr, len);
    int saved = errno;
    int fam = addr->sa_family;
    struct ztrpc_addr local;
    if (zti_addr_from_sockaddr(fam, addr, len, 0, &local) != 0)
        return zti_real.bind(fd, addr, len);
    struct zti_ent e;
    int k = zti_classify(fd, &e, 1);
    if (zti_is_ztap(k))
        return zti_fail(EINVAL); /* already bound, as the kernel says */
    int proto, domain;
    if (!zti_bind_selected(&local) || !zti_inet_kind_of(fd, &e, k, &proto, &domain) || domain != fam)
        return zti_real.bind(fd, addr, len);
    /* A v4-mapped address on an IPV6_V6ONLY socket: the kernel's EINVAL. */
    if (zti_addr_is_v4(&local) && domain == AF_INET6 && zti_kernel_v6only(fd, domain))
        return zti_real.bind(fd, addr, len);
    if (zti_create(fd, ZTRPC_OP_BIND, proto, domain, local, k == ZTI_INET ? &e : NULL, &e,
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
