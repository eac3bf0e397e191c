// SPDX-License-Identifier: MIT
// connrate.c - control-path benchmarks (bench/seccomp.sh, bench/conn.sh): what a program pays per
// connection and per datagram, and what many connections cost.
//
//   connrate tcp HOST PORT SECONDS   connect, 1-byte echo, close, in a loop: connections/s
//   connrate cc HOST PORT SECONDS    connect and close, in a loop (no data): connections/s
//   connrate udp HOST PORT SECONDS   connected UDP socket, 64-byte request/response: round trips/s
//   connrate count HOST PORT N       N times connect, 1-byte echo, close; exits 1 at the first
//                                    error (printing how many succeeded): "N ok SECONDS"
//   connrate open HOST PORT N SIZE   phases, each started by a line on stdin and reported by one
//                                    on stdout: open N connections at once (non-blocking
//                                    connects, at most 512 in flight): "open SECONDS"; every
//                                    connection echoes SIZE bytes (256 at a time): "burst
//                                    SECONDS"; close all:
//                                    "closed SECONDS". (A driver samples ztapd's RSS between.)
//   connrate bulk HOST PORT N SECONDS  N connections read from a chargen at once for SECONDS,
//                                    then exit without closing them first: Gbit/s
//   connrate serve ADDR PORT         UDP echo server on ADDR:PORT (the TCP echo is tcpblast's)
//   connrate tcpserve ADDR PORT      TCP echo server on ADDR:PORT for any number of connections
//                                    (one thread, epoll)
// Only the addresses given on the command line are contacted.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct sockaddr_in addr_of(const char *host, int port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "connrate: bad address %s\n", host);
        exit(2);
    }
    return a;
}

static void timeouts(int fd)
{
    struct timeval tv = { .tv_sec = 10, .tv_usec = 0 }; // a stalled peer fails the run
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

/* As many fds as the hard limit allows (10k connections need more than the usual 1024). */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int epfd_add(int ep, int fd, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.fd = fd };
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

/* TCP echo for any number of connections: one thread, epoll, level-triggered. */
static int tcp_echo_server(struct sockaddr_in a)
{
    raise_nofile();
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4096) < 0) {
        perror("connrate: tcpserve");
        return 1;
    }
    int ep = epoll_create1(0);
    epfd_add(ep, l, EPOLLIN);
    static struct epoll_event evs[256];
    static char buf[65536];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == l) {
                int c;
                while ((c = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0)
                    epfd_add(ep, c, EPOLLIN);
                continue;
            }
            ssize_t r = read(fd, buf, sizeof buf);
            if (r > 0) {
                /* Echoes are small here: a short write only loses bytes of a misbehaving client. */
                ssize_t w = write(fd, buf, (size_t)r);
                (void)w;
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                close(fd);
            }
        }
    }
}

static void wait_line(void)
{
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        exit(0);
}

/* Opens n connections concurrently; returns their fds (exits on an error). */
static int *open_many(struct sockaddr_in a, int n)
{
    int *fds = calloc((size_t)n, sizeof *fds);
    int ep = epoll_create1(0), started = 0, done = 0, inflight = 0;
    struct epoll_event evs[256];
    while (done < n) {
        while (started < n && inflight < 512) {
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            if (fd < 0) {
                perror("connrate: socket");
                exit(1);
            }
            if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
                fprintf(stderr, "connrate: connect %d: %s\n", started, strerror(errno));
                exit(1);
            }
            fds[started++] = fd;
            epfd_add(ep, fd, EPOLLOUT);
            inflight++;
        }
        int k = epoll_wait(ep, evs, 256, 10000);
        if (k <= 0) {
            fprintf(stderr, "connrate: connects stalled after %d of %d\n", done, n);
            exit(1);
        }
        for (int i = 0; i < k; i++) {
            int fd = evs[i].data.fd, err = 0;
            socklen_t el = sizeof err;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
            if (err) {
                fprintf(stderr, "connrate: connect: %s\n", strerror(err));
                exit(1);
            }
            epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
            inflight--;
            done++;
        }
    }
    close(ep);
    return fds;
}

/* Every connection sends size bytes and reads them back, at most 256 at a time (a TAP's queue,
 * like a NIC's, drops what overflows it: thousands of echoes at once would measure retransmission
 * timeouts). */
static void echo_all(int *fds, int n, int size)
{
    int ep = epoll_create1(0), next = 0, left = n, inflight = 0;
    int *got = calloc((size_t)n, sizeof *got);
    char *b = malloc((size_t)size > 65536 ? (size_t)size : 65536);
    memset(b, 'x', (size_t)size);
    struct epoll_event evs[256];
    while (left > 0) {
        while (next < n && inflight < 256) {
            struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)next };
            ssize_t w = write(fds[next], b, (size_t)size);
            if (w != size) {
                fprintf(stderr, "connrate: burst write: %s\n", w < 0 ? strerror(errno) : "short");
                exit(1);
            }
            epoll_ctl(ep, EPOLL_CTL_ADD, fds[next], &ev);
            next++;
            inflight++;
        }
        int k = epoll_wait(ep, evs, 256, 10000);
        if (k <= 0) {
            fprintf(stderr, "connrate: echoes stalled, %d left\n", left);
            exit(1);
        }
        for (int j = 0; j < k; j++) {
            int i = (int)evs[j].data.u32;
            ssize_t r = read(fds[i], b, 65536);
            if (r <= 0 && errno != EAGAIN) {
                fprintf(stderr, "connrate: burst read: %s\n", r < 0 ? strerror(errno) : "EOF");
                exit(1);
            }
            if (r > 0 && (got[i] += (int)r) >= size) {
                epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
                left--;
                inflight--;
            }
        }
    }
    free(got);
    free(b);
    close(ep);
}

