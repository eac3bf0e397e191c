/* SPDX-License-Identifier: MIT */
/*
 * probe_close.c - the end of a connection from every side: shutdown in each direction and
 * order, the peer's FIN and RST, and what read/write/poll/epoll/SO_ERROR/getpeername say at
 * each step; plus the data path's flags (MSG_PEEK, MSG_WAITALL, MSG_TRUNC), ioctls, a full
 * send buffer, and a bulk echo.
 *
 * Waits are for the *last* event of a transition (POLLRDHUP after "data then FIN"), so the
 * mask printed afterwards is the settled one, not an intermediate state.
 */
#include "probe.h"

#include <fcntl.h>
#include <linux/sockios.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/uio.h>
#include <unistd.h>

static void echo_check_public(int fd)
{
    do_send(fd, "ok", MSG_NOSIGNAL);
    read_upto(fd, 2, 2000);
}

void case_shutdown_wr(void)
{
    int c = tcp_connect(P_COLLECT);
    do_send(c, "abc", MSG_NOSIGNAL);
    res("shutdown(SHUT_WR)", shutdown(c, SHUT_WR));
    show_poll("after SHUT_WR: ", c);
    do_send(c, "x", MSG_NOSIGNAL);
    wait_ev(c, POLLRDHUP, 2000);
    read_upto(c, 100, 2000);
    show_names(c);
    show_so_error(c);
    res("shutdown(SHUT_WR) again", shutdown(c, SHUT_WR));
    res("shutdown(SHUT_RD)", shutdown(c, SHUT_RD));
    show_poll("", c);
    close(c);
}

void case_shutdown_rd(void)
{
    int c = tcp_connect(P_ECHO);
    res("shutdown(SHUT_RD)", shutdown(c, SHUT_RD));
    show_poll("after SHUT_RD: ", c);
    do_recv(c, 10, 0);
    do_send(c, "abc", MSG_NOSIGNAL);
    wait_inq(c, 3, 2000);
    show_poll("echo came back: ", c);
    do_recv(c, 10, MSG_DONTWAIT);
    do_recv(c, 10, MSG_DONTWAIT);
    show_names(c);
    res("shutdown(SHUT_WR)", shutdown(c, SHUT_WR));
    wait_ev(c, POLLHUP, 1000);
    show_names(c);
    close(c);
}

void case_shutdown_rdwr(void)
{
    int c = tcp_connect(P_ECHO);
    res("shutdown(SHUT_RDWR)", shutdown(c, SHUT_RDWR));
    show_poll("at once: ", c);
    do_recv(c, 10, 0);
    do_send(c, "x", MSG_NOSIGNAL);
    msleep(300);
    show_poll("after the peer's FIN: ", c);
    show_names(c);
    show_so_error(c);
    res("shutdown(SHUT_RDWR) again", shutdown(c, SHUT_RDWR));
    close(c);
}

void case_shutdown_after_peer_close(void)
{
    int c = tcp_connect(P_CLOSE);
    wait_ev(c, POLLRDHUP, 2000);
    do_recv(c, 10, 0);
    show_names(c);
    res("shutdown(SHUT_WR)", shutdown(c, SHUT_WR));
    msleep(200);
    show_poll("both closed: ", c);
    show_names(c);
    res("shutdown(SHUT_RD)", shutdown(c, SHUT_RD));
    res("shutdown(SHUT_RDWR)", shutdown(c, SHUT_RDWR));
    do_send(c, "x", MSG_NOSIGNAL);
    show_so_error(c);
    close(c);
}

void case_shutdown_wr_data_back(void)
{
    /* Half-close with the peer still sending: our FIN, then its data, then its FIN. */
    int c = tcp_connect(P_ECHO);
    do_send(c, "payload", MSG_NOSIGNAL);
    res("shutdown(SHUT_WR)", shutdown(c, SHUT_WR));
    wait_ev(c, POLLRDHUP, 2000);
    read_upto(c, 100, 2000);
    show_poll("", c);
    close(c);
}

