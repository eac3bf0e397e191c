/* SPDX-License-Identifier: MIT */
/*
 * zti_udp.c - the data path of intercepted datagram sockets.
 *
 * An intercepted UDP socket is the app end of a SOCK_SEQPACKET socketpair; every message on it
 * is a struct ztrpc_dgram (24 bytes: address + port, IPv4 v4-mapped) followed by the payload: the
 * destination when the app sends, the source when it receives (shown as the socket's family
 * shows it: an AF_INET6 socket sees an IPv4 source as ::ffff:a.b.c.d). The send and receive
 * calls below add or strip that prefix with an extra iovec (no copy) and report only the payload
 * length. For every other fd they cost one byte load (zti_maybe_udp) before the real call, except
 * sendto/sendmsg to an inet destination, which must check whether it belongs to the network.
 */
#include "zti.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

/* Largest UDP payload over IPv4 and over IPv6 (whose payload length excludes its header). */
#define ZTI_UDP_MAX 65507
#define ZTI_UDP6_MAX 65527
/* Flags that mean something on the AF_UNIX message socket. */
#define ZTI_SEND_FLAGS (MSG_DONTWAIT)
#define ZTI_RECV_FLAGS (MSG_DONTWAIT | MSG_PEEK | MSG_TRUNC | MSG_CMSG_CLOEXEC)

static ssize_t zti_fail_ss(int err)
{
    errno = err;
    return -1;
}

/**
 * zti_udp_sendmsg() - send one datagram on an intercepted UDP socket
 * @fd: the socket
 * @e: its table entry
 * @msg: as sendmsg(2); msg_name is the destination or NULL for the connected peer; msg_control
 *       is ignored (IP_PKTINFO and friends are not supported)
 * @flags: MSG_DONTWAIT is honoured, other flags are accepted and ignored
 *
 * Return: payload bytes sent, or -1 with errno (EDESTADDRREQ, EMSGSIZE, EAGAIN, ENETDOWN when
 * ztapd closed the socket).
 */
ssize_t zti_udp_sendmsg(int fd, const struct zti_ent *e, const struct msghdr *msg, int flags)
{
    struct ztrpc_dgram h;
    memset(&h, 0, sizeof h);
    if (msg->msg_name && msg->msg_namelen) {
        const struct sockaddr *sa = msg->msg_name;
        if (msg->msg_namelen < sizeof(sa_family_t))
            return zti_fail_ss(EINVAL);
        sa_family_t f = sa->sa_family;
        if (f != AF_UNSPEC) {
            /* An AF_INET6 socket also sends to a sockaddr_in, over IPv4, unless IPV6_V6ONLY
             * (Linux: ENETUNREACH); another family: EAFNOSUPPORT (an AF_INET6 socket: EINVAL). */
            if (e->family == AF_INET6 && f != AF_INET6 && f != AF_INET)
                return zti_fail_ss(EINVAL);
            int err = zti_addr_from_sockaddr(e->family, sa, msg->msg_namelen, 1, &h.addr);
            if (err)
                return zti_fail_ss(err);
            if (h.addr.port == 0)
                return zti_fail_ss(EINVAL);
            if (e->family == AF_INET6 && e->v6only && zti_addr_is_v4(&h.addr))
                return zti_fail_ss(ENETUNREACH);
            if ((err = zti_broadcast_denied(fd, &h.addr)))
                return zti_fail_ss(err);
        }
    }
    if (e->shut & ZTI_SHUT_WR)
        return zti_fail_ss(EPIPE);
    if (h.addr.port == 0 && e->state != ZTRPC_STATE_CONNECTED)
        return zti_fail_ss(EDESTADDRREQ);
    if (msg->msg_iovlen > IOV_MAX)
        return zti_fail_ss(EMSGSIZE);
    if (msg->msg_iovlen > 0 && !msg->msg_iov)
        return zti_fail_ss(EFAULT); /* what the kernel says, rather than a crash here */
    size_t n = msg->msg_iovlen;
    size_t total = 0;
    struct iovec iov[n + 1];
    iov[0].iov_base = &h;
    iov[0].iov_len = sizeof h;
    for (size_t i = 0; i < n; i++) {
        iov[i + 1] = msg->msg_iov[i];
        total += msg->msg_iov[i].iov_len;
    }
    int to_v4 = h.addr.port ? zti_addr_is_v4(&h.addr) : zti_addr_is_v4(&e->peer);
    if (total > (to_v4 ? ZTI_UDP_MAX : ZTI_UDP6_MAX))
        return zti_fail_ss(EMSGSIZE);
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = iov;
    m.msg_iovlen = n + 1;
    /* MSG_NOSIGNAL: a kernel UDP socket never raises SIGPIPE, neither may ours. One call: a send
     * blocked on a full socketpair must stay interruptible (EINTR goes to the app, as libc's). */
    ssize_t r = zti_real.sendmsg(fd, &m, (flags & ZTI_SEND_FLAGS) | MSG_NOSIGNAL);
    if (r < 0) {
        if (errno == EPIPE || errno == ECONNRESET || errno == ECONNREFUSED || errno == ENOTCONN)
            return zti_fail_ss(ENETDOWN);
        return -1;
    }
    return r - (ssize_t)sizeof h;
}

