/* SPDX-License-Identifier: MIT */
/*
 * zti_rpc.c - request/reply exchanges with ztapd over SOCK_SEQPACKET connections.
 *
 * A request that waits for its answer goes over a session: one of a few connections per process
 * (ztrpc.h ZTRPC_OP_KEEP) that carry one request at a time and stay open for the next, so a
 * connect() pays for a sendmsg and a recv, not for a new unix connection (socket, connect,
 * ztapd's accept and credential check, close) each time. A session is taken whole by one caller
 * (an atomic state per slot: another thread or a signal handler takes another slot, or a
 * connection of its own when all are busy), and dropped on anything unusual: an interrupted or
 * timed-out wait (closing it is how ztapd learns the caller gave up), a malformed reply, ztapd
 * gone. ztapd closes sessions that idle: a send that finds it closed, or a reset with the request
 * unread, is retried on a fresh connection. Each message carries SCM_CREDENTIALS, so ztapd
 * judges every request by the ids the process has at that moment. A forked child closes the
 * parent's sessions (pthread_atfork) and opens its own; the app may close a session's number
 * behind our back (closefrom), so its inode is checked before each use.
 *
 * Requests that need no answer (ztrpc.h ZTRPC_OP_NOREPLY: TCP_NODELAY/TCP_CORK/TCP_QUICKACK,
 * which a server may toggle twice per response) go over one long-lived connection per process
 * instead, the one-way channel: a send and nothing else. It holds no state a signal handler or
 * another thread could find half-done (each sendmsg is one whole message; creation is a trylock
 * that falls back to a request of its own). A forked child notices the pid change (kept by the
 * pthread_atfork handler, not asked per message) and opens its own, so ztapd can keep each process's messages in order with the requests it waits on (it
 * reads a process's channel before serving that process's other requests). The app may close
 * the channel's number behind our back (closefrom): its inode is checked before each use.
 * The channel is a pipe when it can be (ztrpc.h ZTRPC_OP_CHANNEL): its read end goes to ztapd
 * once, and each message is one pwritev2(RWF_NOSIGNAL) of its bytes, with no socket buffer to
 * allocate and free on either side; the flag keeps a channel ztapd closed from raising SIGPIPE
 * in the app. Where the kernel lacks it (before 6.18) or ztapd does not know the op, the channel
 * is the SEQPACKET connection. A message that carries an fd never goes on a pipe.
 */
#include "zti.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/uio.h>

#ifndef RWF_NOSIGNAL
#define RWF_NOSIGNAL 0x00000100 /* Linux 6.18: a write to a pipe without readers raises no SIGPIPE */
#endif

static atomic_uint zti_next_id;


/* The one-way channel (see the top of this file). fd is published last (release), after the
 * fields that describe it; every field is atomic because readers race with a re-creation. */
static struct {
    atomic_int fd;      /* -1: none yet */
    atomic_int pid;     /* the process that opened it */
    atomic_ulong ino;   /* its inode: the app may have closed the number and reused it */
    atomic_int lock;    /* creation and teardown: taken with trylock only */
    atomic_int breaks;  /* times it broke (ztapd restarted or refused it); gives up at 8 */
    atomic_int pipe;    /* fd is a pipe's write end (ZTRPC_OP_CHANNEL), not a SEQPACKET socket */
} zti_chan = { -1, 0, 0, 0, 0, 0 };

/* Set once the kernel (no RWF_NOSIGNAL) or ztapd (no ZTRPC_OP_CHANNEL) refused a pipe channel. */
static atomic_int zti_chan_nopipe;

#define ZTI_CHAN_MAX_BREAKS 8

/* This process's pid for the channel's inheritance check, so a one-way message costs no
 * getpid (0: not asked yet). Set again in a forked child; a child that skipped pthread_atfork
 * (a raw clone, a vfork child before exec) keeps its parent's and sends on the parent's channel,
 * which ztapd takes as well (a reference or an fd names the socket): only the order of those
 * messages against that child's own requests is not kept. */
static atomic_int zti_chan_self;

static int zti_chan_me(void)
{
    int me = atomic_load_explicit(&zti_chan_self, memory_order_relaxed);
    if (me == 0) {
        me = (int)getpid();
        atomic_store_explicit(&zti_chan_self, me, memory_order_relaxed);
    }
    return me;
}

