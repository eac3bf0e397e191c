/* SPDX-License-Identifier: MIT */
/*
 * probe_udp.c - UDP: unconnected and connected sockets, ICMP port unreachable, MSG_PEEK and
 * MSG_TRUNC, source addresses, zero-length and oversize datagrams, binds, AF_UNSPEC, shutdown,
 * the mmsg calls, and what a datagram socket refuses (listen/accept, missing destination).
 */
#include "probe.h"


#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

static long do_sendto(int u, const char *s, const char *ip, int port)
{
    struct sockaddr_in a = sin_of(ip, port);
    char label[128];
    snprintf(label, sizeof label, "sendto %s \"%s\"", astr(&a, sizeof a), s);
    return res(label, sendto(u, s, strlen(s), 0, (struct sockaddr *)&a, sizeof a));
}

static long do_recvfrom(int u, int max, int flags)
{
    char buf[70000];
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t l = sizeof ss;
    long n = recvfrom(u, buf, (size_t)max, flags, (struct sockaddr *)&ss, &l);
    if (n < 0) {
        out("recvfrom(%d) = -1 %s", max, errname(errno));
    } else {
        char label[160];
        snprintf(label, sizeof label, "recvfrom(%d) = %ld from %s: ", max, n, astr(&ss, l));
        show_data(label, buf, n < max ? n : max);
    }
    return n;
}

void case_udp_unconnected(void)
{
    int u = udp_socket();
    show_names(u);
    show_poll("fresh: ", u);
    do_sendto(u, "ping", PEER_IP, U_ECHO);
    show_names(u);
    wait_ev(u, POLLIN, 2000);
    do_recvfrom(u, 100, 0);
    do_recvfrom(u, 100, MSG_DONTWAIT);
    show_poll("", u);
    show_so_error(u);
    close(u);
}

void case_udp_readv_writev(void)
{
    int u = udp_socket();
    struct iovec out2[3] = { { "one ", 4 }, { "", 0 }, { "datagram", 8 } };
    res("writev unconnected", writev(u, out2, 3));
    do_connect(u, PEER_IP, U_ECHO);
    res("writev 3 iovecs", writev(u, out2, 3));
    wait_ev(u, POLLIN, 2000);
    char a[5] = "", b[20] = "";
    struct iovec in[2] = { { a, 4 }, { b, sizeof b - 1 } };
    long n = readv(u, in, 2);
    res("readv", n);
    out("readv parts: \"%s\" \"%s\"", a, b);
    out("a datagram longer than the buffers:");
    res("writev", writev(u, out2, 3));
    wait_ev(u, POLLIN, 2000);
    memset(a, 0, sizeof a);
    struct iovec small[1] = { { a, 3 } };
    res("readv 3 bytes", readv(u, small, 1));
    out("readv part: \"%s\"", a);
    set_nonblock(u, 1);
    res("readv again (the rest of it is gone)", readv(u, small, 1));
    volatile int bad = -1; /* a count the compiler cannot see is negative */
    res("readv -1 iovecs", readv(u, small, bad));
    close(u);
}

void case_udp_connected(void)
{
    int u = udp_socket();
    do_connect(u, PEER_IP, U_ECHO);
    show_names(u);
    do_send(u, "a", 0);
    wait_ev(u, POLLIN, 2000);
    do_recvfrom(u, 100, 0);
    do_sendto(u, "b", PEER_IP, U_ECHO);
    wait_ev(u, POLLIN, 2000);
    do_recvfrom(u, 100, 0);
    out("a datagram to another port (its reply comes from a source we are not connected to):");
    do_sendto(u, "ttl?", PEER_IP, U_TTL);
    msleep(300);
    do_recvfrom(u, 100, MSG_DONTWAIT);
    out("connect to another destination:");
    do_connect(u, PEER_IP, U_TTL);
    show_names(u);
    do_send(u, "ttl?", 0);
    wait_ev(u, POLLIN, 2000);
    do_recvfrom(u, 100, 0);
    close(u);
}

void case_udp_icmp_refused(void)
{
    int u = udp_socket();
    do_connect(u, PEER_IP, U_CLOSED);
    do_send(u, "x", 0);
    wait_ev(u, POLLIN, 2000);
    do_recv(u, 10, 0);
    do_recv(u, 10, MSG_DONTWAIT);
    show_poll("", u);
    do_send(u, "y", 0);
    wait_ev(u, POLLIN, 2000);
    show_poll("second ICMP: ", u);
    do_send(u, "z", 0);
    show_so_error(u);
    close(u);
}