/**
 * zti_udp_recvmsg() - receive one datagram from an intercepted UDP socket
 * @fd: the socket
 * @msg: as recvmsg(2); msg_name gets the source as the socket's family shows it (sockaddr_in or
 *       sockaddr_in6, truncated like the kernel);
 *       msg_controllen is set to 0 (no ancillary data)
 * @flags: MSG_DONTWAIT, MSG_PEEK, MSG_TRUNC honoured
 *
 * Return: payload length (with MSG_TRUNC: the full length), or -1 with errno (EAGAIN, EINTR,
 * ENETDOWN when ztapd closed the socket).
 */
ssize_t zti_udp_recvmsg(int fd, const struct zti_ent *e, struct msghdr *msg, int flags)
{
    if (flags & MSG_ERRQUEUE)
        return zti_fail_ss(EAGAIN); /* ICMP errors come as sk_err (see below), never queued */
    if (msg->msg_iovlen > IOV_MAX)
        return zti_fail_ss(EMSGSIZE);
    if (msg->msg_iovlen > 0 && !msg->msg_iov)
        return zti_fail_ss(EFAULT); /* what the kernel says, rather than a crash here */
    struct ztrpc_dgram h;
    size_t n = msg->msg_iovlen;
    struct iovec iov[n + 1];
    iov[0].iov_base = &h;
    iov[0].iov_len = sizeof h;
    for (size_t i = 0; i < n; i++)
        iov[i + 1] = msg->msg_iov[i];
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = iov;
    m.msg_iovlen = n + 1;
    ssize_t r = zti_real.recvmsg(fd, &m, flags & ZTI_RECV_FLAGS);
    if (r < 0)
        return -1;
    if (r == 0) {
        if (e->shut & ZTI_SHUT_RD) {
            /* The app's own shutdown(SHUT_RD): as on a kernel UDP socket, a read that may block
             * returns 0, one that may not finds nothing (EAGAIN). */
            int fl = (flags & MSG_DONTWAIT) ? O_NONBLOCK : zti_real.fcntl(fd, F_GETFL);
            return fl >= 0 && (fl & O_NONBLOCK) ? zti_fail_ss(EAGAIN) : 0;
        }
        return zti_fail_ss(ENETDOWN); /* ztapd closed its end: the socket is gone */
    }
    if ((size_t)r < sizeof h)
        return zti_fail_ss(EIO);
    if (h.addr.reserved & ZTRPC_DGRAM_ERROR) {
        /* An ICMP error for the connected peer: reported once, like the kernel's sk_err. */
        int err = h.addr.reserved & ZTRPC_DGRAM_ERRNO_MASK;
        if (flags & MSG_PEEK) {
            struct ztrpc_dgram drop;
            (void)zti_real.recv(fd, &drop, sizeof drop, MSG_DONTWAIT);
        }
        return zti_fail_ss(err ? err : ECONNREFUSED);
    }
    if (msg->msg_name) {
        socklen_t l = msg->msg_namelen;
        zti_fill_sockaddr(e->family, &h.addr, msg->msg_name, &l);
        msg->msg_namelen = l;
    } else {
        msg->msg_namelen = 0;
    }
    msg->msg_controllen = 0;
    msg->msg_flags = m.msg_flags;
    return r - (ssize_t)sizeof h;
}

