/* SPDX-License-Identifier: MIT */
/*
 * probe.h - shared by the probe program's files: probe.c (main), probe_util.c (the helpers
 * below) and probe_*.c (the cases by subject); seccomp_probe.c uses CHECK and the helpers too.
 * See probe.c for what the program is.
 */
#ifndef ZTI_PROBE_H
#define ZTI_PROBE_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

extern const char *g_self;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: %s (errno %d %s)\n", __FILE__, __LINE__, #cond, errno,    \
                    strerror(errno));                                                              \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* probe_util.c */
struct sockaddr_in sin_of(const char *ip, int port);
int is_addr(const struct sockaddr_in *s, const char *ip, int port);
int tcp_connect(const char *ip, int port);
int opt_int(int fd, int level, int name);
void echo_roundtrip(int fd, const char *msg);
void peer_is(int fd, const char *ip, int port);
int local_port(int fd, const char *ip);

/* probe_tcp.c */
int case_connect_blocking(void);
int case_connect_nonblock(void);
int case_connect_errors(void);
int case_sockopts(void);
int case_preopts(void);
int case_carried(void);
int case_listen_accept(void);
int case_bound_sndtimeo(void);
int case_interrupted(void);
int case_accept_blocking(void);

/* probe_rpc.c */
int case_sessions(void);
int case_oneway(void);
int case_oneway_refused(void);
int case_isolated(void);
int case_die(void);
int case_untouched(void);
int case_absent(void);
int case_errno(void);

/* probe_udp.c */
int case_udp(void);
int case_udp_copies(void);

/* probe_proc.c */
int case_fork(void);
int case_dup(void);
int case_fork_race(void);
int case_exec(int argc, char **argv);
int case_inherited(int argc, char **argv);
int case_threads(void);

/* probe_ipv6.c */
int case_ipv6_tcp(void);
int case_ipv6_listen(void);
int case_untouched6(void);
int case_ipv6_udp(void);

#endif
