/* SPDX-License-Identifier: MIT */
/*
 * zti_core.c - libztintercept.so: real libc symbols, logging, the fd table (configuration and
 * address selection: zti_cfg.c).
 *
 * DOC: Theory of Operation
 *
 * libztintercept.so is loaded with LD_PRELOAD into an unmodified app (ztctl run NET -- cmd) and
 * moves the app's IPv4 and IPv6 sockets that talk to a ztap network onto ztapd, which runs them on its
 * own userspace TCP/IP stack. The wire format and channel layout are in ztrpc.h; the user-facing
 * description is docs/INTERCEPT.md.
 *
 * What is intercepted: connect, bind, listen, accept, accept4, syscall(SYS_accept/SYS_accept4),
 * getsockname, getpeername, getsockopt, setsockopt, dup, dup2, dup3, socketpair (only to remember
 * that the app's own pairs are not ztap sockets), and for datagram sockets
 * sendto, sendmsg, sendmmsg, send, write, recvfrom, recvmsg, recvmmsg, recv, read, shutdown (plus
 * the _FORTIFY_SOURCE variants __read_chk, __recv_chk, __recvfrom_chk).
 *
 * What passes through to libc: everything about a socket that is not (or not yet) a ztap
 * socket; socket() itself (the decision is taken at connect/bind/sendto by address); and for
 * intercepted TCP sockets read/write/send/recv/poll/select/epoll/sendfile/splice/shutdown/close,
 * which work natively on the AF_UNIX stream that replaced the socket. A per-call check is one
 * relaxed byte load from the fd table for every fd that is not an intercepted UDP socket.
 *
 * Re-entrancy and signals: interceptors use only system calls, atomics and stack memory: no
 * malloc, no stdio, no locks (the fd table is a seqlock; waits for a writer of the same slot are
 * bounded, so a signal handler that interrupted one cannot hang). They are async-signal-safe
 * wherever the libc function they replace is. Real symbols are resolved by the constructor (and
 * lazily, idempotently, if an earlier constructor calls in first); read and write never trigger
 * that resolution (see zti_sys_read), so a malloc that reads files while dlsym runs is safe.
 *
 * errno: every interceptor saves errno on entry and restores it on success, so internal calls
 * (fstat, getsockopt, RPCs) never leak an errno; on failure errno is what libc would set.
 *
 * fork: the child inherits the fd table (it is ordinary memory) and the sockets, so everything
 * keeps working; the child closes its copies of the parent's RPC sessions and channel
 * (zti_rpc.c) and opens its own, so nothing half-used is shared. exec: the table is gone; the constructor marks inherited AF_UNIX sockets that could
 * be ztap sockets (unnamed on both ends, like a socketpair) as "unknown", and the first call that
 * needs to know asks ztapd (GETNAME), which recognises its sockets by inode.
 */
#include "zti.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>

struct zti_real zti_real;
atomic_int zti_ready;
struct zti_config zti_cfg;

/* Table slot: a seqlock (odd = being written) around one entry. hot mirrors e.kind for the data
 * path's one-byte check. */
struct zti_slot {
    atomic_uint seq;
    struct zti_ent e;
};
static struct zti_slot zti_table[ZTI_STATIC_FDS];
_Atomic uint8_t zti_hot[ZTI_STATIC_FDS];

/* fds from ZTI_STATIC_FDS up: chunks mapped on first write, never unmapped. */
struct zti_chunk {
    struct zti_slot slot[ZTI_CHUNK_FDS];
    _Atomic uint8_t hot[ZTI_CHUNK_FDS];
};
#define ZTI_NCHUNKS ((ZTI_MAX_FDS - ZTI_STATIC_FDS) / ZTI_CHUNK_FDS)
static struct zti_chunk *_Atomic zti_chunks[ZTI_NCHUNKS];

