/* SPDX-License-Identifier: MIT */
/*
 * probe_proc.c - ztap sockets across process events: fork (also racing a dup2 in another thread),
 * dup/dup2, exec and inherited fds, threads.
 */
#include "probe.h"

int case_fork(void)
{
    int fd = tcp_connect("10.200.0.1", 7);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        peer_is(fd, "10.200.0.1", 7);
        echo_roundtrip(fd, "from the child");
        _exit(0);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    echo_roundtrip(fd, "from the parent");
    close(fd);
    return 0;
}

int case_dup(void)
{
    int fd = tcp_connect("10.200.0.1", 7);
    CHECK(dup2(fd, 50) == 50);
    CHECK(close(fd) == 0);
    peer_is(50, "10.200.0.1", 7);
    echo_roundtrip(50, "dup2");
    int d = dup(50);
    CHECK(d >= 0);
    CHECK(opt_int(d, SOL_SOCKET, SO_TYPE) == SOCK_STREAM);
    /* A copy made by fcntl is not seen by the library: found by asking ztapd. */
    int f = fcntl(50, F_DUPFD_CLOEXEC, 60);
    CHECK(f >= 60);
    peer_is(f, "10.200.0.1", 7);
    close(f);
    close(d);
    close(50);

    /* UDP through dup3: read/write framing follows the copy. */
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in peer = sin_of("10.200.0.1", 53);
    CHECK(connect(u, (struct sockaddr *)&peer, sizeof peer) == 0);
    CHECK(dup3(u, 70, O_CLOEXEC) == 70);
    CHECK(write(70, "dg", 2) == 2);
    char buf[8];
    CHECK(read(u, buf, sizeof buf) == 2 && memcmp(buf, "dg", 2) == 0);
    close(u);
    close(70);
    return 0;
}

/* fork() while another thread is updating a table slot: the child must not find the slot stuck. */
static volatile int g_spin_stop;
static int g_spin_fd;
static void *spin_dup2(void *arg)
{
    (void)arg;
    while (!g_spin_stop)
        dup2(g_spin_fd, 500);
    return NULL;
}

int case_fork_race(void)
{
    g_spin_fd = tcp_connect("10.200.0.1", 7);
    CHECK(dup2(g_spin_fd, 500) == 500);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, spin_dup2, NULL) == 0);
    for (int i = 0; i < 1000; i++) {
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            struct sockaddr_in a;
            socklen_t l = sizeof a;
            /* At once (a stuck slot makes its waiter spin for about a second of CPU: measured
             * as the child's own CPU time, which a loaded machine does not inflate), and still
             * the ztap socket (AF_INET, the network address). */
            if (getsockname(500, (struct sockaddr *)&a, &l) != 0 || a.sin_family != AF_INET)
                _exit(1);
            struct rusage ru;
            getrusage(RUSAGE_SELF, &ru);
            long cpu_ms = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
                          (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
            _exit(cpu_ms > 200 ? 2 : 0);
        }
        int st;
        CHECK(waitpid(pid, &st, 0) == pid);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    g_spin_stop = 1;
    pthread_join(t, NULL);
    close(500);
    close(g_spin_fd);
    return 0;
}

int case_exec(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[2], "child") == 0) {
        int fd = atoi(argv[3]);
        int ufd = atoi(argv[4]);
        peer_is(fd, "10.200.0.1", 7);
        CHECK(opt_int(fd, SOL_SOCKET, SO_TYPE) == SOCK_STREAM);
        CHECK(local_port(fd, "10.200.0.2") > 0);
        echo_roundtrip(fd, "after exec");
        /* UDP inherited across exec: framing still applies (table rebuilt from ztapd). */
        CHECK(write(ufd, "ue", 2) == 2);
        char buf[8];
        CHECK(read(ufd, buf, sizeof buf) == 2 && memcmp(buf, "ue", 2) == 0);
        return 0;
    }
    int fd = tcp_connect("10.200.0.1", 7);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in peer = sin_of("10.200.0.1", 53);
    CHECK(connect(u, (struct sockaddr *)&peer, sizeof peer) == 0);
    char a[16], b[16];
    snprintf(a, sizeof a, "%d", fd);
    snprintf(b, sizeof b, "%d", u);
    execl(g_self, g_self, "exec", "child", a, b, (char *)NULL);
    CHECK(!"exec failed");
    return 1;
}

int case_inherited(int argc, char **argv)
{
    /* An app's own socketpair inherited across exec looks like a ztap socket to the new image:
     * the library asks ztapd once, then remembers the answer (reads stay native and cheap). */
    if (argc >= 4 && strcmp(argv[2], "child") == 0) {
        int fd = atoi(argv[3]);
        char ch;
        for (int i = 0; i < 150; i++)
            CHECK(read(fd, &ch, 1) == 1 && ch == "abc"[i % 3]);
        CHECK(opt_int(fd, SOL_SOCKET, SO_DOMAIN) == AF_UNIX);
        return 0;
    }
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    for (int i = 0; i < 50; i++)
        CHECK(write(sv[1], "abc", 3) == 3);
    char a[16];
    snprintf(a, sizeof a, "%d", sv[0]);
    execl(g_self, g_self, "inherited", "child", a, (char *)NULL);
    CHECK(!"exec failed");
    return 1;
}

static void *thread_main(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10; i++) {
        int fd = tcp_connect("10.200.0.1", 7);
        echo_roundtrip(fd, "threaded");
        close(fd);
    }
    return NULL;
}

int case_threads(void)
{
    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        CHECK(pthread_create(&t[i], NULL, thread_main, NULL) == 0);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    return 0;
}
