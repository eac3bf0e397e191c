/* SPDX-License-Identifier: MIT */
/*
 * zti.h - internal declarations shared by the libztintercept.so sources.
 *
 * Nothing here is exported: the library is built with -fvisibility=hidden and only the libc
 * replacements marked ZTI_EXPORT are visible to the dynamic linker.
 */
#ifndef ZTI_H
#define ZTI_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stddef.h>
#include <stdatomic.h>
#include <errno.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>

#include "../CZTRPC/include/ztrpc.h"

#define ZTI_EXPORT __attribute__((visibility("default")))

/* The fd table: fds below ZTI_STATIC_FDS live in a static array (no allocation, the common case);
 * higher fds up to ZTI_MAX_FDS in chunks of ZTI_CHUNK_FDS mapped on first use (mmap: no malloc). */
#define ZTI_STATIC_FDS 65536
#define ZTI_CHUNK_FDS 4096
#define ZTI_MAX_FDS (1 << 20) /* Linux's default fs.nr_open */
/* Most CIDRs taken from ZTAP_ROUTES. */
#define ZTI_MAX_ROUTES 64
/* Most broadcast addresses taken from ZTAP_BROADCAST. */
#define ZTI_MAX_BCAST 16

/* Kinds of fd table entries. */
enum zti_kind {
    ZTI_NONE = 0,      /* nothing known: a kernel fd */
    ZTI_INET = 1,      /* kernel AF_INET/AF_INET6 socket, not intercepted (yet); opts records setsockopt */
    ZTI_TCP = 2,       /* intercepted TCP socket, app end of a SOCK_STREAM pair */
    ZTI_LISTEN = 3,    /* intercepted TCP listener, app end of the SOCK_SEQPACKET accept channel */
    ZTI_UDP = 4,       /* intercepted UDP socket, app end of a SOCK_SEQPACKET pair */
    ZTI_UNKNOWN = 5,   /* AF_UNIX socket inherited across exec: ask ztapd (GETNAME) on first use */
    ZTI_NOTZTAP = 6,   /* AF_UNIX socket ztapd said is not its own (negative cache) */
};

#define ZTI_SHUT_RD ZTRPC_SHUT_RD
#define ZTI_SHUT_WR ZTRPC_SHUT_WR

/* Words of zti_ent.xopts: one bit per option of zti_opts.c's table. */
#define ZTI_XOPT_WORDS 2

/* One fd's cached state; valid only while (dev, ino) match fstat(fd). */
struct zti_ent {
    uint8_t kind;   /* enum zti_kind */
    uint8_t state;  /* ZTRPC_STATE_* */
    uint8_t proto;  /* IPPROTO_TCP / IPPROTO_UDP */
    uint8_t shut;   /* UDP: ZTI_SHUT_RD / ZTI_SHUT_WR done by the app */
    uint8_t family; /* the app's socket: AF_INET or AF_INET6 (how its addresses are shown) */
    uint8_t v6only; /* AF_INET6 with IPV6_V6ONLY */
    /* ZTI_INET: made by socket() under the library (family and proto known without asking the
     * kernel) and none of the options zti_install() carries over set since: a connect or bind
     * skips reading them back. */
    uint8_t fresh;
    uint8_t pad;
    int32_t backlog;
    uint64_t dev, ino;
    uint64_t secret; /* TCP: from ztapd (ztrpc.h "References"); 0 = unknown, pass the fd */
    struct ztrpc_addr local, peer;
    struct ztrpc_sockopts opts;
    uint64_t xopts[ZTI_XOPT_WORDS]; /* ZTI_INET: other options set (zti_opts.c), read back later */
};

