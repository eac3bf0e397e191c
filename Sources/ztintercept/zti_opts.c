/* SPDX-License-Identifier: MIT */
/*
 * zti_opts.c - socket options of ztap sockets: getsockopt/setsockopt, which calls stay native,
 * the SETSOCKOPT request, and the options an app set on its kernel socket before it became ztap.
 *
 * DOC: Theory of Operation
 *
 * ztapd answers getsockopt/setsockopt of a ztap socket as Linux would (ztrpc.h GETSOCKOPT /
 * SETSOCKOPT). A few options act on the fd's own reads and writes and stay native on the app's
 * end of the socketpair: the timeouts, SO_SNDLOWAT, SO_PEEK_OFF of a TCP socket (MSG_PEEK is
 * native too); SO_RCVLOWAT is applied natively *and* recorded by ztapd, which reads it back
 * with TCP's cap.
 *
 * Options set before interception live on the kernel socket, which the interception replaces.
 * The fixed ones (SO_REUSEADDR, buffers, keepalive, ...) are recorded by value in the fd table
 * entry as they are set (ztrpc_sockopts). For the others the entry only keeps a bit per option
 * of zti_xopts[] ("this was set"); when the socket is created the library reads their current
 * values back from the kernel socket — the kernel has validated and normalised them — and sends
 * them as ztrpc_sockopt records after the creating request, so the stack socket has them before
 * its first segment. More than ZTRPC_MAX_PREOPTS of them (or one longer than 16 bytes) are sent
 * as SETSOCKOPT requests right after the socket exists instead.
 *
 * Limits: the kernel's read-back is what travels, so an option whose read-back differs from what
 * was set (TCP_MAXSEG 0 reads 536; it is sent as 0 again) arrives normalised.
 */
#include "zti.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <netinet/tcp.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/stat.h>


/**
 * zti_native_opt() - is this option handled on the app's fd itself?
 * @level: option level
 * @name: option name
 * @kind: the socket's ZTI_* kind
 *
 * Return: 1 for the timeouts, SO_SNDLOWAT and a TCP socket's SO_PEEK_OFF, else 0.
 */
int zti_native_opt(int level, int name, int kind)
{
    if (level != SOL_SOCKET)
        return 0;
    switch (name) {
    case 20: /* SO_RCVTIMEO_OLD */
    case 21: /* SO_SNDTIMEO_OLD */
    case 66: /* SO_RCVTIMEO_NEW */
    case 67: /* SO_SNDTIMEO_NEW */
    case SO_SNDLOWAT:
        return 1;
    case 42: /* SO_PEEK_OFF: MSG_PEEK is native on a TCP socket's stream */
        return kind == ZTI_TCP;
    }
    return 0;
}

static int zti_xopt_index(int level, int name)
{
    for (int i = 0; i < zti_nxopts; i++)
        if (zti_xopts[i].level == level && zti_xopts[i].name == name)
            return i;
    return -1;
}

/**
 * zti_record_opt() - remember an option set on a kernel AF_INET/AF_INET6 socket, to pass it along if the
 * socket becomes a ztap socket
 * @fd: the kernel socket (the kernel accepted the option)
 * @level: option level
 * @name: option name
 * @optval: value as the app passed it
 * @optlen: its length
 */
