/* SPDX-License-Identifier: MIT */
/*
 * zts_connect.c - connect, bind and listen of traced programs: where ztap sockets are made.
 *
 * A kernel AF_INET or AF_INET6 socket becomes a ztap socket at the first connect/bind whose address belongs
 * to the network (zti_dest_selected/zti_bind_selected, the library's code on the same
 * environment): the supervisor makes the socketpair, sends ztapd its end (and the app end, the
 * socket's identity), and on success puts the app end in place of the target's fd with
 * ADDFD|SETFD, keeping the fd number, O_NONBLOCK, FD_CLOEXEC and the timeouts. On failure the
 * target's fd stays the kernel socket it was. Options set on the kernel socket beforehand are read
 * back from it (zts_read_opts) and travel with the creating request.
 *
 * Blocking connect: sent like the library's, without ZTRPC_F_NONBLOCK and plugged (ztrpc.h); the
 * supervisor keeps the RPC socket in its epoll set and completes the call when ztapd answers,
 * serving other calls meanwhile. SO_SNDTIMEO bounds the wait (then EINPROGRESS, the socket
 * installed and still connecting, as on Linux).
 */
#include "zts.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

/* Ordinary requests: ztapd answers at once; this only protects against a wedged daemon. */
#define ZTS_SHORT_WAIT_MS (10 * 1000)

/* ---------------------------------------------------------------------------------------------
 * The plug and socket creation
 */

/* As zti_plug(): shrink fd's send buffer and fill it, so POLLOUT means "outcome known". */
static int zts_plug(int fd, struct ztrpc_sock_req *rq)
{
    static const char pad[4096];
    int orig;
    socklen_t l = sizeof orig;
    if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &orig, &l) < 0)
        return -errno;
    int tiny = 0;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &tiny, sizeof tiny) < 0)
        return -errno;
    uint32_t total = 0;
    while (total < (1u << 20)) {
        ssize_t n = send(fd, pad, sizeof pad, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        total += (uint32_t)n;
    }
    rq->filler = total;
    rq->sndbuf = orig / 2;
    return 0;
}

/* Sends the pre-options a creating request had no room for (from index `from` of p) as
 * SETSOCKOPT requests on the new socket `sock`, as the library's zti_preopts_replay. */
static void zts_replay_preopts(struct zts_call *c, int sock, const struct zti_preopts *p, int from)
{
    for (int i = from; i < p->n; i++) {
        if (zts_sockopt_rpc(c, sock, p->o[i].level, p->o[i].name, p->o[i].value, p->o[i].len) < 0)
            zts_dbg("pid %d: option %d/%d set before interception not taken by ztapd", (int)c->n.pid,
                    p->o[i].level, p->o[i].name);
    }
}

/* The state an answered request implies (as zti_fix_state). */
static void zts_fix_state(struct zts_ent *e, uint16_t op, struct ztrpc_addr addr, int pending)
{
    static const struct ztrpc_addr none;
    int dissolve = memcmp(&addr, &none, sizeof none) == 0;
    if (op == ZTRPC_OP_CONNECT) {
        if (e->kind == ZTS_K_UDP) {
            e->state = dissolve ? ZTRPC_STATE_BOUND : ZTRPC_STATE_CONNECTED;
            e->peer = dissolve ? none : addr;
        } else {
            e->state = pending ? ZTRPC_STATE_CONNECTING : ZTRPC_STATE_CONNECTED;
            if (!e->peer.port)
                e->peer = addr;
        }
    } else if (e->state == ZTRPC_STATE_UNBOUND) {
        e->state = ZTRPC_STATE_BOUND;
    }
}

/* Registers sv0 as a ztap socket after an answered CONNECT/BIND/UDP_OPEN. */
static struct zts_ent *zts_record(int sv0, int proto, int family, int v6only, uint16_t op, struct ztrpc_addr addr,
                                  const struct ztrpc_sockinfo *si, int pending)
{
    struct zts_ent *e = zts_table_put_fd(sv0, proto == IPPROTO_UDP ? ZTS_K_UDP : ZTS_K_TCP, si);
    if (e) {
        e->proto = (uint8_t)proto;
        e->family = (uint8_t)family; /* what the program created, whatever a terse reply said */
        e->v6only = (uint8_t)v6only;
        zts_fix_state(e, op, addr, pending);
    }
    return e;
}

