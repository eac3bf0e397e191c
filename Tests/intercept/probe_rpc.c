/* SPDX-License-Identifier: MIT */
/*
 * probe_rpc.c - how the library talks to ztapd: RPC sessions per thread, the one-way channel and
 * its refusal, a daemon that is absent, dies or belongs to another namespace, errno kept intact,
 * sockets outside the network left untouched.
 */
#include "probe.h"

/* The unix sockets connected to the fake ztapd's RPC path other than @except: the one-way
 * channel (the app may close such numbers behind the library's back, as closefrom does). */
static int rpc_channels(int *out, int max)
{
    const char *path = getenv("ZTAP_RPC");
    int n = 0;
    for (int fd = 3; fd < 1024 && n < max; fd++) {
        struct sockaddr_un u;
        socklen_t l = sizeof u;
        memset(&u, 0, sizeof u);
        if (getpeername(fd, (struct sockaddr *)&u, &l) == 0 && u.sun_family == AF_UNIX && path &&
            !strcmp(u.sun_path, path))
            out[n++] = fd;
    }
    return n;
}

/* The RPC connections in @all that are not in @except. */
static int rpc_except(int *all, int n, const int *except, int ne, int *out)
{
    int k = 0;
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int j = 0; j < ne; j++)
            seen |= all[i] == except[j];
        if (!seen)
            out[k++] = all[i];
    }
    return k;
}

/* Requests that wait for an answer share a session (ztrpc.h ZTRPC_OP_KEEP): one RPC connection
 * however many requests; a child opens its own; a session number the app closed and reused is
 * never written to; concurrent threads use a few sessions at most. */
static int g_sess_fd;
static void *sess_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 200; i++)
        if (opt_int(g_sess_fd, SOL_SOCKET, SO_KEEPALIVE) != 0)
            return (void *)1;
    return NULL;
}

int case_sessions(void)
{
    int fd = tcp_connect("10.200.0.1", 7);
    CHECK(fd >= 0);
    int s0[8];
    CHECK(rpc_channels(s0, 8) == 1);
    for (int i = 0; i < 50; i++)
        CHECK(opt_int(fd, SOL_SOCKET, SO_KEEPALIVE) == 0);
    int s1[8];
    CHECK(rpc_channels(s1, 8) == 1 && s1[0] == s0[0]);
    struct stat parent_st;
    CHECK(fstat(s0[0], &parent_st) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int ok = opt_int(fd, SOL_SOCKET, SO_KEEPALIVE) == 0;
        int mine[8];
        struct stat st;
        ok = ok && rpc_channels(mine, 8) == 1 && fstat(mine[0], &st) == 0 && st.st_ino != parent_st.st_ino;
        _exit(ok ? 0 : 3);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* Threads at once: every request answered, at most 4 sessions kept. */
    g_sess_fd = fd;
    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        CHECK(pthread_create(&t[i], NULL, sess_thread, NULL) == 0);
    for (int i = 0; i < 8; i++) {
        void *r;
        CHECK(pthread_join(t[i], &r) == 0 && r == NULL);
    }
    int s2[8];
    int n2 = rpc_channels(s2, 8);
    CHECK(n2 >= 1 && n2 <= 4);
    /* The app puts a socket of its own on the session's number: never written to. */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
    for (int i = 0; i < n2; i++)
        CHECK(dup2(sv[0], s2[i]) == s2[i]);
    CHECK(opt_int(fd, SOL_SOCKET, SO_KEEPALIVE) == 0);
    char buf[64];
    CHECK(recv(sv[1], buf, sizeof buf, MSG_DONTWAIT) == -1 && errno == EAGAIN);
    int s3[8];
    CHECK(rpc_channels(s3, 8) == 1);
    for (int i = 0; i < n2; i++)
        CHECK(s3[0] != s2[i]);
    for (int i = 0; i < n2; i++)
        close(s2[i]);
    close(sv[0]);
    close(sv[1]);
    close(fd);
    return 0;
}

/* The process's one-way channels: pipe write ends (ztrpc.h ZTRPC_OP_CHANNEL), or with
 * PROBE_SEQPACKET_CHANNEL set (the fake refuses pipes) the RPC connections that are not in @sess. */
static int one_way_channels(const int *sess, int ns, int *out)
{
    if (getenv("PROBE_SEQPACKET_CHANNEL")) {
        int all[8];
        return rpc_except(all, rpc_channels(all, 8), sess, ns, out);
    }
    int n = 0;
    for (int fd = 3; fd < 1024 && n < 8; fd++) {
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode) && (fcntl(fd, F_GETFL) & O_ACCMODE) == O_WRONLY)
            out[n++] = fd;
    }
    return n;
}