void case_udp_icmp_so_error(void)
{
    int u = udp_socket();
    do_connect(u, PEER_IP, U_CLOSED);
    do_send(u, "x", 0);
    wait_ev(u, POLLIN, 2000);
    show_so_error(u);
    show_so_error(u);
    do_recv(u, 10, MSG_DONTWAIT);
    show_poll("", u);
    close(u);
}

void case_udp_icmp_unconnected(void)
{
    int u = udp_socket();
    do_sendto(u, "x", PEER_IP, U_CLOSED);
    msleep(300);
    show_poll("", u);
    do_recvfrom(u, 10, MSG_DONTWAIT);
    show_so_error(u);
    do_sendto(u, "y", PEER_IP, U_CLOSED);
    close(u);
}

void case_udp_peek_trunc(void)
{
    int u = udp_socket();
    do_connect(u, PEER_IP, U_ECHO);
    do_send(u, "0123456789", 0);
    wait_ev(u, POLLIN, 2000);
    do_recv(u, 4, MSG_PEEK);
    do_recv(u, 100, MSG_PEEK);
    char b[4];
    struct iovec iov = { b, sizeof b };
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    long n = recvmsg(u, &mh, 0);
    out("recvmsg 4-byte buffer = %ld, msg_flags %s", n, (mh.msg_flags & MSG_TRUNC) ? "MSG_TRUNC" : "0");
    do_recv(u, 100, MSG_DONTWAIT);
    do_send(u, "abcdef", 0);
    wait_ev(u, POLLIN, 2000);
    res("recv(2, MSG_TRUNC)", recv(u, b, 2, MSG_TRUNC));
    do_send(u, "ghijkl", 0);
    wait_ev(u, POLLIN, 2000);
    res("recv(2, MSG_TRUNC|MSG_PEEK)", recv(u, b, 2, MSG_TRUNC | MSG_PEEK));
    do_recv(u, 100, 0);
    out("FIONREAD is the next datagram's length:");
    int q = -1;
    res("ioctl FIONREAD (empty)", ioctl(u, FIONREAD, &q));
    out("FIONREAD: %d", q);
    do_send(u, "ab", 0);
    do_send(u, "cdefg", 0);
    wait_ev(u, POLLIN, 2000);
    msleep(200); /* the second echo too */
    res("ioctl FIONREAD", ioctl(u, FIONREAD, &q));
    out("FIONREAD: %d", q);
    do_recv(u, 100, 0);
    res("ioctl FIONREAD", ioctl(u, FIONREAD, &q));
    out("FIONREAD: %d", q);
    do_recv(u, 100, 0);
    close(u);
}

void case_udp_zero_length(void)
{
    int u = udp_socket();
    do_connect(u, PEER_IP, U_ECHO);
    res("send 0 bytes", send(u, "", 0, 0));
    wait_ev(u, POLLIN, 2000);
    do_recvfrom(u, 100, 0);
    do_recvfrom(u, 100, MSG_DONTWAIT);
    res("sendto 0 bytes", sendto(u, NULL, 0, 0, NULL, 0));
    wait_ev(u, POLLIN, 2000);
    char b[4];
    res("read", read(u, b, sizeof b));
    close(u);
}

void case_udp_oversize(void)
{
    static char big[70000];
    memset(big, 'q', sizeof big);
    int u = udp_socket();
    struct sockaddr_in a = sin_of(PEER_IP, U_ECHO);
    res("sendto 65508 bytes", sendto(u, big, 65508, 0, (struct sockaddr *)&a, sizeof a));
    res("sendto 65507 bytes", sendto(u, big, 65507, 0, (struct sockaddr *)&a, sizeof a));
    wait_ev(u, POLLIN, 3000);
    do_recvfrom(u, 70000, 0);
    res("sendto 3000 bytes", sendto(u, big, 3000, 0, (struct sockaddr *)&a, sizeof a));
    wait_ev(u, POLLIN, 3000);
    do_recvfrom(u, 70000, 0);
    close(u);
}

void case_udp_bind_recv(void)
{
    int u = udp_socket();
    do_bind(u, SELF_IP, 8150);
    show_names(u);
    out("peer: %s", ctl("udpsend 8150 hi"));
    wait_ev(u, POLLIN, 2000);
    do_recvfrom(u, 100, 0);
    do_sendto(u, "back", PEER_IP, U_ECHO);
    wait_ev(u, POLLIN, 2000);
    do_recvfrom(u, 100, 0);
    int v = udp_socket();
    out("a second socket on the same port:");
    do_bind(v, SELF_IP, 8150);
    out("bind again:");
    do_bind(u, SELF_IP, 8151);
    close(u);
    close(v);
}