void case_shutdown_unconnected(void)
{
    int s = tcp_socket();
    res("shutdown(SHUT_WR) fresh", shutdown(s, SHUT_WR));
    res("shutdown(SHUT_RDWR) fresh", shutdown(s, SHUT_RDWR));
    int c = tcp_connect(P_ECHO);
    res("shutdown(3)", shutdown(c, 3));
    res("shutdown(-1)", shutdown(c, -1));
    res("shutdown on a non-socket", shutdown(0, SHUT_RD));
    echo_check_public(c);
    close(s);
    close(c);
}

void case_peer_close(void)
{
    int c = tcp_connect(P_HELLO_CLOSE);
    wait_ev(c, POLLRDHUP, 2000);
    do_recv(c, 100, 0);
    do_recv(c, 100, 0);
    show_names(c);
    show_so_error(c);
    out("write after the peer's FIN:");
    do_send(c, "x", MSG_NOSIGNAL);
    wait_ev(c, POLLHUP, 2000);
    show_so_error(c);
    do_send(c, "y", MSG_NOSIGNAL);
    do_send(c, "z", MSG_NOSIGNAL);
    do_recv(c, 100, 0);
    show_names(c);
    close(c);
}

void case_peer_rst_read(void)
{
    int c = tcp_connect(P_RST);
    wait_ev(c, POLLRDHUP, 2000);
    do_recv(c, 10, 0);
    do_recv(c, 10, 0);
    show_so_error(c);
    do_send(c, "x", MSG_NOSIGNAL);
    show_names(c);
    close(c);
}

void case_peer_rst_so_error(void)
{
    int c = tcp_connect(P_RST);
    wait_ev(c, POLLRDHUP, 2000);
    show_so_error(c);
    show_so_error(c);
    do_recv(c, 10, 0);
    show_poll("", c);
    close(c);
}

void case_peer_rst_write(void)
{
    int c = tcp_connect(P_RST);
    wait_ev(c, POLLRDHUP, 2000);
    do_send(c, "x", MSG_NOSIGNAL);
    do_send(c, "y", MSG_NOSIGNAL);
    res("write (SIGPIPE expected)", write(c, "z", 1));
    show_so_error(c);
    close(c);
}

void case_peer_rst_after_data(void)
{
    /* "hello" arrives, then an RST, before the app reads. */
    int c = tcp_connect(P_HELLO_RST);
    wait_ev(c, POLLRDHUP, 2000);
    msleep(100);
    show_poll("", c);
    do_recv(c, 100, 0);
    do_recv(c, 100, 0);
    do_recv(c, 100, 0);
    show_so_error(c);
    close(c);
}

void case_epipe_sigpipe(void)
{
    int c = tcp_connect(P_CLOSE);
    wait_ev(c, POLLRDHUP, 2000);
    do_send(c, "x", MSG_NOSIGNAL);
    wait_ev(c, POLLHUP, 2000);
    res("write", write(c, "y", 1));
    res("send MSG_NOSIGNAL", send(c, "y", 1, MSG_NOSIGNAL));
    res("send", send(c, "y", 1, 0));
    close(c);
}

static void show_epoll(int ep, const char *label)
{
    struct epoll_event ev[4];
    int n = epoll_wait(ep, ev, 4, 0);
    if (n < 0)
        out("%sepoll_wait = -1 %s", label, errname(errno));
    else
        out("%sepoll_wait = %d %s", label, n, n > 0 ? epollstr(ev[0].events) : "");
}

static void wait_epoll(int ep, int ms)
{
    struct epoll_event ev[4];
    int n = epoll_wait(ep, ev, 4, ms);
    out("epoll wait: %s", n > 0 ? "ready" : n == 0 ? "timeout" : errname(errno));
    msleep(30);
}

void case_epoll_peer_close(void)
{
    int c = tcp_connect(P_HELLO_CLOSE);
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI, .data.u32 = 1 };
    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
    wait_ev(c, POLLRDHUP, 2000);
    show_epoll(ep, "hello + FIN arrived: ");
    do_recv(c, 100, 0);
    do_recv(c, 100, 0);
    show_epoll(ep, "read to EOF: ");
    do_send(c, "x", MSG_NOSIGNAL);
    wait_ev(c, POLLHUP, 2000);
    show_epoll(ep, "after the peer's RST: ");
    close(c);
    close(ep);
}

