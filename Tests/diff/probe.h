/* SPDX-License-Identifier: MIT */
/*
 * probe.h - shared helpers of the differential socket probe (see probe_main.c).
 *
 * Every helper prints what it observed as one transcript line, in a form that is the same on
 * every run of the same environment: errno as a name, poll/epoll masks as symbolic names,
 * addresses as tokens (SELF, PEER, ...), ephemeral ports as "eph", fds as "fd". Two
 * environments that behave the same therefore print byte-identical transcripts.
 */
#ifndef ZTAP_DIFF_PROBE_H
#define ZTAP_DIFF_PROBE_H

#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The shared addressing plan (run_diff.py and peer.py use the same numbers). */
#define SELF_IP "10.71.0.2"
#define PEER_IP "10.71.0.1"
#define UNREACH_IP "10.71.0.77" /* inside the subnet, nobody answers ARP */
#define BCAST_IP "10.71.0.255"
/* IPv6 (the same two hosts; printed as SELF6/PEER6, ::ffff:SELF for a v4-mapped SELF). */
#define SELF6_IP "fd71::2"
#define PEER6_IP "fd71::1"

/* Peer services (peer.py). */
enum {
    P_ECHO = 7001,
    P_DISCARD = 7002,
    P_CLOSE = 7003,
    P_RST = 7004,
    P_STALL = 7005,
    P_HELLO_CLOSE = 7006,
    P_HELLO_REC = 7007,
    P_BLACKHOLE = 7008,
    P_HELLO_RST = 7009,
    P_CLOSED = 7010,
    P_COLLECT = 7011,
    P_RECORDER = 7012,
    P_WHOAMI = 7013,
    P_OOB = 7014,
    P_OOB_BULK = 7017,
    P_OOB_READ = 7018,
    U_ECHO = 7001,
    U_CLOSED = 7010,
    U_TTL = 7015,
    U_SENDER = 7016,
};

/* Cases: probe_cases.h lists them (X-macro), each file defines case_NAME(). */
#define X(name, desc) void case_##name(void);
#include "probe_cases.h"
#undef X

/* Transcript output: one line per call, written with a single write(2). */
void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *errname(int e);
const char *pollstr(int revents);
const char *epollstr(uint32_t ev);

/* Result of a call returning 0/-1 or a count: "LABEL = N" or "LABEL = -1 ENAME". Keeps errno. */
long res(const char *label, long rv);
/* Result of a call returning an fd: "LABEL = fd" or "LABEL = -1 ENAME". */
int fdres(const char *label, int rv);

struct sockaddr_in sin_of(const char *ip, int port);
struct sockaddr_in6 sin6_of(const char *ip, int port); /* "::ffff:a.b.c.d" too */
/* Token for an address: SELF:7001, PEER:eph, ANY:0, ... (static rotating buffer). */
const char *astr(const void *sa, socklen_t len);
void show_name(const char *label, int fd, int peer);
void show_names(int fd);

/* poll(2) with every requestable event and timeout 0: "LABEL: poll = MASK". */
void show_poll(const char *label, int fd);
/* Waits up to `ms` for `want`, prints "wait MASK: ready|timeout", settles, prints the mask. */
int wait_ev(int fd, int want, int ms);

int opt_get_int(int fd, int level, int name, const char *label);
void opt_set_int(int fd, int level, int name, int v, const char *label);
void show_so_error(int fd);

/* Sockets. */
int tcp_socket(void);
int tcp_connect(int port);        /* blocking connect to PEER:port, printed */
int udp_socket(void);
int tcp_listen_self(int port, int backlog);
long do_connect(int fd, const char *ip, int port);
long do_bind(int fd, const char *ip, int port);
/* The same for an AF_INET6 socket (sockaddr_in6 of `ip`, flowinfo and scope 0). */
long do_connect6(int fd, const char *ip, int port);
long do_bind6(int fd, const char *ip, int port);
void set_nonblock(int fd, int on);
/* One line ("...\n", up to `size` - 1 bytes, each within 2 s) without the newline. */
void read_line(int fd, char *line, int size);
void show_flags(int fd);

/* Data. */
void show_data(const char *label, const char *buf, long n);
long do_send(int fd, const char *s, int flags);
/* One read of up to `max` bytes (with flags), printed. */
long do_recv(int fd, int max, int flags);
/* Waits (up to `ms`) until at least `n` bytes are queued for reading (FIONREAD); prints nothing. */
void wait_inq(int fd, int n, int ms);
/* Reads until `want` bytes, EOF, error or `ms` without data; prints the total. */
long read_upto(int fd, long want, int ms);

/* Peer control (AF_UNIX, not through the stack under test). */
const char *ctl(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void msleep(int ms);
/* SIGALRM after `ms` with a handler installed without SA_RESTART (interrupts blocking calls). */
void arm_alarm(int ms);
void disarm_alarm(void);
/* getsockopt(SO_ERROR) bounded to `ms` (ztap may wait for a pending connect's outcome). */
void show_so_error_guarded(int fd, int ms);
int ephemeral_ok(int port);
/* Path of this executable and the control socket (for exec sub-cases). */
extern const char *g_self_exe;
extern const char *g_ctl_path;

#endif
