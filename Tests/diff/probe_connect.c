/* SPDX-License-Identifier: MIT */
/*
 * probe_connect.c - connect in every form: blocking, non-blocking (the EALREADY/0/EISCONN
 * sequence), refused, unreachable, timed out, interrupted, AF_UNSPEC, bad arguments.
 *
 * A connect that must stay pending goes to the peer's "blackhole" port (its accept queue is
 * full, so Linux drops the SYNs); "unreachable" is an address in the subnet nobody answers ARP
 * for. Calls that ztap might block on while Linux answers at once (SO_ERROR on a pending
 * connect) are bounded by an alarm so a difference costs a line, not the case.
 */
#include "probe.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <sys/select.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void echo_check(int fd, const char *msg)
{
    do_send(fd, msg, MSG_NOSIGNAL);
    read_upto(fd, (long)strlen(msg), 2000);
}

void case_connect_blocking(void)
{
    int fd = tcp_socket();
    show_poll("fresh: ", fd);
    show_so_error(fd);
    do_connect(fd, PEER_IP, P_ECHO);
    show_names(fd);
    show_poll("connected: ", fd);
    show_so_error(fd);
    show_flags(fd);
    echo_check(fd, "hello");
    res("close", close(fd));
}

void case_connect_whoami(void)
{
    /* The address the peer sees is the one getsockname reports (and the port is ephemeral). */
    int fd = tcp_connect(P_WHOAMI);
    char line[100];
    read_line(fd, line, sizeof line);
    char ip[64] = "";
    int port = -1;
    sscanf(line, "%63s %d", ip, &port);
    struct sockaddr_in seen = sin_of(ip, port), mine;
    socklen_t l = sizeof mine;
    getsockname(fd, (struct sockaddr *)&mine, &l);
    out("peer sees %s; getsockname %s; same: %s", astr(&seen, sizeof seen), astr(&mine, l),
        seen.sin_addr.s_addr == mine.sin_addr.s_addr && seen.sin_port == mine.sin_port ? "yes" : "no");
    close(fd);
}

