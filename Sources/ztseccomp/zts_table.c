/* SPDX-License-Identifier: MIT */
/*
 * zts_table.c - what the supervisor knows about sockets, keyed by inode, and what an fd is.
 *
 * DOC: Theory of Operation
 *
 * The library keeps a table per process indexed by fd number; the supervisor serves a whole
 * process tree, whose fd tables it does not see, so it keys by the socket's (st_dev, st_ino) -
 * the identity ztapd uses too (ztrpc.h). fork, dup, exec and fd passing therefore need nothing.
 * The table is a cache: a miss on an AF_UNIX socket that looks like a socketpair asks ztapd
 * (GETNAME), which knows every ztap socket, so entries may be dropped at any time (the table is
 * simply emptied when full). Socket inode numbers come from a global counter and are not reused
 * before it wraps, so an entry never describes another socket. Negative answers are cached too,
 * so a program's own socketpairs cost one query.
 *
 * Kernel AF_INET/AF_INET6 sockets are recognised by SO_DOMAIN/SO_TYPE on the supervisor's copy; options
 * set on them before they become ztap sockets are read back from the kernel socket when the
 * socket is created in ztapd (the library records them as they are set; here the kernel holds
 * them), and sent where they differ from a fresh socket's defaults.
 */
#include "zts.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/un.h>

#define ZTS_TABLE_SIZE 16384 /* power of two; emptied when 3/4 full */
enum { ZTS_K_NOTZTAP = 100 }; /* cached negative answer for an AF_UNIX socket */

static struct zts_ent zts_tab[ZTS_TABLE_SIZE];
static unsigned zts_tab_used;

static unsigned zts_hash(uint64_t dev, uint64_t ino)
{
    uint64_t h = (ino ^ (dev << 32)) * 0x9e3779b97f4a7c15ull;
    return (unsigned)(h >> 40) & (ZTS_TABLE_SIZE - 1);
}

struct zts_ent *zts_table_get(uint64_t dev, uint64_t ino)
{
    for (unsigned i = zts_hash(dev, ino), n = 0; n < ZTS_TABLE_SIZE; i = (i + 1) & (ZTS_TABLE_SIZE - 1), n++) {
        struct zts_ent *e = &zts_tab[i];
        if (!e->kind)
            return NULL;
        if (e->ino == ino && e->dev == dev)
            return e;
    }
    return NULL;
}

struct zts_ent *zts_table_put(uint64_t dev, uint64_t ino, int kind)
{
    struct zts_ent *e = zts_table_get(dev, ino);
    if (!e) {
        if (zts_tab_used >= ZTS_TABLE_SIZE / 4 * 3) {
            /* A cache: ztapd answers for what is dropped (see above). */
            memset(zts_tab, 0, sizeof zts_tab);
            zts_tab_used = 0;
            zts_dbg("socket table emptied");
        }
        unsigned i = zts_hash(dev, ino);
        while (zts_tab[i].kind)
            i = (i + 1) & (ZTS_TABLE_SIZE - 1);
        e = &zts_tab[i];
        zts_tab_used++;
    }
    memset(e, 0, sizeof *e);
    e->dev = dev;
    e->ino = ino;
    e->kind = (uint8_t)kind;
    return e;
}

/* Open addressing with linear probing: re-insert the rest of the cluster after a removal. */
void zts_table_forget(uint64_t dev, uint64_t ino)
{
    struct zts_ent *e = zts_table_get(dev, ino);
    if (!e)
        return;
    unsigned i = (unsigned)(e - zts_tab);
    memset(e, 0, sizeof *e);
    zts_tab_used--;
    for (unsigned j = (i + 1) & (ZTS_TABLE_SIZE - 1); zts_tab[j].kind; j = (j + 1) & (ZTS_TABLE_SIZE - 1)) {
        struct zts_ent tmp = zts_tab[j];
        memset(&zts_tab[j], 0, sizeof tmp);
        zts_tab_used--;
        struct zts_ent *n = zts_table_put(tmp.dev, tmp.ino, tmp.kind);
        *n = tmp;
    }
}

/* A blocking connect of kernel socket c failed: Linux's socket keeps showing the ephemeral port it
 * had taken (getsockname ANY:eph: the address is reset, the port number is not), as the library
 * remembers too (zti_note_failed_port). The program keeps its kernel socket. */
void zts_note_failed_port(struct zts_call *c, uint16_t port)
{
    if (!port || !c->ino_valid)
        return;
    struct zts_ent *e = zts_table_put(c->dev, c->ino, ZTS_K_INET_TCP);
    e->family = (uint8_t)(c->domain == AF_INET6 ? AF_INET6 : AF_INET);
    e->proto = IPPROTO_TCP;
    e->local.port = port;
}