static struct zti_chunk *zti_chunk_of(int fd, int create)
{
    unsigned i = ((unsigned)fd - ZTI_STATIC_FDS) / ZTI_CHUNK_FDS;
    struct zti_chunk *c = atomic_load_explicit(&zti_chunks[i], memory_order_acquire);
    if (c || !create)
        return c;
    void *m = mmap(NULL, sizeof *c, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    struct zti_chunk *expected = NULL;
    if (!atomic_compare_exchange_strong_explicit(&zti_chunks[i], &expected, (struct zti_chunk *)m,
                                                 memory_order_acq_rel, memory_order_acquire)) {
        munmap(m, sizeof *c); /* another thread mapped it first */
        return expected;
    }
    return (struct zti_chunk *)m;
}

/* The slot and hot byte of fd (NULL: beyond the table, or not mapped and !create). */
static struct zti_slot *zti_slot_of(int fd, int create, _Atomic uint8_t **hot)
{
    if ((unsigned)fd < ZTI_STATIC_FDS) {
        *hot = &zti_hot[fd];
        return &zti_table[fd];
    }
    if ((unsigned)fd >= ZTI_MAX_FDS)
        return NULL;
    struct zti_chunk *c = zti_chunk_of(fd, create);
    if (!c)
        return NULL;
    unsigned j = ((unsigned)fd - ZTI_STATIC_FDS) % ZTI_CHUNK_FDS;
    *hot = &c->hot[j];
    return &c->slot[j];
}

int zti_hot_kind_ext(int fd)
{
    _Atomic uint8_t *hot;
    if (!zti_slot_of(fd, 0, &hot))
        return ZTI_NONE;
    return atomic_load_explicit(hot, memory_order_relaxed);
}
/* A writer holds a slot for one memcpy. Waiters spin briefly, then yield the CPU (the writer may
 * be preempted); after this many rounds (seconds) the writer is taken to be the code a signal
 * handler interrupted, which will never finish while the handler waits. */
#define ZTI_MAX_SPINS (1u << 22)

static void zti_backoff(unsigned spins)
{
    if (spins < 1000)
        ZTI_RELAX();
    else
        sched_yield();
}

/* ---------------------------------------------------------------------------------------------
 * Real symbols
 */

#define ZTI_RESOLVE(field, name) zti_real.field = (__typeof__(zti_real.field))dlsym(RTLD_NEXT, name)

/**
 * zti_resolve() - fill zti_real with the next definitions of the intercepted functions
 *
 * Idempotent and race-free: concurrent callers store the same pointers; zti_ready is published
 * with release ordering after all stores.
 */
void zti_resolve(void)
{
    ZTI_RESOLVE(connect, "connect");
    ZTI_RESOLVE(socket, "socket");
    ZTI_RESOLVE(bind, "bind");
    ZTI_RESOLVE(listen, "listen");
    ZTI_RESOLVE(accept, "accept");
    ZTI_RESOLVE(accept4, "accept4");
    ZTI_RESOLVE(getsockname, "getsockname");
    ZTI_RESOLVE(getpeername, "getpeername");
    ZTI_RESOLVE(getsockopt, "getsockopt");
    ZTI_RESOLVE(setsockopt, "setsockopt");
    ZTI_RESOLVE(send, "send");
    ZTI_RESOLVE(sendto, "sendto");
    ZTI_RESOLVE(sendmsg, "sendmsg");
    ZTI_RESOLVE(sendmmsg, "sendmmsg");
    ZTI_RESOLVE(recv, "recv");
    ZTI_RESOLVE(recvfrom, "recvfrom");
    ZTI_RESOLVE(recvmsg, "recvmsg");
    ZTI_RESOLVE(recvmmsg, "recvmmsg");
    ZTI_RESOLVE(read, "read");
    ZTI_RESOLVE(write, "write");
    ZTI_RESOLVE(readv, "readv");
    ZTI_RESOLVE(writev, "writev");
    ZTI_RESOLVE(read_chk, "__read_chk");
    ZTI_RESOLVE(recv_chk, "__recv_chk");
    ZTI_RESOLVE(recvfrom_chk, "__recvfrom_chk");
    ZTI_RESOLVE(socketpair, "socketpair");
    ZTI_RESOLVE(shutdown, "shutdown");
    ZTI_RESOLVE(dup, "dup");
    ZTI_RESOLVE(dup2, "dup2");
    ZTI_RESOLVE(dup3, "dup3");
    ZTI_RESOLVE(fcntl, "fcntl");
    ZTI_RESOLVE(ioctl, "ioctl");
    ZTI_RESOLVE(syscall, "syscall");
    atomic_store_explicit(&zti_ready, 1, memory_order_release);
}

/* ---------------------------------------------------------------------------------------------
 * Logging: one write(2) per line, built on the stack.
 */

static size_t zti_append(char *buf, size_t at, size_t cap, const char *s)
{
    while (s && *s && at < cap)
        buf[at++] = *s++;
    return at;
}

/**
 * zti_log() - write "ztintercept[NET]: <a><b><c><num><d>\n" to stderr
 * @a: first text (may be NULL)
 * @b: second text (may be NULL)
 * @c: third text (may be NULL)
 * @num: a number to print, or LONG_MIN for none
 * @d: trailing text (may be NULL)
 *
 * Async-signal-safe; errno is preserved.
 */
void zti_log(const char *a, const char *b, const char *c, long num, const char *d)
{
    int saved = errno;
    char buf[512];
    size_t n = zti_append(buf, 0, sizeof buf - 1, "ztintercept");
    if (zti_cfg.network[0]) {
        n = zti_append(buf, n, sizeof buf - 1, "[");
        n = zti_append(buf, n, sizeof buf - 1, zti_cfg.network);
        n = zti_append(buf, n, sizeof buf - 1, "]");
    }
    n = zti_append(buf, n, sizeof buf - 1, ": ");
    n = zti_append(buf, n, sizeof buf - 1, a);
    n = zti_append(buf, n, sizeof buf - 1, b);
    n = zti_append(buf, n, sizeof buf - 1, c);
    if (num != LONG_MIN) {
        char digits[24];
        int i = (int)sizeof digits;
        unsigned long v = num < 0 ? (unsigned long)0 - (unsigned long)num : (unsigned long)num;
        digits[--i] = 0;
        do {
            digits[--i] = (char)('0' + v % 10);
            v /= 10;
        } while (v && i > 1);
        if (num < 0)
            digits[--i] = '-';
        n = zti_append(buf, n, sizeof buf - 1, digits + i);
    }
    n = zti_append(buf, n, sizeof buf - 1, d);
    buf[n++] = '\n';
    (void)!zti_sys_write(STDERR_FILENO, buf, n);
    errno = saved;
}

static const char *zti_errname(int err)
{
    switch (err) {
    case ENOENT: return " (ENOENT: no such socket; is the network joined?)";
    case ECONNREFUSED: return " (ECONNREFUSED: nothing listening; is ztapd running?)";
    case EACCES: return " (EACCES: permission denied)";
    case EPERM: return " (EPERM: permission denied)";
    case EPROTOTYPE: return " (EPROTOTYPE: not ztapd's SOCK_SEQPACKET socket)";
    case EAGAIN: return " (EAGAIN: ztapd's backlog is full)";
    default: return NULL;
    }
}

/**
 * zti_log_unreachable() - report once per process that ztapd cannot be reached
 * @err: errno of the failed connect to ZTAP_RPC
 *
 * One line on stderr; with ZTAP_DEBUG=1 every failure is reported.
 */
void zti_log_unreachable(int err)
{
    static atomic_int once;
    if (atomic_exchange(&once, 1) && !zti_cfg.debug)
        return;
    const char *name = zti_errname(err);
    zti_log("cannot reach ztapd at ", zti_cfg.rpc_addr.path, name ? name : " (errno ",
            name ? LONG_MIN : err,
            name ? "; sockets for this network fail with ECONNREFUSED/ENETUNREACH"
                 : "); sockets for this network fail with ECONNREFUSED/ENETUNREACH");
}

/* ---------------------------------------------------------------------------------------------
 * fd table
 */

/**
 * zti_table_get() - consistent snapshot of an fd's entry
 * @fd: file descriptor
 * @out: filled with the entry (kind ZTI_NONE if none)
 *
 * Return: out->kind.
 */
int zti_table_get(int fd, struct zti_ent *out)
{
    _Atomic uint8_t *hot;
    struct zti_slot *s = zti_slot_of(fd, 0, &hot);
    if (!s) {
        memset(out, 0, sizeof *out);
        return ZTI_NONE;
    }
    for (unsigned spins = 0;; spins++) {
        unsigned a = atomic_load_explicit(&s->seq, memory_order_acquire);
        /* Bounded wait: a signal handler that interrupted a writer of this very slot would
         * otherwise spin forever; it gets "nothing known" instead. */
        if (a == 0 || spins > ZTI_MAX_SPINS) {
            memset(out, 0, sizeof *out);
            return ZTI_NONE;
        }
        if (a & 1) {
            zti_backoff(spins);
            continue;
        }
        memcpy(out, &s->e, sizeof *out);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&s->seq, memory_order_relaxed) == a)
            return out->kind;
    }
}