/* Called in a forked child: a lock held by a thread that does not exist there is free. */
void zti_chan_atfork_child(void)
{
    atomic_store(&zti_chan.lock, 0);
    atomic_store(&zti_chan_self, (int)getpid());
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

/* Makes @fd the channel (its fields first, fd last: readers load fd with acquire). */
static void zti_chan_publish(int fd, const struct stat *st, int me, int is_pipe)
{
    atomic_store(&zti_chan.pid, me);
    atomic_store(&zti_chan.ino, (unsigned long)st->st_ino);
    atomic_store(&zti_chan.pipe, is_pipe);
    atomic_store_explicit(&zti_chan.fd, fd, memory_order_release);
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
    int p[2];
    if (!atomic_load(&zti_chan_nopipe) && pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0) {
        /* The kernel must take RWF_NOSIGNAL (Linux 6.18): a byte through the new pipe says so. */
        char b = 0;
        struct iovec iov = { &b, 1 };
        if (pwritev2(p[1], &iov, 1, -1, RWF_NOSIGNAL) != 1 || read(p[0], &b, 1) != 1) {
            close(p[0]);
            close(p[1]);
            atomic_store(&zti_chan_nopipe, 1);
            goto seqpacket;
        }
        struct ztrpc_rep_hdr rep;
        int rerr = 0;
        int r = zti_rpc(ZTRPC_OP_CHANNEL, NULL, 0, &p[0], 1, &rep, NULL, 0, 10 * 1000, ZTI_RPC_QUIET, &rerr);
        close(p[0]);
        struct stat pst;
        if (r == 0 && rep.result == 0 && fstat(p[1], &pst) == 0) {
            zti_chan_publish(p[1], &pst, me, 1);
            ret = 0;
            goto out;
        }
        close(p[1]);
        if (r < 0)
            goto out; /* ztapd unreachable: requests of their own */
        if (rep.err != EOPNOTSUPP) {
            /* Refused (the user has too many channels): counts towards giving up, as a
             * SEQPACKET channel ztapd closes at once does. */
            atomic_fetch_add(&zti_chan.breaks, 1);
            goto out;
        }
        atomic_store(&zti_chan_nopipe, 1); /* an older ztapd: the SEQPACKET channel */
    }
seqpacket:;
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
    zti_chan_publish(s, &st, me, 0);
    ret = 0;
out:
    atomic_store(&zti_chan.lock, 0);
    return ret;
}

/* Sends @mh on the one-way channel. Returns 0 when sent, -1 when the caller should make a
 * request of its own and wait for the answer (no channel, ztapd behind or gone). */
static int zti_chan_send(const struct msghdr *mh)
{
    int me = zti_chan_me();
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
        if (atomic_load(&zti_chan.pipe)) {
            if (mh->msg_controllen)
                return -1; /* fds do not travel on a pipe: a request of its own */
            while ((r = pwritev2(fd, mh->msg_iov, (int)mh->msg_iovlen, -1, RWF_NOSIGNAL)) < 0 && errno == EINTR)
                ;
            if (r < 0 && (errno == EOPNOTSUPP || errno == EINVAL)) {
                /* No RWF_NOSIGNAL (nothing was written): the SEQPACKET channel from now on. */
                atomic_store(&zti_chan_nopipe, 1);
                zti_chan_drop(fd, 0);
                continue;
            }
        } else {
            while ((r = zti_real.sendmsg(fd, mh, MSG_NOSIGNAL | MSG_DONTWAIT)) < 0 && errno == EINTR)
                ;
        }
        if (r >= 0)
            return 0;
        if (errno == EAGAIN)
            return -1; /* ztapd is behind: wait for it like any request */
        zti_chan_drop(fd, 1);
    }
    return -1;
}

/* Sessions (see the top of this file). A slot's fd, ino and pid belong to whoever moved its
 * state to BUSY; the release store to IDLE publishes them to the next taker. */
#define ZTI_SESSIONS 4
enum { ZTI_SESS_EMPTY, ZTI_SESS_IDLE, ZTI_SESS_BUSY };
static struct zti_sess {
    atomic_int state;
    int fd;
    unsigned long ino;
    int pid;
} zti_sess[ZTI_SESSIONS];

/* Called in a forked child: the parent's sessions are the parent's (ztapd must see this
 * process's own); the child's copies of them are closed. A thread that was using one does not
 * exist here. */
void zti_sess_atfork_child(void)
{
    for (int i = 0; i < ZTI_SESSIONS; i++) {
        if (atomic_load(&zti_sess[i].state) != ZTI_SESS_EMPTY && zti_sess[i].fd >= 0)
            close(zti_sess[i].fd);
        zti_sess[i].fd = -1;
        atomic_store(&zti_sess[i].state, ZTI_SESS_EMPTY);
    }
}

/* Ends a session taken with zti_sess_take: back to IDLE when @keep, else closed (when its inode
 * says the number is still ours) and EMPTY. */
