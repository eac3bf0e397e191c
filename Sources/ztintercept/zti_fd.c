/* SPDX-License-Identifier: MIT */
/*
 * zti_fd.c - the dup family and socketpair: a ztap socket's copies are known at once (the table
 * entry is copied with the fd), and the app's own AF_UNIX pairs are marked as not ztapd's.
 */
#include "zti.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------------------------------------
 * dup family: copy the table entry so the new number is known at once (data path included).
 */

/** dup() - as dup(2); a ztap socket's copy is a ztap socket. */
ZTI_EXPORT int dup(int oldfd)
{
    zti_init_real();
    int r = zti_real.dup(oldfd);
    if (r >= 0)
        zti_copy_entry(oldfd, r);
    return r;
}

/** dup2() - as dup2(2); a ztap socket's copy is a ztap socket. */
ZTI_EXPORT int dup2(int oldfd, int newfd)
{
    zti_init_real();
    int r = zti_real.dup2(oldfd, newfd);
    if (r >= 0 && oldfd != newfd)
        zti_copy_entry(oldfd, r);
    return r;
}

/** dup3() - as dup3(2); a ztap socket's copy is a ztap socket. */
ZTI_EXPORT int dup3(int oldfd, int newfd, int flags)
{
    zti_init_real();
    int r = zti_real.dup3(oldfd, newfd, flags);
    if (r >= 0)
        zti_copy_entry(oldfd, r);
    return r;
}

/**
 * fcntl() - as fcntl(2); the copy made by F_DUPFD/F_DUPFD_CLOEXEC of a ztap socket is one too
 * Return: as fcntl(2).
 */
ZTI_EXPORT int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    /* Every fcntl argument is an int, a long or a pointer: one register wide on Linux ABIs. */
    long arg = va_arg(ap, long);
    va_end(ap);
    zti_init_real();
    int r = zti_real.fcntl(fd, cmd, arg);
    if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) && zti_cfg.enabled) {
        int saved = errno;
        zti_copy_entry(fd, r);
        errno = saved;
    }
    return r;
}

/** fcntl64() - glibc's name for fcntl with 64-bit offsets (the same on 64-bit ABIs). */
ZTI_EXPORT int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    long arg = va_arg(ap, long);
    va_end(ap);
    return fcntl(fd, cmd, arg);
}

/* Mark an AF_UNIX socket the app created itself as "not ztap", so that control calls on it never
 * ask ztapd (it looks exactly like a ztap socket: an unnamed pair). */
static void zti_mark_notztap(int fd)
{
    struct stat st;
    struct zti_ent e;
    if (fstat(fd, &st) < 0)
        return;
    memset(&e, 0, sizeof e);
    e.kind = ZTI_NOTZTAP;
    e.dev = st.st_dev;
    e.ino = st.st_ino;
    zti_table_put(fd, &e);
}

/** socketpair() - as socketpair(2); AF_UNIX pairs are remembered as the app's own. */
ZTI_EXPORT int socketpair(int domain, int type, int protocol, int sv[2])
{
    zti_init_real();
    int r = zti_real.socketpair(domain, type, protocol, sv);
    if (r == 0 && domain == AF_UNIX && zti_cfg.enabled) {
        int saved = errno;
        zti_mark_notztap(sv[0]);
        zti_mark_notztap(sv[1]);
        errno = saved;
    }
    return r;
}