/* ---------------------------------------------------------------------------------------------
 * Dispatch. Return -2: not an intercepted datagram socket, do the real call.
 */

#define ZTI_PASS (-2)
#define ZTI_STRIP_ADDR (-3)

static ssize_t zti_send_common(int fd, const struct msghdr *msg, int flags)
{
    const struct sockaddr *dest = msg->msg_name;
    struct zti_ent e;
    int hk = zti_hot_kind(fd);
    if (hk == ZTI_UDP || hk == ZTI_UNKNOWN || ((hk == ZTI_TCP || hk == ZTI_LISTEN) && dest)) {
        int k = zti_classify(fd, &e, 0);
        if (k == ZTI_UDP)
            return zti_udp_sendmsg(fd, &e, msg, flags);
        if (k == ZTI_TCP)
            return ZTI_STRIP_ADDR; /* a connected TCP socket ignores the address, like the kernel */
        if (k == ZTI_LISTEN)
            return zti_fail_ss(ENOTCONN);
    }
    if (!dest || msg->msg_namelen < sizeof(sa_family_t) ||
        (dest->sa_family != AF_INET && dest->sa_family != AF_INET6))
        return ZTI_PASS;
    struct ztrpc_addr dst;
    if (zti_addr_from_sockaddr(dest->sa_family, dest, msg->msg_namelen, 0, &dst) != 0 || !zti_dest_selected(&dst))
        return ZTI_PASS;
    int dom, type, prot;
    if (zti_socket_type(fd, &dom, &type, &prot) < 0 || type != SOCK_DGRAM || prot != IPPROTO_UDP ||
        (dom != dest->sa_family && !zti_v4_on_v6(dom, dest->sa_family, prot)))
        return ZTI_PASS;
    int saved = errno;
    if (zti_udp_open(fd, &e) < 0)
        return -1;
    errno = saved;
    return zti_udp_sendmsg(fd, &e, msg, flags);
}

static ssize_t zti_recv_common(int fd, struct msghdr *msg, int flags)
{
    struct zti_ent e;
    if (!zti_maybe_udp(fd) || zti_classify(fd, &e, 0) != ZTI_UDP)
        return ZTI_PASS;
    return zti_udp_recvmsg(fd, &e, msg, flags);
}

static void zti_msg1(struct msghdr *m, struct iovec *iov, void *buf, size_t len, void *name,
                     socklen_t namelen)
{
    memset(m, 0, sizeof *m);
    iov->iov_base = buf;
    iov->iov_len = len;
    m->msg_iov = iov;
    m->msg_iovlen = 1;
    m->msg_name = name;
    m->msg_namelen = namelen;
}

/* ---------------------------------------------------------------------------------------------
 * Exported send side
 */

/** sendto() - as sendto(2); datagrams to the network go through ztapd. */
ZTI_EXPORT ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *dest,
                          socklen_t dlen)
{
    zti_init_real();
    if (zti_cfg.enabled) {
        struct msghdr m;
        struct iovec iov;
        zti_msg1(&m, &iov, (void *)buf, len, (void *)dest, dest ? dlen : 0);
        ssize_t r = zti_send_common(fd, &m, flags);
        if (r == ZTI_STRIP_ADDR)
            return zti_real.sendto(fd, buf, len, flags, NULL, 0);
        if (r != ZTI_PASS)
            return r;
    }
    return zti_real.sendto(fd, buf, len, flags, dest, dlen);
}

