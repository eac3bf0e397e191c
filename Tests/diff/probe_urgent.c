/* SPDX-License-Identifier: MIT */
/*
 * probe_urgent.c - TCP urgent data ("out of band", MSG_OOB) both ways.
 *
 * Linux keeps one urgent byte per connection: the peer's shows as POLLPRI (select's except set),
 * reads stop before it (SIOCATMARK says when the next byte is it), recv(MSG_OOB) takes it out of
 * the stream and the socket's owner gets SIGURG. A byte the app sends with MSG_OOB leaves with
 * URG and a pointer to it. Under ztap the peer's urgent byte reaches the app as the unix
 * socket's own out-of-band byte, and ztapd finds the app's by the same mark on its end.
 */
#include "probe.h"

#include <poll.h>
#include <signal.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static int at_mark(int s)
{
    int mark = -1;
    if (ioctl(s, SIOCATMARK, &mark) < 0)
        return -1;
    return mark;
}

void case_tcp_urgent_data(void)
{
    int s = tcp_connect(P_OOB);
    wait_ev(s, POLLPRI, 2000);
    do_recv(s, 10, 0);
    int mark = -1;
    res("ioctl SIOCATMARK", ioctl(s, SIOCATMARK, &mark));
    out("at mark: %d", mark);
    do_recv(s, 10, MSG_OOB);
    show_poll("", s);
    do_recv(s, 10, MSG_DONTWAIT);
    do_recv(s, 10, MSG_OOB | MSG_DONTWAIT);
    close(s);
}

/* Reads the bytes before the peer's urgent byte (sent behind 200000 others), then takes it and
 * what follows. `mark_after_wake`: wait, then look at the mark, then read; else look at the
 * mark, then wait, then read, so a read may start at the urgent byte if it comes alone to an
 * empty socket (on Linux too; ztapd sees that it never comes so). */
static void urgent_after_bulk(int mark_after_wake)
{
    int s = tcp_connect(P_OOB_BULK);
    msleep(300); /* the bytes before the urgent one pile up on the way (receive buffers) */
    static char buf[65536];
    long total = 0;
    for (;;) {
        if (!mark_after_wake && at_mark(s) == 1)
            break;
        struct pollfd p = { .fd = s, .events = POLLIN | POLLPRI };
        if (poll(&p, 1, 2000) <= 0) {
            out("no mark and nothing to read after %ld bytes", total);
            break;
        }
        if (mark_after_wake && at_mark(s) == 1)
            break;
        ssize_t n = recv(s, buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0 && !(n < 0 && errno == EAGAIN)) {
            res("recv", n);
            break;
        }
        if (n > 0)
            total += n;
    }
    /* The pointer may come before the byte (Linux: at the mark, not yet readable). */
    wait_ev(s, POLLPRI, 2000);
    out("read before the mark: %ld bytes", total);
    do_recv(s, 10, MSG_OOB);
    read_upto(s, 2, 2000);
    close(s);
}

void case_tcp_urgent_after_bulk(void)
{
    urgent_after_bulk(1);
}

void case_tcp_urgent_mark_first(void)
{
    urgent_after_bulk(0);
}

static volatile sig_atomic_t g_sigurg;

static void on_sigurg(int sig)
{
    (void)sig;
    g_sigurg++;
}

void case_tcp_urgent_sigurg(void)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigurg;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGURG, &sa, &old);
    g_sigurg = 0;
    int s = tcp_connect(P_OOB);
    res("fcntl F_SETOWN", fcntl(s, F_SETOWN, getpid()));
    wait_ev(s, POLLPRI, 2000);
    out("SIGURG received: %s", g_sigurg > 0 ? "yes" : "no");
    do_recv(s, 10, MSG_OOB);
    close(s);
    sigaction(SIGURG, &old, NULL);
}

/* Sends `before`, then `urgent` with MSG_OOB (its last byte is the urgent one), then `after`
 * (pausing between them when `pause`), shuts down writing and prints the peer's account. */
static void urgent_to_peer(const char *before, const char *urgent, const char *after, int pause)
{
    int s = tcp_connect(P_OOB_READ);
    do_send(s, before, 0);
    if (pause)
        msleep(20);
    do_send(s, urgent, MSG_OOB);
    if (pause)
        msleep(20);
    do_send(s, after, 0);
    res("shutdown(SHUT_WR)", shutdown(s, SHUT_WR));
    static char buf[256];
    long got = 0;
    struct pollfd p = { .fd = s, .events = POLLIN };
    while (got < (long)sizeof buf - 1 && poll(&p, 1, 5000) > 0) {
        ssize_t n = recv(s, buf + got, sizeof buf - 1 - got, 0);
        if (n <= 0)
            break;
        got += n;
    }
    buf[got] = 0;
    if (got > 0 && buf[got - 1] == '\n')
        buf[got - 1] = 0;
    out("peer: %s", got > 0 ? buf : "(nothing)");
    close(s);
}

void case_tcp_urgent_send(void)
{
    urgent_to_peer("ab", "c", "de", 1);
    out("-- no pauses, two bytes with MSG_OOB");
    urgent_to_peer("ab", "cd", "e", 0);
}
