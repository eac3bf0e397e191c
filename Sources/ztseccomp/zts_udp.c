/* SPDX-License-Identifier: MIT */
/*
 * zts_udp.c - datagram sockets of traced programs: creation in the datagram fd range, framing.
 *
 * DOC: Theory of Operation
 *
 * A ztap UDP socket is the app end of a SOCK_SEQPACKET pair whose messages carry an 8-byte
 * ztrpc_dgram header (the destination or the source) before the payload. The library adds and
 * strips it inside every send and receive call; a seccomp filter cannot trap those calls for one
 * kind of fd only, because it never sees what an fd is. It sees fd numbers, though. So the
 * supervisor traps socket(AF_INET, SOCK_DGRAM), creates the kernel socket itself and installs it
 * at a free number in [ZTS_UDP_FD_LO, ZTS_UDP_FD_HI) (ADDFD with SETFD|SEND, which also returns
 * the number); the filter traps read/write/send/recv/... for fds in that range only. When such a
 * socket becomes a ztap socket, its app end replaces it at the same number, and each datagram
 * call on it is performed here: the payload travels through process_vm_readv/writev and our copy
 * of the fd. Calls on kernel sockets in the range (loopback DNS, say) are continued: harmless
 * (the kernel does what it would do anyway), one round trip through the supervisor each.
 *
 * dup() and fcntl(F_DUPFD) of a datagram socket are placed in the range too. A ztap datagram
 * socket cannot live outside it: dup2()/dup3() of one to a number outside the range fail with
 * EINVAL (and a log line), and a kernel datagram socket outside the range (copied there, or
 * created when the range was full) is refused the network (ENETUNREACH/EADDRNOTAVAIL, logged)
 * rather than turned into one whose framing the program would see. Datagram sockets received
 * over SCM_RIGHTS land outside the range unseen: out of reach (docs/INTERCEPT.md, limits).
 *
 * Blocking: the supervisor never blocks on a target's socket. A receive with nothing queued (or
 * a send on a full socket) on a blocking fd waits for readiness in the supervisor's loop and runs
 * again, bounded by SO_RCVTIMEO/SO_SNDTIMEO (then EAGAIN, as the kernel).
 */
#include "zts.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#define ZTS_SEND_FLAGS (MSG_DONTWAIT)
#define ZTS_RECV_FLAGS (MSG_PEEK | MSG_TRUNC)

static unsigned char zts_dgram[sizeof(struct ztrpc_dgram) + 65536];
static uint64_t zts_own_netns;

static int wait_for(struct zts_call *c, uint32_t events, int timeo_opt)
{
    if (c->timed_out)
        return zts_finish(c, -1, EAGAIN);
    c->wait_fd = c->fd;
    c->wait_events = events;
    long ms = c->deadline ? 0 : zts_timeo_ms(c->fd, timeo_opt);
    if (ms)
        c->deadline = zts_now_ms() + ms;
    return ZTS_WAIT;
}

/* Reads the target's iovec array. Return: count, or -errno. */
static int read_iovs(struct zts_call *c, uint64_t uiov, uint64_t cnt, struct iovec *out, size_t *total)
{
    if (cnt > IOV_MAX)
        return -EMSGSIZE;
    if (cnt && zts_mem_read(c, uiov, out, cnt * sizeof *out) < 0)
        return -EFAULT;
    *total = 0;
    for (uint64_t i = 0; i < cnt; i++) {
        if ((ssize_t)out[i].iov_len < 0)
            return -EINVAL;
        *total += out[i].iov_len;
    }
    return (int)cnt;
}

static int gather(struct zts_call *c, const struct iovec *riov, int n, void *buf, size_t len)
{
    if (len == 0)
        return 0;
    struct iovec l = { buf, len };
    ssize_t r = process_vm_readv(c->n.pid, &l, 1, riov, (unsigned long)n, 0);
    return r == (ssize_t)len ? 0 : -EFAULT;
}

static int scatter(struct zts_call *c, const struct iovec *riov, int n, const void *buf, size_t len)
{
    if (len == 0 || n == 0)
        return 0;
    struct iovec l = { (void *)buf, len };
    ssize_t r = process_vm_writev(c->n.pid, &l, 1, riov, (unsigned long)n, 0);
    return r == (ssize_t)len ? 0 : -EFAULT;
}

