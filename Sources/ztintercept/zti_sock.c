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
int zti_inet_kind_of(int fd, const struct zti_ent *e, int k, int *proto, int *domain)
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




int zti_fail(int err)
{
    errno = err;
    return -1;
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
