/* SPDX-License-Identifier: MIT */
/*
 * probe_listen.c - listeners: bind errors, readiness (poll/epoll), accept/accept4 flags,
 * non-blocking accept, backlog, SO_REUSEADDR/SO_REUSEPORT, what the accepted socket says, and
 * a listener closed with connections still queued. The peer connects on request (ctl).
 */
#include "probe.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

static int do_accept4(int l, int flags, const char *label)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len = sizeof(struct sockaddr_in);
    int c = accept4(l, (struct sockaddr *)&ss, &len, flags);
    int e = errno;
    if (c < 0)
        out("%s = -1 %s", label, errname(e));
    else
        out("%s = fd, addr %s", label, astr(&ss, len));
    errno = e;
    return c;
}

void case_listen_accept(void)
{
    int l = tcp_listen_self(8110, 5);
    show_names(l);
    opt_get_int(l, SOL_SOCKET, SO_ACCEPTCONN, "SO_ACCEPTCONN");
    show_poll("listener, nothing pending: ", l);
    out("peer: %s", ctl("connect 8110 1 hold 2000"));
    wait_ev(l, POLLIN, 2000);
    int c = do_accept4(l, 0, "accept");
    show_poll("listener after accept: ", l);
    show_names(c);
    show_poll("accepted: ", c);
    opt_get_int(c, SOL_SOCKET, SO_ACCEPTCONN, "SO_ACCEPTCONN (accepted)");
    show_flags(c);
    set_nonblock(l, 1);
    do_accept4(l, 0, "accept (O_NONBLOCK, nothing pending)");
    close(c);
    close(l);
}

void case_accept4_flags(void)
{
    int l = tcp_listen_self(8111, 5);
    out("peer: %s", ctl("connect 8111 3 hold 2000"));
    wait_ev(l, POLLIN, 2000);
    msleep(100);
    int c = do_accept4(l, SOCK_NONBLOCK | SOCK_CLOEXEC, "accept4(SOCK_NONBLOCK|SOCK_CLOEXEC)");
    show_flags(c);
    do_recv(c, 10, 0);
    int d = do_accept4(l, 0, "accept4(0)");
    show_flags(d);
    do_accept4(l, 0x40000000, "accept4(bad flag)");
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    socklen_t small = 4;
    int e = fdres("accept addrlen 4", accept(l, (struct sockaddr *)&a, &small));
    out("returned addrlen %u, family %s", (unsigned)small, a.sin_family == AF_INET ? "AF_INET" : "other");
    set_nonblock(l, 1);
    res("accept NULL addr (nothing pending)", accept(l, NULL, NULL));
    close(c);
    close(d);
    close(e);
    close(l);
}

void case_accept_nonblocking(void)
{
    int l = tcp_listen_self(8120, 5);
    set_nonblock(l, 1);
    do_accept4(l, 0, "accept on O_NONBLOCK listener");
    do_accept4(l, SOCK_NONBLOCK, "accept4 SOCK_NONBLOCK");
    out("peer: %s", ctl("connect 8120 1 hold 2000"));
    wait_ev(l, POLLIN, 2000);
    int c = do_accept4(l, 0, "accept");
    show_flags(c);
    do_accept4(l, 0, "accept again");
    int s = tcp_socket();
    do_accept4(s, 0, "accept on an unbound socket");
    do_bind(s, SELF_IP, 8121);
    do_accept4(s, 0, "accept on a bound, not listening socket");
    int k = tcp_connect(P_ECHO);
    do_accept4(k, 0, "accept on a connected socket");
    close(k);
    close(s);
    close(c);
    close(l);
}

void case_listen_backlog(void)
{
    /* Linux queues backlog+1 connections; further SYNs are dropped (the peer's connect times
     * out after 500 ms, well before the SYN would be retransmitted). */
    int l = tcp_listen_self(8112, 1);
    out("peer: %s", ctl("connect 8112 4 hold 500"));
    msleep(200);
    set_nonblock(l, 1);
    int n = 0;
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c < 0) {
            out("accepted %d, then %s", n, errname(errno));
            break;
        }
        n++;
    }
    close(l);
}