/* ---------------------------------------------------------------------------------------------
 * socket(), dup(), fcntl(F_DUPFD)
 */

static uint64_t netns_of(pid_t tid)
{
    char path[64];
    struct stat st;
    snprintf(path, sizeof path, "/proc/%d/ns/net", (int)tid);
    return stat(path, &st) == 0 ? (uint64_t)st.st_ino : 0;
}

int zts_h_socket(struct zts_call *c)
{
    int type = (int)c->n.data.args[1], proto = (int)c->n.data.args[2];
    if (proto != 0 && proto != IPPROTO_UDP)
        return zts_pass(c); /* ICMP "ping" sockets and the like: the kernel's */
    if (!zts_own_netns)
        zts_own_netns = netns_of(getpid());
    if (netns_of((pid_t)c->n.pid) != zts_own_netns)
        return zts_pass(c); /* the program entered another network namespace */
    int at = zts_pick_udp_fd(c);
    if (at < 0) {
        static int told;
        if (!told++)
            zts_log("no free fd in %d-%d (or RLIMIT_NOFILE below it) for a datagram socket of pid %d: "
                    "it stays on the kernel", ZTS_UDP_FD_LO, ZTS_UDP_FD_HI - 1, (int)c->n.pid);
        return zts_pass(c);
    }
    int domain = (int)c->n.data.args[0] == AF_INET6 ? AF_INET6 : AF_INET;
    int s = socket(domain, (type & ~SOCK_CLOEXEC) | SOCK_CLOEXEC, proto);
    if (s < 0)
        return zts_finish(c, -1, errno);
    int r = zts_addfd(c, s, at, (type & SOCK_CLOEXEC) != 0, 1);
    close(s);
    if (r < 0 && r != -ENOENT)
        return zts_finish(c, -1, -r);
    return ZTS_DONE;
}

int zts_h_dup(struct zts_call *c)
{
    int is_fcntl = c->n.data.nr == SYS_fcntl;
    int cloexec = is_fcntl && (int)c->n.data.args[1] == F_DUPFD_CLOEXEC;
    if (is_fcntl && (long)c->n.data.args[2] >= ZTS_UDP_FD_LO)
        return zts_pass(c); /* the program asked for a number at least that high itself */
    struct zts_ent *e;
    int k = zts_classify(c, &e);
    if (k != ZTS_K_UDP && k != ZTS_K_INET_UDP)
        return zts_pass(c);
    int at = zts_pick_udp_fd(c);
    if (at < 0)
        return zts_pass(c);
    int r = zts_addfd(c, c->fd, at, cloexec, 1);
    if (r < 0 && r != -ENOENT)
        return zts_finish(c, -1, -r);
    return ZTS_DONE;
}

int zts_in_udp_range(long fd)
{
    return fd >= ZTS_UDP_FD_LO && fd < ZTS_UDP_FD_HI;
}

/* dup2/dup3 of an fd in the range: a ztap datagram socket must stay in it. */
int zts_h_dup2(struct zts_call *c)
{
    long newfd = (long)(int)c->n.data.args[1];
    struct zts_ent *e;
    if (zts_in_udp_range(newfd) || zts_classify(c, &e) != ZTS_K_UDP)
        return zts_pass(c);
    static int told;
    if (!told++)
        zts_log("pid %d: dup2/dup3 of a network datagram socket to fd %ld, outside %d-%d where seccomp "
                "mode keeps them: refused with EINVAL", (int)c->n.pid, newfd, ZTS_UDP_FD_LO, ZTS_UDP_FD_HI - 1);
    return zts_finish(c, -1, EINVAL);
}

/* ---------------------------------------------------------------------------------------------
 * Sending
 */