/** send() - as send(2); on a ztap UDP socket sends to the connected peer. */
ZTI_EXPORT ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    zti_init_real();
    if (zti_maybe_udp(fd)) {
        struct msghdr m;
        struct iovec iov;
        zti_msg1(&m, &iov, (void *)buf, len, NULL, 0);
        ssize_t r = zti_send_common(fd, &m, flags);
        if (r != ZTI_PASS && r != ZTI_STRIP_ADDR)
            return r;
    }
    return zti_real.send(fd, buf, len, flags);
}

/** sendmsg() - as sendmsg(2); datagrams to the network go through ztapd. */
ZTI_EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    zti_init_real();
    if (zti_cfg.enabled && msg) {
        ssize_t r = zti_send_common(fd, msg, flags);
        if (r == ZTI_STRIP_ADDR) {
            struct msghdr m = *msg;
            m.msg_name = NULL;
            m.msg_namelen = 0;
            return zti_real.sendmsg(fd, &m, flags);
        }
        if (r != ZTI_PASS)
            return r;
    }
    return zti_real.sendmsg(fd, msg, flags);
}

/** sendmmsg() - as sendmmsg(2); on ztap UDP sockets one datagram after the other. */
ZTI_EXPORT int sendmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags)
{
    zti_init_real();
    if (!zti_cfg.enabled || !vec || vlen == 0)
        return zti_real.sendmmsg(fd, vec, vlen, flags);
    /* Only the first message can turn the socket into a ztap socket; its answer decides. */
    unsigned int i;
    int saved = errno;
    for (i = 0; i < vlen; i++) {
        ssize_t r = zti_send_common(fd, &vec[i].msg_hdr, flags);
        if (r == ZTI_PASS || r == ZTI_STRIP_ADDR) {
            if (i == 0)
                return zti_real.sendmmsg(fd, vec, vlen, flags);
            int rest = zti_real.sendmmsg(fd, vec + i, vlen - i, flags);
            errno = saved;
            return rest < 0 ? (int)i : (int)i + rest;
        }
        if (r < 0) {
            if (!i)
                return -1;
            errno = saved; /* a partial batch is a success: errno untouched, as the kernel's */
            return (int)i;
        }
        vec[i].msg_len = (unsigned int)r;
    }
    return (int)i;
}

/** write() - as write(2); on a ztap UDP socket sends one datagram to the connected peer. */
ZTI_EXPORT ssize_t write(int fd, const void *buf, size_t len)
{
    if (__builtin_expect(zti_maybe_udp(fd), 0)) {
        zti_init_real();
        struct msghdr m;
        struct iovec iov;
        zti_msg1(&m, &iov, (void *)buf, len, NULL, 0);
        ssize_t r = zti_send_common(fd, &m, 0);
        if (r != ZTI_PASS && r != ZTI_STRIP_ADDR)
            return r;
    }
    return zti_sys_write(fd, buf, len);
}

/** writev() - as writev(2); on a ztap UDP socket sends one datagram to the connected peer. */
ZTI_EXPORT ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
    zti_init_real();
    if (__builtin_expect(zti_maybe_udp(fd), 0)) {
        if (iovcnt < 0 || iovcnt > IOV_MAX)
            return zti_fail_ss(EINVAL); /* as writev(2), before the socket is looked at */
        struct msghdr m;
        memset(&m, 0, sizeof m);
        m.msg_iov = (struct iovec *)iov;
        m.msg_iovlen = (size_t)iovcnt;
        ssize_t r = zti_send_common(fd, &m, 0);
        if (r != ZTI_PASS && r != ZTI_STRIP_ADDR)
            return r;
    }
    return zti_real.writev(fd, iov, iovcnt);
}

