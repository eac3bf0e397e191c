/* SPDX-License-Identifier: MIT */
/*
 * zts_target.c - acting on the traced process: answering notifications, its fds, its memory.
 *
 * DOC: Theory of Operation
 *
 * A notification names a thread (n.pid, a thread id in our pid namespace) and the syscall's
 * registers. Everything else the supervisor learns through that thread:
 *
 *  - its fds: pidfd_open(tid, PIDFD_THREAD) then pidfd_getfd() gives the supervisor a copy of
 *    the target's fd (the same open file description: same socket, same O_NONBLOCK);
 *  - its memory: process_vm_readv/writev for sockaddrs, option values, iovecs and payloads;
 *  - its fd flags: /proc/TID/fdinfo/N (FD_CLOEXEC is per fd-table entry, not per file).
 *
 * All of this needs PTRACE_MODE_ATTACH_REALCREDS over the target: the same uid (and the target
 * still dumpable), or CAP_SYS_PTRACE; under YAMA ptrace_scope=1 also that the supervisor be an
 * ancestor, which it is (it forks the program and is a child subreaper). A thread id can be
 * reused once its thread died, so whatever was read is trusted only after
 * SECCOMP_IOCTL_NOTIF_ID_VALID says the notification is still pending: then the thread is alive,
 * hence the pidfd and the memory were its own.
 *
 * Installing fds: SECCOMP_IOCTL_NOTIF_ADDFD with SETFD replaces the target's fd number in place
 * (like dup3, atomically), used when a kernel socket becomes a ztap socket; with SEND it installs
 * a new fd and completes the syscall with its number in one step (accept, socket, dup), so an fd
 * is never installed for a call that did not return it.
 */
#include "zts.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif

int zts_listener = -1;

int zts_reply(struct zts_call *c, long val, int err)
{
    struct seccomp_notif_resp r;
    memset(&r, 0, sizeof r);
    r.id = c->n.id;
    r.val = err ? -1 : val;
    r.error = err ? -err : 0;
    if (ioctl(zts_listener, SECCOMP_IOCTL_NOTIF_SEND, &r) < 0)
        return -errno;
    return 0;
}

int zts_continue(struct zts_call *c)
{
    struct seccomp_notif_resp r;
    memset(&r, 0, sizeof r);
    r.id = c->n.id;
    r.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    if (ioctl(zts_listener, SECCOMP_IOCTL_NOTIF_SEND, &r) < 0)
        return -errno;
    return 0;
}

/**
 * zts_addfd() - install one of our fds into the target
 * @c: the call
 * @srcfd: our fd
 * @newfd: target fd number to replace (SETFD), or -1 for the lowest free one
 * @cloexec: set FD_CLOEXEC on the target's new fd
 * @send: complete the syscall with the fd number (SECCOMP_ADDFD_FLAG_SEND)
 *
 * Return: the target fd number, or -errno (-ENOENT: the call is gone).
 */
int zts_addfd(struct zts_call *c, int srcfd, int newfd, int cloexec, int send)
{
    struct seccomp_notif_addfd a;
    memset(&a, 0, sizeof a);
    a.id = c->n.id;
    a.srcfd = (uint32_t)srcfd;
    a.newfd = newfd >= 0 ? (uint32_t)newfd : 0;
    a.flags = (newfd >= 0 ? SECCOMP_ADDFD_FLAG_SETFD : 0) | (send ? SECCOMP_ADDFD_FLAG_SEND : 0);
    a.newfd_flags = cloexec ? O_CLOEXEC : 0;
    int r = ioctl(zts_listener, SECCOMP_IOCTL_NOTIF_ADDFD, &a);
    return r < 0 ? -errno : r;
}

