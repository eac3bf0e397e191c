/* SPDX-License-Identifier: MIT */
/*
 * probe_proc.c - sockets that change hands: fork (the child uses or closes the socket), exec
 * (the probe re-execs itself with --exec-child and the socket number), dup/dup2/dup3/F_DUPFD/
 * F_DUPFD_CLOEXEC, and SCM_RIGHTS to another process which then uses the socket.
 *
 * Ordering: a parent prints nothing between handing a socket over and waiting for the
 * receiving process, so the transcript's order does not depend on scheduling.
 */
#include "probe.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void echo_via(int fd, const char *msg)
{
    do_send(fd, msg, MSG_NOSIGNAL);
    read_upto(fd, (long)strlen(msg), 2000);
}

static void wait_child(pid_t pid)
{
    int st = 0;
    waitpid(pid, &st, 0);
    if (WIFEXITED(st))
        out("child exited %d", WEXITSTATUS(st));
    else
        out("child killed by %s", WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "?");
}

void case_fork_child_uses(void)
{
    int c = tcp_connect(P_ECHO);
    pid_t pid = fork();
    if (pid == 0) {
        out("child:");
        show_names(c);
        echo_via(c, "from child");
        _exit(0);
    }
    wait_child(pid);
    out("parent:");
    echo_via(c, "from parent");
    show_names(c);
    close(c);
}

void case_fork_child_closes(void)
{
    int c = tcp_connect(P_ECHO);
    pid_t pid = fork();
    if (pid == 0) {
        res("child: close", close(c));
        _exit(0);
    }
    wait_child(pid);
    out("parent still has it:");
    echo_via(c, "still");
    pid = fork();
    if (pid == 0) {
        res("child: shutdown(SHUT_WR)", shutdown(c, SHUT_WR));
        _exit(0);
    }
    wait_child(pid);
    out("the child's shutdown acts on the parent's socket too:");
    wait_ev(c, POLLRDHUP, 2000);
    do_recv(c, 10, 0);
    close(c);
}

void case_fork_listener(void)
{
    int l = tcp_listen_self(8160, 5);
    out("peer: %s", ctl("connect 8160 2 data 2000"));
    pid_t pid = fork();
    if (pid == 0) {
        out("child:");
        wait_ev(l, POLLIN, 2000);
        int c = fdres("accept", accept(l, NULL, NULL));
        show_names(c);
        read_upto(c, 2, 2000);
        _exit(0);
    }
    wait_child(pid);
    out("parent:");
    wait_ev(l, POLLIN, 2000);
    int c = fdres("accept", accept(l, NULL, NULL));
    read_upto(c, 2, 2000);
    close(c);
    close(l);
}

static void exec_self(const char *sub, int fd)
{
    char num[16];
    snprintf(num, sizeof num, "%d", fd);
    char *argv[] = { "probe", "--exec-child", (char *)sub, num, NULL };
    execv(g_self_exe, argv);
    out("execv = -1 %s", errname(errno));
    _exit(1);
}

void case_exec_tcp(void)
{
    int c = tcp_connect(P_ECHO);
    echo_via(c, "before exec");
    exec_self("tcp", c);
}

void case_exec_udp(void)
{
    int u = udp_socket();
    do_connect(u, PEER_IP, U_ECHO);
    do_send(u, "before", 0);
    wait_ev(u, POLLIN, 2000);
    do_recv(u, 100, 0);
    exec_self("udp", u);
}

void case_exec_listener(void)
{
    int l = tcp_listen_self(8161, 5);
    exec_self("listener", l);
}