/* One datagram on ztap UDP socket c->fd. Return: payload bytes, or -errno (-EAGAIN: would block). */
static ssize_t send_one(struct zts_call *c, struct zts_ent *e, uint64_t uname, uint32_t namelen,
                        const struct iovec *riov, int niov, size_t total, int flags)
{
    struct ztrpc_dgram h;
    memset(&h, 0, sizeof h);
    if (uname && namelen) {
        /* As the library (zti_udp_sendmsg): an AF_INET6 socket also sends to a sockaddr_in. */
        sa_family_t fam;
        int err = zts_read_sockaddr(c, uname, namelen, e->family, 1, &h.addr, &fam);
        if (err == -EFAULT)
            return -EFAULT;
        if (fam != AF_UNSPEC) {
            if (e->family == AF_INET6 && fam != AF_INET6 && fam != AF_INET)
                return -EINVAL;
            if (err)
                return -err;
            if (h.addr.port == 0)
                return -EINVAL;
            if (e->family == AF_INET6 && e->v6only && zti_addr_is_v4(&h.addr))
                return -ENETUNREACH;
            if ((err = zts_broadcast_denied(c->fd, &h.addr)))
                return -err;
        } else {
            memset(&h.addr, 0, sizeof h.addr);
        }
    }
    if (e->shut & ZTRPC_SHUT_WR)
        return -EPIPE;
    if (h.addr.port == 0 && e->state != ZTRPC_STATE_CONNECTED)
        return -EDESTADDRREQ;
    int to_v4 = h.addr.port ? zti_addr_is_v4(&h.addr) : zti_addr_is_v4(&e->peer);
    if (total > (to_v4 ? ZTS_UDP_MAX : ZTS_UDP6_MAX))
        return -EMSGSIZE;
    memcpy(zts_dgram, &h, sizeof h);
    if (gather(c, riov, niov, zts_dgram + sizeof h, total) < 0)
        return -EFAULT;
    /* MSG_NOSIGNAL: a kernel UDP socket never raises SIGPIPE. */
    ssize_t r = send(c->fd, zts_dgram, sizeof h + total, (flags & ZTS_SEND_FLAGS) | MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r < 0) {
        int err = errno;
        if (err == EPIPE || err == ECONNRESET || err == ECONNREFUSED || err == ENOTCONN)
            return -ENETDOWN;
        return -err;
    }
    return r - (ssize_t)sizeof h;
}

/* A connected ztap TCP socket ignores a destination, like the kernel's: the bytes go out on the
 * stream (sent here: continuing would let the AF_UNIX socket refuse the address). */
static int send_stream(struct zts_call *c, int flags)
{
    static unsigned char buf[1 << 16];
    size_t len = (size_t)c->n.data.args[2];
    if (len > sizeof buf)
        len = sizeof buf; /* a short write, as a non-blocking socket may do */
    if (zts_mem_read(c, c->n.data.args[1], buf, len) < 0)
        return zts_finish(c, -1, EFAULT);
    ssize_t r = send(c->fd, buf, len, (flags & ~MSG_DONTWAIT) | MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r < 0 && errno == EAGAIN && !(flags & MSG_DONTWAIT) && !zts_file_nonblock(c->fd))
        return wait_for(c, POLLOUT_EVENTS, SO_SNDTIMEO);
    return zts_finish(c, r < 0 ? -1 : r, r < 0 ? errno : 0);
}