int zts_id_valid(struct zts_call *c)
{
    uint64_t id = c->n.id;
    return ioctl(zts_listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0;
}

static pid_t zts_tgid_of(pid_t tid);

/* Access to the target is refused (ptrace rules): say so once, loudly, since the program's
 * sockets then stay on the kernel. */
static void zts_access_denied(struct zts_call *c, const char *what, int err)
{
    static int told;
    if (told++)
        return;
    zts_log("cannot %s of pid %d: %s. Seccomp mode needs ptrace access to the program (the same "
            "user and a dumpable process, or CAP_SYS_PTRACE; kernel.yama.ptrace_scope at most 1, or 2 "
            "as root); its calls that need it go to the kernel unchanged", what, (int)c->n.pid, strerror(err));
}

/* Opens the thread's pidfd. Return: 0 or -errno. */
int zts_open_target(struct zts_call *c)
{
    if (c->pidfd >= 0)
        return 0;
    int fd = (int)syscall(SYS_pidfd_open, c->n.pid, PIDFD_THREAD);
    if (fd < 0 && errno == EINVAL) {
        /* Kernels before 6.9: thread-group leaders only; the fd table is the process's anyway
         * (and the thread's liveness is checked with NOTIF_ID_VALID). */
        pid_t tgid = zts_tgid_of((pid_t)c->n.pid);
        fd = tgid > 0 ? (int)syscall(SYS_pidfd_open, tgid, 0) : -1;
    }
    if (fd < 0)
        return -errno;
    c->pidfd = fd;
    return 0;
}

/* A copy of the target's fd (CLOEXEC in the supervisor). Return: fd or -errno. */
int zts_getfd(struct zts_call *c, int targetfd)
{
    int r = zts_open_target(c);
    if (r < 0)
        return r;
    int fd = (int)syscall(SYS_pidfd_getfd, c->pidfd, targetfd, 0);
    if (fd < 0 && errno == EPERM)
        zts_access_denied(c, "copy an fd", EPERM);
    return fd < 0 ? -errno : fd;
}

int zts_mem_read(struct zts_call *c, uint64_t addr, void *buf, size_t len)
{
    if (len == 0)
        return 0;
    if (!addr)
        return -EFAULT;
    struct iovec l = { buf, len };
    struct iovec r = { (void *)(uintptr_t)addr, len };
    ssize_t n = process_vm_readv(c->n.pid, &l, 1, &r, 1, 0);
    if (n < 0 && errno == EPERM)
        zts_access_denied(c, "read the memory", EPERM);
    if (n < 0)
        return errno == ESRCH ? -ESRCH : -EFAULT;
    return (size_t)n == len ? 0 : -EFAULT;
}

int zts_mem_write(struct zts_call *c, uint64_t addr, const void *buf, size_t len)
{
    if (len == 0)
        return 0;
    if (!addr)
        return -EFAULT;
    struct iovec l = { (void *)buf, len };
    struct iovec r = { (void *)(uintptr_t)addr, len };
    ssize_t n = process_vm_writev(c->n.pid, &l, 1, &r, 1, 0);
    if (n < 0 && errno == EPERM)
        zts_access_denied(c, "write the memory", EPERM);
    if (n < 0)
        return errno == ESRCH ? -ESRCH : -EFAULT;
    return (size_t)n == len ? 0 : -EFAULT;
}

/* Reads a small /proc file of the thread into buf (NUL-terminated). Return: length or -errno. */
static ssize_t zts_proc_read(pid_t tid, const char *what, char *buf, size_t cap)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)tid, what);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t got = 0;
    while (got + 1 < cap) {
        ssize_t n = read(fd, buf + got, cap - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = 0;
    return (ssize_t)got;
}

/* FD_CLOEXEC of the target's fd: 1, 0, or -errno. */
int zts_fd_cloexec(struct zts_call *c, int targetfd)
{
    char what[32], buf[512];
    snprintf(what, sizeof what, "fdinfo/%d", targetfd);
    ssize_t n = zts_proc_read(c->n.pid, what, buf, sizeof buf);
    if (n < 0)
        return (int)n;
    const char *f = strstr(buf, "flags:");
    if (!f)
        return -EIO;
    unsigned long flags = strtoul(f + 6, NULL, 8);
    return (flags & O_CLOEXEC) ? 1 : 0;
}

/* The target's RLIMIT_NOFILE soft limit (prlimit needs the same uids or CAP_SYS_RESOURCE; the
 * /proc file does not). */
static long zts_nofile(struct zts_call *c)
{
    struct rlimit rl;
    if (prlimit(c->n.pid, RLIMIT_NOFILE, NULL, &rl) == 0)
        return rl.rlim_cur == RLIM_INFINITY ? LONG_MAX : (long)rl.rlim_cur;
    char buf[4096];
    if (zts_proc_read(c->n.pid, "limits", buf, sizeof buf) < 0)
        return -1;
    const char *l = strstr(buf, "Max open files");
    if (!l)
        return -1;
    l += strlen("Max open files");
    while (*l == ' ')
        l++;
    if (!strncmp(l, "unlimited", 9))
        return LONG_MAX;
    return strtol(l, NULL, 10);
}

/**
 * zts_pick_udp_fd() - a free fd number in the datagram range of the target
 *
 * Highest first, leaving room below for the program's own fds; under RLIMIT_NOFILE.
 * Return: the number, or -1 when the range is full or out of the program's limit.
 */
int zts_pick_udp_fd(struct zts_call *c)
{
    long lim = zts_nofile(c);
    int hi = ZTS_UDP_FD_HI;
    if (lim >= 0 && lim < hi)
        hi = (int)lim;
    if (hi <= ZTS_UDP_FD_LO)
        return -1;
    unsigned char used[ZTS_UDP_FD_HI - ZTS_UDP_FD_LO];
    memset(used, 0, sizeof used);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)c->n.pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    struct dirent *de;
    while ((de = readdir(d))) {
        long fd = strtol(de->d_name, NULL, 10);
        if (fd >= ZTS_UDP_FD_LO && fd < ZTS_UDP_FD_HI)
            used[fd - ZTS_UDP_FD_LO] = 1;
    }
    closedir(d);
    for (int fd = hi - 1; fd >= ZTS_UDP_FD_LO; fd--)
        if (!used[fd - ZTS_UDP_FD_LO])
            return fd;
    return -1;
}

