/* SPDX-License-Identifier: MIT */
/*
 * zts_rpc.c - requests to ztapd on a traced process's behalf: with its credentials, and (for a
 * blocking connect) without blocking the supervisor.
 *
 * Credentials. ztapd authorizes requests that create presence on the network by SO_PEERCRED
 * ([Access]), taken when the RPC connection is made. The library runs in the app, so that is
 * the app's user; here the supervisor connects. When the supervisor runs as root and the target
 * as another user (a server that dropped privileges), the supervisor takes the target's
 * effective uid/gid for the connect only (setresuid/setresgid on this thread, root kept as the
 * saved id), so ztapd sees the same credentials as with the library. An unprivileged supervisor
 * has the target's uid already: no_new_privs keeps the tree from gaining another.
 *
 * Asynchronous requests. A blocking CONNECT is answered by ztapd when the handshake's outcome is
 * known, exactly as for the library (ztrpc.h); the supervisor sends it, keeps the RPC socket in
 * its epoll set and completes the traced call when the reply arrives. The request and reply are
 * the same wire format zti_rpc() speaks (one SEQPACKET message each way).
 */
#include "zts.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/un.h>

static int zts_target_ids(struct zts_call *c, uid_t *euid, gid_t *egid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/status", (int)c->n.pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    const char *u = strstr(buf, "\nUid:");
    const char *g = strstr(buf, "\nGid:");
    unsigned long r, e;
    if (!u || !g || sscanf(u + 5, "%lu %lu", &r, &e) != 2)
        return -1;
    *euid = (uid_t)e;
    if (sscanf(g + 5, "%lu %lu", &r, &e) != 2)
        return -1;
    *egid = (gid_t)e;
    return 0;
}

/* Takes the target's effective ids when running as root. Return: 1 if switched (undo with
 * zts_as_self), else 0. */
static int zts_as_target(struct zts_call *c)
{
    uid_t euid;
    gid_t egid;
    if (geteuid() != 0 || zts_target_ids(c, &euid, &egid) < 0 || (euid == 0 && egid == 0))
        return 0;
    /* Raw syscalls: this thread only (glibc's wrappers would change every thread). */
    if (syscall(SYS_setresgid, -1, egid, -1) != 0 || syscall(SYS_setresuid, -1, euid, -1) != 0)
        zts_log("cannot take uid %u/gid %u for a request: %s", (unsigned)euid, (unsigned)egid, strerror(errno));
    return 1;
}

static void zts_as_self(int switched)
{
    if (!switched)
        return;
    int saved = errno;
    if (syscall(SYS_setresuid, -1, 0, -1) != 0 || syscall(SYS_setresgid, -1, 0, -1) != 0) {
        zts_log("cannot return to root after a request: %s", strerror(errno));
        abort(); /* never go on with the wrong identity */
    }
    errno = saved;
}

/* A socketpair ztapd will take as the caller's own (SO_PEERCRED of a pair names its creator's
 * pid and euid, which must match the RPC's): made under the target's ids like the request. */
int zts_socketpair(struct zts_call *c, int type, int sv[2])
{
    int sw = zts_as_target(c);
    int r = socketpair(AF_UNIX, type, 0, sv);
    zts_as_self(sw);
    return r;
}

int zts_rpc(struct zts_call *c, uint16_t op, const void *body, uint32_t blen, const int *fds, int nfds,
            struct ztrpc_rep_hdr *rep, void *rbody, uint32_t rcap, int timeout_ms, int *err)
{
    int sw = zts_as_target(c);
    int r = zti_rpc(op, body, blen, fds, nfds, rep, rbody, rcap, timeout_ms, ZTI_RPC_ONESHOT, err);
    zts_as_self(sw);
    return r;
}

static uint32_t zts_next_id = 0x80000000u; /* apart from zti_rpc's ids, for logs */

/**
 * zts_rpc_start() - send a request whose reply comes later
 * @c: the call (credentials)
 * @op, @body, @blen, @fds, @nfds: as zti_rpc()
 * @id: the request id, for zts_rpc_finish()
 *
 * Return: the RPC socket (non-blocking, close-on-exec; wait for POLLIN), or -errno
 * (ECONNREFUSED/ENOENT/...: ztapd not reachable, logged once as by the library).
 */