/* Real libc functions, resolved once with dlsym(RTLD_NEXT). */
struct zti_real {
    int (*connect)(int, const struct sockaddr *, socklen_t);
    int (*bind)(int, const struct sockaddr *, socklen_t);
    int (*listen)(int, int);
    int (*accept)(int, struct sockaddr *, socklen_t *);
    int (*accept4)(int, struct sockaddr *, socklen_t *, int);
    int (*getsockname)(int, struct sockaddr *, socklen_t *);
    int (*getpeername)(int, struct sockaddr *, socklen_t *);
    int (*getsockopt)(int, int, int, void *, socklen_t *);
    int (*setsockopt)(int, int, int, const void *, socklen_t);
    ssize_t (*send)(int, const void *, size_t, int);
    ssize_t (*sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
    ssize_t (*sendmsg)(int, const struct msghdr *, int);
    int (*sendmmsg)(int, struct mmsghdr *, unsigned int, int);
    ssize_t (*recv)(int, void *, size_t, int);
    ssize_t (*recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
    ssize_t (*recvmsg)(int, struct msghdr *, int);
    int (*recvmmsg)(int, struct mmsghdr *, unsigned int, int, struct timespec *);
    ssize_t (*read)(int, void *, size_t);
    ssize_t (*write)(int, const void *, size_t);
    ssize_t (*readv)(int, const struct iovec *, int);
    ssize_t (*writev)(int, const struct iovec *, int);
    ssize_t (*read_chk)(int, void *, size_t, size_t);
    ssize_t (*recv_chk)(int, void *, size_t, size_t, int);
    ssize_t (*recvfrom_chk)(int, void *, size_t, size_t, int, struct sockaddr *, socklen_t *);
    int (*socketpair)(int, int, int, int[2]);
    int (*socket)(int, int, int);
    int (*shutdown)(int, int);
    int (*dup)(int);
    int (*dup2)(int, int);
    int (*dup3)(int, int, int);
    int (*fcntl)(int, int, ...);
    int (*ioctl)(int, unsigned long, ...);
    long (*syscall)(long, ...);
};
extern struct zti_real zti_real;
extern atomic_int zti_ready;
void zti_resolve(void);
/* Makes sure zti_real is filled (the constructor normally did it). */
static inline void zti_init_real(void)
{
    if (__builtin_expect(!atomic_load_explicit(&zti_ready, memory_order_acquire), 0))
        zti_resolve();
}

/* read/write must work before zti_resolve() ran and while it runs: dlsym may call malloc, and a
 * malloc that reads a file during its own initialisation (jemalloc does) would land in our read()
 * again. So they never trigger resolution: until zti_real is filled they call glibc's exported
 * aliases __read/__write (weak: on another libc they resolve lazily like the rest). */
extern ssize_t __read(int, void *, size_t) __attribute__((weak));
extern ssize_t __write(int, const void *, size_t) __attribute__((weak));
static inline ssize_t zti_sys_read(int fd, void *buf, size_t len)
{
    if (__builtin_expect(atomic_load_explicit(&zti_ready, memory_order_acquire), 1) || !__read) {
        zti_init_real();
        return zti_real.read(fd, buf, len);
    }
    return __read(fd, buf, len);
}
static inline ssize_t zti_sys_write(int fd, const void *buf, size_t len)
{
    if (__builtin_expect(atomic_load_explicit(&zti_ready, memory_order_acquire), 1) || !__write) {
        zti_init_real();
        return zti_real.write(fd, buf, len);
    }
    return __write(fd, buf, len);
}

/* Configuration read once from the environment. */
struct zti_config {
    int enabled;        /* ZTAP_RPC set and usable */
    int debug;          /* ZTAP_DEBUG=1 */
    int default_route;  /* ZTAP_DEFAULT_ROUTE=1 */
    int bind_any;       /* ZTAP_BIND_ANY=1 or default_route: bind(0.0.0.0) goes to the network */
    int nroutes;
    /* IPv6 prefixes; an IPv4 route as its v4-mapped prefix (10.0.0.0/8 is ::ffff:10.0.0.0/104). */
    uint8_t route_net[ZTI_MAX_ROUTES][16];
    uint8_t route_len[ZTI_MAX_ROUTES];
    int nbcast;
    uint32_t bcast[ZTI_MAX_BCAST]; /* the network's IPv4 subnet broadcasts, network order */
    struct sockaddr_un_storage {
        sa_family_t family;
        char path[108];
    } rpc_addr;
    socklen_t rpc_addr_len;
    char network[64];
};
extern struct zti_config zti_cfg;

/* Logging (write(2) to stderr, no stdio): one line "ztintercept[NET]: <a><b><c><num><d>"; NULL parts
 * and num == LONG_MIN are left out. zti_log always writes; zti_dbg only with ZTAP_DEBUG=1. */
void zti_log(const char *a, const char *b, const char *c, long num, const char *d);
#define zti_dbg(a, b, c, num, d)                                                                  \
    do {                                                                                          \
        if (zti_cfg.debug)                                                                        \
            zti_log(a, b, c, num, d);                                                             \
    } while (0)
/* Reports, once per process, that ztapd cannot be reached. */
void zti_log_unreachable(int err);

/* Address selection (addresses in ztrpc_addr form: IPv4 v4-mapped). */
int zti_dest_selected(const struct ztrpc_addr *a);
int zti_bind_selected(const struct ztrpc_addr *a);
/* Whether a is an IPv4 address (::ffff:a.b.c.d). */
int zti_addr_is_v4(const struct ztrpc_addr *a);
/* Whether a is an IPv4 broadcast address (255.255.255.255 or one of ZTAP_BROADCAST), which Linux
 * refuses as a UDP destination (EACCES) unless SO_BROADCAST is set. */
int zti_addr_is_broadcast(const struct ztrpc_addr *a);
/* EACCES if datagrams from `fd` (kernel socket or app end, which mirrors SO_BROADCAST) may not go
 * to `a`, else 0. */
int zti_broadcast_denied(int fd, const struct ztrpc_addr *a);

/* fd table. zti_hot mirrors each entry's kind for a one-byte check on the data path. */
extern _Atomic uint8_t zti_hot[ZTI_STATIC_FDS];
int zti_hot_kind_ext(int fd);
static inline int zti_hot_kind(int fd)
{
    if (__builtin_expect((unsigned)fd < ZTI_STATIC_FDS, 1))
        return atomic_load_explicit(&zti_hot[fd], memory_order_relaxed);
    return zti_hot_kind_ext(fd);
}
/* Is this fd possibly an intercepted UDP socket (data-path calls must look closer)? */
static inline int zti_maybe_udp(int fd)
{
    int k = zti_hot_kind(fd);
    return k == ZTI_UDP || k == ZTI_UNKNOWN;
}
#if defined(__x86_64__) || defined(__i386__)
#define ZTI_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define ZTI_RELAX() __asm__ __volatile__("yield")
#else
#define ZTI_RELAX() do { } while (0)
#endif
int zti_table_get(int fd, struct zti_ent *out);
void zti_table_put(int fd, const struct zti_ent *ent);
void zti_table_clear(int fd);
void zti_table_scan_inherited(void);
/* Copies oldfd's entry to newfd (dup and friends), or clears newfd's. */
void zti_copy_entry(int oldfd, int newfd);
/* An AF_UNIX fd arrived from elsewhere (SCM_RIGHTS): if it could be a ztap socket, mark it
 * "unknown" so the first call that needs to know asks ztapd. */
void zti_note_foreign_fd(int fd);

/* Resolves what an fd is. query: allowed to ask ztapd about AF_UNIX fds it does not know.
 * Returns the kind (ZTI_TCP/ZTI_LISTEN/ZTI_UDP for ztap sockets, ZTI_INET for a kernel AF_INET
 * socket with recorded options, ZTI_NONE otherwise) and fills *ent. Preserves errno. */
int zti_classify(int fd, struct zti_ent *ent, int query);
/* Fast check for data-path calls: ZTI_UDP (validated) or ZTI_NONE. */
int zti_classify_udp(int fd, struct zti_ent *ent);

/* RPC. Returns 0 and fills *rep/body on a reply (which may itself carry result -1); on failure to
 * talk to ztapd returns -1 with *err set (ENETDOWN-class or EINTR/ETIMEDOUT).
 * timeout_ms < 0: wait without limit. flags: ZTI_RPC_*. */
#define ZTI_RPC_INTERRUPTIBLE 1 /* EINTR while waiting for the reply ends the wait */
#define ZTI_RPC_QUIET 2         /* a speculative query: do not report an unreachable ztapd */
#define ZTI_RPC_NOREPLY 4       /* send with ZTRPC_OP_NOREPLY and return once sent (*rep: result 0) */
#define ZTI_RPC_ONESHOT 8       /* a connection of its own, never a session (zti_rpc.c) */
#define ZTI_RPC_CHANNEL_ONLY 16 /* with NOREPLY: the one-way channel or nothing (*err EAGAIN) */
int zti_rpc(uint16_t op, const void *body, uint32_t blen, const int *fds, int nfds,
            struct ztrpc_rep_hdr *rep, void *rbody, uint32_t rcap, int timeout_ms, int flags,
            int *err);

/* Replaces fd by newfd (dup3 keeping fd's O_NONBLOCK and FD_CLOEXEC), closes newfd.
 * Returns 0 or -errno. */
int zti_install(int fd, int newfd);
/* Builds a table entry for an fd from a ztrpc_sockinfo. */
void zti_ent_from_info(struct zti_ent *e, int kind, const struct ztrpc_sockinfo *si, int fd);

/* Socket addresses. zti_addr_from_sockaddr: the wire address of a sockaddr the app passed to a
 * socket of `domain` (AF_UNSPEC gives all zero; an AF_INET sockaddr on an AF_INET6 socket, which
 * Linux's UDP takes, only with `v4_on_v6`); 0, or the errno the kernel gives (EINVAL for a short
 * address, EAFNOSUPPORT for another family). zti_make_sockaddr: the sockaddr a socket of `domain`
 * shows for `a` (sockaddr_in, or sockaddr_in6 with flowinfo 0 and IPv4 as ::ffff:a.b.c.d); its
 * length. zti_fill_sockaddr: that, copied to the app's buffer truncated like the kernel. */
int zti_addr_from_sockaddr(int domain, const struct sockaddr *sa, socklen_t len, int v4_on_v6,
                           struct ztrpc_addr *out);
socklen_t zti_make_sockaddr(int domain, const struct ztrpc_addr *a, struct sockaddr_storage *out);
/* Safety limit for waits whose real bound is ztapd's own TCP connect timeout. */
#define ZTI_LONG_WAIT_MS (180 * 1000)
/* Ordinary requests: ztapd answers at once; this only protects against a wedged daemon. */
#define ZTI_SHORT_WAIT_MS (10 * 1000)
/* zti_sock.c helpers shared with zti_accept.c and zti_opts.c. */
int zti_is_ztap(int kind);
int zti_down_errno(int err, int fallback);
int zti_fail(int err);
int zti_tcp_quiet(int fd, struct zti_ent *e);
int zti_refresh(int fd, struct zti_ent *e);
/* The errno a failed ECONNRESET read of a ztap TCP socket reports (zti_opts.c). */
int zti_tcp_read_error(int fd);
/* A native read's result on @fd, with a ztap TCP socket's ECONNRESET made the connection's own
 * error, as Linux reports it (zti_tcp_read_error). Only the failure path pays. */
static inline ssize_t zti_after_read(int fd, ssize_t r)
{
    if (__builtin_expect(r < 0, 0) && errno == ECONNRESET && zti_hot_kind(fd) == ZTI_TCP)
        errno = zti_tcp_read_error(fd);
    return r;
}
int zti_install_known(int fd, int newfd, int fresh);
int zti_carried_opt(int level, int name);
/* Reads the network's environment (ztctl run) into zti_cfg; called once by the constructor. */
void zti_read_config(void);
void zti_fill_sockaddr(int domain, const struct ztrpc_addr *a, struct sockaddr *out, socklen_t *len);
/* Linux's AF_INET6 UDP socket takes a sockaddr_in in connect/sendto (the datagrams go over IPv4,
 * as for ::ffff:a.b.c.d); an AF_INET6 TCP socket refuses it. */
static inline int zti_v4_on_v6(int domain, int fam, int proto)
{
    return domain == AF_INET6 && fam == AF_INET && proto == IPPROTO_UDP;
}
/* Helpers. */
int zti_socket_type(int fd, int *domain, int *type, int *protocol);
int zti_close(int fd);

/* UDP data path (zti_udp.c). */
ssize_t zti_udp_sendmsg(int fd, const struct zti_ent *e, const struct msghdr *msg, int flags);
ssize_t zti_udp_recvmsg(int fd, const struct zti_ent *e, struct msghdr *msg, int flags);
/* Creates the ztap UDP socket for a kernel UDP fd sending to the network (UDP_OPEN).
 * Returns 0 and fills *e, or -1 with errno. */
int zti_udp_open(int fd, struct zti_ent *e);
/* Records the app's shutdown of a ztap UDP socket (ZTI_SHUT_* bits): natively for SHUT_RD, in
 * ztapd and in e (stored in the table). Preserves errno. */
void zti_udp_shut(int fd, struct zti_ent *e, uint8_t bits);

/* Making a ztap socket (zti_create.c; the calls: zti_sock.c). */
int zti_inet_kind_of(int fd, const struct zti_ent *e, int k, int *proto, int *domain);
int zti_kernel_v6only(int fd, int domain);
int zti_addr_is_none(const struct ztrpc_addr *a);
int zti_connect_timeout(int fd, int *sndtimeo_set);
int zti_plug(int fd, struct ztrpc_sock_req *rq, int new_pair);
void zti_note_failed_port(int fd, const struct zti_ent *rec, uint16_t port);
void zti_fix_state(struct zti_ent *e, uint16_t op, struct ztrpc_addr addr, int installed_err);
int zti_create(int fd, uint16_t op, int proto, int domain, struct ztrpc_addr addr, const struct zti_ent *rec,
               struct zti_ent *e, int down);
int zti_renew(int fd, struct zti_ent *e);

/* Socket options (zti_opts.c). */
#define ZTI_MAX_PREOPTS 112
struct zti_preopt {
    int level, name;
    socklen_t len;
    unsigned char value[40]; /* IP_OPTIONS is the longest */
};
struct zti_preopts {
    int n;
    struct zti_preopt o[ZTI_MAX_PREOPTS];
};
/* The options that travel as records (zti_xopts.c), in the order they are sent. */
struct zti_xopt {
    int level, name;
};
extern const struct zti_xopt zti_xopts[];
extern const int zti_nxopts;
int zti_native_opt(int level, int name, int kind);
void zti_record_opt(int fd, int level, int name, const void *optval, socklen_t optlen);
void zti_preopts_collect(int fd, const struct zti_ent *rec, struct zti_preopts *out);
int zti_preopts_pack(const struct zti_preopts *p, struct ztrpc_optlist *list, struct ztrpc_sockopt *recs);
void zti_preopts_replay(int fd, const struct zti_preopts *p, int from);
/* Resets the one-way channel's lock in a forked child (zti_rpc.c). */
void zti_chan_atfork_child(void);
void zti_sess_atfork_child(void);
int zti_sockopt_rpc(int fd, const struct zti_ent *e, int level, int name, const void *optval, socklen_t optlen,
                    int flags, int *err);

/* Accept (zti_sock.c), also used by syscall(SYS_accept4). */
int zti_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);

#endif /* ZTI_H */