void case_udp_bind_any(void)
{
    int u = udp_socket();
    do_bind(u, "0.0.0.0", 8152);
    show_names(u);
    out("peer: %s", ctl("udpsend 8152 hi"));
    wait_ev(u, POLLIN, 2000);
    do_recvfrom(u, 100, 0);
    close(u);
}

void case_udp_reuseaddr(void)
{
    int a = udp_socket(), b = udp_socket();
    int one = 1;
    setsockopt(a, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(b, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    do_bind(a, SELF_IP, 8153);
    do_bind(b, SELF_IP, 8153);
    out("peer: %s", ctl("udpsend 8153 both"));
    struct pollfd p[2] = { { .fd = a, .events = POLLIN }, { .fd = b, .events = POLLIN } };
    poll(p, 2, 2000);
    msleep(50);
    out("the last bound gets it:");
    do_recvfrom(b, 100, MSG_DONTWAIT);
    do_recvfrom(a, 100, MSG_DONTWAIT);
    close(a);
    close(b);
}

void case_udp_connect_unspec(void)
{
    int u = udp_socket();
    do_connect(u, PEER_IP, U_ECHO);
    show_names(u);
    struct sockaddr sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_family = AF_UNSPEC;
    res("connect(AF_UNSPEC)", connect(u, &sa, sizeof sa));
    show_names(u);
    do_send(u, "x", 0);
    do_sendto(u, "y", PEER_IP, U_ECHO);
    wait_ev(u, POLLIN, 2000);
    do_recvfrom(u, 100, 0);
    close(u);
}

void case_udp_shutdown(void)
{
    int u = udp_socket();
    res("shutdown(SHUT_RD) unconnected", shutdown(u, SHUT_RD));
    do_connect(u, PEER_IP, U_ECHO);
    res("shutdown(SHUT_WR)", shutdown(u, SHUT_WR));
    show_poll("", u);
    do_send(u, "x", MSG_NOSIGNAL);
    do_sendto(u, "y", PEER_IP, U_ECHO);
    res("shutdown(SHUT_RD)", shutdown(u, SHUT_RD));
    show_poll("", u);
    do_recv(u, 10, 0);
    do_recv(u, 10, MSG_DONTWAIT);
    close(u);
}

void case_udp_no_destination(void)
{
    int u = udp_socket();
    do_send(u, "x", 0);
    res("write", write(u, "x", 1));
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    struct iovec iov = { "x", 1 };
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    res("sendmsg no name", sendmsg(u, &mh, 0));
    do_sendto(u, "first", PEER_IP, U_ECHO);
    do_send(u, "x", 0);
    close(u);
}

void case_udp_recvfrom_addrlen(void)
{
    int u = udp_socket();
    do_sendto(u, "a", PEER_IP, U_ECHO);
    do_sendto(u, "b", PEER_IP, U_ECHO);
    do_sendto(u, "c", PEER_IP, U_ECHO);
    struct timeval tv = { 2, 0 }; /* bounds the blocking receives below */
    setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[8];
    struct sockaddr_in a;
    memset(&a, 0xee, sizeof a);
    socklen_t l = 4;
    long n = recvfrom(u, buf, sizeof buf, 0, (struct sockaddr *)&a, &l);
    out("recvfrom addrlen 4 = %ld, addrlen now %u, port bytes %s", n, (unsigned)l,
        a.sin_port == 0xeeee ? "untouched" : "written");
    l = 0;
    n = recvfrom(u, buf, sizeof buf, 0, (struct sockaddr *)&a, &l);
    out("recvfrom addrlen 0 = %ld, addrlen now %u", n, (unsigned)l);
    n = recvfrom(u, buf, sizeof buf, 0, NULL, NULL);
    out("recvfrom NULL = %ld", n);
    close(u);
}

void case_udp_msg_calls(void)
{
    int u = udp_socket();
    do_connect(u, PEER_IP, U_ECHO);
    struct mmsghdr m[3];
    struct iovec iov[3] = { { "one", 3 }, { "two!", 4 }, { "three", 5 } };
    memset(m, 0, sizeof m);
    for (int i = 0; i < 3; i++) {
        m[i].msg_hdr.msg_iov = &iov[i];
        m[i].msg_hdr.msg_iovlen = 1;
    }
    res("sendmmsg 3", sendmmsg(u, m, 3, 0));
    out("msg_len %u %u %u", m[0].msg_len, m[1].msg_len, m[2].msg_len);
    struct timeval tv = { 2, 0 }; /* recvmmsg below blocks for all 3; this bounds it */
    setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char bufs[3][16];
    struct iovec rin[3];
    struct sockaddr_in names[3];
    memset(m, 0, sizeof m);
    for (int i = 0; i < 3; i++) {
        rin[i].iov_base = bufs[i];
        rin[i].iov_len = sizeof bufs[i];
        m[i].msg_hdr.msg_iov = &rin[i];
        m[i].msg_hdr.msg_iovlen = 1;
        m[i].msg_hdr.msg_name = &names[i];
        m[i].msg_hdr.msg_namelen = sizeof names[i];
    }
    int n = (int)res("recvmmsg 3", recvmmsg(u, m, 3, 0, NULL));
    for (int i = 0; i < n; i++)
        out("  %u bytes from %s", m[i].msg_len, astr(&names[i], m[i].msg_hdr.msg_namelen));
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    struct sockaddr_in to = sin_of(PEER_IP, U_ECHO), from;
    struct iovec one = { "msg", 3 };
    mh.msg_name = &to;
    mh.msg_namelen = sizeof to;
    mh.msg_iov = &one;
    mh.msg_iovlen = 1;
    res("sendmsg with name", sendmsg(u, &mh, 0));
    wait_ev(u, POLLIN, 2000);
    char r[16], ctrl[64];
    struct iovec rv = { r, sizeof r };
    memset(&mh, 0, sizeof mh);
    mh.msg_name = &from;
    mh.msg_namelen = sizeof from;
    mh.msg_iov = &rv;
    mh.msg_iovlen = 1;
    mh.msg_control = ctrl;
    mh.msg_controllen = sizeof ctrl;
    res("recvmsg", recvmsg(u, &mh, 0));
    out("from %s, msg_controllen %zu, msg_flags %d", astr(&from, mh.msg_namelen), (size_t)mh.msg_controllen, mh.msg_flags);
    close(u);
}

void case_udp_listen_accept(void)
{
    int u = udp_socket();
    res("listen", listen(u, 5));
    res("accept", accept(u, NULL, NULL));
    do_connect(u, PEER_IP, U_ECHO);
    res("listen (connected)", listen(u, 5));
    res("accept (connected)", accept(u, NULL, NULL));
    close(u);
}

void case_udp_poll_epoll(void)
{
    int u = udp_socket();
    show_poll("fresh: ", u);
    do_connect(u, PEER_IP, U_ECHO);
    show_poll("connected: ", u);
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.u32 = 1 };
    epoll_ctl(ep, EPOLL_CTL_ADD, u, &ev);
    struct epoll_event got;
    int n = epoll_wait(ep, &got, 1, 0);
    out("epoll_wait = %d %s", n, n > 0 ? epollstr(got.events) : "");
    do_send(u, "a", 0);
    wait_ev(u, POLLIN, 2000);
    n = epoll_wait(ep, &got, 1, 0);
    out("epoll_wait = %d %s", n, n > 0 ? epollstr(got.events) : "");
    do_recv(u, 10, 0);
    n = epoll_wait(ep, &got, 1, 0);
    out("epoll_wait = %d %s", n, n > 0 ? epollstr(got.events) : "");
    close(ep);
    close(u);
}

void case_udp_unreachable(void)
{
    /* Nobody answers ARP for UNREACH (resolution gives up after ~3 s): what a connected socket
     * sees during and after. */
    int u = udp_socket();
    do_connect(u, UNREACH_IP, U_ECHO);
    do_send(u, "x", 0);
    wait_ev(u, POLLIN, 3500);
    do_recv(u, 10, MSG_DONTWAIT);
    do_send(u, "y", 0);
    msleep(100);
    show_poll("", u);
    do_recv(u, 10, MSG_DONTWAIT);
    show_so_error(u);
    close(u);
}

void case_udp_options(void)
{
    int u = udp_socket();
    do_connect(u, PEER_IP, U_ECHO);
    opt_get_int(u, SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF");
    opt_get_int(u, SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF");
    opt_set_int(u, SOL_SOCKET, SO_RCVBUF, 65536, "SO_RCVBUF");
    opt_get_int(u, SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF");
    opt_get_int(u, SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR");
    opt_get_int(u, SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE");
    opt_get_int(u, SOL_SOCKET, SO_PRIORITY, "SO_PRIORITY");
    opt_get_int(u, IPPROTO_IP, IP_TTL, "IP_TTL");
    opt_get_int(u, IPPROTO_IP, IP_TOS, "IP_TOS");
    opt_get_int(u, IPPROTO_IP, IP_MULTICAST_TTL, "IP_MULTICAST_TTL");
    opt_get_int(u, IPPROTO_IP, IP_RECVERR, "IP_RECVERR");
    opt_get_int(u, IPPROTO_IP, IP_PKTINFO, "IP_PKTINFO");
    opt_get_int(u, IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY");
    close(u);
}