/* ---------------------------------------------------------------------------------------------
 * Exported receive side
 */

/* After the app took a ztap TCP socket's urgent byte (recv with MSG_OOB), the unix socket keeps
 * the emptied out-of-band buffer at the head of its queue, so POLLIN and SIOCATMARK stay set
 * until a read skips it; a TCP socket shows nothing left. A zero-length read drops it now. Only
 * a stream socket can have answered MSG_OOB with a byte, and a zero-length read takes no data
 * from one, so a stale table entry does no harm. */
static ssize_t zti_after_oob(int fd, int flags, ssize_t r)
{
    r = zti_after_read(fd, r);
    if (__builtin_expect(flags & MSG_OOB, 0) && r > 0 && !(flags & MSG_PEEK) && zti_hot_kind(fd) == ZTI_TCP) {
        int saved = errno;
        (void)zti_real.recv(fd, NULL, 0, MSG_DONTWAIT);
        errno = saved;
    }
    return r;
}

/** recvfrom() - as recvfrom(2); on a ztap UDP socket the source is the datagram's real sender. */
ZTI_EXPORT ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *src,
                            socklen_t *srclen)
{
    zti_init_real();
    if (zti_maybe_udp(fd)) {
        struct msghdr m;
        struct iovec iov;
        zti_msg1(&m, &iov, buf, len, src && srclen ? src : NULL, src && srclen ? *srclen : 0);
        ssize_t r = zti_recv_common(fd, &m, flags);
        if (r != ZTI_PASS) {
            if (r >= 0 && src && srclen)
                *srclen = m.msg_namelen;
            return r;
        }
    }
    return zti_after_oob(fd, flags, zti_real.recvfrom(fd, buf, len, flags, src, srclen));
}

/** recv() - as recv(2); on a ztap UDP socket returns the payload only. */
ZTI_EXPORT ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    zti_init_real();
    if (zti_maybe_udp(fd)) {
        struct msghdr m;
        struct iovec iov;
        zti_msg1(&m, &iov, buf, len, NULL, 0);
        ssize_t r = zti_recv_common(fd, &m, flags);
        if (r != ZTI_PASS)
            return r;
    }
    return zti_after_oob(fd, flags, zti_real.recv(fd, buf, len, flags));
}

/* fds received with SCM_RIGHTS may be ztap sockets the library has not seen (another process
 * created them): mark them so the first call that needs to know asks ztapd. Costs nothing
 * unless the message carried control data. */
static void zti_note_received_fds(const struct msghdr *msg)
{
    if (!zti_cfg.enabled || !msg || !msg->msg_control || msg->msg_controllen < sizeof(struct cmsghdr))
        return;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0))
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            zti_note_foreign_fd(fd);
        }
    }
}

/** recvmsg() - as recvmsg(2); on a ztap UDP socket msg_name is the real sender. */
ZTI_EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    zti_init_real();
    if (msg && zti_maybe_udp(fd)) {
        ssize_t r = zti_recv_common(fd, msg, flags);
        if (r != ZTI_PASS)
            return r;
    }
    ssize_t r = zti_real.recvmsg(fd, msg, flags);
    if (r >= 0 && msg && msg->msg_controllen)
        zti_note_received_fds(msg);
    return zti_after_oob(fd, flags, r);
}