/* Adds fd's socket (by inode) with the state of a sockinfo. */
struct zts_ent *zts_table_put_fd(int fd, int kind, const struct ztrpc_sockinfo *si)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return NULL;
    struct zts_ent *e = zts_table_put(st.st_dev, st.st_ino, kind);
    if (si) {
        e->state = si->state;
        e->proto = si->proto;
        e->shut = (uint8_t)(si->shut & (ZTRPC_SHUT_RD | ZTRPC_SHUT_WR));
        e->backlog = si->backlog;
        e->local = si->local;
        e->peer = si->peer;
        if (si->family) {
            e->family = si->family;
            e->v6only = (si->flags & ZTRPC_SI_V6ONLY) != 0;
        }
    }
    if (!e->family)
        e->family = AF_INET;
    return e;
}

static int zts_kind_of_info(const struct ztrpc_sockinfo *si)
{
    if (si->proto == IPPROTO_UDP)
        return ZTS_K_UDP;
    return si->state == ZTRPC_STATE_LISTENING ? ZTS_K_LISTEN : ZTS_K_TCP;
}

/* Both ends unnamed, stream or seqpacket: could be a ztap socket (as the library's test). */
static int zts_unix_candidate(int fd, int type)
{
    if (type != SOCK_STREAM && type != SOCK_SEQPACKET)
        return 0;
    struct sockaddr_un un;
    socklen_t l = sizeof un;
    if (getsockname(fd, (struct sockaddr *)&un, &l) < 0 || l > sizeof(sa_family_t))
        return 0;
    l = sizeof un;
    if (getpeername(fd, (struct sockaddr *)&un, &l) < 0 || l > sizeof(sa_family_t))
        return 0;
    return 1;
}

/**
 * zts_classify() - what the target's fd args[0] is
 * @c: the call; c->fd gets the supervisor's copy (closed with the call)
 * @ent: set to the table entry for ztap sockets, else NULL
 *
 * Return: a ZTS_K_* kind (ZTS_K_BADF when the fd cannot be copied: the call then goes to the
 * kernel, which reports EBADF or whatever applies).
 */
int zts_classify(struct zts_call *c, struct zts_ent **ent)
{
    *ent = NULL;
    if (c->fd < 0) {
        int fd = zts_getfd(c, (int)c->n.data.args[0]);
        if (fd < 0)
            return c->kind = ZTS_K_BADF;
        c->fd = fd;
        struct stat st;
        if (fstat(fd, &st) < 0)
            return c->kind = ZTS_K_BADF;
        c->dev = st.st_dev;
        c->ino = st.st_ino;
        c->ino_valid = 1;
        if (!S_ISSOCK(st.st_mode))
            return c->kind = ZTS_K_OTHER;
    }
    struct zts_ent *e = zts_table_get(c->dev, c->ino);
    if (e) {
        if (e->kind == ZTS_K_NOTZTAP)
            return c->kind = ZTS_K_OTHER;
        if (e->kind == ZTS_K_TCP || e->kind == ZTS_K_LISTEN || e->kind == ZTS_K_UDP)
            *ent = e;
        if (e->kind == ZTS_K_INET_TCP) {
            /* A kernel socket whose connect failed: the port it had taken (zts_note_failed_port). */
            c->domain = e->family;
            *ent = e;
        }
        return c->kind = e->kind;
    }
    int dom = -1, type = -1, prot = -1;
    socklen_t l = sizeof dom;
    if (getsockopt(c->fd, SOL_SOCKET, SO_DOMAIN, &dom, &l) < 0)
        return c->kind = ZTS_K_OTHER;
    l = sizeof type;
    (void)getsockopt(c->fd, SOL_SOCKET, SO_TYPE, &type, &l);
    l = sizeof prot;
    (void)getsockopt(c->fd, SOL_SOCKET, SO_PROTOCOL, &prot, &l);
    if (dom == AF_INET || dom == AF_INET6) {
        int k = ZTS_K_OTHER;
        c->domain = dom;
        if (type == SOCK_STREAM && prot == IPPROTO_TCP)
            k = ZTS_K_INET_TCP;
        else if (type == SOCK_DGRAM && prot == IPPROTO_UDP)
            k = ZTS_K_INET_UDP;
        return c->kind = k; /* not cached: it becomes a ztap socket under a new inode anyway */
    }
    if (dom != AF_UNIX || !zts_unix_candidate(c->fd, type) || zts_has_library(c)) {
        /* With the library in this process, its sockets are its own business. */
        if (dom == AF_UNIX && !zts_has_library(c))
            zts_table_put(c->dev, c->ino, ZTS_K_NOTZTAP);
        return c->kind = ZTS_K_OTHER;
    }
    /* A socketpair we do not know: inherited from outside the tree, or dropped from the cache. */
    struct ztrpc_rep_hdr rep;
    struct ztrpc_sockinfo si;
    int err;
    if (zti_rpc(ZTRPC_OP_GETNAME, NULL, 0, &c->fd, 1, &rep, &si, sizeof si, 5000, ZTI_RPC_QUIET | ZTI_RPC_ONESHOT, &err) == 0 &&
        rep.result == 0) {
        e = zts_table_put_fd(c->fd, zts_kind_of_info(&si), &si);
        if (e) {
            *ent = e;
            return c->kind = e->kind;
        }
    }
    zts_table_put(c->dev, c->ino, ZTS_K_NOTZTAP);
    return c->kind = ZTS_K_OTHER;
}