/* TCP_NODELAY/TCP_CORK/TCP_QUICKACK go one-way over one channel per process; a child opens its
 * own; a channel number the app closed and reused is never written to. */
int case_oneway(void)
{
    int fd = tcp_connect("10.200.0.1", 7);
    CHECK(fd >= 0);
    /* The connect's session (case_sessions); the channel is not it. */
    int sess[8];
    int ns = rpc_channels(sess, 8);
    CHECK(ns == 1);
    int one = 1, zero = 0;
    CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &zero, sizeof zero) == 0);
    CHECK(setsockopt(fd, IPPROTO_TCP, TCP_CORK, &one, sizeof one) == 0);
    CHECK(setsockopt(fd, IPPROTO_TCP, TCP_CORK, &zero, sizeof zero) == 0);
    CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
    /* A NULL value is EFAULT before anything is sent (a short optlen goes to ztapd and waits
     * for its EINVAL: the diff harness compares that with Linux). */
    CHECK(setsockopt(fd, IPPROTO_TCP, TCP_CORK, NULL, 4) == -1 && errno == EFAULT);
    int ch[8];
    CHECK(one_way_channels(sess, ns, ch) == 1);
    int rpc[8];
    if (!getenv("PROBE_SEQPACKET_CHANNEL"))
        CHECK(rpc_channels(rpc, 8) == 1 && rpc[0] == sess[0]); /* the pipe was given on the session */
    struct stat parent_st;
    CHECK(fstat(ch[0], &parent_st) == 0);
    /* A child has a channel of its own (the inherited copy of the parent's is closed). */
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int ok = setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one) == 0;
        int mine[8], none[1] = { -1 };
        struct stat mine_st;
        int nm = one_way_channels(none, 0, mine);
        ok = ok && nm == 1 && fstat(mine[0], &mine_st) == 0 && mine_st.st_ino != parent_st.st_ino;
        if (!ok)
            fprintf(stderr, "child: %d channels (first %d, ino %lu, parent's %lu)\n", nm, nm ? mine[0] : -1,
                    nm ? (unsigned long)mine_st.st_ino : 0UL, (unsigned long)parent_st.st_ino);
        _exit(ok ? 0 : 3);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* The app closes the channel's number and a socket of its own takes it. */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
    CHECK(dup2(sv[0], ch[0]) == ch[0]);
    CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &zero, sizeof zero) == 0);
    char buf[64];
    CHECK(recv(sv[1], buf, sizeof buf, MSG_DONTWAIT) == -1 && errno == EAGAIN);
    int now[8];
    CHECK(one_way_channels(sess, ns, now) == 1 && now[0] != ch[0]);
    CHECK(opt_int(fd, IPPROTO_TCP, TCP_NODELAY) == 0);
    close(sv[0]);
    close(sv[1]);
    close(ch[0]);
    close(fd);
    return 0;
}

/* A daemon that refuses the process a channel: every option still applies (as a request of its
 * own), and the library stops asking for a channel after a few refusals. */
int case_oneway_refused(void)
{
    int fd = tcp_connect("10.200.0.1", 7);
    CHECK(fd >= 0);
    for (int i = 0; i < 20; i++) {
        int v = i % 2;
        CHECK(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) == 0);
    }
    CHECK(opt_int(fd, IPPROTO_TCP, TCP_NODELAY) == 1);
    close(fd);
    return 0;
}

int case_isolated(void)
{
    /* Run by the tests to prove the sandbox: an address outside the network stays on the
     * kernel, and in the private namespace the kernel has no route for it. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = sin_of("192.0.2.1", 80);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == ENETUNREACH);
    close(fd);
    return 0;
}

int case_die(void)
{
    /* Process death without close(): the kernel drops the fd, ztapd sees the hangup. */
    int fd = tcp_connect("10.200.0.1", 7);
    echo_roundtrip(fd, "last words");
    printf("OK die\n");
    fflush(stdout);
    signal(SIGABRT, SIG_DFL);
    abort();
}