/* The safety limit of a blocking connect without SO_SNDTIMEO (ztapd's own timeout is shorter). */
#define ZTS_LONG_WAIT_MS (180 * 1000)

/* A blocking TCP connect: the request is sent without ZTRPC_F_NONBLOCK, as by the library, and
 * the call waits for the reply on the RPC socket (zts_connect_outcome). sock: the app end the
 * request names (a new socket's, or the existing one's). */
static int zts_connect_wait(struct zts_call *c, const void *body, uint32_t blen, const int *fds, int nfds,
                            int timeo_fd)
{
    uint32_t id;
    int s = zts_rpc_start(c, ZTRPC_OP_CONNECT, body, blen, fds, nfds, &id);
    if (s < 0)
        return s;
    c->rpc_fd = s;
    c->rpc_id = id;
    c->wait_fd = s;
    c->wait_events = POLLIN_EVENTS;
    long ms = zts_timeo_ms(timeo_fd, SO_SNDTIMEO);
    c->sndtimeo_set = ms != 0;
    c->deadline = zts_now_ms() + (ms ? ms : ZTS_LONG_WAIT_MS);
    return 0;
}

/**
 * zts_create() - turn the target's kernel socket into a ztap socket (CONNECT/BIND/UDP_OPEN)
 * @c: the call; args[0] is the target fd, c->fd our copy of the kernel socket
 * @op: ZTRPC_OP_*
 * @proto: IPPROTO_TCP or IPPROTO_UDP
 * @addr: destination or local address
 * @ent: the new entry on success
 * @down: errno when ztapd cannot be reached
 *
 * Return: 0 installed; 1 a blocking TCP connect is under way (c->sv0 holds the new app end,
 * installed when ztapd answers: zts_connect_outcome); -EINPROGRESS installed and connecting;
 * other -errno: failed, the target's fd is untouched.
 */
/* IPV6_V6ONLY of the supervisor's copy of a kernel AF_INET6 socket. */
static int zts_v6only(int fd, int domain)
{
    int v = 0;
    socklen_t l = sizeof v;
    if (domain != AF_INET6 || getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, &l) < 0)
        return 0;
    return v != 0;
}