static void zti_sess_put(struct zti_sess *s, int keep)
{
    if (!keep) {
        struct stat st;
        if (s->fd >= 0 && fstat(s->fd, &st) == 0 && (unsigned long)st.st_ino == s->ino)
            close(s->fd);
        s->fd = -1;
        atomic_store_explicit(&s->state, ZTI_SESS_EMPTY, memory_order_release);
        return;
    }
    atomic_store_explicit(&s->state, ZTI_SESS_IDLE, memory_order_release);
}

/* A session for this call: an idle one that is still ours, else a new one in an empty slot.
 * NULL when every slot is busy or ztapd cannot take one now (the caller uses a connection of its
 * own). */
static struct zti_sess *zti_sess_take(int me)
{
    for (int i = 0; i < ZTI_SESSIONS; i++) {
        struct zti_sess *s = &zti_sess[i];
        int idle = ZTI_SESS_IDLE;
        if (!atomic_compare_exchange_strong_explicit(&s->state, &idle, ZTI_SESS_BUSY, memory_order_acquire,
                                                     memory_order_relaxed))
            continue;
        struct stat st;
        if (s->pid == me && fstat(s->fd, &st) == 0 && (unsigned long)st.st_ino == s->ino)
            return s;
        /* The app closed or reused the number (not ours to close), or a child that skipped
         * pthread_atfork (raw clone) sees its parent's: forget it. */
        s->fd = -1;
        atomic_store_explicit(&s->state, ZTI_SESS_EMPTY, memory_order_release);
    }
    for (int i = 0; i < ZTI_SESSIONS; i++) {
        struct zti_sess *s = &zti_sess[i];
        int empty = ZTI_SESS_EMPTY;
        if (!atomic_compare_exchange_strong_explicit(&s->state, &empty, ZTI_SESS_BUSY, memory_order_acquire,
                                                     memory_order_relaxed))
            continue;
        s->fd = -1;
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        struct stat st;
        int r = -1;
        if (fd >= 0) {
            while ((r = zti_real.connect(fd, (const struct sockaddr *)&zti_cfg.rpc_addr, zti_cfg.rpc_addr_len)) < 0 &&
                   errno == EINTR)
                ;
            if (r == 0 && fstat(fd, &st) < 0)
                r = -1;
        }
        if (r < 0) {
            /* EAGAIN (a full backlog) included: the caller's own connection waits for it. */
            if (fd >= 0)
                close(fd);
            atomic_store_explicit(&s->state, ZTI_SESS_EMPTY, memory_order_release);
            return NULL;
        }
        s->fd = fd;
        s->ino = (unsigned long)st.st_ino;
        s->pid = me;
        return s;
    }
    return NULL;
}

/* How long reaching ztapd's listener may take when its backlog is full. */
#define ZTI_CONNECT_WAIT_MS 5000

static long zti_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* What zti_exchange() ended with besides success and failure. */
enum { ZTI_EX_OK = 0, ZTI_EX_FAILED = -1, ZTI_EX_STALE = -2 };

/* Sends the request @mh on connection @s and reads its reply into @msgbuf (ZTRPC_MAX_MSG).
 * Returns the reply's length, ZTI_EX_FAILED with *err, or (on a session) ZTI_EX_STALE when
 * ztapd had closed it without reading the request, which may then be sent again. */