void case_epoll_peer_rst(void)
{
    int c = tcp_connect(P_RST);
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.u32 = 1 };
    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
    wait_ev(c, POLLRDHUP, 2000);
    show_epoll(ep, "after RST: ");
    do_recv(c, 10, 0);
    show_epoll(ep, "after reading the error: ");
    close(c);
    close(ep);
}

void case_epoll_edge_triggered(void)
{
    int c = tcp_connect(P_ECHO);
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.u32 = 1 };
    res("epoll_ctl ADD EPOLLIN|EPOLLET", epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev));
    show_epoll(ep, "idle: ");
    do_send(c, "a", MSG_NOSIGNAL);
    wait_epoll(ep, 2000);
    show_epoll(ep, "again without reading: ");
    do_send(c, "b", MSG_NOSIGNAL);
    wait_epoll(ep, 2000);
    show_epoll(ep, "again: ");
    read_upto(c, 2, 2000);
    res("shutdown(SHUT_WR)", shutdown(c, SHUT_WR));
    wait_ev(c, POLLRDHUP, 2000); /* poll does not consume the edge */
    msleep(100);                 /* the peer's FIN and the ACKs settle: all in one edge */
    show_epoll(ep, "after the peer's FIN: ");
    show_epoll(ep, "again: ");
    ev.events = EPOLLOUT | EPOLLONESHOT;
    res("epoll_ctl MOD EPOLLOUT|EPOLLONESHOT", epoll_ctl(ep, EPOLL_CTL_MOD, c, &ev));
    show_epoll(ep, "oneshot: ");
    show_epoll(ep, "oneshot again: ");
    close(c);
    close(ep);
}

void case_poll_full_send_buffer(void)
{
    /* The peer never reads: writes fill the buffers, then EAGAIN and no POLLOUT. */
    int c = tcp_connect(P_STALL);
    set_nonblock(c, 1);
    static char block[65536];
    long total = 0;
    int err = 0;
    while (total < (256L << 20)) {
        long n = send(c, block, sizeof block, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) {
                /* Linux may open a little more room as segments leave; settle. */
                msleep(100);
                n = send(c, block, sizeof block, MSG_NOSIGNAL);
                if (n < 0 && errno == EAGAIN) {
                    err = EAGAIN;
                    break;
                }
                if (n > 0)
                    total += n;
                continue;
            }
            err = errno;
            break;
        }
        total += n;
    }
    out("wrote %s bytes, then %s", total > 0 ? ">0" : "0", err ? errname(err) : "no error");
    show_poll("full: ", c);
    close(c);
}

void case_sndtimeo_write(void)
{
    int c = tcp_connect(P_STALL);
    struct timeval tv = { 0, 200000 };
    res("setsockopt SO_SNDTIMEO 200ms", setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv));
    size_t big = 64 << 20;
    char *buf = calloc(1, big);
    long n = send(c, buf, big, MSG_NOSIGNAL);
    if (n < 0)
        out("send 64 MiB = -1 %s", errname(errno));
    else
        out("send 64 MiB = %s", n == (long)big ? "all" : n > 0 ? "partial" : "0");
    long m;
    int tries = 0;
    do
        m = send(c, buf, big, MSG_NOSIGNAL);
    while (m > 0 && ++tries < 20);
    out("then send = %s", m < 0 ? errname(errno) : "more");
    free(buf);
    close(c);
}

