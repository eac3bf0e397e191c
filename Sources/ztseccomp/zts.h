/* SPDX-License-Identifier: MIT */
/*
 * zts.h - internal declarations of ztap-seccomp, the seccomp user-notification supervisor that
 * `ztctl run` uses for programs the LD_PRELOAD library cannot reach (static binaries, Go).
 *
 * The supervisor links the library's configuration, address selection and RPC code
 * (zti_core.c, zti_cfg.c, zti_rpc.c: ZTAP_* environment, zti_dest_selected, zti_rpc) so both paths take the
 * same routing decisions and speak the same protocol (Sources/CZTRPC/include/ztrpc.h).
 */
#ifndef ZTS_H
#define ZTS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>

#include "../ztintercept/zti.h"

/*
 * Datagram sockets of a traced program live in this fd range (on x86-64 and aarch64). The
 * filter can only look at syscall arguments, never at what an fd is, so it traps the data calls
 * (read, write, recvmsg, ...) of fds in this range only: every other fd's data path stays native.
 * socket(AF_INET, SOCK_DGRAM) is trapped and its socket installed here. Below FD_SETSIZE so
 * select() keeps working on it.
 */
#define ZTS_UDP_FD_LO 768
#define ZTS_UDP_FD_HI 1024

/* epoll events a waiting call asks for (errors and hangups always wake it too). */
#define POLLIN_EVENTS 0x001u  /* EPOLLIN */
#define POLLOUT_EVENTS 0x004u /* EPOLLOUT */

/* Largest datagram payload (IPv4 UDP). */
#define ZTS_UDP_MAX 65507
#define ZTS_UDP6_MAX 65527

/* Modes: pure seccomp, or seccomp next to the library ("both"): then processes that have the
 * library loaded are left to it entirely (every notification from them is continued). */
struct zts_opts {
    int both;
    int debug;
};
extern struct zts_opts zts_opt;

/* Logging to stderr: "ztap-seccomp[NET]: ..." (printf-style; the supervisor may use stdio). */
void zts_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define zts_dbg(...)                                                                               \
    do {                                                                                           \
        if (zts_opt.debug)                                                                         \
            zts_log(__VA_ARGS__);                                                                  \
    } while (0)

long zts_now_ms(void);

/* ---------------------------------------------------------------------------------------------
 * One trapped system call (zts_call.c). Handlers return ZTS_DONE once they answered the
 * notification, or ZTS_WAIT after filling wait_fd/wait_events/deadline: the call is then kept
 * and the same handler runs again when wait_fd is ready or the deadline passes (timed_out = 1).
 */
enum { ZTS_DONE = 0, ZTS_WAIT = 1 };

struct zts_call {
    struct seccomp_notif n; /* id, pid (thread id), data.nr, data.args */
    int pidfd;              /* the thread's pidfd (PIDFD_THREAD), -1 if unavailable */
    int fd;                 /* supervisor's copy of the target fd args[0] (pidfd_getfd), or -1 */
    int ino_valid;
    uint64_t dev, ino;      /* fstat of fd */
    int kind;               /* ZTS_K_* of fd */
    int domain;             /* ZTS_K_INET_*: the kernel socket's family (AF_INET, AF_INET6) */
    /* Waiting. */
    int wait_fd;            /* fd to wait on (owned by the call: closed with it), -1 none */
    uint32_t wait_events;
    long deadline;          /* ms (zts_now_ms), 0 = none */
    int timed_out;
    int interrupted;        /* blocking connect: a caught signal waits for its thread (zts_main.c) */
    uint32_t revents;       /* epoll events that woke the call */
    int dead;               /* answered or abandoned; freed after the current epoll batch */
    int listed;             /* on the list of waiting calls */
    /* Handler state kept across waits. */
    int sv0;                /* connect: the new app end, not installed yet */
    int rpc_fd;             /* blocking connect: the RPC waiting for ztapd's answer, or -1 */
    uint32_t rpc_id;
    int sndtimeo_set;
    int new_socket;         /* connect: sv0 is a new ztap socket (vs an existing one) */
    int preopts_left;       /* connect: options set before did not all fit the request */
    struct ztrpc_addr addr; /* connect: the destination */
    unsigned done;          /* recvmmsg: datagrams already received before a wait */
    /* List of waiting calls. */
    struct zts_call *next, *prev;
};

/* Kinds of the target's fd (zts_classify). */
enum zts_kind {
    ZTS_K_BADF = 0,   /* not an fd (or not ours to look at) */
    ZTS_K_OTHER,      /* not a socket, or a socket we do not handle */
    ZTS_K_INET_TCP,   /* kernel AF_INET/AF_INET6 stream socket (not intercepted yet) */
    ZTS_K_INET_UDP,   /* kernel AF_INET/AF_INET6 datagram socket (not intercepted yet) */
    ZTS_K_TCP,        /* ztap TCP socket */
    ZTS_K_LISTEN,     /* ztap TCP listener (accept channel) */
    ZTS_K_UDP,        /* ztap UDP socket */
};

/* Answering (zts_target.c). All return 0 or -errno; -ENOENT means the call is gone (the target
 * died or, without WAIT_KILLABLE_RECV, a signal interrupted it). */
int zts_reply(struct zts_call *c, long val, int err);
int zts_continue(struct zts_call *c);
int zts_addfd(struct zts_call *c, int srcfd, int newfd, int cloexec, int send);
int zts_id_valid(struct zts_call *c);

