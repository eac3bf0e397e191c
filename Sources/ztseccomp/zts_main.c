/* SPDX-License-Identifier: MIT */
/*
 * zts_main.c - ztap-seccomp: runs a program with its IPv4 sockets on a ztap network through
 * seccomp user notification. Started by `ztctl run` (mode seccomp, or both with the library);
 * not meant to be run by hand, though it can be:
 *
 *   ZTAP_RPC=/run/ztapd/lab.sock ZTAP_NETWORK=lab ZTAP_ROUTES=10.200.0.0/24 \
 *       ztap-seccomp [--preload LIB] [--debug] -- PROGRAM [ARGS...]
 *
 * DOC: Theory of Operation
 *
 * Process model. The supervisor forks the program: the child sets no_new_privs (so an
 * unprivileged user may install a filter, and nothing in the tree can gain privileges past it),
 * installs the filter (zts_filter.c) with SECCOMP_FILTER_FLAG_NEW_LISTENER, passes the listener fd
 * to the parent over a socketpair and execs the program; every descendant inherits the filter.
 * The supervisor stays the tree's ancestor (PR_SET_CHILD_SUBREAPER: daemonizing children are
 * re-parented to it), which is what YAMA ptrace_scope=1 requires for pidfd_getfd and
 * process_vm_readv. It forwards SIGTERM, SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH (and SIGINT/SIGQUIT
 * sent by a process, not by the terminal, which signals the whole foreground group itself) to
 * the program, and exits like it (same status, or the same signal) once the listener reports
 * that no process uses the filter any more. If the supervisor dies, the program is killed
 * (PR_SET_PDEATHSIG): without it, its trapped calls would fail with ENOSYS.
 *
 * The loop. One thread, one epoll set: the listener, a signalfd, and the calls that wait (a
 * blocking connect, accept or datagram receive). Each notification is handled at once: most
 * complete within one RPC to ztapd; a call that must wait registers its fd and runs again when it
 * is ready. With SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 6.0) a notification the supervisor
 * has received can only be interrupted by a fatal signal, so a handler's side effects (an RPC, an
 * installed fd) are never duplicated by a restarted syscall; the price is that a handled signal
 * arriving while a *blocking* call waits here is delivered when that call completes. Calls that
 * wait are checked regularly with SECCOMP_IOCTL_NOTIF_ID_VALID (and their thread's pidfd), so a
 * call whose thread died releases its fds at once.
 */
#include "zts.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/filter.h>
#include <time.h>

struct zts_opts zts_opt;

static const char *zts_net(void)
{
    return zti_cfg.network[0] ? zti_cfg.network : NULL;
}

void zts_log(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (zts_net())
        fprintf(stderr, "ztap-seccomp[%s]: %s\n", zts_net(), buf);
    else
        fprintf(stderr, "ztap-seccomp: %s\n", buf);
}

long zts_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------------------------------------
 * Calls
 */

static int zts_ep = -1;
static struct zts_call *zts_waiting;
static unsigned zts_nwaiting;
/* Tags for epoll data of things that are not calls. */
static char zts_tag_listener, zts_tag_signal, zts_tag_ctl;

static struct zts_call *zts_call_new(void)
{
    struct zts_call *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->pidfd = c->fd = c->wait_fd = c->sv0 = c->rpc_fd = -1;
    return c;
}

/* Releases a call's fds at once; the memory goes after the current epoll batch, which may still
 * hold events pointing at it (they are skipped: c->dead). */
static struct zts_call *zts_graveyard;

static void zts_call_free(struct zts_call *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    if (c->wait_fd >= 0) {
        (void)epoll_ctl(zts_ep, EPOLL_CTL_DEL, c->wait_fd, NULL);
        if (c->pidfd >= 0)
            (void)epoll_ctl(zts_ep, EPOLL_CTL_DEL, c->pidfd, NULL);
    }
    if (c->listed) {
        c->listed = 0;
        if (c->prev)
            c->prev->next = c->next;
        else
            zts_waiting = c->next;
        if (c->next)
            c->next->prev = c->prev;
        zts_nwaiting--;
    }
    if (c->fd >= 0)
        close(c->fd);
    if (c->sv0 >= 0)
        close(c->sv0);
    if (c->rpc_fd >= 0)
        close(c->rpc_fd); /* ztapd: the requester stopped waiting; a connect goes on */
    if (c->pidfd >= 0)
        close(c->pidfd);
    c->prev = NULL;
    c->next = zts_graveyard;
    zts_graveyard = c;
}