/* n connections reading from a chargen until secs pass; Gbit/s. */
static double bulk(struct sockaddr_in a, int n, double secs)
{
    int ep = epoll_create1(0);
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
            perror("connrate: bulk connect");
            exit(1);
        }
        fcntl(fd, F_SETFL, O_NONBLOCK);
        epfd_add(ep, fd, EPOLLIN);
    }
    static char b[1 << 20];
    struct epoll_event evs[64];
    double t0 = now(), t;
    unsigned long long bytes = 0;
    while ((t = now()) - t0 < secs) {
        int k = epoll_wait(ep, evs, 64, 100);
        for (int i = 0; i < k; i++) {
            ssize_t r = read(evs[i].data.fd, b, sizeof b);
            if (r > 0)
                bytes += (unsigned long long)r;
        }
    }
    return bytes * 8 / (t - t0) / 1e9;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "tcpserve"))
        return tcp_echo_server(addr_of(argv[2], atoi(argv[3])));
    if (argc == 4 && !strcmp(argv[1], "serve")) {
        struct sockaddr_in a = addr_of(argv[2], atoi(argv[3]));
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0) {
            perror("connrate: bind");
            return 1;
        }
        char buf[2048];
        for (;;) {
            struct sockaddr_in from;
            socklen_t fl = sizeof from;
            ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
            if (n >= 0)
                sendto(s, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
        }
    }
    if (argc == 6 && !strcmp(argv[1], "open")) {
        raise_nofile();
        setvbuf(stdout, NULL, _IOLBF, 0);
        struct sockaddr_in a = addr_of(argv[2], atoi(argv[3]));
        int n = atoi(argv[4]), size = atoi(argv[5]);
        wait_line();
        double t0 = now();
        int *fds = open_many(a, n);
        printf("open %.3f\n", now() - t0);
        wait_line();
        t0 = now();
        echo_all(fds, n, size);
        printf("burst %.3f\n", now() - t0);
        wait_line();
        t0 = now();
        for (int i = 0; i < n; i++)
            close(fds[i]);
        printf("closed %.3f\n", now() - t0);
        return 0;
    }
    if (argc == 6 && !strcmp(argv[1], "bulk")) {
        printf("%.3f\n", bulk(addr_of(argv[2], atoi(argv[3])), atoi(argv[4]), atof(argv[5])));
        fflush(stdout);
        _exit(0); /* like a killed program: the kernel (or ztapd) tears the connections down */
    }
    if (argc == 5 && !strcmp(argv[1], "count")) {
        struct sockaddr_in a = addr_of(argv[2], atoi(argv[3]));
        long n = atol(argv[4]);
        double t0 = now();
        char b = 'x';
        for (long i = 0; i < n; i++) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
                printf("%ld ok, connect: %s\n", i, strerror(errno));
                return 1;
            }
            timeouts(fd);
            if (write(fd, &b, 1) != 1 || read(fd, &b, 1) != 1) {
                printf("%ld ok, echo: %s\n", i, strerror(errno));
                return 1;
            }
            close(fd);
        }
        printf("%ld ok %.3f\n", n, now() - t0);
        return 0;
    }
    if (argc != 5) {
        fprintf(stderr, "usage: connrate tcp|cc|udp HOST PORT SECONDS | count HOST PORT N |\n"
                        "       open HOST PORT N SIZE | bulk HOST PORT N SECONDS |\n"
                        "       serve ADDR PORT | tcpserve ADDR PORT\n");
        return 2;
    }
    struct sockaddr_in a = addr_of(argv[2], atoi(argv[3]));
    double secs = atof(argv[4]), t0 = now(), t = t0;
    long n = 0;
    char b[64];
    memset(b, 'x', sizeof b);
    if (!strcmp(argv[1], "tcp") || !strcmp(argv[1], "cc")) {
        int echo = !strcmp(argv[1], "tcp");
        while ((t = now()) - t0 < secs) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
                perror("connrate: connect");
                return 1;
            }
            timeouts(fd);
            if (echo && (write(fd, b, 1) != 1 || read(fd, b, 1) != 1)) {
                perror("connrate: echo");
                return 1;
            }
            close(fd);
            n++;
        }
    } else {
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
            perror("connrate: connect");
            return 1;
        }
        timeouts(fd);
        while ((t = now()) - t0 < secs) {
            if (send(fd, b, sizeof b, 0) != (ssize_t)sizeof b || recv(fd, b, sizeof b, 0) != (ssize_t)sizeof b) {
                perror("connrate: udp");
                return 1;
            }
            n++;
        }
    }
    printf("%.0f\n", n / (t - t0));
    return 0;
}
