/* SPDX-License-Identifier: MIT */
/*
 * zti_names.c - getsockname and getpeername of ztap sockets.
 *
 * DOC: Theory of Operation
 *
 * The fd table entry caches the names ztapd gave at creation (the local address with its port,
 * the peer), so naming a socket is normally no request at all. ztapd is asked (GETNAME) only
 * when the entry may be behind: a connect whose outcome the app end cannot tell, or a connected
 * socket whose end shows a hang-up (the connection may be over: Linux says ENOTCONN then).
 * While a connect runs, the app end itself says where it stands (zti_tcp_quiet): the plug keeps
 * it unwritable until the outcome, and ztapd shows a failure as a hang-up before anything else.
 */
#include "zti.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

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
    if (!zti_cfg.enabled)
        return zti_real.getsockname(fd, addr, len);
    int k = zti_classify(fd, &e, 1);
    if (k == ZTI_INET && e.local.port && len && (addr || !*len)) {
        /* A kernel socket whose connect to the network failed shows the port it had taken
         * (zti_note_failed_port), unless the kernel socket got a name of its own since. */
        struct sockaddr_storage ks;
        socklen_t kl = sizeof ks;
        if (zti_real.getsockname(fd, (struct sockaddr *)&ks, &kl) == 0 &&
            ((ks.ss_family == AF_INET && ((struct sockaddr_in *)&ks)->sin_port == 0) ||
             (ks.ss_family == AF_INET6 && ((struct sockaddr_in6 *)&ks)->sin6_port == 0))) {
            zti_fill_sockaddr(ks.ss_family, &e.local, addr, len);
            return 0;
        }
    }
    if (!zti_is_ztap(k))
        return zti_real.getsockname(fd, addr, len);
    if (!len || (!addr && *len))
        return zti_fail(EFAULT);
    int saved = errno;
    if (e.local.port == 0 && e.kind != ZTI_LISTEN && zti_refresh(fd, &e) < 0)
        return -1;
    zti_fill_sockaddr(e.family, &e.local, addr, len);
    errno = saved;
    return 0;
}

/*
 * zti_tcp_quiet() - whether a TCP socket has nothing ztapd must tell (SO_ERROR 0, state known)
 *
 * Every non-blocking connect is followed by getsockopt(SO_ERROR) once the fd is writable, so
 * this is on the connection-setup path (and getpeername is asked while it runs). The app end says what ztapd knows: the plug keeps it
 * unwritable while the handshake runs (SO_ERROR 0 on Linux too), ztapd unplugs it on success
 * (writable), and every error ztapd has to report (failed connect, reset, timeout) comes with
 * its end shut or closed (POLLERR/POLLHUP/POLLRDHUP). Only then is ztapd asked: it holds the
 * error and clears it as Linux does. A connect that is seen to have succeeded is noted as
 * connected (local and peer names came with the connect's reply).
 * @fd: the app's fd (a ztap TCP socket)
 * @e: its entry; a connect seen to have succeeded is updated in it and in the table
 *
 * Return: 1 when SO_ERROR is 0 and @e's state is current, 0 when ztapd must be asked.
 */
int zti_tcp_quiet(int fd, struct zti_ent *e)
{
    if (e->state != ZTRPC_STATE_CONNECTING && e->state != ZTRPC_STATE_CONNECTED)
        return 0;
    struct pollfd p = { .fd = fd, .events = POLLOUT | POLLRDHUP };
    int saved = errno;
    int n = poll(&p, 1, 0);
    errno = saved;
    if (n < 0 || (p.revents & (POLLERR | POLLHUP | POLLRDHUP | POLLNVAL)))
        return 0;
    if ((p.revents & POLLOUT) && e->state == ZTRPC_STATE_CONNECTING) {
        e->state = ZTRPC_STATE_CONNECTED;
        zti_table_put(fd, e);
    }
    return 1;
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
    if (e.state == ZTRPC_STATE_CONNECTING && e.kind == ZTI_TCP && zti_tcp_quiet(fd, &e) &&
        e.state == ZTRPC_STATE_CONNECTING)
        return zti_fail(ENOTCONN); /* still connecting */
    if (e.state != ZTRPC_STATE_CONNECTED && zti_refresh(fd, &e) < 0)
        return -1;
    if (e.state != ZTRPC_STATE_CONNECTED)
        return zti_fail(ENOTCONN); /* also once the connection is over, as Linux (TCP_CLOSE) */
    zti_fill_sockaddr(e.family, &e.peer, addr, len);
    errno = saved;
    return 0;
}