int case_untouched(void)
{
    /* Loopback TCP stays on the kernel: the peer sees the real kernel addresses. */
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in la = sin_of("127.0.0.1", 0);
    CHECK(bind(l, (struct sockaddr *)&la, sizeof la) == 0);
    CHECK(listen(l, 4) == 0);
    socklen_t len = sizeof la;
    CHECK(getsockname(l, (struct sockaddr *)&la, &len) == 0);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(connect(c, (struct sockaddr *)&la, sizeof la) == 0);
    int s = accept(l, NULL, NULL);
    CHECK(s >= 0);
    CHECK(opt_int(c, SOL_SOCKET, SO_DOMAIN) == AF_INET);
    int one = 1;
    CHECK(setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
    CHECK(opt_int(c, IPPROTO_TCP, TCP_NODELAY) == 1);
    peer_is(c, "127.0.0.1", ntohs(la.sin_port));
    CHECK(write(c, "k", 1) == 1);
    char ch;
    CHECK(read(s, &ch, 1) == 1 && ch == 'k');
    close(s);
    close(c);
    close(l);

    /* Loopback UDP. */
    int u1 = socket(AF_INET, SOCK_DGRAM, 0), u2 = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in ua = sin_of("127.0.0.1", 0);
    CHECK(bind(u1, (struct sockaddr *)&ua, sizeof ua) == 0);
    len = sizeof ua;
    CHECK(getsockname(u1, (struct sockaddr *)&ua, &len) == 0);
    CHECK(sendto(u2, "u", 1, 0, (struct sockaddr *)&ua, sizeof ua) == 1);
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    CHECK(recvfrom(u1, &ch, 1, 0, (struct sockaddr *)&from, &fl) == 1 && ch == 'u');
    CHECK(is_addr(&from, "127.0.0.1", -1));
    close(u1);
    close(u2);

    /* AF_UNIX socketpair (the same kind of socket the library uses) is not mistaken for ours. */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(opt_int(sv[0], SOL_SOCKET, SO_DOMAIN) == AF_UNIX);
    struct sockaddr_un un;
    len = sizeof un;
    CHECK(getsockname(sv[0], (struct sockaddr *)&un, &len) == 0 && un.sun_family == AF_UNIX);
    CHECK(send(sv[0], "x", 1, 0) == 1 && recv(sv[1], &ch, 1, 0) == 1 && ch == 'x');
    int dg[2];
    CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, dg) == 0);
    CHECK(write(dg[0], "abc", 3) == 3 && read(dg[1], &ch, 1) == 1 && ch == 'a');
    return 0;
}

int case_absent(void)
{
    /* ZTAP_RPC points nowhere: clear errnos, quickly, one line on stderr. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = sin_of("10.200.0.1", 7);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == ECONNREFUSED);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == -1 && errno == ECONNREFUSED);
    close(fd);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(sendto(u, "x", 1, 0, (struct sockaddr *)&a, sizeof a) == -1 && errno == ENETUNREACH);
    struct sockaddr_in b = sin_of("10.200.0.2", 9000);
    CHECK(bind(u, (struct sockaddr *)&b, sizeof b) == -1 && errno == EADDRNOTAVAIL);
    close(u);
    return 0;
}

int case_errno(void)
{
    int fd = tcp_connect("10.200.0.1", 7);
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    errno = 4242;
    CHECK(getsockname(fd, (struct sockaddr *)&a, &l) == 0);
    CHECK(errno == 4242);
    CHECK(getpeername(fd, (struct sockaddr *)&a, &l) == 0);
    int v;
    l = sizeof v;
    CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &v, &l) == 0);
    CHECK(write(fd, "e", 1) == 1);
    CHECK(errno == 4242);
    int fd2 = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in d = sin_of("10.200.0.1", 7);
    errno = 4243;
    CHECK(connect(fd2, (struct sockaddr *)&d, sizeof d) == 0);
    CHECK(errno == 4243);
    /* Bad fd: EBADF like libc. */
    CHECK(getsockname(9999, (struct sockaddr *)&a, &l) == -1 && errno == EBADF);
    CHECK(connect(9999, (struct sockaddr *)&d, sizeof d) == -1 && errno == EBADF);
    close(fd);
    close(fd2);
    return 0;
}