/**
 * zti_table_put() - replace an fd's entry
 * @fd: file descriptor (ignored when >= ZTI_MAX_FDS, or when no memory can be mapped for it)
 * @ent: new entry
 */
void zti_table_put(int fd, const struct zti_ent *ent)
{
    _Atomic uint8_t *hot;
    struct zti_slot *s = zti_slot_of(fd, ent->kind != ZTI_NONE, &hot);
    if (!s)
        return;
    unsigned a;
    for (unsigned spins = 0;; spins++) {
        a = atomic_load_explicit(&s->seq, memory_order_relaxed);
        if (!(a & 1) &&
            atomic_compare_exchange_weak_explicit(&s->seq, &a, a + 1, memory_order_acq_rel,
                                                  memory_order_relaxed))
            break;
        if (spins > ZTI_MAX_SPINS) {
            /* Only a signal handler racing the interrupted writer of the same fd gets here. */
            zti_log("fd table slot busy, entry not updated, fd ", NULL, NULL, fd, NULL);
            return;
        }
        zti_backoff(spins);
    }
    memcpy(&s->e, ent, sizeof *ent);
    atomic_store_explicit(hot, ent->kind, memory_order_relaxed);
    /* a + 2 would be 0 after wrap-around; 0 means "never written", so skip it. */
    unsigned next = a + 2;
    if (next == 0)
        next = 2;
    atomic_store_explicit(&s->seq, next, memory_order_release);
}