void case_exec_cloexec(void)
{
    int c = fdres("socket(SOCK_STREAM|SOCK_CLOEXEC)", socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    do_connect(c, PEER_IP, P_ECHO);
    show_flags(c);
    exec_self("cloexec", c);
}

/* The far side of the exec cases: argv = SUB FD. */
int exec_child(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    const char *sub = argv[0];
    int fd = atoi(argv[1]);
    out("after exec:");
    if (strcmp(sub, "tcp") == 0) {
        show_names(fd);
        opt_get_int(fd, SOL_SOCKET, SO_TYPE, "SO_TYPE");
        show_so_error(fd);
        show_poll("", fd);
        echo_via(fd, "after exec");
        res("shutdown(SHUT_WR)", shutdown(fd, SHUT_WR));
        wait_ev(fd, POLLRDHUP, 2000);
        do_recv(fd, 10, 0);
    } else if (strcmp(sub, "udp") == 0) {
        show_names(fd);
        opt_get_int(fd, SOL_SOCKET, SO_TYPE, "SO_TYPE");
        do_send(fd, "after", 0);
        wait_ev(fd, POLLIN, 2000);
        do_recv(fd, 100, 0);
        struct sockaddr_in a = sin_of(PEER_IP, U_ECHO);
        res("sendto", sendto(fd, "to", 2, 0, (struct sockaddr *)&a, sizeof a));
        wait_ev(fd, POLLIN, 2000);
        do_recv(fd, 100, 0);
    } else if (strcmp(sub, "listener") == 0) {
        show_name("", fd, 0);
        opt_get_int(fd, SOL_SOCKET, SO_ACCEPTCONN, "SO_ACCEPTCONN");
        out("peer: %s", ctl("connect 8161 1 data 2000"));
        wait_ev(fd, POLLIN, 2000);
        struct sockaddr_in a;
        socklen_t l = sizeof a;
        int c = fdres("accept", accept(fd, (struct sockaddr *)&a, &l));
        out("from %s", astr(&a, l));
        show_names(c);
        read_upto(c, 2, 2000);
    } else if (strcmp(sub, "cloexec") == 0) {
        res("fcntl F_GETFD on the FD_CLOEXEC socket", fcntl(fd, F_GETFD));
    } else {
        out("unknown exec sub-case %s", sub);
        return 2;
    }
    return 0;
}

void case_dup_family(void)
{
    int c = tcp_connect(P_ECHO);
    int d = fdres("dup", dup(c));
    show_names(d);
    echo_via(d, "via dup");
    res("dup2 onto 50", dup2(c, 50));
    int f = fcntl(c, F_DUPFD, 60);
    out("F_DUPFD 60 = %s", f >= 60 ? ">=60" : errname(errno));
    show_flags(f);
    int g = fcntl(c, F_DUPFD_CLOEXEC, 70);
    out("F_DUPFD_CLOEXEC 70 = %s", g >= 70 ? ">=70" : errname(errno));
    show_flags(g);
    res("dup3 onto 80 O_CLOEXEC", dup3(c, 80, O_CLOEXEC));
    show_flags(80);
    res("dup3 onto itself", dup3(c, c, 0));
    out("dup2 onto itself = %s", dup2(c, c) == c ? "the same fd" : errname(errno));
    res("close original", close(c));
    echo_via(50, "via dup2");
    echo_via(f, "via F_DUPFD");
    echo_via(g, "via F_DUPFD_CLOEXEC");
    show_names(80);
    opt_get_int(80, SOL_SOCKET, SO_TYPE, "SO_TYPE");
    res("shutdown(SHUT_WR) on one copy", shutdown(g, SHUT_WR));
    wait_ev(80, POLLRDHUP, 2000);
    do_recv(80, 10, 0);
    close(d);
    close(50);
    close(f);
    close(g);
    close(80);
}

static int send_fd(int sock, int fd)
{
    char data = 'F';
    struct iovec iov = { &data, 1 };
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof u);
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof fd);
    return (int)sendmsg(sock, &mh, 0);
}

static int recv_fd(int sock)
{
    char data;
    struct iovec iov = { &data, 1 };
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
    if (recvmsg(sock, &mh, 0) <= 0)
        return -1;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    if (!cm || cm->cmsg_type != SCM_RIGHTS)
        return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(cm), sizeof fd);
    return fd;
}

/* Forks a receiver that gets one socket over SCM_RIGHTS and runs `use` on it. */
static void pass_to_child(int fd, void (*use)(int))
{
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0) {
        out("socketpair = -1 %s", errname(errno));
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(sp[0]);
        int got = recv_fd(sp[1]);
        out("receiver got %s", got >= 0 ? "a socket" : "nothing");
        if (got >= 0)
            use(got);
        _exit(0);
    }
    close(sp[1]);
    int rc = send_fd(sp[0], fd);
    int e = errno;
    int cl = close(fd); /* the receiver's copy must be enough */
    wait_child(pid);
    out("sendmsg SCM_RIGHTS = %s, sender's close = %d", rc > 0 ? "ok" : errname(e), cl);
    close(sp[0]);
}

static void use_tcp(int fd)
{
    show_names(fd);
    opt_get_int(fd, SOL_SOCKET, SO_TYPE, "SO_TYPE");
    echo_via(fd, "passed");
    res("shutdown(SHUT_WR)", shutdown(fd, SHUT_WR));
    wait_ev(fd, POLLRDHUP, 2000);
    do_recv(fd, 10, 0);
}

static void use_udp(int fd)
{
    show_names(fd);
    do_send(fd, "passed", 0);
    wait_ev(fd, POLLIN, 2000);
    do_recv(fd, 100, 0);
}

static void use_listener(int fd)
{
    show_name("", fd, 0);
    out("peer: %s", ctl("connect 8162 1 data 2000"));
    wait_ev(fd, POLLIN, 2000);
    int c = fdres("accept", accept(fd, NULL, NULL));
    show_names(c);
    read_upto(c, 2, 2000);
}

void case_scm_rights_tcp(void)
{
    int c = tcp_connect(P_ECHO);
    pass_to_child(c, use_tcp);
}

void case_scm_rights_udp(void)
{
    int u = udp_socket();
    do_connect(u, PEER_IP, U_ECHO);
    pass_to_child(u, use_udp);
}

void case_scm_rights_listener(void)
{
    int l = tcp_listen_self(8162, 5);
    pass_to_child(l, use_listener);
}
