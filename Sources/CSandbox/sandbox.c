// SPDX-License-Identifier: MIT
/*
 * sandbox.c - ztapd's own system-call allow-list (seccomp, via libseccomp)
 *
 * DOC: Theory of Operation
 *
 * ztapd sits between every local user and the network, so a bug in it must not become a way
 * into the rest of the system. Once it is set up (privileges reduced to CAP_NET_ADMIN, control
 * socket open, initial networks up), it installs this filter on every thread (TSYNC); threads
 * started later (networks joined later) inherit it. The list is what ztapd itself needs and
 * nothing more: file and socket I/O, epoll, threads, memory, time; socket() only for AF_UNIX
 * and AF_NETLINK (ztapd opens no IP sockets); new threads, never new processes (clone only
 * with CLONE_THREAD, no execve); ioctl only TUNSETIFF, TUNSETVNETHDRSZ and TUNSETOFFLOAD
 * (joining a network), SIOCGIFINDEX/SIOCGIFNAME (if_nametoindex/if_indextoname, for
 * SO_BINDTODEVICE), TCGETS (isatty), SIOCOUTQ (what an app has not yet received of an
 * accept channel: its unaccepted connections count against the listener's backlog) and
 * SIOCATMARK (where an app's urgent byte lies in what it wrote); no W+X memory.
 *
 * A call outside the list traps (SECCOMP_RET_TRAP): the kernel sends SIGSYS before the call
 * runs, and the handler below writes one line naming the call to stderr (the journal) and
 * ends the process with status 159 (128 + SIGSYS). Why not SECCOMP_RET_KILL_PROCESS: it dies
 * without a word (only "status=31/SYS" from systemd, the call's number only in an audit log
 * that is often off), which makes a missing entry after an upgrade a puzzle. The trap is no
 * weaker: the blocked call never runs, and SIGSYS from seccomp cannot be blocked (a blocked
 * or ignored SIGSYS kills the process). Two kinds of call fail with an errno instead, as
 * libraries may probe them harmlessly: socket() of another family (EAFNOSUPPORT), and clone3
 * (ENOSYS, so glibc falls back to clone, whose flags can be checked). Other ioctl requests
 * and prctl options trap like any call off the list.
 *
 * Names that do not exist on the build's architecture are skipped. The systemd unit adds its
 * own SystemCallFilter= on top (defence in depth: either alone confines ztapd).
 */
#define _GNU_SOURCE
#include "sandbox.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#endif

/* Allowed without conditions. */
static const char *const zt_plain[] = {
    /* file descriptors and files (config, networks.d edits, /proc/self, /dev/net/tun) */
    "read", "write", "readv", "writev", "pread64", "pwrite64", "close", "lseek", "open", "openat",
    "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs", "getdents64",
    "mkdir", "mkdirat", "unlink", "unlinkat", "rename", "renameat", "renameat2", "link", "linkat",
    "chmod", "fchmod", "fchmodat", "chown", "fchown", "fchownat", "fsync", "fdatasync", "flock",
    "fcntl", "dup", "dup2", "dup3", "access", "faccessat", "faccessat2", "readlink", "readlinkat",
    "getcwd", "umask", "fsetxattr", "fgetxattr", "flistxattr", "fremovexattr",
    /* memory (mmap/mprotect: see the W^X rules below) */
    "munmap", "mremap", "madvise", "brk", "membarrier",
    /* threads, signals, identity, time */
    "futex", "set_robust_list", "get_robust_list", "rseq", "sched_yield", "sched_getaffinity",
    "gettid", "getpid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getgroups",
    "getresuid", "getresgid", "capget", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn",
    "sigaltstack", "restart_syscall", "exit", "exit_group", "tgkill", "tkill",
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
    "getrandom", "uname", "sysinfo", "prlimit64", "getrlimit",
    /* the event loops */
    "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd2",
    "signalfd4", "timerfd_create", "timerfd_settime", "timerfd_gettime", "poll", "ppoll", "pipe2",
    /* sockets once open: AF_UNIX clients, the netlink socket */
    "bind", "listen", "connect", "accept", "accept4", "getsockopt", "setsockopt", "getsockname",
    "getpeername", "sendmsg", "recvmsg", "sendto", "recvfrom", "sendmmsg", "recvmmsg", "shutdown",
    /* Trust.mayBindPrivileged: is the peer's pid still that process (signal 0) */
    "pidfd_send_signal",
    /* PlugOwners: has the owner of a pending connect exited */
    "pidfd_open",
};

/* Allowed with argument checks (see zt_add_conditional). */
static const char *const zt_conditional[] = {
    "socket", "socketpair", "clone", "ioctl", "prctl", "mmap", "mprotect", "clone3",
};

/* syscall number -> name, filled before the filter goes in: the SIGSYS handler may only use
 * async-signal-safe calls, and libseccomp's lookup allocates. */
#define ZT_MAX_NR 1024
static const char *zt_names[ZT_MAX_NR];

static void zt_put(char *buf, size_t *n, size_t cap, const char *s) {
    while (*s && *n < cap) buf[(*n)++] = *s++;
}