static void zts_bury(void)
{
    while (zts_graveyard) {
        struct zts_call *c = zts_graveyard;
        zts_graveyard = c->next;
        free(c);
    }
}

typedef int (*zts_handler)(struct zts_call *);

static int zts_h_exec(struct zts_call *c)
{
    zts_exec_seen(c);
    (void)zts_continue(c);
    return ZTS_DONE;
}

static zts_handler zts_handler_for(long nr)
{
    switch (nr) {
    case SYS_connect: return zts_h_connect;
    case SYS_bind: return zts_h_bind;
    case SYS_listen: return zts_h_listen;
#ifdef SYS_accept
    case SYS_accept:
#endif
    case SYS_accept4: return zts_h_accept;
    case SYS_getsockname:
    case SYS_getpeername: return zts_h_name;
    case SYS_getsockopt: return zts_h_getsockopt;
    case SYS_setsockopt: return zts_h_setsockopt;
    case SYS_socket: return zts_h_socket;
    case SYS_sendto:
    case SYS_sendmsg:
    case SYS_sendmmsg:
    case SYS_write:
    case SYS_writev:
    case SYS_pwritev2: return zts_h_send;
    case SYS_recvfrom:
    case SYS_recvmsg:
    case SYS_recvmmsg:
    case SYS_read:
    case SYS_readv:
    case SYS_preadv2: return zts_h_recv;
    case SYS_shutdown: return zts_h_shutdown;
    case SYS_dup:
    case SYS_fcntl: return zts_h_dup;
#ifdef SYS_dup2
    case SYS_dup2:
#endif
    case SYS_dup3: return zts_h_dup2;
    case SYS_ioctl: return zts_h_ioctl;
    case SYS_execve:
    case SYS_execveat: return zts_h_exec;
    default: return NULL;
    }
}

/* Runs (or re-runs) a call's handler; keeps it while it waits. */
static void zts_run(struct zts_call *c)
{
    zts_handler h = zts_handler_for(c->n.data.nr);
    int r = h ? h(c) : (zts_continue(c), ZTS_DONE);
    if (r == ZTS_DONE) {
        zts_call_free(c);
        return;
    }
    c->timed_out = 0;
    c->interrupted = 0;
    if (!c->listed) {
        c->listed = 1;
        c->next = zts_waiting;
        if (zts_waiting)
            zts_waiting->prev = c;
        zts_waiting = c;
        zts_nwaiting++;
        struct epoll_event ev = { .events = c->wait_events, .data.ptr = c };
        if (epoll_ctl(zts_ep, EPOLL_CTL_ADD, c->wait_fd, &ev) < 0) {
            zts_log("cannot wait for fd %d: %s", c->wait_fd, strerror(errno));
            (void)zts_reply(c, -1, EIO);
            zts_call_free(c);
            return;
        }
        if (c->pidfd >= 0) {
            /* The thread's exit makes its pidfd readable: the call is gone, release its fds. */
            struct epoll_event pe = { .events = EPOLLIN, .data.ptr = (char *)c + 1 };
            (void)epoll_ctl(zts_ep, EPOLL_CTL_ADD, c->pidfd, &pe);
        }
    }
}

static void zts_notification(void)
{
    struct zts_call *c = zts_call_new();
    if (!c) {
        zts_log("out of memory");
        return;
    }
    if (ioctl(zts_listener, SECCOMP_IOCTL_NOTIF_RECV, &c->n) < 0) {
        /* ENOENT: the target went away between poll and receive. */
        if (errno != ENOENT && errno != EINTR)
            zts_dbg("NOTIF_RECV: %s", strerror(errno));
        zts_call_free(c);
        return;
    }
    if (zts_opt.both && zts_has_library(c)) {
        /* The library serves this process: every call it did not take over goes to the kernel. */
        if (c->n.data.nr == SYS_execve || c->n.data.nr == SYS_execveat)
            zts_exec_seen(c);
        (void)zts_continue(c);
        zts_call_free(c);
        return;
    }
    zts_run(c);
}

/* Whether thread `tid` has a signal pending that it catches and does not block
 * (/proc/TID/status: SigPnd and ShdPnd, less SigBlk, within SigCgt). */