int zts_rpc_start(struct zts_call *c, uint16_t op, const void *body, uint32_t blen, const int *fds, int nfds,
                  uint32_t *id)
{
    if (!zti_cfg.enabled)
        return -ENETUNREACH;
    if (nfds < 0 || nfds > ZTRPC_MAX_FDS || blen > ZTRPC_MAX_MSG - sizeof(struct ztrpc_req_hdr))
        return -EINVAL;
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0)
        return -errno;
    int sw = zts_as_target(c);
    long deadline = zts_now_ms() + 5000;
    int r;
    while ((r = connect(s, (const struct sockaddr *)&zti_cfg.rpc_addr, zti_cfg.rpc_addr_len)) < 0 &&
           (errno == EINTR || (errno == EAGAIN && zts_now_ms() < deadline)))
        (void)poll(NULL, 0, 1); /* a full backlog: ztapd is accepting */
    int cerr = errno;
    zts_as_self(sw);
    if (r < 0) {
        close(s);
        zti_log_unreachable(cerr);
        return -(cerr == EAGAIN ? ETIMEDOUT : cerr);
    }
    unsigned char msg[ZTRPC_MAX_MSG];
    struct ztrpc_req_hdr hdr = { .magic = ZTRPC_MAGIC, .version = ZTRPC_VERSION, .op = op, .id = ++zts_next_id,
                                 .len = blen };
    memcpy(msg, &hdr, sizeof hdr);
    if (blen)
        memcpy(msg + sizeof hdr, body, blen);
    struct iovec iov = { msg, sizeof hdr + blen };
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * ZTRPC_MAX_FDS)];
    } cb;
    memset(&cb, 0, sizeof cb);
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (nfds > 0) {
        mh.msg_control = cb.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
    }
    deadline = zts_now_ms() + 5000;
    while ((r = (int)sendmsg(s, &mh, MSG_NOSIGNAL)) < 0 && (errno == EINTR || (errno == EAGAIN && zts_now_ms() < deadline))) {
        struct pollfd p = { .fd = s, .events = POLLOUT };
        (void)poll(&p, 1, 1);
    }
    if (r < 0) {
        int e = errno;
        close(s);
        zts_log("sending a request to ztapd failed: %s", strerror(e));
        return -e;
    }
    *id = hdr.id;
    return s;
}

/**
 * zts_rpc_finish() - read the reply of a request sent by zts_rpc_start()
 * @s: the RPC socket (not closed here)
 * @op, @id: of the request
 * @rep, @rbody, @rcap: as zti_rpc(); missing body bytes are zero
 *
 * Return: 0 with the reply (which may report result -1), -EAGAIN when it has not arrived,
 * -ECONNRESET when ztapd closed the request without answering, -EPROTO for a malformed reply.
 */
int zts_rpc_finish(int s, uint16_t op, uint32_t id, struct ztrpc_rep_hdr *rep, void *rbody, uint32_t rcap)
{
    unsigned char msg[ZTRPC_MAX_MSG];
    memset(rep, 0, sizeof *rep);
    if (rbody && rcap)
        memset(rbody, 0, rcap);
    ssize_t n;
    while ((n = recv(s, msg, sizeof msg, MSG_DONTWAIT)) < 0 && errno == EINTR)
        ;
    if (n < 0)
        return -errno;
    if (n == 0) {
        zts_log("ztapd closed a request without a reply, op %u", (unsigned)op);
        return -ECONNRESET;
    }
    struct ztrpc_rep_hdr rh;
    if ((size_t)n < sizeof rh)
        return -EPROTO;
    memcpy(&rh, msg, sizeof rh);
    if (rh.magic != ZTRPC_MAGIC || rh.version != ZTRPC_VERSION || rh.id != id || rh.op != op ||
        rh.len > (size_t)n - sizeof rh) {
        zts_log("malformed reply from ztapd (wrong magic/version/id/length), op %u", (unsigned)op);
        return -EPROTO;
    }
    *rep = rh;
    if (rbody && rcap)
        memcpy(rbody, msg + sizeof rh, rh.len < rcap ? rh.len : rcap);
    return 0;
}
