// SPDX-License-Identifier: MIT
// tcpblast.c - tiny TCP benchmark client/server for ztap's benchmarks (bench/netstack.sh).
//
// Client modes (talk to RFC 863/864/862 style services, ztap's built-in ones or our server):
//   tcpblast send HOST PORT SECONDS     write as fast as possible (discard), print Gbit/s
//   tcpblast recv HOST PORT SECONDS     read as fast as possible (chargen), print Gbit/s
//   tcpblast rr   HOST PORT SECONDS [SIZE]  request/response (echo) of SIZE bytes (64), print
//                                       median and mean round trip in microseconds
// Server mode (kernel peers for the veth baseline):
//   tcpblast serve ADDR                 discard on 9, chargen on 19, echo on 7 (threads)
// Only the addresses given on the command line are contacted. HOST/ADDR may be IPv4 or IPv6.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* host:port as a socket address of its own family; its length. */
static socklen_t address(const char *host, int port, struct sockaddr_storage *out) {
    memset(out, 0, sizeof *out);
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)out;
    struct sockaddr_in *a4 = (struct sockaddr_in *)out;
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        return sizeof *a6;
    }
    if (inet_pton(AF_INET, host, &a4->sin_addr) != 1) { fprintf(stderr, "bad address %s\n", host); exit(2); }
    a4->sin_family = AF_INET;
    a4->sin_port = htons(port);
    return sizeof *a4;
}

static int dial(const char *host, int port) {
    struct sockaddr_storage a;
    socklen_t len = address(host, port, &a);
    int fd = socket(a.ss_family, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&a, len) != 0) { perror("connect"); exit(1); }
    // A stalled peer must fail the run, not hang the benchmark.
    struct timeval tv = { .tv_sec = 10, .tv_usec = 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd;
}

static char buf[1 << 20];

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void *serve_conn(void *arg) {
    int fd = (int)(intptr_t)arg, port;
    struct sockaddr_storage a;
    socklen_t l = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &l);
    port = ntohs(a.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&a)->sin6_port : ((struct sockaddr_in *)&a)->sin_port);
    char *b = malloc(1 << 20);
    if (port == 19) {
        for (int i = 0; i < (1 << 20); i++) b[i] = 32 + i % 95;
        while (write(fd, b, 1 << 20) > 0) {}
    } else {
        ssize_t n;
        while ((n = read(fd, b, 1 << 20)) > 0) {
            if (port == 7) {
                ssize_t off = 0;
                while (off < n) { ssize_t w = write(fd, b + off, n - off); if (w <= 0) goto out; off += w; }
            }
        }
    }
out:
    free(b);
    close(fd);
    return NULL;
}

static void *serve_port(void *arg) {
    intptr_t port = ((intptr_t *)arg)[0];
    const char *addr = (const char *)((intptr_t *)arg)[1];
    struct sockaddr_storage a;
    socklen_t len = address(addr, (int)port, &a);
    int l = socket(a.ss_family, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&a, len) || listen(l, 128)) { perror("bind/listen"); exit(1); }
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c < 0) continue;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_t t;
        pthread_create(&t, NULL, serve_conn, (void *)(intptr_t)c);
        pthread_detach(t);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "serve")) {
        static intptr_t args[3][2];
        int ports[3] = { 7, 9, 19 };
        pthread_t t[3];
        for (int i = 0; i < 3; i++) {
            args[i][0] = ports[i];
            args[i][1] = (intptr_t)argv[2];
            pthread_create(&t[i], NULL, serve_port, args[i]);
        }
        pthread_join(t[0], NULL);
        return 0;
    }
    if (argc < 5) {
        fprintf(stderr, "usage: tcpblast send|recv|rr HOST PORT SECONDS [SIZE] | tcpblast serve ADDR\n");
        return 2;
    }
    const char *mode = argv[1], *host = argv[2];
    int port = atoi(argv[3]);
    double secs = atof(argv[4]);
    int fd = dial(host, port);
    if (!strcmp(mode, "send") || !strcmp(mode, "recv")) {
        int sending = !strcmp(mode, "send");
        memset(buf, 'z', sizeof buf);
        double t0 = now(), t1 = t0;
        uint64_t total = 0;
        while ((t1 = now()) - t0 < secs) {
            ssize_t n = sending ? write(fd, buf, sizeof buf) : read(fd, buf, sizeof buf);
            if (n <= 0) { fprintf(stderr, "%s: %s\n", mode, n == 0 ? "EOF" : strerror(errno)); return 1; }
            total += (uint64_t)n;
        }
        printf("%.3f\n", total * 8 / (t1 - t0) / 1e9);
        return 0;
    }
    if (!strcmp(mode, "rr")) {
        int size = argc > 5 ? atoi(argv[5]) : 64, one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        size_t cap = 1 << 20, count = 0;
        double *rtt = malloc(cap * sizeof *rtt), t0 = now();
        memset(buf, 'r', size);
        while (now() - t0 < secs && count < cap) {
            double s = now();
            if (write(fd, buf, size) != size) { perror("write"); return 1; }
            int got = 0;
            while (got < size) {
                ssize_t n = read(fd, buf + got, size - got);
                if (n <= 0) { perror("read"); return 1; }
                got += n;
            }
            rtt[count++] = (now() - s) * 1e6;
        }
        double sum = 0;
        for (size_t i = 0; i < count; i++) sum += rtt[i];
        qsort(rtt, count, sizeof *rtt, cmp);
        printf("%.1f %.1f %zu\n", rtt[count / 2], sum / count, count);
        return 0;
    }
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