static int zts_create(struct zts_call *c, uint16_t op, int proto, struct ztrpc_addr addr,
                      struct zts_ent **ent, int down)
{
    int domain = c->domain == AF_INET6 ? AF_INET6 : AF_INET;
    int v6only = zts_v6only(c->fd, domain);
    int targetfd = (int)c->n.data.args[0];
    if (proto == IPPROTO_UDP && !zts_in_udp_range(targetfd)) {
        /* Its data calls are not trapped: the program would see the framing (zts_udp.c). */
        static int told;
        if (!told++)
            zts_log("pid %d: datagram socket fd %d is outside %d-%d (a dup2/dup3 copy, or the range was "
                    "full): it cannot use the network in seccomp mode", (int)c->n.pid, targetfd, ZTS_UDP_FD_LO,
                    ZTS_UDP_FD_HI - 1);
        return -(op == ZTRPC_OP_BIND ? EADDRNOTAVAIL : ENETUNREACH);
    }
    int nonblock = zts_file_nonblock(c->fd);
    int blocking_connect = op == ZTRPC_OP_CONNECT && proto == IPPROTO_TCP && !nonblock;
    int sv[2];
    int type = (proto == IPPROTO_TCP ? SOCK_STREAM : SOCK_SEQPACKET) | SOCK_CLOEXEC;
    if (zts_socketpair(c, type, sv) < 0)
        return -errno;
    /* The request is followed by the other options the program set (ztrpc_optlist), as the
     * library's: the stack socket has them before its first segment. */
    struct {
        struct ztrpc_sock_req rq;
        struct ztrpc_optlist list;
        struct ztrpc_sockopt recs[ZTRPC_MAX_PREOPTS];
    } body;
    static struct zti_preopts pre; /* one call at a time: the supervisor is one thread */
    zts_read_preopts(c->fd, domain, proto, &pre);
    int packed = zti_preopts_pack(&pre, &body.list, body.recs);
    uint32_t blen = (uint32_t)sizeof body.rq;
    if (packed)
        blen += (uint32_t)(sizeof body.list + (size_t)packed * sizeof body.recs[0]);
    c->preopts_left = packed < pre.n;
    struct ztrpc_sock_req rq;
    memset(&rq, 0, sizeof rq);
    rq.addr = addr;
    rq.proto = (uint8_t)proto;
    rq.family = (uint8_t)domain;
    rq.flags = ZTRPC_F_NEW | ZTRPC_F_SECCOMP | (op == ZTRPC_OP_CONNECT && nonblock ? ZTRPC_F_NONBLOCK : 0) |
               (v6only ? ZTRPC_F_V6ONLY : 0);
    rq.pid = zts_tgid(c); /* for `ztctl connections` */
    zts_read_opts(c->fd, proto, &rq.opts);
    int r;
    if (op == ZTRPC_OP_CONNECT && proto == IPPROTO_TCP && (r = zts_plug(sv[0], &rq)) < 0) {
        close(sv[0]);
        close(sv[1]);
        return r;
    }
    if (!zts_id_valid(c)) {
        close(sv[0]);
        close(sv[1]);
        return -ENOENT;
    }
    body.rq = rq;
    if (blocking_connect) {
        r = zts_connect_wait(c, &body, blen, sv, 2, c->fd);
        close(sv[1]);
        if (r < 0) {
            close(sv[0]);
            return -zts_down_errno(-r, down);
        }
        c->sv0 = sv[0];
        c->new_socket = 1;
        c->addr = addr;
        return 1;
    }
    struct ztrpc_rep_hdr rep;
    struct ztrpc_sockinfo si;
    int err = 0;
    r = zts_rpc(c, op, &body, blen, sv, 2, &rep, &si, sizeof si, ZTS_SHORT_WAIT_MS, &err);
    close(sv[1]);
    if (r < 0) {
        close(sv[0]);
        return -zts_down_errno(err, down);
    }
    int pending = rep.result < 0 && rep.err == EINPROGRESS;
    if (rep.result < 0 && !pending) {
        close(sv[0]);
        return -(rep.err ? rep.err : EIO);
    }
    *ent = zts_record(sv[0], proto, domain, v6only, op, addr, &si, pending);
    if (packed < pre.n)
        zts_replay_preopts(c, sv[0], &pre, packed);
    if (proto == IPPROTO_UDP) {
        /* As the library: a datagram socket shut down before it was ours (Linux records even an
         * unconnected socket's shutdown) stays shut. */
        struct pollfd p = { .fd = c->fd, .events = POLLRDHUP };
        uint8_t kshut = 0;
        if (poll(&p, 1, 0) == 1 && (p.revents & POLLRDHUP))
            kshut = (p.revents & POLLHUP) ? ZTRPC_SHUT_RD | ZTRPC_SHUT_WR : ZTRPC_SHUT_RD;
        if (kshut) {
            (void)shutdown(sv[0], SHUT_RD);
            (void)zts_tell_shut(c, sv[0], kshut);
            if (*ent)
                (*ent)->shut |= kshut;
        }
    }
    r = zts_install(c, targetfd, sv[0], NULL);
    close(sv[0]);
    if (r < 0)
        return r;
    zts_dbg("pid %d: %s intercepted, fd %d", (int)c->n.pid,
            op == ZTRPC_OP_CONNECT ? "connect" : op == ZTRPC_OP_BIND ? "bind" : "sendto (implicit bind)",
            targetfd);
    return pending ? -EINPROGRESS : 0;
}

int zts_udp_open(struct zts_call *c, struct zts_ent **ent)
{
    struct ztrpc_addr any;
    memset(&any, 0, sizeof any);
    return zts_create(c, ZTRPC_OP_UDP_OPEN, IPPROTO_UDP, any, ent, ENETUNREACH);
}

/* ---------------------------------------------------------------------------------------------
 * connect
 */