void zti_table_clear(int fd)
{
    _Atomic uint8_t *hot;
    struct zti_slot *s = zti_slot_of(fd, 0, &hot);
    if (!s || atomic_load_explicit(&s->seq, memory_order_relaxed) == 0)
        return;
    struct zti_ent e;
    memset(&e, 0, sizeof e);
    zti_table_put(fd, &e);
}

/* A writer of a slot that was interrupted by fork() in another thread never finishes in the child:
 * its slot would stay odd, and every later call on that fd would wait out the spin limit and see
 * "nothing known". In the child, such slots are cleared (the next call asks ztapd again). */
static void zti_reset_slot(struct zti_slot *s, _Atomic uint8_t *hot)
{
    unsigned a = atomic_load_explicit(&s->seq, memory_order_relaxed);
    if (!(a & 1))
        return;
    memset(&s->e, 0, sizeof s->e);
    atomic_store_explicit(hot, ZTI_NONE, memory_order_relaxed);
    atomic_store_explicit(&s->seq, a + 1 ? a + 1 : 2, memory_order_release);
}

static void zti_atfork_child(void)
{
    zti_chan_atfork_child();
    zti_sess_atfork_child();
    for (unsigned fd = 0; fd < ZTI_STATIC_FDS; fd++)
        zti_reset_slot(&zti_table[fd], &zti_hot[fd]);
    for (unsigned i = 0; i < ZTI_NCHUNKS; i++) {
        struct zti_chunk *c = atomic_load_explicit(&zti_chunks[i], memory_order_acquire);
        for (unsigned j = 0; c && j < ZTI_CHUNK_FDS; j++)
            zti_reset_slot(&c->slot[j], &c->hot[j]);
    }
}

/* Could this AF_UNIX socket be a ztap socket? Both ends unnamed (a socketpair), stream or
 * seqpacket. Filters out the app's own named/accepted unix sockets without bothering ztapd. */