static void zt_on_sigsys(int sig, siginfo_t *info, void *ctx) {
    (void)sig;
    (void)ctx;
    char buf[256];
    size_t n = 0;
    int nr = info->si_syscall;
    char digits[12];
    int d = 0;
    unsigned v = nr < 0 ? 0u : (unsigned)nr;
    do {
        digits[d++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && d < (int)sizeof digits);
    zt_put(buf, &n, sizeof buf, "ztapd: seccomp: blocked system call ");
    while (d > 0 && n < sizeof buf) buf[n++] = digits[--d];
    zt_put(buf, &n, sizeof buf, " (");
    zt_put(buf, &n, sizeof buf, nr >= 0 && nr < ZT_MAX_NR && zt_names[nr] ? zt_names[nr] : "unknown");
    zt_put(buf, &n, sizeof buf, "); stopping (SyscallFilter=no in ztapd.conf turns the filter off to debug)\n");
    ssize_t w = write(2, buf, n);
    (void)w;
    _exit(128 + SIGSYS);
}

static int zt_in(const char *const *list, size_t count, const char *name) {
    for (size_t i = 0; i < count; i++)
        if (strcmp(list[i], name) == 0) return 1;
    return 0;
}

int zt_sandbox_allowed(const char *name) {
    if (seccomp_syscall_resolve_name(name) == __NR_SCMP_ERROR) return -1;
    return zt_in(zt_plain, sizeof zt_plain / sizeof *zt_plain, name) ||
           (zt_in(zt_conditional, sizeof zt_conditional / sizeof *zt_conditional, name) &&
            strcmp(name, "clone3") != 0);
}

#define ZT_ARG(i, op, v) SCMP_A##i(op, (scmp_datum_t)(v))

static int zt_add_conditional(scmp_filter_ctx ctx) {
    int r = 0;
    /* socket(): AF_UNIX and AF_NETLINK only; anything else is refused, not fatal. */
    r |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1, ZT_ARG(0, SCMP_CMP_EQ, AF_UNIX));
    r |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1, ZT_ARG(0, SCMP_CMP_EQ, AF_NETLINK));
    /* Every other family gets EAFNOSUPPORT (one rule each: a "not one of" test is no
     * comparison seccomp has, and rules must not overlap). */
    for (int f = 0; f < AF_MAX; f++)
        if (f != AF_UNIX && f != AF_NETLINK)
            r |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1, ZT_ARG(0, SCMP_CMP_EQ, f));
    r |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1, ZT_ARG(0, SCMP_CMP_GE, AF_MAX));
    r |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socketpair), 1, ZT_ARG(0, SCMP_CMP_EQ, AF_UNIX));
    /* Threads only: clone with CLONE_THREAD; clone3 (flags in memory, uncheckable) -> ENOSYS,
     * which makes glibc fall back to clone. */
    r |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                          SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
    r |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    /* ioctl: TAP creation and its offloads, interface index <-> name, isatty, a unix socket's
     * unread sent bytes and its out-of-band mark. */
    static const unsigned long ioctls[] = { TUNSETIFF, TUNSETVNETHDRSZ, TUNSETOFFLOAD, SIOCGIFINDEX, SIOCGIFNAME,
                                            TCGETS, SIOCOUTQ, SIOCATMARK };
    for (size_t i = 0; i < sizeof ioctls / sizeof *ioctls; i++)
        r |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                              SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, ioctls[i]));
    /* prctl: thread names, anonymous-mapping names (glibc), capability queries. */
    static const int prctls[] = { PR_SET_NAME, PR_GET_NAME, PR_SET_VMA, PR_CAPBSET_READ, PR_GET_DUMPABLE };
    for (size_t i = 0; i < sizeof prctls / sizeof *prctls; i++)
        r |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1, ZT_ARG(0, SCMP_CMP_EQ, prctls[i]));
    /* Memory is writable or executable, never both (ztapd generates no code). */
    static const unsigned prots[] = { 0, PROT_WRITE, PROT_EXEC };
    for (size_t i = 0; i < sizeof prots / sizeof *prots; i++) {
        r |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1,
                              SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_WRITE | PROT_EXEC, prots[i]));
        r |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1,
                              SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_WRITE | PROT_EXEC, prots[i]));
    }
    return r;
}

int zt_sandbox_install(void) {
    for (int nr = 0; nr < ZT_MAX_NR; nr++)
        if (!zt_names[nr]) zt_names[nr] = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = zt_on_sigsys;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSYS, &sa, NULL) != 0) return -errno;

    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_TRAP);
    if (!ctx) return -ENOMEM;
    int r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
    if (r == 0) r = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    for (size_t i = 0; r == 0 && i < sizeof zt_plain / sizeof *zt_plain; i++) {
        int nr = seccomp_syscall_resolve_name(zt_plain[i]);
        if (nr == __NR_SCMP_ERROR) continue; /* not on this architecture */
        r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
    }
    if (r == 0) r = zt_add_conditional(ctx) ? -EINVAL : 0;
    if (r == 0) r = seccomp_load(ctx);
    seccomp_release(ctx);
    return r < 0 ? r : 0;
}

static void *zt_selftest_thread(void *arg) { return arg; }

int zt_sandbox_selftest(void) {
    int r = zt_sandbox_install();
    if (r != 0) return r;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    printf("socket(AF_INET): %s\n", s < 0 && errno == EAFNOSUPPORT ? "refused (EAFNOSUPPORT)" : "NOT REFUSED");
    pthread_t t;
    int tr = pthread_create(&t, NULL, zt_selftest_thread, NULL);
    if (tr == 0) pthread_join(t, NULL);
    printf("new thread: %s\n", tr == 0 ? "started" : strerror(tr));
    printf("calling ptrace (not allowed): the filter must stop ztapd now\n");
    fflush(stdout);
    syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0);
    return -EPERM; /* still here: the filter did not work */
}