/* A blocking connect's new socket: the pre-options its request had no room for, read again from
 * the kernel socket (still c->fd), go now. */
static void zts_replay_left(struct zts_call *c)
{
    if (!c->preopts_left)
        return;
    static struct zti_preopts pre;
    struct ztrpc_optlist list;
    struct ztrpc_sockopt recs[ZTRPC_MAX_PREOPTS];
    zts_read_preopts(c->fd, c->domain == AF_INET6 ? AF_INET6 : AF_INET, IPPROTO_TCP, &pre);
    zts_replay_preopts(c, c->sv0, &pre, zti_preopts_pack(&pre, &list, recs));
}

/* A CONNECT reply's errno for the program: ZTRPC_E_RENEW (zts_renew saw no hang-up, so the
 * socket was not renewed) is no errno; the socket's connection is over, as ECONNABORTED says. */
static int zts_connect_errno(int err)
{
    return err == ZTRPC_E_RENEW ? ECONNABORTED : err ? err : EIO;
}

/* Completes a blocking TCP connect: ztapd's reply arrived, or SO_SNDTIMEO (or the safety limit)
 * passed. A new socket is installed on success (or when the connect goes on in the background);
 * on failure the target's fd stays the kernel socket it was, as with the library. */
static int zts_connect_outcome(struct zts_call *c)
{
    int sock = c->new_socket ? c->sv0 : c->fd;
    struct stat st;
    struct zts_ent *e = fstat(sock, &st) == 0 ? zts_table_get(st.st_dev, st.st_ino) : NULL;
    int targetfd = (int)c->n.data.args[0];
    struct ztrpc_rep_hdr rep;
    struct ztrpc_sockinfo si;
    int r = 0;
    if (!c->timed_out && !c->interrupted) {
        r = zts_rpc_finish(c->rpc_fd, ZTRPC_OP_CONNECT, c->rpc_id, &rep, &si, sizeof si);
        if (r == -EAGAIN)
            return ZTS_WAIT; /* a spurious wake-up */
    }
    if (c->interrupted || c->timed_out || (r == 0 && rep.result < 0 && rep.err == EINPROGRESS)) {
        /* SO_SNDTIMEO: like Linux, EINPROGRESS, and the connect goes on (ztapd keeps it when the
         * request is dropped; the fd becomes writable at the outcome); a signal for the thread:
         * EINTR, the same way, as with the library. The safety limit without SO_SNDTIMEO:
         * ETIMEDOUT, as the library reports it. */
        if (c->timed_out && !c->sndtimeo_set) {
            if (e && c->new_socket)
                zts_table_forget(st.st_dev, st.st_ino);
            return zts_finish(c, -1, ETIMEDOUT);
        }
        if (e)
            e->state = ZTRPC_STATE_CONNECTING;
        if (c->new_socket) {
            zts_replay_left(c);
            if ((r = zts_install(c, targetfd, c->sv0, NULL)) < 0)
                return zts_finish(c, -1, -r);
        }
        return zts_finish(c, -1, c->interrupted ? EINTR : EINPROGRESS);
    }
    if (r < 0 || rep.result < 0) {
        int err = r < 0 ? zts_down_errno(-r, ECONNREFUSED) : zts_connect_errno(rep.err);
        if (e && c->new_socket)
            zts_table_forget(st.st_dev, st.st_ino); /* ztapd dropped it; the fd stays the kernel's */
        else if (e)
            e->state = ZTRPC_STATE_CLOSED;
        if (c->new_socket && r == 0)
            zts_note_failed_port(c, si.local.port);
        return zts_finish(c, -1, err);
    }
    if (e) {
        e->state = ZTRPC_STATE_CONNECTED;
        if (si.local.port)
            e->local = si.local;
        e->peer = si.peer.port ? si.peer : c->addr;
    }
    if (c->new_socket) {
        zts_replay_left(c);
        if ((r = zts_install(c, targetfd, c->sv0, NULL)) < 0)
            return zts_finish(c, -1, -r);
        zts_dbg("pid %d: blocking connect intercepted, fd %d", (int)c->n.pid, targetfd);
    }
    return zts_finish(c, 0, 0);
}