static int zti_unix_candidate(int fd)
{
    int v;
    socklen_t l = sizeof v;
    if (zti_real.getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &l) < 0 || v != AF_UNIX)
        return 0;
    l = sizeof v;
    if (zti_real.getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &l) < 0 ||
        (v != SOCK_STREAM && v != SOCK_SEQPACKET))
        return 0;
    struct sockaddr_un un;
    l = sizeof un;
    if (zti_real.getsockname(fd, (struct sockaddr *)&un, &l) < 0 || l > sizeof(sa_family_t))
        return 0;
    l = sizeof un;
    if (zti_real.getpeername(fd, (struct sockaddr *)&un, &l) < 0 || l > sizeof(sa_family_t))
        return 0;
    return 1;
}

/**
 * zti_table_scan_inherited() - mark inherited AF_UNIX sockets that may be ztap sockets
 *
 * Runs in the constructor after exec. Reads /proc/self/fd with getdents64 into a stack buffer
 * (no opendir: no allocation).
 */
void zti_table_scan_inherited(void)
{
    int dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return;
    char buf[4096];
    for (;;) {
        long n = zti_real.syscall(SYS_getdents64, dfd, buf, sizeof buf);
        if (n <= 0)
            break;
        for (long off = 0; off < n;) {
            /* struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, char name[] */
            unsigned short reclen;
            memcpy(&reclen, buf + off + 16, sizeof reclen);
            const char *name = buf + off + 19;
            off += reclen;
            if (name[0] < '0' || name[0] > '9')
                continue;
            long fd = strtol(name, NULL, 10);
            if (fd == dfd || fd < 0 || fd >= ZTI_MAX_FDS)
                continue;
            struct stat st;
            if (fstat((int)fd, &st) < 0 || !S_ISSOCK(st.st_mode) || !zti_unix_candidate((int)fd))
                continue;
            struct zti_ent e;
            memset(&e, 0, sizeof e);
            e.kind = ZTI_UNKNOWN;
            e.dev = st.st_dev;
            e.ino = st.st_ino;
            zti_table_put((int)fd, &e);
            zti_dbg("inherited socket may be ztap: fd ", NULL, NULL, fd, NULL);
        }
    }
    close(dfd);
}

void zti_copy_entry(int oldfd, int newfd)
{
    struct zti_ent e;
    if (zti_table_get(oldfd, &e) != ZTI_NONE) {
        if (e.kind == ZTI_INET && e.fresh) {
            /* An option set through one fd would not be seen in the other's entry. */
            e.fresh = 0;
            zti_table_put(oldfd, &e);
        }
        zti_table_put(newfd, &e);
    } else if (zti_hot_kind(newfd) != ZTI_NONE) {
        zti_table_clear(newfd);
    }
}

void zti_note_foreign_fd(int fd)
{
    int saved = errno;
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) && zti_unix_candidate(fd)) {
        struct zti_ent e;
        memset(&e, 0, sizeof e);
        e.kind = ZTI_UNKNOWN;
        e.dev = st.st_dev;
        e.ino = st.st_ino;
        zti_table_put(fd, &e);
    } else if (zti_hot_kind(fd) != ZTI_NONE) {
        zti_table_clear(fd);
    }
    errno = saved;
}

/**
 * zti_ent_from_info() - build a table entry from a ztapd sockinfo
 * @e: entry to fill
 * @kind: ZTI_TCP, ZTI_LISTEN or ZTI_UDP
 * @si: sockinfo from a reply
 * @fd: the fd whose inode identifies the socket now, asked when @si does not say
 */