void zti_record_opt(int fd, int level, int name, const void *optval, socklen_t optlen)
{
    uint32_t bit = 0;
    if (level == SOL_SOCKET) {
        switch (name) {
        case SO_REUSEADDR: bit = ZTRPC_OPT_REUSEADDR; break;
        case SO_REUSEPORT: bit = ZTRPC_OPT_REUSEPORT; break;
        case SO_KEEPALIVE: bit = ZTRPC_OPT_KEEPALIVE; break;
        case SO_LINGER: bit = ZTRPC_OPT_LINGER; break;
        case SO_RCVBUF: bit = ZTRPC_OPT_RCVBUF; break;
        case SO_SNDBUF: bit = ZTRPC_OPT_SNDBUF; break;
        }
    } else if (level == IPPROTO_TCP) {
        switch (name) {
        case TCP_NODELAY: bit = ZTRPC_OPT_NODELAY; break;
        case TCP_KEEPIDLE: bit = ZTRPC_OPT_KEEPIDLE; break;
        case TCP_KEEPINTVL: bit = ZTRPC_OPT_KEEPINTVL; break;
        case TCP_KEEPCNT: bit = ZTRPC_OPT_KEEPCNT; break;
        }
    }
    int x = bit ? -1 : zti_xopt_index(level, name);
    int carried = zti_carried_opt(level, name);
    if (!bit && x < 0 && !carried)
        return;
    int v = 0;
    struct linger lg = { 0, 0 };
    if (bit) {
        if (!optval)
            return;
        if (bit == ZTRPC_OPT_LINGER) {
            if (optlen < sizeof lg)
                return;
            memcpy(&lg, optval, sizeof lg);
        } else {
            if (optlen < sizeof v)
                return; /* the kernel also accepts shorter values; those are rare, not recorded */
            memcpy(&v, optval, sizeof v);
        }
    }
    struct stat st;
    if (fstat(fd, &st) < 0)
        return;
    struct zti_ent e;
    if (zti_table_get(fd, &e) != ZTI_INET || e.dev != (uint64_t)st.st_dev || e.ino != (uint64_t)st.st_ino ||
        !e.family) {
        /* No entry (or one from before the family was kept): ask the kernel once. */
        int dom, type, prot;
        if (zti_socket_type(fd, &dom, &type, &prot) < 0 || (dom != AF_INET && dom != AF_INET6))
            return;
        memset(&e, 0, sizeof e);
        e.kind = ZTI_INET;
        e.family = (uint8_t)dom;
        e.proto = type == SOCK_STREAM && prot == IPPROTO_TCP ? IPPROTO_TCP
                  : type == SOCK_DGRAM && prot == IPPROTO_UDP ? IPPROTO_UDP : 0;
        e.dev = st.st_dev;
        e.ino = st.st_ino;
    }
    if (level == IPPROTO_IPV6 && e.family != AF_INET6)
        return;
    if (carried) {
        /* Now the replacement must take its value over (zti_install_known). */
        e.fresh = 0;
        if (x < 0) {
            zti_table_put(fd, &e);
            return;
        }
    }
    if (x >= 0) {
        e.xopts[x / 64] |= 1ull << (x % 64);
        zti_table_put(fd, &e);
        return;
    }
    e.opts.mask |= bit;
    switch (bit) {
    case ZTRPC_OPT_REUSEADDR:
    case ZTRPC_OPT_REUSEPORT:
    case ZTRPC_OPT_KEEPALIVE:
    case ZTRPC_OPT_NODELAY:
        e.opts.bools = v ? (e.opts.bools | bit) : (e.opts.bools & ~bit);
        break;
    case ZTRPC_OPT_LINGER:
        e.opts.linger_onoff = lg.l_onoff;
        e.opts.linger_secs = lg.l_linger;
        break;
    case ZTRPC_OPT_RCVBUF: e.opts.rcvbuf = v; break;
    case ZTRPC_OPT_SNDBUF: e.opts.sndbuf = v; break;
    case ZTRPC_OPT_KEEPIDLE: e.opts.keepidle = v; break;
    case ZTRPC_OPT_KEEPINTVL: e.opts.keepintvl = v; break;
    case ZTRPC_OPT_KEEPCNT: e.opts.keepcnt = v; break;
    }
    zti_table_put(fd, &e);
}

/* The options zti_install_known() carries from the kernel socket to its replacement. */
int zti_carried_opt(int level, int name)
{
    /* The timeouts under both numbers (20/21 _OLD, 66/67 _NEW), as zti_native_opt. */
    return level == SOL_SOCKET && (name == 20 || name == 21 || name == 66 || name == 67 ||
                                   name == SO_RCVLOWAT || name == SO_PEEK_OFF || name == SO_BROADCAST);
}

/**
 * zti_preopts_collect() - read the options recorded as set from the kernel socket
 * @fd: the kernel socket, before it is replaced
 * @rec: its fd table entry (may be NULL: nothing recorded)
 * @out: the options in zti_xopts[] order, values as the kernel reads them back
 */
void zti_preopts_collect(int fd, const struct zti_ent *rec, struct zti_preopts *out)
{
    out->n = 0;
    if (!rec)
        return;
    int saved = errno;
    for (int i = 0; i < zti_nxopts; i++) {
        if (!(rec->xopts[i / 64] & (1ull << (i % 64))))
            continue;
        struct zti_preopt *p = &out->o[out->n];
        socklen_t len = sizeof p->value;
        memset(p, 0, sizeof *p);
        if (zti_real.getsockopt(fd, zti_xopts[i].level, zti_xopts[i].name, p->value, &len) < 0)
            continue;
        p->level = zti_xopts[i].level;
        p->name = zti_xopts[i].name;
        p->len = len;
        if (p->level == IPPROTO_TCP && p->name == TCP_MAXSEG && len == sizeof(int)) {
            int v;
            memcpy(&v, p->value, sizeof v);
            if (v == 536) /* TCP_MSS_DEFAULT: what an unset (or reset) TCP_MAXSEG reads */
                memset(p->value, 0, sizeof v);
        }
        out->n++;
    }
    errno = saved;
}

