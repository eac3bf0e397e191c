/* SPDX-License-Identifier: MIT */
/*
 * zti_rpc.c - request/reply exchanges with ztapd over SOCK_SEQPACKET connections.
 *
 * A request that waits for its answer gets a new connection of its own: no lock, nothing for a
 * forked child to inherit half-used, nothing for a signal handler to find busy. The cost
 * (~27 us per request) is paid on control calls (connect, bind, listen, getsockopt...), never
 * on the data path.
 *
 * Requests that need no answer (ztrpc.h ZTRPC_OP_NOREPLY: TCP_NODELAY/TCP_CORK/TCP_QUICKACK,
 * which a server may toggle twice per response) go over one long-lived connection per process
 * instead, the one-way channel: a send and nothing else. It holds no state a signal handler or
 * another thread could find half-done (each sendmsg is one whole message; creation is a trylock
 * that falls back to a request of its own). A forked child notices the pid change and opens its
 * own, so ztapd can keep each process's messages in order with the requests it waits on (it
 * reads a process's channel before serving that process's other requests). The app may close
 * the channel's number behind our back (closefrom): its inode is checked before each use.
 */
#include "zti.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

static atomic_uint zti_next_id;


/* The one-way channel (see the top of this file). fd is published last (release), after the
 * fields that describe it; every field is atomic because readers race with a re-creation. */
static struct {
    atomic_int fd;      /* -1: none yet */
    atomic_int pid;     /* the process that opened it */
    atomic_ulong ino;   /* its inode: the app may have closed the number and reused it */
    atomic_int lock;    /* creation and teardown: taken with trylock only */
    atomic_int breaks;  /* times it broke (ztapd restarted or refused it); gives up at 8 */
} zti_chan = { -1, 0, 0, 0, 0 };

#define ZTI_CHAN_MAX_BREAKS 8

/* Called in a forked child: a lock held by a thread that does not exist there is free. */
void zti_chan_atfork_child(void)
{
    atomic_store(&zti_chan.lock, 0);
}

static int zti_chan_trylock(void)
{
    int unlocked = 0;
    return atomic_compare_exchange_strong(&zti_chan.lock, &unlocked, 1);
}

/* Forgets channel @fd (if still current) and closes it when its inode says it is still ours.
 * @broken: it failed (counts towards giving up), rather than belonging to a parent process. */
static void zti_chan_drop(int fd, int broken)
{
    if (!zti_chan_trylock())
        return;
    if (atomic_load(&zti_chan.fd) == fd) {
        atomic_store_explicit(&zti_chan.fd, -1, memory_order_release);
        struct stat st;
        if (fstat(fd, &st) == 0 && (unsigned long)st.st_ino == atomic_load(&zti_chan.ino))
            close(fd);
        if (broken)
            atomic_fetch_add(&zti_chan.breaks, 1);
    }
    atomic_store(&zti_chan.lock, 0);
}

/* Opens the channel if there is none. Returns 0 when one is (now) there. */
static int zti_chan_open(int me)
{
    if (atomic_load(&zti_chan.breaks) >= ZTI_CHAN_MAX_BREAKS || !zti_chan_trylock())
        return -1;
    int ret = -1;
    if (atomic_load(&zti_chan.fd) >= 0) {
        ret = 0;
        goto out;
    }
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0)
        goto out;
    struct stat st;
    int r;
    while ((r = zti_real.connect(s, (const struct sockaddr *)&zti_cfg.rpc_addr, zti_cfg.rpc_addr_len)) < 0 &&
           errno == EINTR)
        ;
    if (r < 0 || fstat(s, &st) < 0) {
        close(s);
        goto out;
    }
    atomic_store(&zti_chan.pid, me);
    atomic_store(&zti_chan.ino, (unsigned long)st.st_ino);
    atomic_store_explicit(&zti_chan.fd, s, memory_order_release);
    ret = 0;
out:
    atomic_store(&zti_chan.lock, 0);
    return ret;
}

/* Sends @mh on the one-way channel. Returns 0 when sent, -1 when the caller should make a
 * request of its own and wait for the answer (no channel, ztapd behind or gone). */