int zts_h_send(struct zts_call *c)
{
    long nr = c->n.data.nr;
    struct iovec iov[IOV_MAX];
    int niov = 0;
    size_t total = 0;
    uint64_t uname = 0;
    uint32_t namelen = 0;
    int flags = 0;
    struct msghdr mh;
    uint64_t uvec = 0;
    unsigned vlen = 1;

    if (nr == SYS_sendto) {
        iov[0].iov_base = (void *)(uintptr_t)c->n.data.args[1];
        iov[0].iov_len = (size_t)c->n.data.args[2];
        niov = 1;
        total = iov[0].iov_len;
        flags = (int)c->n.data.args[3];
        uname = c->n.data.args[4];
        namelen = (uint32_t)c->n.data.args[5];
    } else if (nr == SYS_write) {
        iov[0].iov_base = (void *)(uintptr_t)c->n.data.args[1];
        iov[0].iov_len = (size_t)c->n.data.args[2];
        niov = 1;
        total = iov[0].iov_len;
    } else if (nr == SYS_writev || nr == SYS_pwritev2) {
        if (nr == SYS_pwritev2 && (int64_t)c->n.data.args[3] != -1)
            return zts_pass(c); /* an offset: ESPIPE from the kernel */
    } else if (nr == SYS_sendmsg || nr == SYS_sendmmsg) {
        flags = (int)c->n.data.args[nr == SYS_sendmsg ? 2 : 3];
        uvec = c->n.data.args[1];
        if (nr == SYS_sendmmsg) {
            vlen = (unsigned)c->n.data.args[2];
            if (vlen > UIO_MAXIOV)
                vlen = UIO_MAXIOV;
            if (vlen == 0)
                return zts_pass(c);
        }
        if (zts_mem_read(c, uvec, &mh, sizeof mh) < 0)
            return zts_pass(c); /* EFAULT from the kernel */
        uname = (uint64_t)(uintptr_t)mh.msg_name;
        namelen = mh.msg_namelen;
    }

    struct zts_ent *e;
    int k = zts_classify(c, &e);
    if (k == ZTS_K_TCP && uname && nr == SYS_sendto)
        return send_stream(c, flags);
    if (k == ZTS_K_LISTEN && uname)
        return zts_finish(c, -1, ENOTCONN);
    if (k == ZTS_K_INET_UDP && uname && namelen >= sizeof(sa_family_t)) {
        /* A kernel datagram socket sending to the network becomes a ztap socket (UDP_OPEN). */
        sa_family_t fam;
        struct ztrpc_addr dst;
        if (zts_read_sockaddr(c, uname, namelen, c->domain, 1, &dst, &fam) != 0 ||
            (fam != c->domain && !zti_v4_on_v6(c->domain, fam, IPPROTO_UDP)) || !zti_dest_selected(&dst))
            return zts_pass(c);
        if (zts_broadcast_denied(c->fd, &dst))
            return zts_finish(c, -1, EACCES);
        if (!zts_id_valid(c))
            return ZTS_DONE;
        int r = zts_udp_open(c, &e);
        if (r == -ENOENT)
            return ZTS_DONE;
        if (r < 0)
            return zts_finish(c, -1, -r);
        /* Our copy still refers to the kernel socket: take the app end now in place. */
        close(c->fd);
        c->fd = zts_getfd(c, (int)c->n.data.args[0]);
        if (c->fd < 0)
            return zts_finish(c, -1, EBADF);
        k = ZTS_K_UDP;
    }
    if (k != ZTS_K_UDP)
        return zts_pass(c);

    int blocking = !(flags & MSG_DONTWAIT) && !zts_file_nonblock(c->fd);
    if (nr == SYS_writev || nr == SYS_pwritev2) {
        /* readv/writev take an int count: negative or above IOV_MAX is EINVAL (msghdr's: EMSGSIZE). */
        if ((int)c->n.data.args[2] < 0 || (int)c->n.data.args[2] > IOV_MAX)
            return zts_finish(c, -1, EINVAL);
        int n = read_iovs(c, c->n.data.args[1], c->n.data.args[2], iov, &total);
        if (n < 0)
            return zts_finish(c, -1, -n);
        niov = n;
    }
    if (nr != SYS_sendmmsg) {
        if (nr == SYS_sendmsg) {
            int n = read_iovs(c, (uint64_t)(uintptr_t)mh.msg_iov, mh.msg_iovlen, iov, &total);
            if (n < 0)
                return zts_finish(c, -1, -n);
            niov = n;
        }
        ssize_t r = send_one(c, e, uname, namelen, iov, niov, total, flags);
        if (r == -EAGAIN && blocking)
            return wait_for(c, POLLOUT_EVENTS, SO_SNDTIMEO);
        return zts_finish(c, r < 0 ? -1 : r, r < 0 ? (int)-r : 0);
    }
    /* sendmmsg: one datagram after the other; a partial batch is a success. */
    unsigned i;
    for (i = 0; i < vlen; i++) {
        struct mmsghdr mm;
        uint64_t at = uvec + (uint64_t)i * sizeof mm;
        if (zts_mem_read(c, at, &mm, sizeof mm) < 0) {
            if (i)
                break;
            return zts_finish(c, -1, EFAULT);
        }
        int n = read_iovs(c, (uint64_t)(uintptr_t)mm.msg_hdr.msg_iov, mm.msg_hdr.msg_iovlen, iov, &total);
        ssize_t r = n < 0 ? n
                          : send_one(c, e, (uint64_t)(uintptr_t)mm.msg_hdr.msg_name, mm.msg_hdr.msg_namelen,
                                     iov, n, total, flags);
        if (r < 0) {
            if (i)
                break;
            if (r == -EAGAIN && blocking)
                return wait_for(c, POLLOUT_EVENTS, SO_SNDTIMEO);
            return zts_finish(c, -1, (int)-r);
        }
        unsigned ml = (unsigned)r;
        (void)zts_mem_write(c, at + offsetof(struct mmsghdr, msg_len), &ml, sizeof ml);
    }
    return zts_finish(c, (long)i, 0);
}