static ssize_t zti_exchange(int s, const struct msghdr *mh, int session, long send_deadline, int timeout_ms,
                            int flags, uint16_t op, unsigned char *msgbuf, int *err)
{
    while (zti_real.sendmsg(s, mh, MSG_NOSIGNAL) < 0) {
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN && zti_now_ms() < send_deadline) {
            struct pollfd pw = { .fd = s, .events = POLLOUT };
            (void)poll(&pw, 1, 1);
            continue;
        }
        if (session && (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN))
            return ZTI_EX_STALE;
        *err = errno;
        zti_log("sending a request to ztapd failed, errno ", NULL, NULL, errno, NULL);
        return ZTI_EX_FAILED;
    }

    long deadline = timeout_ms >= 0 ? zti_now_ms() + timeout_ms : 0;
    for (;;) {
        int wait = -1;
        if (timeout_ms >= 0) {
            long left = deadline - zti_now_ms();
            if (left <= 0) {
                *err = ETIMEDOUT;
                zti_dbg("ztapd did not answer in time, op ", NULL, NULL, op, NULL);
                return ZTI_EX_FAILED;
            }
            wait = left > 0x7fffffff ? 0x7fffffff : (int)left;
        }
        struct pollfd p = { .fd = s, .events = POLLIN };
        int r = poll(&p, 1, wait);
        if (r < 0) {
            if (errno == EINTR && !(flags & ZTI_RPC_INTERRUPTIBLE))
                continue;
            *err = errno;
            return ZTI_EX_FAILED;
        }
        if (r > 0)
            break;
    }
    ssize_t n;
    while ((n = zti_real.recv(s, msgbuf, ZTRPC_MAX_MSG, MSG_DONTWAIT)) < 0 && errno == EINTR)
        ;
    if (n < 0) {
        /* A reset: ztapd closed the connection with the request unread (an idle session). */
        if (session && errno == ECONNRESET)
            return ZTI_EX_STALE;
        *err = errno;
        return ZTI_EX_FAILED;
    }
    if (n == 0) {
        /* ztapd closed the request without answering (it stopped, or refused us). */
        *err = ECONNRESET;
        zti_log("ztapd closed the request without a reply, op ", NULL, NULL, op, NULL);
        return ZTI_EX_FAILED;
    }
    return n;
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
 *         ZTI_RPC_NOREPLY: ask for no reply (ztrpc.h ZTRPC_OP_NOREPLY) and return once sent;
 *         ZTI_RPC_ONESHOT: a connection of its own, never a session (the seccomp supervisor, whose
 *         requests are made under each target's ids)
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

    /* Request: header + body in one message, fds in one SCM_RIGHTS cmsg (after the credentials
     * on a session). */
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
        char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * ZTRPC_MAX_FDS)];
    } cbuf;
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    size_t rights_len = nfds > 0 ? CMSG_SPACE(sizeof(int) * (size_t)nfds) : 0;
    memset(&cbuf, 0, sizeof cbuf);
    /* The rights go last so the one-off form below is the same buffer without the credentials. */
    char *rights_at = cbuf.buf + CMSG_SPACE(sizeof(struct ucred));
    if (nfds > 0) {
        struct cmsghdr *c = (struct cmsghdr *)rights_at;
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
        mh.msg_control = rights_at;
        mh.msg_controllen = rights_len;
    }
    if (flags & ZTI_RPC_NOREPLY) {
        if (zti_chan_send(&mh) == 0) {
            ret = 0; /* *rep stays zeroed: result 0 */
            goto out;
        }
        if (flags & ZTI_RPC_CHANNEL_ONLY) {
            *err = EAGAIN;
            goto out;
        }
        /* No channel: a request of its own, answered like any other. */
        flags &= ~ZTI_RPC_NOREPLY;
        hdr.op = op;
        memcpy(msgbuf, &hdr, sizeof hdr);
    }

    ssize_t n = ZTI_EX_STALE;
    long connect_deadline = zti_now_ms() + (timeout_ms >= 0 && timeout_ms < ZTI_CONNECT_WAIT_MS
                                                ? timeout_ms : ZTI_CONNECT_WAIT_MS);
    if (!(flags & ZTI_RPC_ONESHOT)) {
        int me = (int)getpid();
        struct ztrpc_req_hdr khdr = hdr;
        khdr.op = (uint16_t)(op | ZTRPC_OP_KEEP);
        struct msghdr kmh = mh;
        struct cmsghdr *c = (struct cmsghdr *)cbuf.buf;
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_CREDENTIALS;
        c->cmsg_len = CMSG_LEN(sizeof(struct ucred));
        struct ucred cred = { .pid = me, .uid = geteuid(), .gid = getegid() };
        memcpy(CMSG_DATA(c), &cred, sizeof cred);
        kmh.msg_control = cbuf.buf;
        kmh.msg_controllen = CMSG_SPACE(sizeof(struct ucred)) + rights_len;
        memcpy(msgbuf, &khdr, sizeof khdr);
        /* A stale session (closed by ztapd for idling) is replaced once; then a connection of
         * our own. */
        for (int attempt = 0; attempt < 2 && n == ZTI_EX_STALE; attempt++) {
            struct zti_sess *sess = zti_sess_take(me);
            if (!sess)
                break;
            n = zti_exchange(sess->fd, &kmh, 1, connect_deadline, timeout_ms, flags, op, msgbuf, err);
            zti_sess_put(sess, n > 0);
        }
        if (n == ZTI_EX_FAILED)
            goto out;
        if (n == ZTI_EX_STALE)
            memcpy(msgbuf, &hdr, sizeof hdr); /* the one-off form (msgbuf holds the reply otherwise) */
    }

    if (n == ZTI_EX_STALE) {
        /* Non-blocking: a full listen backlog (a storm of requests) makes a blocking unix connect
         * wait without limit; here it is retried within the request's time limit instead. */
        s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (s < 0) {
            *err = errno;
            goto out;
        }
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
        n = zti_exchange(s, &mh, 0, connect_deadline, timeout_ms, flags, op, msgbuf, err);
        if (n < 0)
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
