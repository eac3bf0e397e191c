/* SPDX-License-Identifier: MIT */
/*
 * probe_opts.c - socket options: for each, the default, set/get round trips (including values
 * Linux rejects or rounds), the value set before connect as seen after it, and the effect where
 * the peer or the socket itself can observe it.
 *
 * Most rounds run on a *connected* socket: under ztap an unconnected socket is still a kernel
 * socket, so only a connected one asks ztapd.
 */
#include "probe.h"

#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#ifndef SO_BUSY_POLL
#define SO_BUSY_POLL 46
#endif
#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef TCP_NOTSENT_LOWAT
#define TCP_NOTSENT_LOWAT 25
#endif

#define OPT(fd, lvl, name) opt_get_int(fd, lvl, name, #name)
#define SET(fd, lvl, name, v) opt_set_int(fd, lvl, name, v, #name)

/* get; then set+get for each value. */
static void rounds(int fd, int lvl, int name, const char *label, const int *vals, int n)
{
    opt_get_int(fd, lvl, name, label);
    for (int i = 0; i < n; i++) {
        opt_set_int(fd, lvl, name, vals[i], label);
        opt_get_int(fd, lvl, name, label);
    }
}

/* The round on a fresh socket and on a connected one, and a value set before connect. */
static void int_option(int lvl, int name, const char *label, const int *vals, int n, int before)
{
    out("-- fresh socket");
    int s = tcp_socket();
    rounds(s, lvl, name, label, vals, n);
    close(s);
    out("-- connected socket");
    int c = tcp_connect(P_ECHO);
    rounds(c, lvl, name, label, vals, n);
    close(c);
    out("-- set before connect");
    s = tcp_socket();
    opt_set_int(s, lvl, name, before, label);
    do_connect(s, PEER_IP, P_ECHO);
    opt_get_int(s, lvl, name, label);
    close(s);
}

