// SPDX-License-Identifier: MIT
// connrate.c - control-path benchmarks for bench/seccomp.sh: what an intercepted program pays per
// connection and per datagram, which is where the seccomp supervisor and the library differ.
//
//   connrate tcp HOST PORT SECONDS   connect, 1-byte echo, close, in a loop: connections/s
//   connrate udp HOST PORT SECONDS   connected UDP socket, 64-byte request/response: round trips/s
//   connrate serve ADDR PORT         UDP echo server on ADDR:PORT (the TCP echo is tcpblast's)
// Only the addresses given on the command line are contacted.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
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

int main(int argc, char **argv)
{
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
    if (argc != 5) {
        fprintf(stderr, "usage: connrate tcp|udp HOST PORT SECONDS | connrate serve ADDR PORT\n");
        return 2;
    }
    struct sockaddr_in a = addr_of(argv[2], atoi(argv[3]));
    double secs = atof(argv[4]), t0 = now(), t = t0;
    long n = 0;
    char b[64];
    memset(b, 'x', sizeof b);
    if (!strcmp(argv[1], "tcp")) {
        while ((t = now()) - t0 < secs) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
                perror("connrate: connect");
                return 1;
            }
            timeouts(fd);
            if (write(fd, b, 1) != 1 || read(fd, b, 1) != 1) {
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