void case_tcp_bulk_echo(void)
{
    /* 4 MiB through the echo service, written and read concurrently. */
    int c = tcp_connect(P_ECHO);
    set_nonblock(c, 1);
    long want = 4L << 20, sent = 0, got = 0;
    unsigned sum_out = 0, sum_in = 0;
    char buf[65536];
    int idle = 0;
    while (got < want && idle < 50) {
        struct pollfd p = { .fd = c, .events = POLLIN | (sent < want ? POLLOUT : 0) };
        if (poll(&p, 1, 100) == 0) {
            idle++;
            continue;
        }
        idle = 0;
        if ((p.revents & POLLOUT) && sent < want) {
            long n = want - sent < (long)sizeof buf ? want - sent : (long)sizeof buf;
            for (long i = 0; i < n; i++)
                buf[i] = (char)((sent + i) * 7);
            long w = send(c, buf, (size_t)n, MSG_NOSIGNAL);
            if (w > 0) {
                for (long i = 0; i < w; i++)
                    sum_out = sum_out * 31 + (unsigned char)buf[i];
                sent += w;
            }
        }
        if (p.revents & POLLIN) {
            long r = recv(c, buf, sizeof buf, 0);
            if (r <= 0)
                break;
            for (long i = 0; i < r; i++)
                sum_in = sum_in * 31 + (unsigned char)buf[i];
            got += r;
        }
    }
    out("sent %ld, received %ld, same bytes: %s", sent, got, sum_in == sum_out ? "yes" : "no");
    close(c);
}

void case_recv_flags(void)
{
    int c = tcp_connect(P_ECHO);
    do_send(c, "hello world", MSG_NOSIGNAL);
    wait_inq(c, 11, 2000);
    do_recv(c, 5, MSG_PEEK);
    do_recv(c, 100, MSG_PEEK);
    do_recv(c, 100, MSG_DONTWAIT);
    do_recv(c, 100, MSG_DONTWAIT);
    do_send(c, "abc", MSG_NOSIGNAL);
    msleep(30);
    do_send(c, "def", MSG_NOSIGNAL);
    do_recv(c, 6, MSG_WAITALL);
    do_send(c, "xyz", MSG_NOSIGNAL);
    wait_inq(c, 3, 2000);
    char b[8];
    res("recv(2, MSG_TRUNC)", recv(c, b, 2, MSG_TRUNC));
    do_recv(c, 10, MSG_DONTWAIT);
    res("recv(0)", recv(c, b, 0, MSG_DONTWAIT));
    res("recv(MSG_ERRQUEUE)", recv(c, b, sizeof b, MSG_ERRQUEUE | MSG_DONTWAIT));
    struct sockaddr_in other = sin_of(PEER_IP, P_DISCARD);
    res("sendto another address on a connected TCP socket",
        sendto(c, "to", 2, MSG_NOSIGNAL, (struct sockaddr *)&other, sizeof other));
    read_upto(c, 2, 2000);
    res("send(0)", send(c, b, 0, MSG_NOSIGNAL));
    close(c);
}

void case_tcp_ioctls(void)
{
    int c = tcp_connect(P_ECHO);
    do_send(c, "hello", MSG_NOSIGNAL);
    wait_inq(c, 5, 2000);
    int v = -1;
    res("ioctl FIONREAD", ioctl(c, FIONREAD, &v));
    out("FIONREAD: %d", v);
    v = -1;
    res("ioctl SIOCOUTQ", ioctl(c, SIOCOUTQ, &v));
    out("SIOCOUTQ: %d", v);
    v = -1;
    res("ioctl SIOCOUTQNSD", ioctl(c, SIOCOUTQNSD, &v));
    out("SIOCOUTQNSD: %d", v);
    v = -1;
    res("ioctl SIOCATMARK", ioctl(c, SIOCATMARK, &v));
    out("SIOCATMARK: %d", v);
    int on = 1;
    res("ioctl FIONBIO 1", ioctl(c, FIONBIO, &on));
    show_flags(c);
    int l = tcp_listen_self(8140, 5);
    v = -1;
    res("ioctl FIONREAD listener", ioctl(l, FIONREAD, &v));
    close(l);
    close(c);
}