void case_opt_so_reuseaddr(void)
{
    int v[] = { 1, 0, 7 };
    int_option(SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR", v, 3, 1);
}

void case_opt_so_reuseport(void)
{
    int v[] = { 1, 0 };
    int_option(SOL_SOCKET, SO_REUSEPORT, "SO_REUSEPORT", v, 2, 1);
}

void case_opt_so_keepalive(void)
{
    int v[] = { 1, 0, 5 };
    int_option(SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE", v, 3, 1);
}

static void show_linger(int fd)
{
    struct linger lg = { -1, -1 };
    socklen_t l = sizeof lg;
    int rc = getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &l);
    if (rc < 0)
        out("getsockopt SO_LINGER = -1 %s", errname(errno));
    else
        out("getsockopt SO_LINGER = {%d, %d} len %u", lg.l_onoff, lg.l_linger, (unsigned)l);
}

static void set_linger(int fd, int on, int secs)
{
    struct linger lg = { on, secs };
    char label[64];
    snprintf(label, sizeof label, "setsockopt SO_LINGER {%d, %d}", on, secs);
    res(label, setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
}

void case_opt_so_linger(void)
{
    int c = tcp_connect(P_ECHO);
    show_linger(c);
    set_linger(c, 1, 5);
    show_linger(c);
    set_linger(c, 7, 3);
    show_linger(c);
    res("setsockopt SO_LINGER len 4", setsockopt(c, SOL_SOCKET, SO_LINGER, &(int){ 1 }, 4));
    close(c);
    /* The effect, as the peer sees it. */
    const struct { int on, secs; } modes[] = { { -1, 0 }, { 1, 0 }, { 1, 1 } };
    for (int i = 0; i < 3; i++) {
        int s = tcp_connect(P_RECORDER);
        if (modes[i].on >= 0)
            set_linger(s, modes[i].on, modes[i].secs);
        struct sockaddr_in me;
        socklen_t l = sizeof me;
        getsockname(s, (struct sockaddr *)&me, &l);
        res("close", close(s));
        out("peer saw: %s", ctl("report %d", ntohs(me.sin_port)));
    }
}

void case_close_unread_data(void)
{
    /* Closing with received data unread: Linux sends RST, not FIN (RFC 2525 2.17). */
    int s = tcp_connect(P_HELLO_REC);
    wait_ev(s, POLLIN, 2000);
    struct sockaddr_in me;
    socklen_t l = sizeof me;
    getsockname(s, (struct sockaddr *)&me, &l);
    res("close with 5 bytes unread", close(s));
    out("peer saw: %s", ctl("report %d", ntohs(me.sin_port)));
    s = tcp_connect(P_HELLO_REC);
    wait_ev(s, POLLIN, 2000);
    do_recv(s, 10, 0);
    l = sizeof me;
    getsockname(s, (struct sockaddr *)&me, &l);
    res("close after reading everything", close(s));
    out("peer saw: %s", ctl("report %d", ntohs(me.sin_port)));
}

void case_opt_so_rcvbuf(void)
{
    int v[] = { 65536, 1, 1 << 20 };
    int_option(SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF", v, 3, 32768);
}

void case_opt_so_sndbuf(void)
{
    int v[] = { 65536, 1, 1 << 20 };
    int_option(SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF", v, 3, 32768);
}

void case_opt_so_priority(void)
{
    int v[] = { 6, 0, 7, -1 };
    int_option(SOL_SOCKET, SO_PRIORITY, "SO_PRIORITY", v, 4, 3);
}

void case_opt_so_mark(void)
{
    int v[] = { 42, 0 };
    int_option(SOL_SOCKET, SO_MARK, "SO_MARK", v, 2, 7);
}

void case_opt_so_busy_poll(void)
{
    int v[] = { 50, 0, -1 };
    int_option(SOL_SOCKET, SO_BUSY_POLL, "SO_BUSY_POLL", v, 3, 20);
}

void case_opt_so_zerocopy(void)
{
    int v[] = { 1, 0 };
    int_option(SOL_SOCKET, SO_ZEROCOPY, "SO_ZEROCOPY", v, 2, 1);
    out("-- UDP");
    int u = udp_socket();
    rounds(u, SOL_SOCKET, SO_ZEROCOPY, "SO_ZEROCOPY", v, 1);
    close(u);
}

void case_opt_so_oobinline(void)
{
    int v[] = { 1, 0 };
    int_option(SOL_SOCKET, SO_OOBINLINE, "SO_OOBINLINE", v, 2, 1);
    out("-- effect: urgent byte read inline");
    int s = tcp_socket();
    SET(s, SOL_SOCKET, SO_OOBINLINE, 1);
    do_connect(s, PEER_IP, P_OOB);
    read_upto(s, 3, 2000);
    do_recv(s, 10, MSG_OOB | MSG_DONTWAIT);
    close(s);
}

void case_opt_so_error(void)
{
    int s = tcp_socket();
    show_so_error(s);
    res("setsockopt SO_ERROR", setsockopt(s, SOL_SOCKET, SO_ERROR, &(int){ 1 }, sizeof(int)));
    do_connect(s, PEER_IP, P_ECHO);
    show_so_error(s);
    res("setsockopt SO_ERROR (connected)", setsockopt(s, SOL_SOCKET, SO_ERROR, &(int){ 1 }, sizeof(int)));
    int v = -1;
    socklen_t l = 2;
    int rc = getsockopt(s, SOL_SOCKET, SO_ERROR, &v, &l);
    out("getsockopt SO_ERROR len 2 = %d (len %u)", rc, (unsigned)l);
    close(s);
}

static void identity(int fd, const char *what)
{
    out("-- %s", what);
    OPT(fd, SOL_SOCKET, SO_TYPE);
    OPT(fd, SOL_SOCKET, SO_DOMAIN);
    OPT(fd, SOL_SOCKET, SO_PROTOCOL);
    OPT(fd, SOL_SOCKET, SO_ACCEPTCONN);
}

void case_opt_socket_identity(void)
{
    int s = tcp_socket();
    identity(s, "fresh TCP");
    int c = tcp_connect(P_ECHO);
    identity(c, "connected TCP");
    int l = tcp_listen_self(8130, 5);
    identity(l, "listener");
    int u = udp_socket();
    identity(u, "fresh UDP");
    do_connect(u, PEER_IP, U_ECHO);
    identity(u, "connected UDP");
    res("setsockopt SO_TYPE", setsockopt(c, SOL_SOCKET, SO_TYPE, &(int){ 1 }, sizeof(int)));
    int v = 0;
    socklen_t len = 2;
    int rc = getsockopt(c, SOL_SOCKET, SO_TYPE, &v, &len);
    out("getsockopt SO_TYPE len 2 = %d, value %d (len %u)", rc, v, (unsigned)len);
    len = 0;
    rc = getsockopt(c, SOL_SOCKET, SO_TYPE, &v, &len);
    out("getsockopt SO_TYPE len 0 = %d (len %u)", rc, (unsigned)len);
    rc = getsockopt(c, SOL_SOCKET, SO_TYPE, &v, NULL);
    out("getsockopt SO_TYPE optlen NULL = %d %s", rc, rc < 0 ? errname(errno) : "");
    close(s);
    close(c);
    close(l);
    close(u);
}

static void udp_ttl_report(int u, const char *what)
{
    do_send(u, "ttl?", 0);
    struct pollfd p = { .fd = u, .events = POLLIN };
    poll(&p, 1, 2000);
    char buf[64];
    long n = recv(u, buf, sizeof buf - 1, MSG_DONTWAIT);
    if (n < 0)
        out("%s: peer's reply: -1 %s", what, errname(errno));
    else {
        buf[n] = 0;
        out("%s: peer saw %s", what, buf);
    }
}

void case_opt_ip_ttl(void)
{
    int v[] = { 10, 0, 256, -1, 255 };
    int_option(IPPROTO_IP, IP_TTL, "IP_TTL", v, 5, 33);
    out("-- effect on UDP");
    int u = udp_socket();
    do_connect(u, PEER_IP, U_TTL);
    udp_ttl_report(u, "default");
    SET(u, IPPROTO_IP, IP_TTL, 7);
    OPT(u, IPPROTO_IP, IP_TTL);
    udp_ttl_report(u, "IP_TTL 7");
    close(u);
}

void case_opt_ip_tos(void)
{
    int v[] = { 0x10, 0x13, 0xff, 0 };
    int_option(IPPROTO_IP, IP_TOS, "IP_TOS", v, 4, 0x20);
    out("-- effect on UDP");
    int u = udp_socket();
    do_connect(u, PEER_IP, U_TTL);
    SET(u, IPPROTO_IP, IP_TOS, 0x20);
    OPT(u, IPPROTO_IP, IP_TOS);
    udp_ttl_report(u, "IP_TOS 0x20");
    close(u);
}

void case_opt_tcp_nodelay(void)
{
    int v[] = { 1, 0, 9 };
    int_option(IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY", v, 3, 1);
}

void case_opt_tcp_cork(void)
{
    int v[] = { 1, 0 };
    int_option(IPPROTO_TCP, TCP_CORK, "TCP_CORK", v, 2, 1);
    out("-- corked data leaves when uncorked");
    int c = tcp_connect(P_ECHO);
    SET(c, IPPROTO_TCP, TCP_CORK, 1);
    do_send(c, "corked", MSG_NOSIGNAL);
    SET(c, IPPROTO_TCP, TCP_CORK, 0);
    read_upto(c, 6, 2000);
    close(c);
}

void case_opt_tcp_quickack(void)
{
    int v[] = { 0, 1 };
    int_option(IPPROTO_TCP, TCP_QUICKACK, "TCP_QUICKACK", v, 2, 0);
}

void case_opt_tcp_user_timeout(void)
{
    int v[] = { 5000, 0, -1 };
    int_option(IPPROTO_TCP, TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT", v, 3, 3000);
}

void case_opt_tcp_notsent_lowat(void)
{
    int v[] = { 16384, 0 };
    int_option(IPPROTO_TCP, TCP_NOTSENT_LOWAT, "TCP_NOTSENT_LOWAT", v, 2, 4096);
}

void case_opt_tcp_defer_accept(void)
{
    int l = tcp_listen_self(8131, 5);
    int v[] = { 5, 0, 1, 100 };
    rounds(l, IPPROTO_TCP, TCP_DEFER_ACCEPT, "TCP_DEFER_ACCEPT", v, 4);
    close(l);
    int c = tcp_connect(P_ECHO);
    rounds(c, IPPROTO_TCP, TCP_DEFER_ACCEPT, "TCP_DEFER_ACCEPT", v, 1);
    close(c);
}

void case_opt_tcp_window_clamp(void)
{
    int v[] = { 20000, 100, 0 };
    int_option(IPPROTO_TCP, TCP_WINDOW_CLAMP, "TCP_WINDOW_CLAMP", v, 3, 30000);
}

void case_opt_tcp_maxseg(void)
{
    int v[] = { 1000, 10, 100000 };
    int_option(IPPROTO_TCP, TCP_MAXSEG, "TCP_MAXSEG", v, 3, 1000);
}

static void show_cc(int fd)
{
    char name[32];
    memset(name, 'x', sizeof name);
    socklen_t l = 16;
    int rc = getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, &l);
    if (rc < 0)
        out("getsockopt TCP_CONGESTION = -1 %s", errname(errno));
    else
        out("getsockopt TCP_CONGESTION = \"%.*s\" (len %u)", (int)strnlen(name, l), name, (unsigned)l);
}

static void set_cc(int fd, const char *name)
{
    char label[64];
    snprintf(label, sizeof label, "setsockopt TCP_CONGESTION \"%s\"", name);
    res(label, setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, (socklen_t)strlen(name)));
}

void case_opt_tcp_congestion(void)
{
    int c = tcp_connect(P_ECHO);
    /* The default is the namespace's sysctl (the host's choice, bbr or cubic): compare. */
    char want[32] = "", got[32] = "";
    FILE *f = fopen("/proc/sys/net/ipv4/tcp_congestion_control", "r");
    if (f) {
        if (!fgets(want, sizeof want, f))
            want[0] = 0;
        want[strcspn(want, "\n")] = 0;
        fclose(f);
    }
    socklen_t l = sizeof got;
    int rc = getsockopt(c, IPPROTO_TCP, TCP_CONGESTION, got, &l);
    out("default TCP_CONGESTION = net.ipv4.tcp_congestion_control: %s", rc == 0 && strcmp(got, want) == 0 ? "yes" : "no");
    set_cc(c, "reno");
    show_cc(c);
    set_cc(c, "cubic");
    show_cc(c);
    set_cc(c, "no-such-cc");
    show_cc(c);
    close(c);
    int s = tcp_socket();
    set_cc(s, "reno");
    do_connect(s, PEER_IP, P_ECHO);
    show_cc(s);
    close(s);
}

void case_opt_tcp_keepalive_params(void)
{
    int idle[] = { 10, 0, 32768, 32767 };
    int_option(IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE", idle, 4, 60);
    int intvl[] = { 5, 0, 32768 };
    int_option(IPPROTO_TCP, TCP_KEEPINTVL, "TCP_KEEPINTVL", intvl, 3, 20);
    int cnt[] = { 3, 0, 128, 127 };
    int_option(IPPROTO_TCP, TCP_KEEPCNT, "TCP_KEEPCNT", cnt, 4, 4);
}

static const char *tcp_state_name(int s)
{
    static const char *const names[] = { "?", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1",
                                          "FIN_WAIT2", "TIME_WAIT", "CLOSE", "CLOSE_WAIT",
                                          "LAST_ACK", "LISTEN", "CLOSING" };
    return s >= 0 && s < 12 ? names[s] : "?";
}

static void show_tcp_info(int fd, const char *what)
{
    unsigned char buf[1024];
    memset(buf, 0, sizeof buf);
    socklen_t l = sizeof buf;
    int rc = getsockopt(fd, IPPROTO_TCP, TCP_INFO, buf, &l);
    if (rc < 0) {
        out("%s: getsockopt TCP_INFO = -1 %s", what, errname(errno));
        return;
    }
    struct tcp_info *ti = (struct tcp_info *)buf;
    char opts[100] = "";
    if (ti->tcpi_options & TCPI_OPT_TIMESTAMPS)
        strcat(opts, "TIMESTAMPS ");
    if (ti->tcpi_options & TCPI_OPT_SACK)
        strcat(opts, "SACK ");
    if (ti->tcpi_options & TCPI_OPT_WSCALE)
        strcat(opts, "WSCALE ");
    if (ti->tcpi_options & TCPI_OPT_ECN)
        strcat(opts, "ECN ");
    out("%s: TCP_INFO len %u state %s options %s snd_wscale %d rcv_wscale %d snd_mss %u", what,
        (unsigned)l, tcp_state_name(ti->tcpi_state), opts, ti->tcpi_snd_wscale,
        ti->tcpi_rcv_wscale, ti->tcpi_snd_mss);
}

void case_opt_tcp_info(void)
{
    int s = tcp_socket();
    show_tcp_info(s, "fresh");
    int c = tcp_connect(P_ECHO);
    show_tcp_info(c, "connected");
    socklen_t l = 8;
    unsigned char b[8];
    int rc = getsockopt(c, IPPROTO_TCP, TCP_INFO, b, &l);
    out("TCP_INFO len 8 = %d (len %u) state %s", rc, (unsigned)l, tcp_state_name(b[0]));
    int l2 = tcp_listen_self(8132, 5);
    show_tcp_info(l2, "listener");
    res("shutdown(SHUT_WR)", shutdown(c, SHUT_WR));
    wait_ev(c, POLLRDHUP, 2000);
    show_tcp_info(c, "after our FIN and the peer's");
    int u = udp_socket();
    show_tcp_info(u, "UDP");
    close(s);
    close(c);
    close(l2);
    close(u);
}

static void unknown_at(int fd, const char *what)
{
    int v = 0;
    socklen_t l = sizeof v;
    out("-- %s", what);
    res("getsockopt SOL_SOCKET 9999", getsockopt(fd, SOL_SOCKET, 9999, &v, &l));
    res("setsockopt SOL_SOCKET 9999", setsockopt(fd, SOL_SOCKET, 9999, &v, sizeof v));
    l = sizeof v;
    res("getsockopt IPPROTO_IP 9999", getsockopt(fd, IPPROTO_IP, 9999, &v, &l));
    res("setsockopt IPPROTO_IP 9999", setsockopt(fd, IPPROTO_IP, 9999, &v, sizeof v));
    l = sizeof v;
    res("getsockopt IPPROTO_TCP 9999", getsockopt(fd, IPPROTO_TCP, 9999, &v, &l));
    res("setsockopt IPPROTO_TCP 9999", setsockopt(fd, IPPROTO_TCP, 9999, &v, sizeof v));
    l = sizeof v;
    res("getsockopt IPPROTO_UDP 9999", getsockopt(fd, IPPROTO_UDP, 9999, &v, &l));
    l = sizeof v;
    res("getsockopt level 9999", getsockopt(fd, 9999, 1, &v, &l));
    res("setsockopt level 9999", setsockopt(fd, 9999, 1, &v, sizeof v));
    l = sizeof v;
    res("getsockopt IPPROTO_IPV6 IPV6_V6ONLY", getsockopt(fd, IPPROTO_IPV6, 26, &v, &l));
}

void case_opt_unknown(void)
{
    int c = tcp_connect(P_ECHO);
    unknown_at(c, "connected TCP");
    int u = udp_socket();
    do_connect(u, PEER_IP, U_ECHO);
    unknown_at(u, "connected UDP");
    close(c);
    close(u);
}

void case_opt_so_rcvlowat(void)
{
    int c = tcp_connect(P_ECHO);
    OPT(c, SOL_SOCKET, SO_RCVLOWAT);
    SET(c, SOL_SOCKET, SO_RCVLOWAT, 5);
    OPT(c, SOL_SOCKET, SO_RCVLOWAT);
    do_send(c, "ab", MSG_NOSIGNAL);
    wait_inq(c, 2, 2000);
    show_poll("2 bytes in, SO_RCVLOWAT 5: ", c);
    do_send(c, "cde", MSG_NOSIGNAL);
    wait_ev(c, POLLIN, 2000);
    do_recv(c, 100, 0);
    close(c);
}

void case_opt_so_timeouts(void)
{
    int c = tcp_connect(P_ECHO);
    struct timeval tv = { 7, 7 };
    socklen_t l = sizeof tv;
    getsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, &l);
    out("getsockopt SO_RCVTIMEO = {%ld, %ld}", (long)tv.tv_sec, (long)tv.tv_usec);
    tv.tv_sec = 0;
    tv.tv_usec = 200000;
    res("setsockopt SO_RCVTIMEO 200ms", setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    l = sizeof tv;
    getsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, &l);
    out("getsockopt SO_RCVTIMEO = {%ld, %ld}", (long)tv.tv_sec, (long)tv.tv_usec);
    do_recv(c, 10, 0);
    tv.tv_usec = -1;
    res("setsockopt SO_RCVTIMEO usec -1", setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    res("setsockopt SO_SNDTIMEO len 4", setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, 4));
    close(c);
}

void case_opt_so_broadcast(void)
{
    int u = udp_socket();
    OPT(u, SOL_SOCKET, SO_BROADCAST);
    struct sockaddr_in b = sin_of(BCAST_IP, 7099);
    res("sendto BCAST:7099 without SO_BROADCAST", sendto(u, "b", 1, 0, (struct sockaddr *)&b, sizeof b));
    SET(u, SOL_SOCKET, SO_BROADCAST, 1);
    OPT(u, SOL_SOCKET, SO_BROADCAST);
    res("sendto BCAST:7099 with SO_BROADCAST", sendto(u, "b", 1, 0, (struct sockaddr *)&b, sizeof b));
    close(u);
    out("-- on a UDP socket already talking to the network");
    u = udp_socket();
    do_connect(u, PEER_IP, U_ECHO);
    OPT(u, SOL_SOCKET, SO_BROADCAST);
    SET(u, SOL_SOCKET, SO_BROADCAST, 1);
    OPT(u, SOL_SOCKET, SO_BROADCAST);
    close(u);
    out("-- TCP");
    int c = tcp_connect(P_ECHO);
    OPT(c, SOL_SOCKET, SO_BROADCAST);
    SET(c, SOL_SOCKET, SO_BROADCAST, 1);
    OPT(c, SOL_SOCKET, SO_BROADCAST);
    close(c);
}