/* GETNAME: refresh an entry's state and names from ztapd. Return: 0 or -errno. */
int zts_refresh(struct zts_call *c, struct zts_ent *e)
{
    struct ztrpc_rep_hdr rep;
    struct ztrpc_sockinfo si;
    int err;
    if (zts_rpc(c, ZTRPC_OP_GETNAME, NULL, 0, &c->fd, 1, &rep, &si, sizeof si, 10000, &err) < 0)
        return -zts_down_errno(err, ENOTCONN);
    if (rep.result < 0)
        return -(rep.err ? rep.err : EIO);
    static const struct ztrpc_addr none;
    e->state = si.state;
    e->shut = (uint8_t)(si.shut & (ZTRPC_SHUT_RD | ZTRPC_SHUT_WR));
    e->backlog = si.backlog;
    if (memcmp(&si.local, &none, sizeof none) != 0)
        e->local = si.local;
    if (memcmp(&si.peer, &none, sizeof none) != 0)
        e->peer = si.peer;
    if (si.family) {
        e->family = si.family;
        e->v6only = (si.flags & ZTRPC_SI_V6ONLY) != 0;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Options set on a kernel socket before interception
 */

struct zts_optdef {
    int level, name;
    uint32_t bit;
};
static const struct zts_optdef zts_optdefs[] = {
    { SOL_SOCKET, SO_REUSEADDR, ZTRPC_OPT_REUSEADDR },
    { SOL_SOCKET, SO_REUSEPORT, ZTRPC_OPT_REUSEPORT },
    { SOL_SOCKET, SO_KEEPALIVE, ZTRPC_OPT_KEEPALIVE },
    { IPPROTO_TCP, TCP_NODELAY, ZTRPC_OPT_NODELAY },
    { SOL_SOCKET, SO_LINGER, ZTRPC_OPT_LINGER },
    { SOL_SOCKET, SO_RCVBUF, ZTRPC_OPT_RCVBUF },
    { SOL_SOCKET, SO_SNDBUF, ZTRPC_OPT_SNDBUF },
    { IPPROTO_TCP, TCP_KEEPIDLE, ZTRPC_OPT_KEEPIDLE },
    { IPPROTO_TCP, TCP_KEEPINTVL, ZTRPC_OPT_KEEPINTVL },
    { IPPROTO_TCP, TCP_KEEPCNT, ZTRPC_OPT_KEEPCNT },
};
#define ZTS_NOPTS (sizeof zts_optdefs / sizeof zts_optdefs[0])
/* Defaults of a fresh socket, [0] TCP, [1] UDP: value (linger: onoff<<16|secs), -1 unreadable. */
static long zts_optdefault[2][ZTS_NOPTS];

static long zts_opt_value(int fd, const struct zts_optdef *d)
{
    if (d->bit == ZTRPC_OPT_LINGER) {
        struct linger lg;
        socklen_t l = sizeof lg;
        if (getsockopt(fd, d->level, d->name, &lg, &l) < 0)
            return -1;
        return ((long)lg.l_onoff << 16) | (lg.l_linger & 0xffff);
    }
    int v;
    socklen_t l = sizeof v;
    if (getsockopt(fd, d->level, d->name, &v, &l) < 0)
        return -1;
    return v;
}

/* The other options (zti_xopts[]) as a fresh socket reads them, by [family is AF_INET6][UDP]:
 * what a kernel socket shows differently was set by the program and travels (zts_read_preopts). */
static struct zti_preopts zts_xdefault[2][2];

/* Whether option `x` means anything on a socket of this family and protocol. */
static int zts_xopt_applies(const struct zti_xopt *x, int domain, int proto)
{
    switch (x->level) {
    case IPPROTO_IPV6: return domain == AF_INET6;
    case IPPROTO_TCP: return proto == IPPROTO_TCP;
    case IPPROTO_UDP: return proto == IPPROTO_UDP;
    default: return 1; /* SOL_SOCKET, and IPPROTO_IP (an AF_INET6 socket reaches IPv4 too) */
    }
}

/* Reads zti_xopts[] from fd: out->o[i] is option i (len 0: unreadable or not applicable). */
static void zts_read_xopts(int fd, int domain, int proto, struct zti_preopts *out)
{
    memset(out, 0, sizeof *out);
    out->n = zti_nxopts;
    for (int i = 0; i < zti_nxopts; i++) {
        struct zti_preopt *p = &out->o[i];
        p->level = zti_xopts[i].level;
        p->name = zti_xopts[i].name;
        socklen_t len = sizeof p->value;
        if (fd >= 0 && zts_xopt_applies(&zti_xopts[i], domain, proto) &&
            getsockopt(fd, p->level, p->name, p->value, &len) == 0)
            p->len = len;
    }
}

void zts_default_opts_init(void)
{
    for (int u = 0; u < 2; u++) {
        int fd = socket(AF_INET, (u ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
        for (size_t i = 0; i < ZTS_NOPTS; i++)
            zts_optdefault[u][i] = fd >= 0 ? zts_opt_value(fd, &zts_optdefs[i]) : -1;
        if (fd >= 0)
            close(fd);
        for (int v6 = 0; v6 < 2; v6++) {
            int domain = v6 ? AF_INET6 : AF_INET, proto = u ? IPPROTO_UDP : IPPROTO_TCP;
            fd = socket(domain, (u ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
            zts_read_xopts(fd, domain, proto, &zts_xdefault[v6][u]);
            if (fd >= 0)
                close(fd);
        }
    }
}

/**
 * zts_read_preopts() - the options beyond ztrpc_sockopts a program set on kernel socket fd
 * @fd: the supervisor's copy of the kernel socket
 * @domain: AF_INET or AF_INET6
 * @proto: IPPROTO_TCP or IPPROTO_UDP
 * @out: those whose value differs from a fresh socket's, in zti_xopts[] order
 *
 * The library records which options were set; the supervisor does not see a kernel socket's
 * setsockopt, so it reads them all back (one getsockopt each, at interception only).
 */
void zts_read_preopts(int fd, int domain, int proto, struct zti_preopts *out)
{
    static struct zti_preopts now;
    const struct zti_preopts *def = &zts_xdefault[domain == AF_INET6][proto == IPPROTO_UDP];
    zts_read_xopts(fd, domain, proto, &now);
    out->n = 0;
    for (int i = 0; i < zti_nxopts; i++) {
        const struct zti_preopt *p = &now.o[i], *d = &def->o[i];
        if (!p->len || (p->len == d->len && memcmp(p->value, d->value, p->len) == 0))
            continue;
        out->o[out->n++] = *p;
    }
}

/* Fills o with the options of kernel socket fd that differ from a fresh socket's. */
void zts_read_opts(int fd, int proto, struct ztrpc_sockopts *o)
{
    memset(o, 0, sizeof *o);
    int u = proto == IPPROTO_UDP;
    for (size_t i = 0; i < ZTS_NOPTS; i++) {
        const struct zts_optdef *d = &zts_optdefs[i];
        long v = zts_opt_value(fd, d);
        if (v < 0 || v == zts_optdefault[u][i])
            continue;
        o->mask |= d->bit;
        switch (d->bit) {
        case ZTRPC_OPT_REUSEADDR:
        case ZTRPC_OPT_REUSEPORT:
        case ZTRPC_OPT_KEEPALIVE:
        case ZTRPC_OPT_NODELAY:
            if (v)
                o->bools |= d->bit;
            break;
        case ZTRPC_OPT_LINGER:
            o->linger_onoff = (int32_t)(v >> 16);
            o->linger_secs = (int32_t)(v & 0xffff);
            break;
        /* The kernel reports twice what setsockopt was given. */
        case ZTRPC_OPT_RCVBUF: o->rcvbuf = (int32_t)(v / 2); break;
        case ZTRPC_OPT_SNDBUF: o->sndbuf = (int32_t)(v / 2); break;
        case ZTRPC_OPT_KEEPIDLE: o->keepidle = (int32_t)v; break;
        case ZTRPC_OPT_KEEPINTVL: o->keepintvl = (int32_t)v; break;
        case ZTRPC_OPT_KEEPCNT: o->keepcnt = (int32_t)v; break;
        }
    }
}