/* An existing TCP socket whose pair ztapd closed at a failed connect (its app end shows the
 * hang-up) gets a new one before a connect (ztrpc.h RENEW, as the library's zti_renew): the
 * new app end replaces the target's fd and becomes c->fd. ztapd refuses (EINVAL) a socket that is
 * not such one, e.g. one whose failed connect is still to be reported: nothing changes then.
 * Return: 0 (renewed or nothing to do), or -errno. */
static int zts_renew(struct zts_call *c, struct zts_ent **e)
{
    struct pollfd p = { .fd = c->fd, .events = 0 };
    if (poll(&p, 1, 0) != 1 || !(p.revents & POLLHUP))
        return 0;
    int sv[2];
    if (zts_socketpair(c, SOCK_STREAM | SOCK_CLOEXEC, sv) < 0)
        return -errno;
    int fds[3] = { c->fd, sv[1], sv[0] };
    struct ztrpc_rep_hdr rep;
    struct ztrpc_sockinfo si;
    int err;
    int r = zts_rpc(c, ZTRPC_OP_RENEW, NULL, 0, fds, 3, &rep, &si, sizeof si, ZTS_SHORT_WAIT_MS, &err);
    close(sv[1]);
    if (r < 0 || rep.result < 0) {
        close(sv[0]);
        return r < 0 ? -zts_down_errno(err, ECONNREFUSED) : 0;
    }
    uint8_t proto = (*e)->proto, family = (*e)->family, v6only = (*e)->v6only;
    struct zts_ent *ne = zts_table_put_fd(sv[0], ZTS_K_TCP, &si);
    if (ne) {
        ne->proto = proto;
        ne->family = family;
        ne->v6only = v6only;
        *e = ne;
    }
    if ((r = zts_install(c, (int)c->n.data.args[0], sv[0], NULL)) < 0) {
        close(sv[0]);
        return r;
    }
    close(c->fd);
    c->fd = sv[0]; /* the call goes on with the socket's new end */
    return 0;
}