static int zti_chan_send(const struct msghdr *mh)
{
    int me = (int)getpid();
    /* At most: drop an inherited or stale one, open a new one, send. */
    for (int attempt = 0; attempt < 3; attempt++) {
        int fd = atomic_load_explicit(&zti_chan.fd, memory_order_acquire);
        if (fd < 0) {
            if (zti_chan_open(me) < 0)
                return -1;
            continue;
        }
        struct stat st;
        if (fstat(fd, &st) < 0 || (unsigned long)st.st_ino != atomic_load(&zti_chan.ino)) {
            /* The app closed the number (and maybe reused it): not ours to close. */
            int cur = fd;
            if (zti_chan_trylock()) {
                (void)atomic_compare_exchange_strong(&zti_chan.fd, &cur, -1);
                atomic_store(&zti_chan.lock, 0);
            }
            continue;
        }
        if (atomic_load(&zti_chan.pid) != me) {
            /* Inherited from the parent: ztapd must see this process's own. */
            zti_chan_drop(fd, 0);
            continue;
        }
        ssize_t r;
        while ((r = zti_real.sendmsg(fd, mh, MSG_NOSIGNAL | MSG_DONTWAIT)) < 0 && errno == EINTR)
            ;
        if (r >= 0)
            return 0;
        if (errno == EAGAIN)
            return -1; /* ztapd is behind: wait for it like any request */
        zti_chan_drop(fd, 1);
    }
    return -1;
}

/* How long reaching ztapd's listener may take when its backlog is full. */
#define ZTI_CONNECT_WAIT_MS 5000

static long zti_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/**
 * zti_rpc() - send one request to ztapd and wait for its reply
 * @op: ZTRPC_OP_*
 * @body: request body (may be NULL when @blen is 0)
 * @blen: body length
 * @fds: fds to pass as SCM_RIGHTS (layout per ztrpc.h)
 * @nfds: number of fds (0..ZTRPC_MAX_FDS)
 * @rep: reply header out
 * @rbody: reply body out; bytes the reply does not carry are zeroed
 * @rcap: size of @rbody
 * @timeout_ms: how long to wait for the reply, < 0 for no limit
 * @flags: ZTI_RPC_INTERRUPTIBLE: a signal (EINTR) while waiting ends the wait with *err = EINTR;
 *         ZTI_RPC_QUIET: do not log an unreachable ztapd;
 *         ZTI_RPC_NOREPLY: ask for no reply (ztrpc.h ZTRPC_OP_NOREPLY) and return once sent
 * @err: errno when the exchange itself fails
 *
 * Return: 0 when a well-formed reply arrived (it may still report result -1), -1 otherwise with
 * *err = the cause (ECONNREFUSED/ENOENT/EACCES: ztapd not reachable, logged once; EPROTO:
 * malformed reply; ETIMEDOUT; EINTR). Preserves errno.
 */