static int zts_signal_pending(pid_t tid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/status", (int)tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    static const char *const keys[] = { "SigPnd:", "ShdPnd:", "SigBlk:", "SigCgt:" };
    unsigned long long v[4] = { 0, 0, 0, 0 };
    for (int i = 0; i < 4; i++) {
        const char *at = strstr(buf, keys[i]);
        if (!at)
            return 0;
        v[i] = strtoull(at + strlen(keys[i]), NULL, 16);
    }
    return ((v[0] | v[1]) & ~v[2] & v[3]) != 0;
}

/* How often a blocking connect's thread is looked at for a signal (ms). */
#define ZTS_SIGNAL_CHECK_MS 20

/* Calls whose deadline passed, whose thread died, or (without WAIT_KILLABLE_RECV) were
 * interrupted; and, every ZTS_SIGNAL_CHECK_MS, blocking connects whose thread has a signal to
 * take. With WAIT_KILLABLE_RECV the kernel delivers a handled signal only once the call is
 * answered: a connect is answered EINTR then (it goes on, as the library's does), while an
 * accept or a receive stays (with SA_RESTART Linux restarts those, which the supervisor could
 * not tell from /proc). */
static void zts_sweep(int check_ids, int check_signals)
{
    long now = zts_now_ms();
    for (struct zts_call *c = zts_waiting, *next; c; c = next) {
        next = c->next;
        if (check_ids && !zts_id_valid(c)) {
            zts_call_free(c);
            continue;
        }
        if (!c->dead && c->deadline && now >= c->deadline) {
            c->timed_out = 1;
            zts_run(c);
        } else if (!c->dead && check_signals && c->n.data.nr == SYS_connect && zts_signal_pending(c->n.pid)) {
            c->interrupted = 1;
            zts_run(c);
        }
    }
}

/* Whether a blocking connect waits (its thread is looked at for signals). */
static int zts_connect_waits(void)
{
    for (struct zts_call *c = zts_waiting; c; c = c->next)
        if (!c->dead && c->n.data.nr == SYS_connect)
            return 1;
    return 0;
}

static int zts_next_timeout(long next_sweep)
{
    long now = zts_now_ms();
    long t = next_sweep;
    if (zts_connect_waits() && now + ZTS_SIGNAL_CHECK_MS < t)
        t = now + ZTS_SIGNAL_CHECK_MS;
    for (struct zts_call *c = zts_waiting; c; c = c->next)
        if (c->deadline && c->deadline < t)
            t = c->deadline;
    return t <= now ? 0 : (int)(t - now);
}

/* ---------------------------------------------------------------------------------------------
 * Starting the program
 */

static int zts_send_fd(int sock, int fd)
{
    char byte = 'L';
    struct iovec iov = { &byte, 1 };
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } cb;
    memset(&cb, 0, sizeof cb);
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.buf, .msg_controllen = sizeof cb.buf };
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    return sendmsg(sock, &m, MSG_NOSIGNAL) == 1 ? 0 : -1;
}

/* The child's first message: 'L' + SCM_RIGHTS(listener), or 'E' + errno. Return: fd, or -1
 * with *err set. */
static int zts_recv_fd(int sock, int *err)
{
    char byte = 0;
    struct iovec iov = { &byte, 1 };
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } cb;
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.buf, .msg_controllen = sizeof cb.buf };
    ssize_t n;
    while ((n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
        ;
    struct cmsghdr *c = n == 1 ? CMSG_FIRSTHDR(&m) : NULL;
    int fd = -1;
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
        memcpy(&fd, CMSG_DATA(c), sizeof fd);
    *err = EIO;
    if (fd < 0 && n == 1 && byte == 'E' && read(sock, err, sizeof *err) != (ssize_t)sizeof *err)
        *err = EIO;
    return fd;
}

/* In the child: filter, hand over the listener, wait for the go, exec. Never returns. */
static void zts_child(int ctl, char **argv, const char *preload, const sigset_t *oldmask, pid_t parent)
{
    sigprocmask(SIG_SETMASK, oldmask, NULL);
    int err = 0;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        err = errno;
        goto fail;
    }
    if (getppid() != parent) { /* the supervisor died before the line above */
        err = ESRCH;
        goto fail;
    }
    struct sock_fprog prog;
    zts_filter_build(&prog, zts_opt.both);
    long flags = SECCOMP_FILTER_FLAG_NEW_LISTENER;
#ifdef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
    int lfd = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, &prog);
    if (lfd < 0 && errno == EINVAL)
#else
    int lfd = -1;