/* ---------------------------------------------------------------------------------------------
 * Receiving
 */

/* One datagram from ztap UDP socket c->fd into the target's iovecs; the source goes to
 * (uname, *unamelen_io) when uname. Return: bytes (payload, or full length with MSG_TRUNC),
 * or -errno. *mflags gets the message flags. */
static ssize_t recv_one(struct zts_call *c, struct zts_ent *e, const struct iovec *riov, int niov, size_t cap,
                        int flags, uint64_t uname, uint32_t *unamelen_io, int *mflags)
{
    if (flags & MSG_ERRQUEUE)
        return -EAGAIN; /* ICMP errors come as sk_err, never queued */
    struct ztrpc_dgram h;
    size_t room = cap < sizeof zts_dgram - sizeof h ? cap : sizeof zts_dgram - sizeof h;
    struct iovec l[2] = { { &h, sizeof h }, { zts_dgram, room } };
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = l;
    m.msg_iovlen = 2;
    ssize_t r = recvmsg(c->fd, &m, (flags & ZTS_RECV_FLAGS) | MSG_DONTWAIT);
    if (r < 0)
        return -errno;
    if (r == 0) {
        if (!(e->shut & ZTRPC_SHUT_RD))
            return -ENETDOWN; /* ztapd closed its end: the socket is gone */
        /* The program's own shutdown(SHUT_RD): as on a kernel UDP socket, a read that may block
         * returns 0, one that may not finds nothing (EAGAIN). */
        return (flags & MSG_DONTWAIT) || zts_file_nonblock(c->fd) ? -EAGAIN : 0;
    }
    if ((size_t)r < sizeof h)
        return -EIO;
    if (h.addr.reserved & ZTRPC_DGRAM_ERROR) {
        /* An ICMP error for the connected peer: reported once, like the kernel's sk_err. */
        int err = h.addr.reserved & ZTRPC_DGRAM_ERRNO_MASK;
        if (flags & MSG_PEEK) {
            struct ztrpc_dgram drop;
            (void)recv(c->fd, &drop, sizeof drop, MSG_DONTWAIT);
        }
        return -(err ? err : ECONNREFUSED);
    }
    size_t payload = (size_t)r - sizeof h;
    size_t copied = payload < room ? payload : room;
    if (scatter(c, riov, niov, zts_dgram, copied) < 0)
        return -EFAULT;
    if (uname) {
        struct sockaddr_storage ss;
        uint32_t full = zti_make_sockaddr(e->family, &h.addr, &ss);
        uint32_t want = *unamelen_io < full ? *unamelen_io : full;
        if (want && zts_mem_write(c, uname, &ss, want) < 0)
            return -EFAULT;
        *unamelen_io = full;
    }
    *mflags = m.msg_flags;
    return (ssize_t)payload;
}