void case_listen_close_pending(void)
{
    int l = tcp_listen_self(8113, 5);
    out("peer: %s", ctl("connect 8113 1 rec 2000"));
    wait_ev(l, POLLIN, 2000);
    res("close listener with a connection queued", close(l));
    out("peer's connection: %s", ctl("report 8113"));
}

void case_listen_reuseaddr(void)
{
    int a = tcp_socket(), b = tcp_socket();
    int one = 1;
    res("setsockopt SO_REUSEADDR a", setsockopt(a, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    res("setsockopt SO_REUSEADDR b", setsockopt(b, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    do_bind(a, SELF_IP, 8114);
    do_bind(b, SELF_IP, 8114);
    res("listen a", listen(a, 5));
    res("listen b", listen(b, 5));
    int c = tcp_socket();
    res("setsockopt SO_REUSEADDR c", setsockopt(c, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one));
    out("c binds the port a listens on:");
    do_bind(c, SELF_IP, 8114);
    int x = tcp_socket(), y = tcp_socket();
    out("no SO_REUSEADDR:");
    do_bind(x, SELF_IP, 8115);
    do_bind(y, SELF_IP, 8115);
    close(a);
    close(b);
    close(c);
    close(x);
    close(y);
}

void case_listen_reuseport(void)
{
    int a = tcp_socket(), b = tcp_socket();
    int one = 1;
    res("setsockopt SO_REUSEPORT a", setsockopt(a, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one));
    res("setsockopt SO_REUSEPORT b", setsockopt(b, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one));
    do_bind(a, SELF_IP, 8116);
    do_bind(b, SELF_IP, 8116);
    res("listen a", listen(a, 16));
    res("listen b", listen(b, 16));
    out("peer: %s", ctl("connect 8116 6 hold 2000"));
    set_nonblock(a, 1);
    set_nonblock(b, 1);
    int total = 0;
    for (int i = 0; i < 100 && total < 6; i++) {
        struct pollfd p[2] = { { .fd = a, .events = POLLIN }, { .fd = b, .events = POLLIN } };
        if (poll(p, 2, 100) <= 0)
            continue;
        for (int k = 0; k < 2; k++)
            while (accept(p[k].fd, NULL, NULL) >= 0)
                total++;
    }
    out("accepted %d of 6 across both listeners", total);
    int c = tcp_socket();
    out("a third socket without SO_REUSEPORT:");
    do_bind(c, SELF_IP, 8116);
    close(a);
    close(b);
    close(c);
}

void case_listen_bind_errors(void)
{
    int s = tcp_socket();
    do_bind(s, SELF_IP, 8122);
    out("bind again:");
    do_bind(s, SELF_IP, 8123);
    int t = tcp_socket();
    do_bind(t, UNREACH_IP, 8124);
    struct sockaddr_in a = sin_of(SELF_IP, 8125);
    res("bind len 8", bind(t, (struct sockaddr *)&a, 8));
    a.sin_family = AF_UNIX;
    res("bind family AF_UNIX", bind(t, (struct sockaddr *)&a, sizeof a));
    int k = tcp_connect(P_ECHO);
    res("listen on a connected socket", listen(k, 5));
    out("bind on a connected socket:");
    do_bind(k, SELF_IP, 8126);
    int l = tcp_listen_self(8129, 5);
    res("listen again on a listener (new backlog)", listen(l, 10));
    opt_get_int(l, SOL_SOCKET, SO_ACCEPTCONN, "SO_ACCEPTCONN");
    close(l);
    int u = tcp_socket();
    res("listen on an unbound socket", listen(u, 5));
    show_name("", u, 0);
    close(s);
    close(t);
    close(k);
    close(u);
}

void case_listen_port0(void)
{
    int l = tcp_socket();
    do_bind(l, SELF_IP, 0);
    res("listen", listen(l, 5));
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    getsockname(l, (struct sockaddr *)&a, &len);
    show_name("", l, 0);
    out("peer: %s", ctl("connect %d 1 hold 2000", ntohs(a.sin_port)));
    wait_ev(l, POLLIN, 2000);
    int c = do_accept4(l, 0, "accept");
    struct sockaddr_in b;
    len = sizeof b;
    getsockname(c, (struct sockaddr *)&b, &len);
    out("accepted local port = listener port: %s", a.sin_port == b.sin_port ? "yes" : "no");
    close(c);
    close(l);
}

void case_listen_bind_any(void)
{
    int l = tcp_socket();
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    do_bind(l, "0.0.0.0", 8117);
    res("listen", listen(l, 5));
    show_name("", l, 0);
    out("peer: %s", ctl("connect 8117 1 data 2000"));
    wait_ev(l, POLLIN, 2000);
    int c = do_accept4(l, 0, "accept");
    show_names(c);
    wait_ev(c, POLLIN, 2000);
    do_recv(c, 10, 0);
    close(c);
    close(l);
}

void case_accept_peer_data_close(void)
{
    int l = tcp_listen_self(8118, 5);
    out("peer: %s", ctl("connect 8118 1 datclose 2000"));
    wait_ev(l, POLLIN, 2000);
    int c = do_accept4(l, 0, "accept");
    wait_ev(c, POLLRDHUP, 2000);
    do_recv(c, 10, 0);
    do_recv(c, 10, 0);
    show_names(c);
    show_poll("", c);
    close(c);
    close(l);
}

void case_accept_peer_rst_queued(void)
{
    /* The peer resets a connection that is still in the accept queue. */
    int l = tcp_listen_self(8119, 5);
    out("peer: %s", ctl("connect 8119 1 rst 2000"));
    wait_ev(l, POLLIN, 2000);
    msleep(100);
    set_nonblock(l, 1);
    int c = do_accept4(l, 0, "accept");
    if (c >= 0) {
        show_poll("accepted: ", c);
        show_names(c);
        show_so_error(c);
        do_recv(c, 10, MSG_DONTWAIT);
        do_send(c, "x", MSG_NOSIGNAL);
        close(c);
    }
    do_accept4(l, 0, "accept again");
    close(l);
}

void case_listen_epoll(void)
{
    int l = tcp_listen_self(8127, 5);
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.u32 = 1 };
    res("epoll_ctl ADD listener", epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev));
    struct epoll_event got[4];
    int n = epoll_wait(ep, got, 4, 0);
    out("epoll_wait(0) = %d %s", n, n > 0 ? epollstr(got[0].events) : "");
    out("peer: %s", ctl("connect 8127 2 hold 2000"));
    n = epoll_wait(ep, got, 4, 2000);
    msleep(50);
    n = epoll_wait(ep, got, 4, 0);
    out("epoll_wait = %d %s", n, n > 0 ? epollstr(got[0].events) : "");
    int c1 = do_accept4(l, 0, "accept");
    n = epoll_wait(ep, got, 4, 0);
    out("epoll_wait(0) = %d %s", n, n > 0 ? epollstr(got[0].events) : "");
    int c2 = do_accept4(l, 0, "accept");
    n = epoll_wait(ep, got, 4, 0);
    out("epoll_wait(0) = %d %s", n, n > 0 ? epollstr(got[0].events) : "");
    res("epoll_ctl ADD accepted", epoll_ctl(ep, EPOLL_CTL_ADD, c1, &ev));
    n = epoll_wait(ep, got, 4, 0);
    out("epoll_wait(0) = %d %s", n, n > 0 ? epollstr(got[0].events) : "");
    close(c1);
    close(c2);
    close(l);
    close(ep);
}

void case_listen_shutdown(void)
{
    int l = tcp_listen_self(8128, 5);
    res("shutdown(SHUT_WR) listener", shutdown(l, SHUT_WR));
    show_poll("", l);
    res("shutdown(SHUT_RD) listener", shutdown(l, SHUT_RD));
    show_poll("", l);
    set_nonblock(l, 1);
    do_accept4(l, 0, "accept");
    opt_get_int(l, SOL_SOCKET, SO_ACCEPTCONN, "SO_ACCEPTCONN");
    res("listen again", listen(l, 5));
    close(l);
}