/**
 * zti_sockopt_rpc() - SETSOCKOPT a ztap socket
 * @fd: the ztap socket
 * @e: its entry (NULL: not at hand); with a secret from ztapd, a one-way option names the socket
 *     by reference over the channel (ztrpc.h "References") and passes no fd
 * @level, @name, @optval, @optlen: as setsockopt(2) got them (optlen >= 0)
 * @flags: 0, or ZTI_RPC_NOREPLY for the options Linux always accepts (ztrpc.h)
 * @err: set to the errno when the result is -1
 *
 * Return: 0, or -1 with *err (ztapd's answer, or an ENETDOWN-class errno if it is unreachable).
 */
int zti_sockopt_rpc(int fd, const struct zti_ent *e, int level, int name, const void *optval, socklen_t optlen,
                    int flags, int *err)
{
    /* The value runs past the struct when longer than its 16 bytes (ztrpc.h SETSOCKOPT). */
    struct {
        struct ztrpc_sockopt o;
        unsigned char more[ZTRPC_MAX_OPTLEN - sizeof(((struct ztrpc_sockopt *)0)->value)];
    } rq;
    uint32_t n = optlen < ZTRPC_MAX_OPTLEN ? (uint32_t)optlen : (uint32_t)ZTRPC_MAX_OPTLEN;
    memset(&rq, 0, sizeof rq);
    rq.o.level = level;
    rq.o.name = name;
    rq.o.optlen = (uint32_t)optlen;
    if (n && optval)
        memcpy(rq.o.value, optval, n);
    uint32_t blen = (uint32_t)sizeof rq.o + (n > sizeof rq.o.value ? n - (uint32_t)sizeof rq.o.value : 0);
    struct ztrpc_rep_hdr rep;
    int rerr;
    if ((flags & ZTI_RPC_NOREPLY) && e && e->secret != 0 && n <= sizeof rq.o.value) {
        /* The reference follows the option; without the channel, the request below passes the fd. */
        struct ztrpc_sockref ref = { .dev = e->dev, .ino = e->ino, .secret = e->secret };
        memcpy(rq.more, &ref, sizeof ref);
        if (zti_rpc(ZTRPC_OP_SETSOCKOPT, &rq, (uint32_t)(sizeof rq.o + sizeof ref), NULL, 0, &rep, NULL, 0, 0,
                    flags | ZTI_RPC_CHANNEL_ONLY, &rerr) == 0)
            return 0;
        memset(rq.more, 0, sizeof ref);
    }
    if (zti_rpc(ZTRPC_OP_SETSOCKOPT, &rq, blen, &fd, 1, &rep, NULL, 0, 10 * 1000, flags, &rerr) < 0) {
        *err = rerr;
        return -1;
    }
    if (rep.result < 0) {
        *err = rep.err ? rep.err : EIO;
        return -1;
    }
    return 0;
}

/**
 * zti_preopts_replay() - send the collected options the creating request had no room for
 * @fd: the new ztap socket
 * @p: collected options
 * @from: index of the first one not packed
 */