/** recvmmsg() - as recvmmsg(2) (timeout ignored on ztap sockets). */
ZTI_EXPORT int recvmmsg(int fd, struct mmsghdr *vec, unsigned int vlen, int flags,
                        struct timespec *timeout)
{
    zti_init_real();
    struct zti_ent e;
    if (!vec || vlen == 0 || !zti_maybe_udp(fd) || zti_classify(fd, &e, 0) != ZTI_UDP) {
        int r = zti_real.recvmmsg(fd, vec, vlen, flags, timeout);
        for (int i = 0; i < r; i++)
            if (vec[i].msg_hdr.msg_controllen)
                zti_note_received_fds(&vec[i].msg_hdr);
        return r;
    }
    unsigned int i;
    int fl = flags & ~MSG_WAITFORONE;
    int saved = errno;
    for (i = 0; i < vlen; i++) {
        ssize_t r = zti_udp_recvmsg(fd, &e, &vec[i].msg_hdr, fl);
        if (r < 0) {
            if (!i)
                return -1;
            errno = saved; /* a partial batch is a success: errno untouched, as the kernel's */
            return (int)i;
        }
        vec[i].msg_len = (unsigned int)r;
        if (flags & MSG_WAITFORONE)
            fl |= MSG_DONTWAIT;
    }
    return (int)i;
}

/** read() - as read(2); on a ztap UDP socket reads one datagram's payload. */
ZTI_EXPORT ssize_t read(int fd, void *buf, size_t len)
{
    if (__builtin_expect(zti_maybe_udp(fd), 0)) {
        zti_init_real();
        struct msghdr m;
        struct iovec iov;
        zti_msg1(&m, &iov, buf, len, NULL, 0);
        ssize_t r = zti_recv_common(fd, &m, 0);
        if (r != ZTI_PASS)
            return r;
    }
    return zti_after_read(fd, zti_sys_read(fd, buf, len));
}

/** readv() - as readv(2); on a ztap UDP socket reads one datagram's payload across the buffers. */
ZTI_EXPORT ssize_t readv(int fd, const struct iovec *iov, int iovcnt)
{
    zti_init_real();
    if (__builtin_expect(zti_maybe_udp(fd), 0)) {
        if (iovcnt < 0 || iovcnt > IOV_MAX)
            return zti_fail_ss(EINVAL); /* as readv(2) */
        struct msghdr m;
        memset(&m, 0, sizeof m);
        m.msg_iov = (struct iovec *)iov;
        m.msg_iovlen = (size_t)iovcnt;
        ssize_t r = zti_recv_common(fd, &m, 0);
        if (r != ZTI_PASS)
            return r;
    }
    return zti_after_read(fd, zti_real.readv(fd, iov, iovcnt));
}

/* Tells ztapd the app shut socket @fd down (ZTRPC_ZT_SHUTDOWN, @bits added to what it had):
 * 0 when ztapd took it, -1 otherwise (unreachable, or an error reply). */
static int zti_tell_shutdown(int fd, int bits, int timeout_ms)
{
    struct ztrpc_sockopt rq;
    memset(&rq, 0, sizeof rq);
    rq.level = ZTRPC_SOL_ZTAP;
    rq.name = ZTRPC_ZT_SHUTDOWN;
    rq.optlen = sizeof(int);
    memcpy(rq.value, &bits, sizeof bits);
    struct ztrpc_rep_hdr rep;
    int err;
    if (zti_rpc(ZTRPC_OP_SETSOCKOPT, &rq, sizeof rq, &fd, 1, &rep, NULL, 0, timeout_ms, 0, &err) != 0)
        return -1;
    return rep.result == 0 ? 0 : -1;
}

/**
 * shutdown() - as shutdown(2); native except on a ztap UDP socket
 *
 * A kernel UDP socket only remembers a shutdown: SHUT_WR makes sends fail with EPIPE, SHUT_RD
 * makes reads return 0. The same here: SHUT_WR is recorded (a native shutdown would look like a
 * close to ztapd), SHUT_RD is also done natively so blocked readers wake up and ztapd stops
 * delivering (its writes fail with EPIPE). The state is per fd number, not per socket.
 */