#endif
        lfd = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
    if (lfd < 0) {
        err = errno;
        goto fail;
    }
    if (zts_send_fd(ctl, lfd) < 0) {
        err = errno;
        goto fail;
    }
    close(lfd);
    char go;
    if (read(ctl, &go, 1) != 1)
        _exit(126);
    if (preload && *preload) {
        const char *old = getenv("LD_PRELOAD");
        char *v = NULL;
        if (old && *old && asprintf(&v, "%s %s", preload, old) > 0)
            setenv("LD_PRELOAD", v, 1);
        else
            setenv("LD_PRELOAD", preload, 1);
        free(v);
    }
    execvp(argv[0], argv);
    err = errno;
    (void)!write(ctl, &err, sizeof err); /* exec failed: tell the supervisor why */
    _exit(err == ENOENT ? 127 : 126);
fail:
    (void)!write(ctl, "E", 1);
    (void)!write(ctl, &err, sizeof err);
    _exit(126);
}

/* YAMA's ptrace_scope 3 forbids what the supervisor does to the program; 2 allows it to
 * CAP_SYS_PTRACE only. Refuse to start rather than leave the program silently on the kernel. */
static int zts_ptrace_allowed(void)
{
    FILE *f = fopen("/proc/sys/kernel/yama/ptrace_scope", "re");
    int scope = 0;
    if (!f)
        return 1; /* no YAMA: the ordinary rules (same user, dumpable) */
    if (fscanf(f, "%d", &scope) != 1)
        scope = 0;
    fclose(f);
    if (scope >= 3) {
        zts_log("kernel.yama.ptrace_scope=3 forbids the ptrace access seccomp mode needs "
                "(pidfd_getfd, process_vm_readv); use --mode preload for dynamic programs");
        return 0;
    }
    if (scope == 2 && geteuid() != 0) {
        zts_log("kernel.yama.ptrace_scope=2 allows the ptrace access seccomp mode needs to root only "
                "(CAP_SYS_PTRACE); use --mode preload for dynamic programs, or run as root");
        return 0;
    }
    return 1;
}

static void zts_usage(void)
{
    fprintf(stderr, "usage: ztap-seccomp [--preload LIB] [--debug] -- PROGRAM [ARGS...]\n"
                    "  (normally started by `ztctl run`; reads ZTAP_RPC, ZTAP_ROUTES, ZTAP_NETWORK,\n"
                    "   ZTAP_DEFAULT_ROUTE, ZTAP_BIND_ANY like libztintercept.so)\n");
}

/* Exit like the program: same status, or the same signal. */
static void zts_exit_like(int status)
{
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        struct rlimit no = { 0, 0 };
        (void)setrlimit(RLIMIT_CORE, &no); /* the program dumped its core, if any: not ours */
        signal(sig, SIG_DFL);
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, sig);
        sigprocmask(SIG_UNBLOCK, &s, NULL);
        raise(sig);
        _exit(128 + sig);
    }
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