int zts_h_recv(struct zts_call *c)
{
    long nr = c->n.data.nr;
    struct zts_ent *e;
    int k = zts_classify(c, &e);
    if (k != ZTS_K_UDP)
        return zts_pass(c); /* kernel sockets, streams (native), other files in the range */
    struct iovec iov[IOV_MAX];
    size_t total = 0;
    int niov = 0, flags = 0, mflags = 0;
    if (nr == SYS_read || nr == SYS_recvfrom) {
        iov[0].iov_base = (void *)(uintptr_t)c->n.data.args[1];
        iov[0].iov_len = (size_t)c->n.data.args[2];
        niov = 1;
        total = iov[0].iov_len;
        if (nr == SYS_recvfrom)
            flags = (int)c->n.data.args[3];
    } else if (nr == SYS_readv || nr == SYS_preadv2) {
        if (nr == SYS_preadv2 && (int64_t)c->n.data.args[3] != -1)
            return zts_pass(c);
        if ((int)c->n.data.args[2] < 0 || (int)c->n.data.args[2] > IOV_MAX)
            return zts_finish(c, -1, EINVAL); /* readv's int count, as the kernel checks it */
        niov = read_iovs(c, c->n.data.args[1], c->n.data.args[2], iov, &total);
        if (niov < 0)
            return zts_finish(c, -1, -niov);
    }
    int nb = zts_file_nonblock(c->fd);

    if (nr == SYS_read || nr == SYS_readv || nr == SYS_preadv2 || nr == SYS_recvfrom) {
        uint64_t uname = 0, ulen = 0;
        uint32_t namelen = 0;
        if (nr == SYS_recvfrom && c->n.data.args[4] && c->n.data.args[5]) {
            uname = c->n.data.args[4];
            ulen = c->n.data.args[5];
            if (zts_mem_read(c, ulen, &namelen, sizeof namelen) < 0)
                return zts_finish(c, -1, EFAULT);
        }
        ssize_t r = recv_one(c, e, iov, niov, total, flags, uname, &namelen, &mflags);
        if (r == -EAGAIN && !(flags & MSG_DONTWAIT) && !nb && !(flags & MSG_ERRQUEUE))
            return wait_for(c, POLLIN_EVENTS, SO_RCVTIMEO);
        if (r >= 0 && uname && zts_mem_write(c, ulen, &namelen, sizeof namelen) < 0)
            return zts_finish(c, -1, EFAULT);
        return zts_finish(c, r < 0 ? -1 : r, r < 0 ? (int)-r : 0);
    }

    /* recvmsg, recvmmsg */
    uint64_t uvec = c->n.data.args[1];
    unsigned vlen = 1;
    int waitforone = 0;
    if (nr == SYS_recvmmsg) {
        vlen = (unsigned)c->n.data.args[2];
        flags = (int)c->n.data.args[3];
        if (vlen > UIO_MAXIOV)
            vlen = UIO_MAXIOV;
        if (vlen == 0)
            return zts_finish(c, -1, EINVAL);
        waitforone = (flags & MSG_WAITFORONE) != 0;
        flags &= ~MSG_WAITFORONE;
    } else {
        flags = (int)c->n.data.args[2];
    }
    unsigned i;
    int fl = flags;
    if (waitforone && c->done)
        fl |= MSG_DONTWAIT;
    for (i = c->done; i < vlen; i++) {
        size_t stride = nr == SYS_recvmmsg ? sizeof(struct mmsghdr) : sizeof(struct msghdr);
        uint64_t at = uvec + (uint64_t)i * stride;
        struct msghdr mh;
        ssize_t r;
        if (zts_mem_read(c, at, &mh, sizeof mh) < 0) {
            r = -EFAULT;
        } else {
            int n = read_iovs(c, (uint64_t)(uintptr_t)mh.msg_iov, mh.msg_iovlen, iov, &total);
            uint32_t namelen = mh.msg_name ? mh.msg_namelen : 0;
            r = n < 0 ? n
                      : recv_one(c, e, iov, n, total, fl, (uint64_t)(uintptr_t)mh.msg_name, &namelen, &mflags);
            if (r >= 0) {
                uint32_t nl = mh.msg_name ? namelen : 0;
                size_t zero = 0;
                if (zts_mem_write(c, at + offsetof(struct msghdr, msg_namelen), &nl, sizeof nl) < 0 ||
                    zts_mem_write(c, at + offsetof(struct msghdr, msg_controllen), &zero, sizeof zero) < 0 ||
                    zts_mem_write(c, at + offsetof(struct msghdr, msg_flags), &mflags, sizeof mflags) < 0)
                    r = -EFAULT;
            }
        }
        if (r < 0) {
            if (i && r == -EAGAIN && !(fl & MSG_DONTWAIT) && !nb && !c->timed_out) {
                /* Like the kernel's blocking recvmmsg: wait for the rest of the batch (its
                 * SO_RCVTIMEO ends the wait with what arrived); resume at datagram i. */
                c->done = i;
                return wait_for(c, POLLIN_EVENTS, SO_RCVTIMEO);
            }
            if (i)
                break; /* a partial batch is a success */
            if (r == -EAGAIN && !(fl & MSG_DONTWAIT) && !nb && !(fl & MSG_ERRQUEUE))
                return wait_for(c, POLLIN_EVENTS, SO_RCVTIMEO);
            return zts_finish(c, -1, (int)-r);
        }
        if (nr == SYS_recvmsg)
            return zts_finish(c, r, 0);
        unsigned ml = (unsigned)r;
        (void)zts_mem_write(c, at + offsetof(struct mmsghdr, msg_len), &ml, sizeof ml);
        if (waitforone)
            fl |= MSG_DONTWAIT;
    }
    return zts_finish(c, (long)i, 0);
}