void zti_ent_from_info(struct zti_ent *e, int kind, const struct ztrpc_sockinfo *si, int fd)
{
    struct stat st;
    memset(e, 0, sizeof *e);
    e->kind = (uint8_t)kind;
    e->state = si->state;
    e->proto = si->proto;
    e->backlog = si->backlog;
    e->family = si->family == AF_INET6 ? AF_INET6 : AF_INET;
    e->v6only = (si->flags & ZTRPC_SI_V6ONLY) != 0;
    e->local = si->local;
    e->peer = si->peer;
    e->shut = (uint8_t)(si->shut & (ZTRPC_SHUT_RD | ZTRPC_SHUT_WR));
    e->secret = (uint64_t)si->secret[0] | (uint64_t)si->secret[1] << 32;
    if (si->ino != 0) {
        /* ztapd's key for it (the app end's identity): no fstat. */
        e->dev = si->dev;
        e->ino = si->ino;
    } else if (fd >= 0 && fstat(fd, &st) == 0) {
        e->dev = st.st_dev;
        e->ino = st.st_ino;
    }
}

static int zti_kind_of_info(const struct ztrpc_sockinfo *si)
{
    if (si->proto == IPPROTO_UDP)
        return ZTI_UDP;
    return si->state == ZTRPC_STATE_LISTENING ? ZTI_LISTEN : ZTI_TCP;
}

/* Ask ztapd whether fd is one of its sockets; caches the answer. */
static int zti_query(int fd, struct zti_ent *e, const struct stat *st)
{
    struct ztrpc_rep_hdr rep;
    struct ztrpc_sockinfo si;
    int err;
    int r = zti_rpc(ZTRPC_OP_GETNAME, NULL, 0, &fd, 1, &rep, &si, sizeof si, 5000, ZTI_RPC_QUIET,
                    &err);
    /* ztapd unreachable: even if this was one of its sockets, it died with ztapd (a restarted
     * ztapd does not know it), so "not ztap" is the right answer to cache; it also keeps a
     * read() loop on, say, an inherited stdin socketpair from retrying the RPC every time. */
    if (r == 0 && rep.result == 0) {
        zti_ent_from_info(e, zti_kind_of_info(&si), &si, fd);
        zti_table_put(fd, e);
        zti_dbg("ztapd recognised fd ", NULL, NULL, fd, NULL);
        return e->kind;
    }
    memset(e, 0, sizeof *e);
    e->kind = ZTI_NOTZTAP;
    e->dev = st->st_dev;
    e->ino = st->st_ino;
    zti_table_put(fd, e);
    memset(e, 0, sizeof *e);
    return ZTI_NONE;
}

int zti_classify(int fd, struct zti_ent *e, int query)
{
    int saved = errno;
    int kind = zti_table_get(fd, e);
    int out = ZTI_NONE;
    struct stat st;
    if (kind == ZTI_NONE && (!query || !zti_cfg.enabled))
        return ZTI_NONE;
    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        if (kind != ZTI_NONE)
            zti_table_clear(fd);
        goto done;
    }
    if (kind != ZTI_NONE && e->dev == (uint64_t)st.st_dev && e->ino == (uint64_t)st.st_ino) {
        if (kind == ZTI_UNKNOWN) {
            out = zti_query(fd, e, &st);
            goto done;
        }
        out = kind == ZTI_NOTZTAP ? ZTI_NONE : kind;
        goto done;
    }
    memset(e, 0, sizeof *e);
    if (!query || !zti_cfg.enabled) {
        if (kind != ZTI_NONE)
            zti_table_clear(fd);
    } else if (zti_unix_candidate(fd)) {
        out = zti_query(fd, e, &st);
    } else {
        /* Remember the answer: the next control call on this socket costs one fstat. */
        e->kind = ZTI_NOTZTAP;
        e->dev = st.st_dev;
        e->ino = st.st_ino;
        zti_table_put(fd, e);
    }
done:
    if (out == ZTI_NONE)
        memset(e, 0, sizeof *e);
    errno = saved;
    return out;
}

int zti_classify_udp(int fd, struct zti_ent *e)
{
    int k = zti_classify(fd, e, 0);
    return k == ZTI_UDP ? ZTI_UDP : ZTI_NONE;
}

/* ---------------------------------------------------------------------------------------------
 * Helpers
 */

int zti_close(int fd)
{
    int saved = errno;
    int r = close(fd);
    errno = saved;
    return r;
}

/**
 * zti_install() - make fd refer to newfd's socket, keeping fd's O_NONBLOCK and FD_CLOEXEC
 * @fd: the app's fd number
 * @newfd: the app end of a socketpair; closed on success
 *
 * Return: 0, or -errno (newfd is left open then).
 */