/* ---------------------------------------------------------------------------------------------
 * "both": is the library loaded in the notifying process? Cached per thread id together with the
 * identity of the process image (/proc/TID/exe), so a reused thread id or an exec is noticed.
 */
#define ZTS_LIBCACHE 256
static struct {
    pid_t tid;
    pid_t tgid;
    uint64_t exe_dev, exe_ino;
    int has;
} zts_libcache[ZTS_LIBCACHE];

static pid_t zts_tgid_of(pid_t tid)
{
    char buf[2048];
    if (zts_proc_read(tid, "status", buf, sizeof buf) < 0)
        return -1;
    const char *t = strstr(buf, "\nTgid:");
    return t ? (pid_t)strtol(t + 6, NULL, 10) : -1;
}

pid_t zts_tgid(struct zts_call *c)
{
    pid_t t = zts_tgid_of((pid_t)c->n.pid);
    return t > 0 ? t : (pid_t)c->n.pid;
}

int zts_has_library(struct zts_call *c)
{
    if (!zts_opt.both)
        return 0;
    char path[64];
    struct stat st;
    snprintf(path, sizeof path, "/proc/%d/exe", (int)c->n.pid);
    if (stat(path, &st) < 0)
        return 0;
    unsigned slot = (unsigned)c->n.pid % ZTS_LIBCACHE;
    if (zts_libcache[slot].tid == (pid_t)c->n.pid && zts_libcache[slot].exe_dev == st.st_dev &&
        zts_libcache[slot].exe_ino == st.st_ino && zts_libcache[slot].has >= 0)
        return zts_libcache[slot].has;
    /* Read the maps: a line naming libztintercept.so. */
    snprintf(path, sizeof path, "/proc/%d/maps", (int)c->n.pid);
    FILE *f = fopen(path, "re");
    int has = 0;
    if (f) {
        char line[1024];
        while (fgets(line, sizeof line, f))
            if (strstr(line, "libztintercept")) {
                has = 1;
                break;
            }
        fclose(f);
    }
    zts_libcache[slot].tid = (pid_t)c->n.pid;
    zts_libcache[slot].tgid = zts_tgid_of((pid_t)c->n.pid);
    zts_libcache[slot].exe_dev = st.st_dev;
    zts_libcache[slot].exe_ino = st.st_ino;
    zts_libcache[slot].has = has;
    zts_dbg("pid %d: library %s", (int)c->n.pid, has ? "loaded: left to it" : "absent: served here");
    return has;
}

/* An execve from this thread: forget what we knew about its process (the same executable may be
 * run without the library, and the other threads' cached answers describe the old image). */
void zts_exec_seen(struct zts_call *c)
{
    pid_t tgid = zts_tgid_of((pid_t)c->n.pid);
    for (int i = 0; i < ZTS_LIBCACHE; i++)
        if (zts_libcache[i].tid == (pid_t)c->n.pid || (tgid > 0 && zts_libcache[i].tgid == tgid))
            zts_libcache[i].has = -1;
}