void case_tcp_vectored(void)
{
    int c = tcp_connect(P_ECHO);
    struct iovec iov[3] = { { "abc", 3 }, { "", 0 }, { "defgh", 5 } };
    res("writev 3 iovecs", writev(c, iov, 3));
    wait_inq(c, 8, 2000);
    char a[3], b[10];
    struct iovec in[2] = { { a, 3 }, { b, 10 } };
    long n = readv(c, in, 2);
    res("readv", n);
    show_data("first iovec: ", a, n < 3 ? n : 3);
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    struct iovec one = { "msg", 3 };
    mh.msg_iov = &one;
    mh.msg_iovlen = 1;
    res("sendmsg", sendmsg(c, &mh, MSG_NOSIGNAL));
    wait_inq(c, 3, 2000);
    char r[10];
    struct iovec rin = { r, sizeof r };
    char ctrl[64];
    mh.msg_iov = &rin;
    mh.msg_control = ctrl;
    mh.msg_controllen = sizeof ctrl;
    mh.msg_flags = -1;
    n = recvmsg(c, &mh, 0);
    res("recvmsg", n);
    out("msg_namelen %u msg_controllen %zu msg_flags %d", (unsigned)mh.msg_namelen, (size_t)mh.msg_controllen, mh.msg_flags);
    close(c);
}

void case_tcp_sendfile(void)
{
    char path[] = "/tmp/ztdiff-sendfile-XXXXXX";
    int f = mkstemp(path);
    unlink(path);
    static char block[10000];
    for (int i = 0; i < (int)sizeof block; i++)
        block[i] = (char)('a' + i % 26);
    if (write(f, block, sizeof block) != (ssize_t)sizeof block)
        out("tmpfile write failed");
    int c = tcp_connect(P_ECHO);
    off_t off = 0;
    res("sendfile 10000", sendfile(c, f, &off, sizeof block));
    read_upto(c, sizeof block, 2000);
    int p[2];
    if (pipe(p) == 0) {
        res("write pipe", write(p[1], "spliced", 7));
        res("splice pipe -> socket", splice(p[0], NULL, c, NULL, 7, 0));
        read_upto(c, 7, 2000);
        close(p[0]);
        close(p[1]);
    }
    close(f);
    close(c);
}

void case_names_states(void)
{
    int s = tcp_socket();
    out("-- fresh");
    show_names(s);
    do_connect(s, PEER_IP, P_STALL);
    out("-- connected");
    show_names(s);
    res("shutdown(SHUT_WR)", shutdown(s, SHUT_WR));
    msleep(100);
    out("-- half-closed (ours; the peer keeps its side open)");
    show_names(s);
    close(s);
    s = tcp_connect(P_ECHO);
    res("shutdown(SHUT_WR)", shutdown(s, SHUT_WR));
    wait_ev(s, POLLRDHUP, 2000);
    msleep(100);
    out("-- both closed");
    show_names(s);
    close(s);
    s = tcp_connect(P_CLOSE);
    wait_ev(s, POLLRDHUP, 2000);
    out("-- half-closed (peer's)");
    show_names(s);
    close(s);
    s = tcp_connect(P_RST);
    wait_ev(s, POLLRDHUP, 2000);
    out("-- reset");
    show_names(s);
    close(s);
}

void case_names_addrlen(void)
{
    int c = tcp_connect(P_ECHO);
    struct sockaddr_in a;
    socklen_t l;
    memset(&a, 0xee, sizeof a);
    l = 0;
    res("getsockname len 0", getsockname(c, (struct sockaddr *)&a, &l));
    out("len %u, untouched: %s", (unsigned)l, ((unsigned char *)&a)[0] == 0xee ? "yes" : "no");
    memset(&a, 0xee, sizeof a);
    l = 4;
    res("getsockname len 4", getsockname(c, (struct sockaddr *)&a, &l));
    out("len %u, family %s, port bytes %s", (unsigned)l, a.sin_family == AF_INET ? "AF_INET" : "?",
        a.sin_port == 0xeeee ? "untouched" : "written");
    memset(&a, 0xee, sizeof a);
    l = 6;
    res("getpeername len 6", getpeername(c, (struct sockaddr *)&a, &l));
    out("len %u, port %d, addr bytes %s", (unsigned)l, ntohs(a.sin_port),
        a.sin_addr.s_addr == 0xeeeeeeee ? "untouched" : "written");
    struct sockaddr_storage ss;
    l = sizeof ss;
    res("getsockname len 128", getsockname(c, (struct sockaddr *)&ss, &l));
    out("len %u", (unsigned)l);
    res("getsockname NULL", getsockname(c, NULL, &l));
    res("getpeername on a non-socket", getpeername(0, (struct sockaddr *)&ss, &l));
    close(c);
}