int zts_h_connect(struct zts_call *c)
{
    if (c->rpc_fd >= 0)
        return zts_connect_outcome(c); /* woken up: ztapd answered, or SO_SNDTIMEO */
    uint64_t ua = c->n.data.args[1];
    uint32_t len = (uint32_t)c->n.data.args[2];
    if (!ua || len < sizeof(sa_family_t))
        return zts_pass(c);
    sa_family_t fam;
    struct ztrpc_addr a;
    struct zts_ent *e;
    int k = zts_classify(c, &e);
    if (!zts_is_ztap(k)) {
        /* A kernel socket: an address of its own family on the network (like the library; an
         * AF_INET6 UDP socket also takes a sockaddr_in). */
        if (k != ZTS_K_INET_TCP && k != ZTS_K_INET_UDP)
            return zts_pass(c);
        int udp = k == ZTS_K_INET_UDP;
        int aerr = zts_read_sockaddr(c, ua, len, c->domain, udp, &a, &fam);
        if (aerr || (fam != c->domain && !zti_v4_on_v6(c->domain, fam, udp ? IPPROTO_UDP : IPPROTO_TCP)) ||
            !zti_dest_selected(&a) ||
            (zti_addr_is_v4(&a) && zts_v6only(c->fd, c->domain)))
            return zts_pass(c); /* the kernel answers (EFAULT, EAFNOSUPPORT, ENETUNREACH, ...) */
        if (!zts_id_valid(c))
            return ZTS_DONE;
        int proto = k == ZTS_K_INET_TCP ? IPPROTO_TCP : IPPROTO_UDP;
        if (proto == IPPROTO_UDP && zts_broadcast_denied(c->fd, &a))
            return zts_finish(c, -1, EACCES);
        int r = zts_create(c, ZTRPC_OP_CONNECT, proto, a, &e, proto == IPPROTO_TCP ? ECONNREFUSED : ENETUNREACH);
        if (r == -ENOENT)
            return ZTS_DONE;
        if (r == 1)
            return ZTS_WAIT;
        return zts_finish(c, r < 0 ? -1 : 0, r < 0 ? -r : 0);
    }
    /* An existing ztap socket (an AF_INET6 UDP one also takes a sockaddr_in, as on Linux). */
    int aerr = zts_read_sockaddr(c, ua, len, e->family, k == ZTS_K_UDP, &a, &fam);
    if (aerr == -EFAULT)
        return zts_finish(c, -1, EFAULT);
    if (fam != AF_INET && fam != AF_INET6 && fam != AF_UNSPEC)
        return zts_finish(c, -1, EAFNOSUPPORT);
    if (aerr && k == ZTS_K_TCP && e->state == ZTRPC_STATE_CONNECTED)
        return zts_finish(c, -1, EISCONN); /* Linux looks at the state before the address */
    if (aerr && k == ZTS_K_TCP && e->state == ZTRPC_STATE_CONNECTING)
        return zts_finish(c, -1, EALREADY);
    if (aerr)
        return zts_finish(c, -1, aerr);
    if (k == ZTS_K_UDP && e->v6only && fam == AF_INET)
        return zts_finish(c, -1, EAFNOSUPPORT);
    if (k == ZTS_K_UDP && (aerr = zts_broadcast_denied(c->fd, &a)))
        return zts_finish(c, -1, aerr);
    if (k == ZTS_K_LISTEN)
        return zts_finish(c, -1, EISCONN);
    int r;
    if (k == ZTS_K_TCP && fam != AF_UNSPEC && (r = zts_renew(c, &e)) < 0) {
        if (r == -ENOENT)
            return ZTS_DONE;
        return zts_finish(c, -1, -r);
    }
    int nonblock = zts_file_nonblock(c->fd);
    struct ztrpc_sock_req rq;
    memset(&rq, 0, sizeof rq);
    rq.addr = a;
    rq.proto = e->proto ? e->proto : (k == ZTS_K_UDP ? IPPROTO_UDP : IPPROTO_TCP);
    rq.family = e->family;
    int starts = k == ZTS_K_TCP && fam != AF_UNSPEC &&
                 (e->state == ZTRPC_STATE_UNBOUND || e->state == ZTRPC_STATE_BOUND);
    if (starts && (r = zts_plug(c->fd, &rq)) < 0)
        return zts_finish(c, -1, -r);
    if (k == ZTS_K_TCP && !nonblock && starts) {
        /* Blocking: wait for ztapd's answer like the library (SO_SNDTIMEO bounds it). */
        c->new_socket = 0;
        c->addr = rq.addr;
        e->state = ZTRPC_STATE_CONNECTING;
        if ((r = zts_connect_wait(c, &rq, sizeof rq, &c->fd, 1, c->fd)) < 0)
            return zts_finish(c, -1, zts_down_errno(-r, ECONNREFUSED));
        return ZTS_WAIT;
    }
    rq.flags = (nonblock || k != ZTS_K_TCP ? ZTRPC_F_NONBLOCK : 0) | (e->v6only ? ZTRPC_F_V6ONLY : 0);
    struct ztrpc_rep_hdr rep;
    struct ztrpc_sockinfo si;
    int err;
    if (zts_rpc(c, ZTRPC_OP_CONNECT, &rq, sizeof rq, &c->fd, 1, &rep, &si, sizeof si, ZTS_SHORT_WAIT_MS, &err) < 0)
        return zts_finish(c, -1, zts_down_errno(err, k == ZTS_K_UDP ? ENETUNREACH : ECONNREFUSED));
    int pending = rep.result < 0 && rep.err == EINPROGRESS;
    if (rep.result == 0 || pending) {
        int kind = e->kind;
        uint8_t proto = rq.proto, family = e->family, v6only = e->v6only;
        e = zts_table_put_fd(c->fd, kind, &si);
        if (e) {
            e->proto = proto;
            e->family = family;
            e->v6only = v6only;
            zts_fix_state(e, ZTRPC_OP_CONNECT, rq.addr, pending);
        }
    }
    if (rep.result < 0)
        return zts_finish(c, -1, zts_connect_errno(rep.err));
    return zts_finish(c, 0, 0);
}

/* ---------------------------------------------------------------------------------------------
 * bind, listen
 */

