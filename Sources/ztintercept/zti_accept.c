/* SPDX-License-Identifier: MIT */
/*
 * zti_accept.c - accept and accept4 on a ztap listener, also through syscall(SYS_accept4).
 *
 * A ztap listener's fd is the app end of a SEQPACKET accept channel: ztapd sends one message per
 * connection the stack accepted, carrying the app end of that connection's socketpair
 * (SCM_RIGHTS) and its addresses. Accepting is receiving one message; blocking, EAGAIN and
 * EINTR are those of that recvmsg, so poll/epoll on the listener work natively. The new fd is
 * entered in the fd table as a connected ztap TCP socket with the addresses ztapd sent.
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

/* ---------------------------------------------------------------------------------------------
 * accept
 */

/**
 * zti_accept4() - accept one connection from a ztap listener's accept channel
 * @fd: listening socket
 * @addr: peer address out (may be NULL)
 * @len: in: size of @addr; out: the size of the listener family's sockaddr
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
    if (n < 0) {
        /* ECONNRESET: ztapd closed the channel with the plug's messages in it (the listener was
         * shut down): as its end, EINVAL (Linux's accept on a socket that no longer listens). */
        if (errno == ECONNRESET)
            errno = EINVAL;
        return -1; /* EAGAIN, EINTR, ... exactly as the kernel reported them */
    }
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
    /* ztapd made the end (flags O_RDWR, and O_NONBLOCK when it says so): one fcntl at most,
     * none for an accept4(SOCK_NONBLOCK) of a non-blocking end. */
    int nonblock_now = (m.flags & ZTRPC_AM_NONBLOCK) != 0;
    if (!!(flags & SOCK_NONBLOCK) != nonblock_now &&
        zti_real.fcntl(nfd, F_SETFL, (flags & SOCK_NONBLOCK) ? O_RDWR | O_NONBLOCK : O_RDWR) < 0) {
        int err = errno;
        zti_close(nfd);
        return zti_fail(err);
    }
    struct ztrpc_sockinfo si;
    memset(&si, 0, sizeof si);
    si.proto = IPPROTO_TCP;
    si.state = ZTRPC_STATE_CONNECTED;
    si.family = e.family; /* an accepted socket has its listener's family */
    si.flags = e.v6only ? ZTRPC_SI_V6ONLY : 0;
    si.local = m.local;
    si.peer = m.peer;
    si.secret[0] = m.secret[0];
    si.secret[1] = m.secret[1];
    si.dev = m.dev; /* the end's identity came with it (0: fstat) */
    si.ino = m.ino;
    struct zti_ent ne;
    zti_ent_from_info(&ne, ZTI_TCP, &si, nfd);
    zti_table_put(nfd, &ne);
    if (addr)
        zti_fill_sockaddr(e.family, &m.peer, addr, len);
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
    long r = zti_real.syscall(number, a1, a2, a3, a4, a5, a6);
    if (number == SYS_setsockopt && r == 0 && zti_cfg.enabled) {
        /* Recorded as setsockopt() records it: the socket may be replaced by a ztap one later. */
        int saved = errno;
        zti_record_opt((int)a1, (int)a2, (int)a3, (const void *)a4, (socklen_t)a5);
        errno = saved;
    }
    return r;
}