int zti_install(int fd, int newfd)
{
    int fl = zti_real.fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    int nfl = zti_real.fcntl(newfd, F_GETFL);
    if (nfl < 0)
        return -errno;
    if ((nfl & O_NONBLOCK) != (fl & O_NONBLOCK) &&
        zti_real.fcntl(newfd, F_SETFL, (nfl & ~O_NONBLOCK) | (fl & O_NONBLOCK)) < 0)
        return -errno;
    return zti_install_known(fd, newfd, 0);
}

/**
 * zti_install_known() - zti_install() for a caller that made newfd with fd's O_NONBLOCK
 * @fd: the app's fd number
 * @newfd: the app end, created with O_NONBLOCK as fd has it
 * @fresh: fd is a socket made under the library with none of the carried options set
 *         (zti_ent.fresh): they all have a new socket's values, nothing to read back
 *
 * Return: 0, or -errno (newfd is left open then).
 */
int zti_install_known(int fd, int newfd, int fresh)
{
    int fdfl = zti_real.fcntl(fd, F_GETFD);
    if (fdfl < 0)
        return -errno;
    /* Options that act on the fd's own reads and writes (SO_RCVTIMEO and friends) were set on the
     * kernel socket; the app expects them to keep working on the replacement (SO_BROADCAST: the
     * library's UDP send checks read it there, zti_broadcast_denied). Best effort, and
     * only what differs from a new socket's value (a connect pays for what the app set). */
    static const int carried[] = { SO_RCVTIMEO, SO_SNDTIMEO, SO_RCVLOWAT, SO_PEEK_OFF, SO_BROADCAST };
    int saved = errno;
    for (size_t i = 0; !fresh && i < sizeof carried / sizeof carried[0]; i++) {
        union { struct timeval tv; int v; } val;
        memset(&val, 0, sizeof val);
        socklen_t len = sizeof val;
        if (zti_real.getsockopt(fd, SOL_SOCKET, carried[i], &val, &len) != 0)
            continue;
        if (carried[i] == SO_RCVLOWAT ? val.v == 1
            : carried[i] == SO_PEEK_OFF ? val.v == -1
            : carried[i] == SO_BROADCAST ? val.v == 0
                                        : val.tv.tv_sec == 0 && val.tv.tv_usec == 0)
            continue;
        if (carried[i] == SO_PEEK_OFF) {
            /* MSG_PEEK is native only on a TCP socket's stream (UDP's framing would shift it). */
            int type = 0;
            socklen_t tl = sizeof type;
            if (zti_real.getsockopt(newfd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_STREAM)
                continue;
        }
        (void)zti_real.setsockopt(newfd, SOL_SOCKET, carried[i], &val, len);
    }
    errno = saved;
    for (;;) {
        if (zti_real.dup3(newfd, fd, (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) >= 0)
            break;
        /* EBUSY: racing an open() in another thread on this number; retry. */
        if (errno != EINTR && errno != EBUSY)
            return -errno;
    }
    close(newfd);
    return 0;
}


/**
 * zti_socket_type() - domain, type and protocol of a kernel socket
 * Return: 0, or -1 if fd is not a socket.
 */
int zti_socket_type(int fd, int *domain, int *type, int *protocol)
{
    int saved = errno;
    socklen_t l = sizeof(int);
    int r = zti_real.getsockopt(fd, SOL_SOCKET, SO_DOMAIN, domain, &l);
    l = sizeof(int);
    if (r == 0)
        r = zti_real.getsockopt(fd, SOL_SOCKET, SO_TYPE, type, &l);
    l = sizeof(int);
    if (r == 0)
        r = zti_real.getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, protocol, &l);
    errno = saved;
    return r;
}

__attribute__((constructor)) static void zti_ctor(void)
{
    int saved = errno;
    zti_resolve();
    zti_read_config();
    if (zti_cfg.enabled) {
        zti_table_scan_inherited();
        (void)pthread_atfork(NULL, NULL, zti_atfork_child);
    }
    errno = saved;
}