/* Target access (zts_target.c). */
int zts_open_target(struct zts_call *c);
int zts_getfd(struct zts_call *c, int targetfd);
int zts_mem_read(struct zts_call *c, uint64_t addr, void *buf, size_t len);
int zts_mem_write(struct zts_call *c, uint64_t addr, const void *buf, size_t len);
int zts_fd_cloexec(struct zts_call *c, int targetfd);
int zts_pick_udp_fd(struct zts_call *c);
int zts_has_library(struct zts_call *c);
pid_t zts_tgid(struct zts_call *c);
void zts_exec_seen(struct zts_call *c);
/* Runs an RPC with the target's credentials when the supervisor is root (zts_rpc.c). */
/* socketpair(AF_UNIX, type) under the target's ids (ztapd checks a new pair's creator). */
int zts_socketpair(struct zts_call *c, int type, int sv[2]);
int zts_rpc(struct zts_call *c, uint16_t op, const void *body, uint32_t blen, const int *fds, int nfds,
            struct ztrpc_rep_hdr *rep, void *rbody, uint32_t rcap, int timeout_ms, int *err);
extern int zts_listener;

/* The socket table (zts_table.c): what we know about sockets, keyed by inode. */
struct zts_ent {
    uint64_t dev, ino;
    uint8_t kind;  /* ZTS_K_* (0 = free slot) */
    uint8_t state; /* ZTRPC_STATE_* */
    uint8_t proto;
    uint8_t shut;  /* UDP: ZTRPC_SHUT_* */
    uint8_t family; /* the program's socket: AF_INET or AF_INET6 (how addresses are shown) */
    uint8_t v6only;
    uint16_t pad;
    int32_t backlog;
    struct ztrpc_addr local, peer;
};
struct zts_ent *zts_table_get(uint64_t dev, uint64_t ino);
struct zts_ent *zts_table_put(uint64_t dev, uint64_t ino, int kind);
void zts_table_forget(uint64_t dev, uint64_t ino);
struct zts_ent *zts_table_put_fd(int fd, int kind, const struct ztrpc_sockinfo *si);
int zts_classify(struct zts_call *c, struct zts_ent **ent);
int zts_refresh(struct zts_call *c, struct zts_ent *e);
void zts_note_failed_port(struct zts_call *c, uint16_t port);
void zts_default_opts_init(void);
void zts_read_opts(int fd, int proto, struct ztrpc_sockopts *o);
void zts_read_preopts(int fd, int domain, int proto, struct zti_preopts *out);

int zts_rpc_start(struct zts_call *c, uint16_t op, const void *body, uint32_t blen, const int *fds, int nfds,
                  uint32_t *id);
int zts_rpc_finish(int s, uint16_t op, uint32_t id, struct ztrpc_rep_hdr *rep, void *rbody, uint32_t rcap);

/* Handlers (zts_connect.c, zts_sock.c, zts_udp.c). */
int zts_h_connect(struct zts_call *c);
int zts_h_bind(struct zts_call *c);
int zts_h_listen(struct zts_call *c);
int zts_h_accept(struct zts_call *c);
int zts_h_name(struct zts_call *c);
int zts_h_getsockopt(struct zts_call *c);
int zts_h_setsockopt(struct zts_call *c);
int zts_h_socket(struct zts_call *c);
int zts_h_send(struct zts_call *c);
int zts_h_recv(struct zts_call *c);
int zts_h_shutdown(struct zts_call *c);
int zts_h_dup(struct zts_call *c);
int zts_h_dup2(struct zts_call *c);
int zts_in_udp_range(long fd);
int zts_h_ioctl(struct zts_call *c);

/* Helpers shared by the handlers (zts_sock.c): answer with a value, or continue the call. */
int zts_finish(struct zts_call *c, long val, int err);
int zts_pass(struct zts_call *c);
int zts_is_ztap(int kind);
int zts_file_nonblock(int fd);
long zts_timeo_ms(int fd, int opt); /* SO_RCVTIMEO/SO_SNDTIMEO of fd in ms, 0 = none */
int zts_broadcast_denied(int fd, const struct ztrpc_addr *a);
int zts_sockopt_rpc(struct zts_call *c, int sock, int level, int name, const void *value, uint32_t len);
int zts_tell_shut(struct zts_call *c, int fd, uint8_t bits);
int zts_install(struct zts_call *c, int targetfd, int newfd, int *cloexec_out);
int zts_put_sockaddr(struct zts_call *c, uint64_t addr, uint64_t lenp, int family, const struct ztrpc_addr *a);
/* Reads the program's sockaddr (at most a sockaddr_in6) for a socket of `domain` into *a, as the
 * library does (zti_addr_from_sockaddr); 0 or the errno; -EFAULT if unreadable. */
int zts_read_sockaddr(struct zts_call *c, uint64_t ua, uint32_t len, int domain, int v4_on_v6, struct ztrpc_addr *a,
                      sa_family_t *fam);
int zts_udp_open(struct zts_call *c, struct zts_ent **ent);
int zts_down_errno(int err, int fallback);

/* The BPF filter (zts_filter.c). */
struct sock_fprog;
int zts_filter_build(struct sock_fprog *prog, int both);

#endif /* ZTS_H */