int zti_rpc(uint16_t op, const void *body, uint32_t blen, const int *fds, int nfds,
            struct ztrpc_rep_hdr *rep, void *rbody, uint32_t rcap, int timeout_ms, int flags,
            int *err)
{
    int saved = errno;
    int s = -1;
    int ret = -1;
    zti_init_real();
    memset(rep, 0, sizeof *rep);
    if (rbody && rcap)
        memset(rbody, 0, rcap);
    if (!zti_cfg.enabled || nfds < 0 || nfds > ZTRPC_MAX_FDS ||
        blen > ZTRPC_MAX_MSG - sizeof(struct ztrpc_req_hdr)) {
        *err = zti_cfg.enabled ? EINVAL : ENETUNREACH;
        goto out;
    }

    /* Request: header + body in one message, fds in one SCM_RIGHTS cmsg. */
    unsigned char msgbuf[ZTRPC_MAX_MSG];
    struct ztrpc_req_hdr hdr = {
        .magic = ZTRPC_MAGIC,
        .version = ZTRPC_VERSION,
        .op = (uint16_t)(op | ((flags & ZTI_RPC_NOREPLY) ? ZTRPC_OP_NOREPLY : 0)),
        .id = atomic_fetch_add_explicit(&zti_next_id, 1, memory_order_relaxed) + 1,
        .len = blen,
    };
    memcpy(msgbuf, &hdr, sizeof hdr);
    if (blen)
        memcpy(msgbuf + sizeof hdr, body, blen);
    struct iovec iov = { .iov_base = msgbuf, .iov_len = sizeof hdr + blen };
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * ZTRPC_MAX_FDS)];
    } cbuf;
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (nfds > 0) {
        memset(&cbuf, 0, sizeof cbuf);
        mh.msg_control = cbuf.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    if (flags & ZTI_RPC_NOREPLY) {
        if (zti_chan_send(&mh) == 0) {
            ret = 0; /* *rep stays zeroed: result 0 */
            goto out;
        }
        /* No channel: a request of its own, answered like any other. */
        flags &= ~ZTI_RPC_NOREPLY;
        hdr.op = op;
        memcpy(msgbuf, &hdr, sizeof hdr);
    }

    /* Non-blocking: a full listen backlog (a storm of requests) makes a blocking unix connect
     * wait without limit; here it is retried within the request's time limit instead. */
    s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0) {
        *err = errno;
        goto out;
    }
    long connect_deadline = zti_now_ms() + (timeout_ms >= 0 && timeout_ms < ZTI_CONNECT_WAIT_MS
                                                ? timeout_ms : ZTI_CONNECT_WAIT_MS);
    while (zti_real.connect(s, (const struct sockaddr *)&zti_cfg.rpc_addr, zti_cfg.rpc_addr_len) < 0) {
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN && zti_now_ms() < connect_deadline) {
            (void)poll(NULL, 0, 1); /* the daemon is accepting: try again in a millisecond */
            continue;
        }
        *err = errno == EAGAIN ? ETIMEDOUT : errno;
        if (!(flags & ZTI_RPC_QUIET))
            zti_log_unreachable(errno);
        goto out;
    }

    while (zti_real.sendmsg(s, &mh, MSG_NOSIGNAL) < 0) {
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN && zti_now_ms() < connect_deadline) {
            struct pollfd pw = { .fd = s, .events = POLLOUT };
            (void)poll(&pw, 1, 1);
            continue;
        }
        *err = errno;
        zti_log("sending a request to ztapd failed, errno ", NULL, NULL, errno, NULL);
        goto out;
    }

    /* Reply. */
    long deadline = timeout_ms >= 0 ? zti_now_ms() + timeout_ms : 0;
    for (;;) {
        int wait = -1;
        if (timeout_ms >= 0) {
            long left = deadline - zti_now_ms();
            if (left <= 0) {
                *err = ETIMEDOUT;
                zti_dbg("ztapd did not answer in time, op ", NULL, NULL, op, NULL);
                goto out;
            }
            wait = left > 0x7fffffff ? 0x7fffffff : (int)left;
        }
        struct pollfd p = { .fd = s, .events = POLLIN };
        int r = poll(&p, 1, wait);
        if (r < 0) {
            if (errno == EINTR && !(flags & ZTI_RPC_INTERRUPTIBLE))
                continue;
            *err = errno;
            goto out;
        }
        if (r > 0)
            break;
    }
    ssize_t n;
    while ((n = zti_real.recv(s, msgbuf, sizeof msgbuf, MSG_DONTWAIT)) < 0 && errno == EINTR)
        ;
    if (n < 0) {
        *err = errno;
        goto out;
    }
    if (n == 0) {
        /* ztapd closed the request without answering (it stopped, or refused us). */
        *err = ECONNRESET;
        zti_log("ztapd closed the request without a reply, op ", NULL, NULL, op, NULL);
        goto out;
    }
    struct ztrpc_rep_hdr rh;
    if ((size_t)n < sizeof rh) {
        *err = EPROTO;
        goto bad;
    }
    memcpy(&rh, msgbuf, sizeof rh);
    if (rh.magic != ZTRPC_MAGIC || rh.version != ZTRPC_VERSION || rh.id != hdr.id || rh.op != op ||
        rh.len > (size_t)n - sizeof rh) {
        *err = EPROTO;
        goto bad;
    }
    *rep = rh;
    if (rbody && rcap)
        memcpy(rbody, msgbuf + sizeof rh, rh.len < rcap ? rh.len : rcap);
    ret = 0;
    goto out;
bad:
    zti_log("malformed reply from ztapd (wrong magic/version/id/length), op ", NULL, NULL, op, NULL);
out:
    if (s >= 0)
        close(s);
    errno = saved;
    return ret;
}
