/* SPDX-License-Identifier: MIT */
/*
 * zti_create.c - making a ztap socket: the creating request (CONNECT, BIND, UDP_OPEN with a new
 * socketpair), the plug that keeps a connecting socket unwritable, and the new pair a socket
 * gets when a failed connect took its own (RENEW). The calls that use them: zti_sock.c.
 */
#include "zti.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

/* IPV6_V6ONLY of a kernel AF_INET6 socket (0 for any other). */
int zti_kernel_v6only(int fd, int domain)
{
    int v = 0, saved = errno;
    socklen_t l = sizeof v;
    if (domain != AF_INET6 || zti_real.getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, &l) < 0)
        v = 0;
    errno = saved;
    return v != 0;
}

/* connect(AF_UNSPEC) / "no address": all zero. */
int zti_addr_is_none(const struct ztrpc_addr *a)
{
    static const uint8_t zero[16];
    return a->port == 0 && memcmp(a->addr, zero, sizeof zero) == 0;
}

/* How long a blocking TCP connect waits: SO_SNDTIMEO if set (then EINPROGRESS), like the
 * kernel, else until ztapd's own connect timeout. */
int zti_connect_timeout(int fd, int *sndtimeo_set)
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
int zti_plug(int fd, struct ztrpc_sock_req *rq, int new_pair)
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
void zti_note_failed_port(int fd, const struct zti_ent *rec, uint16_t port)
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
void zti_fix_state(struct zti_ent *e, uint16_t op, struct ztrpc_addr addr, int installed_err)
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
int zti_create(int fd, uint16_t op, int proto, int domain, struct ztrpc_addr addr,
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
int zti_renew(int fd, struct zti_ent *e)
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