int zts_h_bind(struct zts_call *c)
{
    uint64_t ua = c->n.data.args[1];
    uint32_t len = (uint32_t)c->n.data.args[2];
    struct zts_ent *e;
    int k = zts_classify(c, &e);
    if (zts_is_ztap(k))
        return zts_finish(c, -1, EINVAL); /* already bound, as the kernel says */
    if (k != ZTS_K_INET_TCP && k != ZTS_K_INET_UDP)
        return zts_pass(c);
    sa_family_t fam;
    struct ztrpc_addr a;
    if (zts_read_sockaddr(c, ua, len, c->domain, 0, &a, &fam) != 0 || fam != c->domain || !zti_bind_selected(&a) ||
        (zti_addr_is_v4(&a) && zts_v6only(c->fd, c->domain)))
        return zts_pass(c);
    if (!zts_id_valid(c))
        return ZTS_DONE;
    int r = zts_create(c, ZTRPC_OP_BIND, k == ZTS_K_INET_TCP ? IPPROTO_TCP : IPPROTO_UDP, a, &e, EADDRNOTAVAIL);
    if (r == -ENOENT)
        return ZTS_DONE;
    return zts_finish(c, r < 0 ? -1 : 0, r < 0 ? -r : 0);
}

int zts_h_listen(struct zts_call *c)
{
    struct zts_ent *e;
    int k = zts_classify(c, &e);
    if (!zts_is_ztap(k))
        return zts_pass(c);
    if (k == ZTS_K_UDP)
        return zts_finish(c, -1, EOPNOTSUPP);
    struct ztrpc_listen_req rq = { .backlog = (int32_t)c->n.data.args[1], .reserved = 0 };
    struct ztrpc_rep_hdr rep;
    int err;
    if (k == ZTS_K_LISTEN) {
        /* Already listening: only the backlog changes. */
        if (zts_rpc(c, ZTRPC_OP_LISTEN, &rq, sizeof rq, &c->fd, 1, &rep, NULL, 0, ZTS_SHORT_WAIT_MS, &err) < 0)
            return zts_finish(c, -1, zts_down_errno(err, ENETDOWN));
        if (rep.result < 0)
            return zts_finish(c, -1, rep.err ? rep.err : EIO);
        e->backlog = rq.backlog;
        return zts_finish(c, 0, 0);
    }
    int sv[2];
    if (zts_socketpair(c, SOCK_SEQPACKET | SOCK_CLOEXEC, sv) < 0)
        return zts_finish(c, -1, errno);
    /* As the library: a listener is never writable on Linux, the channel's app end would be.
     * Plugged for good (minimal send buffer full of 1-byte messages ztapd never reads). */
    int tiny = 0;
    (void)setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &tiny, sizeof tiny);
    for (int i = 0; i < 64; i++) {
        ssize_t n = send(sv[0], "", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
    }
    int fds[3] = { c->fd, sv[1], sv[0] };
    int r = zts_rpc(c, ZTRPC_OP_LISTEN, &rq, sizeof rq, fds, 3, &rep, NULL, 0, ZTS_SHORT_WAIT_MS, &err);
    close(sv[1]);
    if (r < 0 || rep.result < 0) {
        close(sv[0]);
        return zts_finish(c, -1, r < 0 ? zts_down_errno(err, ENETDOWN) : (rep.err ? rep.err : EIO));
    }
    struct ztrpc_addr local = e->local;
    uint8_t family = e->family, v6only = e->v6only;
    struct zts_ent *ne = zts_table_put_fd(sv[0], ZTS_K_LISTEN, NULL);
    if (ne) {
        ne->proto = IPPROTO_TCP;
        ne->family = family;
        ne->v6only = v6only;
        ne->state = ZTRPC_STATE_LISTENING;
        ne->backlog = rq.backlog;
        ne->local = local;
    }
    r = zts_install(c, (int)c->n.data.args[0], sv[0], NULL);
    close(sv[0]);
    if (r == -ENOENT)
        return ZTS_DONE;
    zts_dbg("pid %d: listen intercepted, fd %d", (int)c->n.pid, (int)c->n.data.args[0]);
    return zts_finish(c, r < 0 ? -1 : 0, r < 0 ? -r : 0);
}