int main(int argc, char **argv)
{
    const char *preload = NULL;
    int i;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            i++;
            break;
        } else if (!strcmp(argv[i], "--preload") && i + 1 < argc) {
            preload = argv[++i];
            zts_opt.both = 1;
        } else if (!strcmp(argv[i], "--debug")) {
            zts_opt.debug = 1;
        } else {
            zts_usage();
            return 64;
        }
    }
    if (i >= argc) {
        zts_usage();
        return 64;
    }
    char **cmd = argv + i;
    if (getenv("ZTAP_DEBUG") && strcmp(getenv("ZTAP_DEBUG"), "0") != 0)
        zts_opt.debug = 1;
    if (!zti_cfg.enabled)
        zts_log("ZTAP_RPC is not set: every socket stays on the kernel");
    if (!zts_ptrace_allowed())
        return 126;
    zts_default_opts_init();

    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
        zts_log("socketpair: %s", strerror(errno));
        return 126;
    }
    /* Signals are read from a signalfd; block them before the fork so none is lost. */
    sigset_t mask, oldmask;
    sigemptyset(&mask);
    int fwd[] = { SIGTERM, SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCHLD };
    for (size_t k = 0; k < sizeof fwd / sizeof fwd[0]; k++)
        sigaddset(&mask, fwd[k]);
    sigprocmask(SIG_BLOCK, &mask, &oldmask);
    (void)prctl(PR_SET_CHILD_SUBREAPER, 1);
    pid_t self = getpid();
    pid_t child = fork();
    if (child < 0) {
        zts_log("fork: %s", strerror(errno));
        return 126;
    }
    if (child == 0) {
        close(sp[0]);
        zts_child(sp[1], cmd, preload, &oldmask, self);
    }
    close(sp[1]);
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max; /* copies of the tree's fds while calls wait */
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    int err = 0;
    zts_listener = zts_recv_fd(sp[0], &err);
    if (zts_listener < 0) {
        zts_log("cannot install the seccomp filter for %s: %s%s", cmd[0], strerror(err),
                err == EINVAL || err == ENOSYS ? " (needs Linux 5.9 with seccomp user notification)" : "");
        int st;
        waitpid(child, &st, 0);
        return 126;
    }
    /* stdin/stdout belong to the program; keeping them would hold pipes open after it ends. */
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull >= 0) {
        dup2(devnull, STDIN_FILENO);
        dup2(devnull, STDOUT_FILENO);
        close(devnull);
    }
    zts_ep = epoll_create1(EPOLL_CLOEXEC);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &zts_tag_listener };
    epoll_ctl(zts_ep, EPOLL_CTL_ADD, zts_listener, &ev);
    ev.data.ptr = &zts_tag_signal;
    epoll_ctl(zts_ep, EPOLL_CTL_ADD, sfd, &ev);
    ev.data.ptr = &zts_tag_ctl;
    epoll_ctl(zts_ep, EPOLL_CTL_ADD, sp[0], &ev);
    (void)!write(sp[0], "g", 1);

    int child_status = 0, child_done = 0, listener_gone = 0, ctl_open = 1;
    long next_sweep = zts_now_ms() + 1000, next_signal_check = 0;
    for (;;) {
        if (child_done && listener_gone)
            zts_exit_like(child_status);
        struct epoll_event evs[64];
        int n = epoll_wait(zts_ep, evs, 64, zts_next_timeout(next_sweep));
        if (n < 0 && errno != EINTR) {
            zts_log("epoll_wait: %s", strerror(errno));
            break;
        }
        for (int k = 0; k < n; k++) {
            void *p = evs[k].data.ptr;
            if (p == &zts_tag_listener) {
                if (evs[k].events & EPOLLIN)
                    zts_notification();
                else if (evs[k].events & (EPOLLHUP | EPOLLERR)) {
                    /* No process uses the filter any more. */
                    listener_gone = 1;
                    epoll_ctl(zts_ep, EPOLL_CTL_DEL, zts_listener, NULL);
                }
            } else if (p == &zts_tag_ctl) {
                int err = 0;
                ssize_t r = read(sp[0], &err, sizeof err);
                if (r == (ssize_t)sizeof err)
                    fprintf(stderr, "ztctl: cannot run %s: %s\n", cmd[0], strerror(err));
                if (r <= 0 || r == (ssize_t)sizeof err) {
                    epoll_ctl(zts_ep, EPOLL_CTL_DEL, sp[0], NULL);
                    ctl_open = 0;
                }
            } else if (p == &zts_tag_signal) {
                struct signalfd_siginfo si;
                while (read(sfd, &si, sizeof si) == sizeof si) {
                    if (si.ssi_signo == SIGCHLD) {
                        int st;
                        pid_t w;
                        while ((w = waitpid(-1, &st, WNOHANG)) > 0)
                            if (w == child) {
                                child_status = st;
                                child_done = 1;
                            }
                        continue;
                    }
                    /* The terminal signals the whole foreground group: the program got it. */
                    int from_tty = (si.ssi_signo == SIGINT || si.ssi_signo == SIGQUIT) &&
                                   si.ssi_code != SI_USER && si.ssi_code != SI_QUEUE;
                    if (!child_done && !from_tty)
                        kill(child, (int)si.ssi_signo);
                    else if (child_done && si.ssi_signo != SIGWINCH && !from_tty)
                        zts_exit_like(child_status); /* only leftovers remain: let them go */
                }
            } else if ((uintptr_t)p & 1) {
                zts_call_free((struct zts_call *)((char *)p - 1)); /* its thread exited */
            } else if (!((struct zts_call *)p)->dead) {
                ((struct zts_call *)p)->revents = evs[k].events;
                zts_run((struct zts_call *)p);
            }
        }
        long now = zts_now_ms();
        int check = now >= next_sweep;
        if (check)
            next_sweep = now + 1000;
        int signals = now >= next_signal_check;
        if (signals)
            next_signal_check = now + ZTS_SIGNAL_CHECK_MS;
        zts_sweep(check, signals);
        zts_bury();
        (void)ctl_open;
    }
    return 1;
}