ZTI_EXPORT int shutdown(int fd, int how)
{
    zti_init_real();
    struct zti_ent e;
    if (zti_hot_kind(fd) == ZTI_TCP && zti_cfg.enabled && zti_classify(fd, &e, 0) == ZTI_TCP) {
        /* A TCP socket's shutdown is native (on its unix stream), but once the connection is
         * over Linux says ENOTCONN. A hang-up on the app end is the sign; ask ztapd only then. */
        struct pollfd p = { .fd = fd, .events = POLLRDHUP };
        if (poll(&p, 1, 0) == 1 && (p.revents & POLLHUP)) {
            int saved = errno;
            struct ztrpc_rep_hdr rep;
            struct ztrpc_sockinfo si;
            int err;
            if (zti_rpc(ZTRPC_OP_GETNAME, NULL, 0, &fd, 1, &rep, &si, sizeof si, 10000, 0, &err) == 0 &&
                rep.result == 0 && si.state == ZTRPC_STATE_CLOSED) {
                errno = ENOTCONN;
                return -1;
            }
            errno = saved;
        }
        if ((how == SHUT_RD || how == SHUT_RDWR) && !(e.shut & ZTI_SHUT_RD)) {
            /* Shut for reading, the app end gives ztapd's end the same hang-up as a close once
             * both ways are shut: say first that it is a shutdown, so ztapd keeps the socket
             * nameable (getpeername ENOTCONN, SO_ERROR 0 once the connection is over). */
            int saved = errno;
            if (zti_tell_shutdown(fd, ZTI_SHUT_RD, ZTI_SHORT_WAIT_MS) == 0) {
                e.shut |= ZTI_SHUT_RD;
                zti_table_put(fd, &e);
            }
            errno = saved;
        }
        return zti_real.shutdown(fd, how);
    }
    if (!zti_maybe_udp(fd) || zti_classify(fd, &e, 0) != ZTI_UDP)
        return zti_real.shutdown(fd, how);
    if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR) {
        errno = EINVAL;
        return -1;
    }
    zti_udp_shut(fd, &e, how == SHUT_RD ? ZTI_SHUT_RD : how == SHUT_WR ? ZTI_SHUT_WR : ZTI_SHUT_RD | ZTI_SHUT_WR);
    /* Linux (inet_shutdown) records the shutdown of an unconnected socket too, then says ENOTCONN. */
    if (e.state != ZTRPC_STATE_CONNECTED) {
        errno = ENOTCONN;
        return -1;
    }
    return 0;
}

void zti_udp_shut(int fd, struct zti_ent *e, uint8_t bits)
{
    int saved = errno;
    /* Native SHUT_RD: ztapd can no longer deliver, reads return 0. */
    if (bits & ZTI_SHUT_RD)
        (void)zti_real.shutdown(fd, SHUT_RD);
    /* ztapd keeps it per socket, so dup/fork/exec copies see it (best effort: a ztapd that is
     * gone has no socket left to shut down anyway). */
    (void)zti_tell_shutdown(fd, bits, 10000);
    e->shut |= bits;
    zti_table_put(fd, e);
    errno = saved;
}

/* _FORTIFY_SOURCE entry points: the size check stays libc's (it aborts on overflow). */

ZTI_EXPORT ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen)
{
    zti_init_real();
    if (len <= buflen && zti_maybe_udp(fd))
        return read(fd, buf, len);
    return zti_real.read_chk(fd, buf, len, buflen);
}

ZTI_EXPORT ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags)
{
    zti_init_real();
    if (len <= buflen && zti_maybe_udp(fd))
        return recv(fd, buf, len, flags);
    return zti_after_oob(fd, flags, zti_real.recv_chk(fd, buf, len, buflen, flags));
}

ZTI_EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags,
                                  struct sockaddr *src, socklen_t *srclen)
{
    zti_init_real();
    if (len <= buflen && zti_maybe_udp(fd))
        return recvfrom(fd, buf, len, flags, src, srclen);
    return zti_after_oob(fd, flags, zti_real.recvfrom_chk(fd, buf, len, buflen, flags, src, srclen));
}