void zti_preopts_replay(int fd, const struct zti_preopts *p, int from)
{
    int saved = errno;
    for (int i = from; i < p->n; i++) {
        int err;
        if (zti_sockopt_rpc(fd, NULL, p->o[i].level, p->o[i].name, p->o[i].value, p->o[i].len, 0, &err) < 0)
            zti_dbg("option set before interception not accepted by ztapd, errno ", NULL, NULL, err, NULL);
    }
    errno = saved;
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
 * SO_PROTOCOL, SO_ACCEPTCONN, IPV6_V6ONLY), natively (timeouts) or by ztapd (everything else, SO_ERROR
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
            v = e.family;
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
    if (level == IPPROTO_IPV6 && name == IPV6_V6ONLY && e.family == AF_INET6) {
        /* Fixed for the socket's life once it is ours (set from the kernel socket). */
        if (zti_put_int(optval, optlen, e.v6only) < 0)
            return -1;
        errno = saved;
        return 0;
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
    if (is_error && e.kind == ZTI_TCP && zti_tcp_quiet(fd, &e)) {
        if (zti_put_int(optval, optlen, 0) < 0)
            return -1;
        errno = saved;
        return 0;
    }
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
 * zti_tcp_read_error() - the errno for a native read of a ztap TCP socket that failed ECONNRESET
 * @fd: the socket
 *
 * That error is the unix socket's, left once on the app end when ztapd closes its end with
 * bytes unread, which it does when the connection ends in an error (ztrpc.h CONNECT). Linux's
 * read reports the connection's own error and clears it (ECONNREFUSED after a refused connect,
 * ETIMEDOUT, ...): so does this, asking ztapd for it (SO_ERROR, which clears it there).
 *
 * Return: the errno to report (ECONNRESET when ztapd has nothing else to say).
 */
int zti_tcp_read_error(int fd)
{
    struct zti_ent e;
    if (!zti_cfg.enabled || zti_classify(fd, &e, 0) != ZTI_TCP)
        return ECONNRESET;
    struct ztrpc_sockopt rq, rs;
    memset(&rq, 0, sizeof rq);
    rq.level = SOL_SOCKET;
    rq.name = SO_ERROR;
    rq.optlen = sizeof(int);
    struct ztrpc_rep_hdr rep;
    int err, v = 0;
    if (zti_rpc(ZTRPC_OP_GETSOCKOPT, &rq, sizeof rq, &fd, 1, &rep, &rs, sizeof rs, ZTI_SHORT_WAIT_MS, 0, &err) < 0 ||
        rep.result < 0)
        return ECONNRESET;
    memcpy(&v, rs.value, sizeof v);
    return v > 0 ? v : ECONNRESET;
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
    if (zti_sockopt_rpc(fd, &e, level, name, optval, optlen, flags, &err) < 0)
        return zti_fail(err == EINTR || err == ETIMEDOUT || err == EMFILE || err == ENFILE || err == ENOBUFS ||
                                err == ENOMEM || err == ENETDOWN
                            ? zti_down_errno(err, ENETDOWN)
                            : err);
    /* Also bound the unix buffers, make SO_RCVLOWAT act on the fd's own reads, and keep
     * SO_BROADCAST where the library's UDP sends look for it (zti_broadcast_denied). */
    if (level == SOL_SOCKET &&
        (name == SO_RCVBUF || name == SO_SNDBUF || name == SO_RCVLOWAT || name == SO_BROADCAST))
        (void)zti_real.setsockopt(fd, level, name, optval, optlen);
    errno = saved;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * ioctl
 */

/**
 * ioctl() - as ioctl(2); the socket queue ioctls of a ztap socket answer as Linux's would
 *
 * Most work natively on the app end (FIONREAD/SIOCOUTQ of a TCP socket's stream, FIONBIO).
 * Those that differ: a listener has no queues (EINVAL, tcp_ioctl); SIOCOUTQNSD, unknown to
 * AF_UNIX, is what ztapd has not taken yet (none of it can have been sent); a UDP socket's
 * FIONREAD is the next datagram's payload, not the whole queue with the message headers.
 * Return: as ioctl(2).
 */
ZTI_EXPORT int ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    va_start(ap, req);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    zti_init_real();
    int k = zti_hot_kind(fd);
    if (k == ZTI_NONE || !zti_cfg.enabled ||
        (req != SIOCINQ && req != SIOCOUTQ && req != SIOCOUTQNSD && req != SIOCATMARK))
        return zti_real.ioctl(fd, req, arg);
    struct zti_ent e;
    k = zti_classify(fd, &e, 1);
    if (k == ZTI_LISTEN) {
        if (req != SIOCATMARK)
            return zti_fail(EINVAL);
        if (!arg)
            return zti_fail(EFAULT);
        *(int *)arg = 0;
        return 0;
    }
    if (k == ZTI_TCP && req == SIOCOUTQNSD)
        return zti_real.ioctl(fd, SIOCOUTQ, arg);
    if (k == ZTI_UDP && req == SIOCINQ) {
        if (!arg)
            return zti_fail(EFAULT);
        int saved = errno;
        struct ztrpc_dgram h;
        ssize_t n;
        do
            n = zti_real.recv(fd, &h, sizeof h, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
        *(int *)arg = n > (ssize_t)sizeof h ? (int)(n - (ssize_t)sizeof h) : 0;
        errno = saved;
        return 0;
    }
    return zti_real.ioctl(fd, req, arg);
}
