/* SPDX-License-Identifier: MIT */
/*
 * seccomp_probe.c - what is particular to seccomp mode (ztap-seccomp), run against
 * fake_ztapd.py like probe.c (network 10.200.0.0/24, which exists only inside the fake).
 * Built statically with probe_util.c by Tests/intercept/test_seccomp.py. Usage: seccomp_probe
 * CASE.
 */
#include "probe.h"

#include <time.h>

#define UDP_LO 768
#define UDP_HI 1024

/* Datagram sockets live in the trapped fd range; copies stay in it or are refused. */
static int case_udp_range(void)
{
    int t = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(t >= 0 && t < UDP_LO); /* streams are untouched */
    int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(u >= UDP_LO && u < UDP_HI);
    CHECK(fcntl(u, F_GETFD) & FD_CLOEXEC);
    int u2 = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(u2 >= UDP_LO && u2 < UDP_HI && u2 != u);
    CHECK((fcntl(u2, F_GETFD) & FD_CLOEXEC) == 0);
    struct sockaddr_in peer = sin_of("10.200.0.1", 53);
    CHECK(connect(u, (struct sockaddr *)&peer, sizeof peer) == 0);
    /* dup() and F_DUPFD copies are placed in the range and keep the framing. */
    int d = dup(u);
    CHECK(d >= UDP_LO && d < UDP_HI);
    CHECK(write(d, "d1", 2) == 2);
    char buf[8];
    CHECK(read(u, buf, sizeof buf) == 2 && memcmp(buf, "d1", 2) == 0);
    int f = fcntl(u, F_DUPFD_CLOEXEC, 10);
    CHECK(f >= UDP_LO && f < UDP_HI && (fcntl(f, F_GETFD) & FD_CLOEXEC));
    CHECK(send(f, "f1", 2, 0) == 2);
    CHECK(recv(f, buf, sizeof buf, 0) == 2 && memcmp(buf, "f1", 2) == 0);
    /* A copy outside the range would show the framing: refused, loudly. */
    CHECK(dup2(u, 70) == -1 && errno == EINVAL);
    CHECK(dup3(u, 71, 0) == -1 && errno == EINVAL);
    CHECK(dup2(u, 900) == 900); /* inside the range: fine */
    CHECK(write(900, "x9", 2) == 2);
    CHECK(read(u, buf, sizeof buf) == 2 && memcmp(buf, "x9", 2) == 0);
    /* A kernel datagram socket copied out of the range may not become a network socket. */
    int k = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(dup2(k, 72) == 72);
    struct sockaddr_in dst = sin_of("10.200.0.1", 5353);
    CHECK(sendto(72, "n", 1, 0, (struct sockaddr *)&dst, sizeof dst) == -1 && errno == ENETUNREACH);
    /* A pipe moved into the range: its reads and writes are continued to the kernel. */
    int p[2];
    CHECK(pipe(p) == 0);
    CHECK(dup2(p[0], 990) == 990 && dup2(p[1], 991) == 991);
    CHECK(write(991, "pipe", 4) == 4);
    CHECK(read(990, buf, sizeof buf) == 4 && memcmp(buf, "pipe", 4) == 0);
    return 0;
}

/* io_uring would bypass the filter: it is not offered. */
static int case_io_uring(void)
{
    char params[120];
    memset(params, 0, sizeof params);
    CHECK(syscall(SYS_io_uring_setup, 4, params) == -1 && errno == ENOSYS);
    return 0;
}

static volatile sig_atomic_t g_alarms;
static void on_alarm(int sig)
{
    (void)sig;
    g_alarms++;
}

/* With SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV the kernel delivers a handled signal only once the
 * supervisor answers; it looks for one while a blocking connect waits and answers EINTR (the
 * handler runs then), and the connect goes on, as with the library: writable once connected,
 * SO_ERROR 0. (The handshake takes 300 ms: EINTR means the answer came before it ended.) */
static int case_signal_interrupts_connect(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    CHECK(sigaction(SIGALRM, &sa, NULL) == 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = sin_of("10.200.0.1", 8); /* 300 ms handshake */
    struct itimerval it = { { 0, 0 }, { 0, 100000 } };
    CHECK(setitimer(ITIMER_REAL, &it, NULL) == 0);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == EINTR);
    CHECK(g_alarms == 1);
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    CHECK(poll(&p, 1, 5000) == 1 && (p.revents & POLLOUT));
    int err = -1;
    socklen_t l = sizeof err;
    CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) == 0 && err == 0);
    close(fd);
    return 0;
}

/* A blocking accept and a blocking datagram receive wait in the supervisor and are bounded by
 * SO_RCVTIMEO like the kernel's. */
static int case_timeouts(void)
{
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in b = sin_of("10.200.0.2", 0);
    CHECK(bind(u, (struct sockaddr *)&b, sizeof b) == 0);
    struct timeval tv = { 0, 200000 };
    CHECK(setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    char buf[8];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(recv(u, buf, sizeof buf, 0) == -1 && errno == EAGAIN);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    CHECK(ms >= 150);
    close(u);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: seccomp_probe CASE\n");
        return 2;
    }
    const char *c = argv[1];
    int r;
    if (!strcmp(c, "udp_range")) r = case_udp_range();
    else if (!strcmp(c, "io_uring")) r = case_io_uring();
    else if (!strcmp(c, "signal_interrupts_connect")) r = case_signal_interrupts_connect();
    else if (!strcmp(c, "timeouts")) r = case_timeouts();
    else if (!strcmp(c, "exit7")) return 7;
    else if (!strcmp(c, "sigterm_self")) { raise(SIGTERM); return 1; }
    else if (!strcmp(c, "wait_term")) {
        /* Prints READY, exits 3 on SIGTERM (forwarded by the supervisor). */
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGTERM);
        sigprocmask(SIG_BLOCK, &s, NULL);
        printf("READY\n");
        fflush(stdout);
        int sig;
        CHECK(sigwait(&s, &sig) == 0 && sig == SIGTERM);
        return 3;
    } else {
        fprintf(stderr, "unknown case %s\n", c);
        return 2;
    }
    if (r == 0)
        printf("OK %s\n", c);
    return r;
}