void case_connect_nonblocking(void)
{
    int fd = fdres("socket(SOCK_STREAM|SOCK_NONBLOCK)", socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
    do_connect(fd, PEER_IP, P_ECHO);
    wait_ev(fd, POLLOUT, 2000);
    show_so_error(fd);
    out("second connect:");
    do_connect(fd, PEER_IP, P_ECHO);
    out("third connect:");
    do_connect(fd, PEER_IP, P_ECHO);
    show_names(fd);
    show_flags(fd);
    do_send(fd, "hi", MSG_NOSIGNAL);
    wait_ev(fd, POLLIN, 2000);
    do_recv(fd, 100, 0);
    do_recv(fd, 100, 0);
    close(fd);
}

void case_connect_nonblocking_pending(void)
{
    int fd = fdres("socket(SOCK_STREAM|SOCK_NONBLOCK)", socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
    do_connect(fd, PEER_IP, P_BLACKHOLE);
    show_poll("at once: ", fd);
    msleep(200);
    show_poll("200 ms later: ", fd);
    out("second connect:");
    do_connect(fd, PEER_IP, P_BLACKHOLE);
    show_names(fd);
    show_so_error_guarded(fd, 1000);
    do_send(fd, "early", MSG_NOSIGNAL);
    do_recv(fd, 100, 0);
    res("shutdown(SHUT_WR)", shutdown(fd, SHUT_WR));
    res("close", close(fd));
}

void case_connect_refused(void)
{
    int fd = tcp_socket();
    do_connect(fd, PEER_IP, P_CLOSED);
    show_so_error(fd);
    show_names(fd);
    show_poll("", fd);
    out("again:");
    do_connect(fd, PEER_IP, P_CLOSED);
    out("the same socket to a port that accepts:");
    do_connect(fd, PEER_IP, P_ECHO);
    echo_check(fd, "reused");
    close(fd);
}

void case_connect_refused_nonblocking(void)
{
    int fd = fdres("socket(SOCK_STREAM|SOCK_NONBLOCK)", socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
    do_connect(fd, PEER_IP, P_CLOSED);
    wait_ev(fd, POLLOUT, 2000);
    show_so_error(fd);
    show_so_error(fd);
    show_names(fd);
    out("second connect (error already read):");
    do_connect(fd, PEER_IP, P_CLOSED);
    out("third connect:");
    do_connect(fd, PEER_IP, P_CLOSED);
    wait_ev(fd, POLLOUT, 2000);
    out("read instead of SO_ERROR:");
    do_recv(fd, 10, 0);
    show_so_error(fd);
    close(fd);
}

/* The client's address as the whoami peer saw it ("IP PORT\n"), printed. */
static void show_whoami(int fd)
{
    char line[100];
    read_line(fd, line, sizeof line);
    out("peer saw: %s", line);
}

/* Waits, printing nothing (a reset's poll mask is a known difference), for the hang-up. */
static void await_hangup(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLRDHUP };
    out("hang-up: %s", poll(&p, 1, 3000) == 1 && (p.revents & POLLRDHUP) ? "seen" : "not seen");
    usleep(50 * 1000); /* ztapd has the connection's end too */
}

void case_connect_refused_bound(void)
{
    int fd = tcp_socket();
    do_bind(fd, SELF_IP, 8101);
    do_connect(fd, PEER_IP, P_CLOSED);
    show_so_error(fd);
    show_names(fd);
    show_poll("", fd);
    out("again, to a port that accepts:");
    do_connect(fd, PEER_IP, P_WHOAMI);
    show_names(fd);
    show_whoami(fd);
    close(fd);
}

void case_connect_refused_rebind(void)
{
    for (int nb = 0; nb < 2; nb++) {
        int fd = fdres(nb ? "socket(SOCK_STREAM|SOCK_NONBLOCK)" : "socket(SOCK_STREAM)",
                       socket(AF_INET, SOCK_STREAM | (nb ? SOCK_NONBLOCK : 0), 0));
        do_bind(fd, SELF_IP, 8102);
        do_connect(fd, PEER_IP, P_CLOSED);
        if (nb) {
            wait_ev(fd, POLLOUT, 2000);
            show_so_error(fd);
        }
        res("close", close(fd));
    }
    out("the port after the close:");
    int fd = tcp_socket();
    do_bind(fd, SELF_IP, 8102);
    do_connect(fd, PEER_IP, P_CLOSE);
    show_names(fd);
    close(fd);
}

void case_connect_after_reset(void)
{
    /* Linux's socket says "connected" only once a connect returned 0: a non-blocking one whose
     * connection ended reports the error on the next connect and can connect anew. */
    int fd = fdres("socket(SOCK_STREAM|SOCK_NONBLOCK)", socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
    do_connect(fd, PEER_IP, P_HELLO_RST);
    await_hangup(fd);
    out("connect after the reset:");
    do_connect(fd, PEER_IP, P_HELLO_RST);
    show_so_error(fd);
    out("connect once more:");
    do_connect(fd, PEER_IP, P_ECHO);
    wait_ev(fd, POLLOUT, 2000);
    show_so_error(fd);
    show_names(fd);
    echo_check(fd, "anew");
    close(fd);
    out("blocking (connect said 0):");
    fd = tcp_socket();
    do_connect(fd, PEER_IP, P_HELLO_RST);
    await_hangup(fd);
    do_connect(fd, PEER_IP, P_ECHO);
    show_so_error(fd);
    close(fd);
}

void case_connect_unreachable(void)
{
    int fd = tcp_socket();
    do_connect(fd, UNREACH_IP, 80);
    show_so_error(fd);
    show_names(fd);
    close(fd);
}

void case_connect_unreachable_nonblocking(void)
{
    int fd = fdres("socket(SOCK_STREAM|SOCK_NONBLOCK)", socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
    do_connect(fd, UNREACH_IP, 80);
    show_poll("at once: ", fd);
    wait_ev(fd, POLLOUT, 6000);
    show_so_error_guarded(fd, 6000);
    show_so_error(fd);
    do_send(fd, "x", MSG_NOSIGNAL);
    close(fd);
}

void case_connect_sndtimeo(void)
{
    int fd = tcp_socket();
    struct timeval tv = { 0, 300000 };
    res("setsockopt SO_SNDTIMEO 300ms", setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv));
    do_connect(fd, PEER_IP, P_BLACKHOLE);
    show_poll("", fd);
    show_names(fd);
    set_nonblock(fd, 1);
    out("second connect, O_NONBLOCK:");
    do_connect(fd, PEER_IP, P_BLACKHOLE);
    show_so_error_guarded(fd, 1000);
    close(fd);
}

void case_connect_eintr(void)
{
    int fd = tcp_socket();
    arm_alarm(300);
    do_connect(fd, PEER_IP, P_BLACKHOLE);
    disarm_alarm();
    show_poll("", fd);
    show_names(fd);
    set_nonblock(fd, 1);
    out("second connect, O_NONBLOCK:");
    do_connect(fd, PEER_IP, P_BLACKHOLE);
    show_so_error_guarded(fd, 1000);
    close(fd);
}

void case_connect_user_timeout(void)
{
    /* TCP_USER_TIMEOUT bounds the SYN retransmissions too: ETIMEDOUT after ~1 s on Linux. */
    int fd = tcp_socket();
    opt_set_int(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, 500, "TCP_USER_TIMEOUT");
    arm_alarm(3000);
    do_connect(fd, PEER_IP, P_BLACKHOLE);
    disarm_alarm();
    show_so_error_guarded(fd, 1000);
    show_names(fd);
    close(fd);
}

void case_connect_af_unspec(void)
{
    int fd = tcp_connect(P_ECHO);
    echo_check(fd, "one");
    struct sockaddr sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_family = AF_UNSPEC;
    res("connect(AF_UNSPEC)", connect(fd, &sa, sizeof sa));
    show_names(fd);
    show_poll("", fd);
    show_so_error(fd);
    do_recv(fd, 10, MSG_DONTWAIT);
    do_send(fd, "x", MSG_NOSIGNAL);
    out("reconnect:");
    do_connect(fd, PEER_IP, P_ECHO);
    echo_check(fd, "two");
    close(fd);
}

void case_connect_af_unspec_unconnected(void)
{
    int fd = tcp_socket();
    struct sockaddr sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_family = AF_UNSPEC;
    res("connect(AF_UNSPEC) on a fresh socket", connect(fd, &sa, sizeof sa));
    show_names(fd);
    do_connect(fd, PEER_IP, P_ECHO);
    echo_check(fd, "after");
    close(fd);
}

void case_connect_bad_args(void)
{
    int fd = tcp_socket();
    struct sockaddr_in a = sin_of(PEER_IP, P_ECHO);
    res("connect len 8", connect(fd, (struct sockaddr *)&a, 8));
    res("connect len 0", connect(fd, (struct sockaddr *)&a, 0));
    struct sockaddr_in b = a;
    b.sin_family = AF_INET6;
    res("connect family AF_INET6 len 16", connect(fd, (struct sockaddr *)&b, sizeof b));
    b.sin_family = 77;
    res("connect family 77", connect(fd, (struct sockaddr *)&b, sizeof b));
    res("connect NULL len 16", connect(fd, NULL, sizeof a));
    res("connect on a non-socket", connect(0 /* stdin */, (struct sockaddr *)&a, sizeof a));
    res("connect on a closed fd", connect(999, (struct sockaddr *)&a, sizeof a));
    out("then a good one:");
    do_connect(fd, PEER_IP, P_ECHO);
    echo_check(fd, "ok");
    close(fd);
}

void case_connect_twice(void)
{
    int fd = tcp_connect(P_ECHO);
    out("again, same destination:");
    do_connect(fd, PEER_IP, P_ECHO);
    out("again, another destination:");
    do_connect(fd, PEER_IP, P_DISCARD);
    echo_check(fd, "still");
    close(fd);
}

void case_connect_bound(void)
{
    int fd = tcp_socket();
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    do_bind(fd, SELF_IP, 8100);
    show_names(fd);
    do_connect(fd, PEER_IP, P_WHOAMI);
    show_names(fd);
    wait_ev(fd, POLLIN, 2000);
    do_recv(fd, 100, 0);
    close(fd);
}

void case_connect_bound_port0(void)
{
    int fd = tcp_socket();
    do_bind(fd, SELF_IP, 0);
    show_names(fd);
    struct sockaddr_in before, after;
    socklen_t l = sizeof before;
    getsockname(fd, (struct sockaddr *)&before, &l);
    do_connect(fd, PEER_IP, P_ECHO);
    l = sizeof after;
    getsockname(fd, (struct sockaddr *)&after, &l);
    out("port kept across connect: %s", before.sin_port == after.sin_port ? "yes" : "no");
    echo_check(fd, "p0");
    close(fd);
}

/* Ephemeral ports come from ip_local_port_range, whichever way a socket gets one: 80 samples,
 * so a stack drawing from another (overlapping) range is caught with near certainty. */
void case_ephemeral_ports(void)
{
    int n = 0, inside = 0, same = 0;
    for (int i = 0; i < 32; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = sin_of(PEER_IP, P_WHOAMI), me;
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
            socklen_t l = sizeof me;
            getsockname(fd, (struct sockaddr *)&me, &l);
            char line[64] = "";
            int k = 0;
            struct pollfd p = { .fd = fd, .events = POLLIN };
            while (k < (int)sizeof line - 1 && poll(&p, 1, 2000) > 0 && read(fd, line + k, 1) == 1 && line[k] != '\n')
                k++;
            line[k] = 0;
            char ip[32];
            int port = -1;
            sscanf(line, "%31s %d", ip, &port);
            n++;
            inside += ephemeral_ok(ntohs(me.sin_port));
            same += port == ntohs(me.sin_port);
        }
        close(fd);
    }
    out("TCP connect: %d ports, inside ip_local_port_range: %s, as the peer sees them: %s", n,
        inside == n ? "all" : "not all", same == n ? "all" : "not all");
    n = inside = 0;
    for (int i = 0; i < 24; i++) {
        int u = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a = sin_of(PEER_IP, U_ECHO), me;
        if (sendto(u, "p", 1, 0, (struct sockaddr *)&a, sizeof a) == 1) {
            socklen_t l = sizeof me;
            getsockname(u, (struct sockaddr *)&me, &l);
            n++;
            inside += ephemeral_ok(ntohs(me.sin_port));
        }
        close(u);
    }
    out("UDP sendto: %d ports, inside ip_local_port_range: %s", n, inside == n ? "all" : "not all");
    for (int type = SOCK_STREAM; type <= SOCK_DGRAM; type++) {
        n = inside = 0;
        for (int i = 0; i < 12; i++) {
            int s = socket(AF_INET, type, 0);
            struct sockaddr_in a = sin_of(SELF_IP, 0), me;
            if (bind(s, (struct sockaddr *)&a, sizeof a) == 0) {
                socklen_t l = sizeof me;
                getsockname(s, (struct sockaddr *)&me, &l);
                n++;
                inside += ephemeral_ok(ntohs(me.sin_port));
            }
            close(s);
        }
        out("%s bind port 0: %d ports, inside ip_local_port_range: %s", type == SOCK_STREAM ? "TCP" : "UDP", n,
            inside == n ? "all" : "not all");
    }
}

static void show_select(const char *label, int fd)
{
    fd_set r, w, x;
    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_ZERO(&x);
    FD_SET(fd, &r);
    FD_SET(fd, &w);
    FD_SET(fd, &x);
    struct timeval tv = { 0, 0 };
    int n = select(fd + 1, &r, &w, &x, &tv);
    out("%sselect = %d:%s%s%s", label, n, FD_ISSET(fd, &r) ? " read" : "", FD_ISSET(fd, &w) ? " write" : "",
        FD_ISSET(fd, &x) ? " except" : "");
}

void case_select_masks(void)
{
    int fd = fdres("socket(SOCK_STREAM|SOCK_NONBLOCK)", socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
    show_select("fresh: ", fd);
    do_connect(fd, PEER_IP, P_BLACKHOLE);
    show_select("pending: ", fd);
    close(fd);
    int c = tcp_connect(P_OOB);
    wait_ev(c, POLLPRI, 2000);
    show_select("urgent data queued: ", c);
    close(c);
    c = tcp_connect(P_HELLO_CLOSE);
    wait_ev(c, POLLRDHUP, 2000);
    show_select("hello and FIN: ", c);
    close(c);
    c = tcp_connect(P_RST);
    wait_ev(c, POLLRDHUP, 2000);
    show_select("reset: ", c);
    close(c);
    int l = tcp_listen_self(8170, 5);
    show_select("listener: ", l);
    out("peer: %s", ctl("connect 8170 1 hold 2000"));
    wait_ev(l, POLLIN, 2000);
    show_select("listener, one pending: ", l);
    close(l);
}

void case_ipv6_mapped_connect(void)
{
    /* A dual-stack app: an AF_INET6 socket reaching an IPv4 peer through ::ffff:a.b.c.d. */
    int fd = fdres("socket(AF_INET6, SOCK_STREAM)", socket(AF_INET6, SOCK_STREAM, 0));
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(P_ECHO);
    inet_pton(AF_INET6, "::ffff:" PEER_IP, &a.sin6_addr);
    res("connect [::ffff:PEER]:7001", connect(fd, (struct sockaddr *)&a, sizeof a));
    struct sockaddr_in6 me;
    socklen_t l = sizeof me;
    if (getsockname(fd, (struct sockaddr *)&me, &l) == 0) {
        char ip[64];
        inet_ntop(AF_INET6, &me.sin6_addr, ip, sizeof ip);
        out("getsockname = [%s] len %u", strcmp(ip, "::ffff:" SELF_IP) == 0 ? "::ffff:SELF" : ip, (unsigned)l);
    }
    do_send(fd, "v6", MSG_NOSIGNAL);
    read_upto(fd, 2, 2000);
    close(fd);
    int u = fdres("socket(AF_INET6, SOCK_DGRAM)", socket(AF_INET6, SOCK_DGRAM, 0));
    a.sin6_port = htons(U_ECHO);
    res("sendto [::ffff:PEER]:7001", sendto(u, "d6", 2, 0, (struct sockaddr *)&a, sizeof a));
    struct pollfd p = { .fd = u, .events = POLLIN };
    poll(&p, 1, 2000);
    do_recv(u, 10, MSG_DONTWAIT);
    close(u);
}