/* ---------------------------------------------------------------------------------------------
 * shutdown, ioctl
 */

/* As the library: a kernel UDP socket only remembers a shutdown; ztapd keeps it per socket. */
/* Tells ztapd the program shut its socket `fd` down (ZTRPC_ZT_SHUTDOWN, `bits` added): 0 when
 * taken. */
int zts_tell_shut(struct zts_call *c, int fd, uint8_t bits)
{
    int v = bits;
    return zts_sockopt_rpc(c, fd, ZTRPC_SOL_ZTAP, ZTRPC_ZT_SHUTDOWN, &v, sizeof v) == 0 ? 0 : -1;
}

int zts_h_shutdown(struct zts_call *c)
{
    int how = (int)c->n.data.args[1];
    struct zts_ent *e;
    int k = zts_classify(c, &e);
    if (k == ZTS_K_TCP) {
        /* As the library: native on the unix stream, but once the connection is over Linux says
         * ENOTCONN (a hang-up on the app end is the sign: ask ztapd only then); and a shutdown
         * for reading is announced first, so that ztapd takes the hang-up it gives for a
         * shutdown rather than a close (the socket stays nameable). */
        struct pollfd p = { .fd = c->fd, .events = POLLRDHUP };
        if (poll(&p, 1, 0) == 1 && (p.revents & POLLHUP) && zts_refresh(c, e) == 0 &&
            e->state == ZTRPC_STATE_CLOSED)
            return zts_finish(c, -1, ENOTCONN);
        if ((how == SHUT_RD || how == SHUT_RDWR) && !(e->shut & ZTRPC_SHUT_RD) && zts_tell_shut(c, c->fd, ZTRPC_SHUT_RD) == 0)
            e->shut |= ZTRPC_SHUT_RD;
        return zts_pass(c);
    }
    if (k != ZTS_K_UDP)
        return zts_pass(c);
    if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR)
        return zts_finish(c, -1, EINVAL);
    if (e->state != ZTRPC_STATE_CONNECTED)
        return zts_finish(c, -1, ENOTCONN);
    if (how != SHUT_WR && shutdown(c->fd, SHUT_RD) < 0)
        return zts_finish(c, -1, errno);
    uint8_t bits = how == SHUT_RD ? ZTRPC_SHUT_RD : how == SHUT_WR ? ZTRPC_SHUT_WR : ZTRPC_SHUT_RD | ZTRPC_SHUT_WR;
    (void)zts_tell_shut(c, c->fd, bits);
    e->shut |= bits;
    return zts_finish(c, 0, 0);
}

/* FIONREAD on a ztap UDP socket: the next datagram's payload size, as the kernel's UDP. */
int zts_h_ioctl(struct zts_call *c)
{
    unsigned long req = (unsigned int)c->n.data.args[1];
    struct zts_ent *e;
    int k = zts_classify(c, &e);
    int v = 0;
    if (k == ZTS_K_LISTEN && (req == SIOCINQ || req == SIOCOUTQ || req == SIOCOUTQNSD))
        return zts_finish(c, -1, EINVAL); /* a listener has no queues (tcp_ioctl) */
    if ((k == ZTS_K_LISTEN && req == SIOCATMARK) ||
        (k == ZTS_K_TCP && req == SIOCOUTQNSD && ioctl(c->fd, SIOCOUTQ, &v) == 0)) {
        /* SIOCOUTQNSD, unknown to AF_UNIX: nothing ztapd has not taken can have been sent. */
        if (zts_mem_write(c, c->n.data.args[2], &v, sizeof v) < 0)
            return zts_finish(c, -1, EFAULT);
        return zts_finish(c, 0, 0);
    }
    if (req != FIONREAD || k != ZTS_K_UDP)
        return zts_pass(c);
    struct ztrpc_dgram h;
    ssize_t r = recv(c->fd, &h, sizeof h, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);
    v = r > (ssize_t)sizeof h ? (int)(r - (ssize_t)sizeof h) : 0;
    if (zts_mem_write(c, c->n.data.args[2], &v, sizeof v) < 0)
        return zts_finish(c, -1, EFAULT);
    return zts_finish(c, 0, 0);
}
