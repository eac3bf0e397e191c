/* SPDX-License-Identifier: MIT */
/*
 * zts_filter.c - the seccomp BPF program that decides which system calls reach the supervisor.
 *
 * DOC: Theory of Operation
 *
 * A seccomp filter sees only the syscall number and the six argument registers, never memory
 * and never what an fd refers to. So the filter traps by number, and narrows by argument where
 * an argument says enough:
 *
 *  - always: connect, bind, listen, accept, accept4, getsockname, getpeername, getsockopt,
 *    setsockopt, shutdown (control calls: one or two per connection, next to a TCP handshake;
 *    a TCP shutdown is native but says ENOTCONN once the connection is over, and one for
 *    reading is announced to ztapd first, as the library does);
 *  - socket() only for AF_INET/AF_INET6 + SOCK_DGRAM: the supervisor creates the socket itself and
 *    installs it in the datagram fd range [ZTS_UDP_FD_LO, ZTS_UDP_FD_HI);
 *  - sendto() when it names a destination (args[4] != NULL); send(), which libcs implement as
 *    sendto(..., NULL, 0), stays native;
 *  - the data calls that could meet UDP framing (read, write, readv, writev, preadv2, pwritev2,
 *    recvfrom, recvmsg, recvmmsg, sendto, sendmsg, sendmmsg, ioctl, dup, and fcntl's
 *    F_DUPFD/F_DUPFD_CLOEXEC, dup2, dup3) only when args[0] is an fd in the datagram range;
 *  - ioctl's socket queue requests (SIOCINQ alias FIONREAD, SIOCOUTQ, SIOCOUTQNSD, SIOCATMARK)
 *    on every fd: a listener answers EINVAL, a TCP socket's SIOCOUTQNSD is its stream's SIOCOUTQ;
 *  - with the library next to it ("both"): execve/execveat, so the supervisor learns that a
 *    process changed its image (and whether the library is in it);
 *  - io_uring_setup fails with ENOSYS: io_uring's connect/send would bypass the filter, and
 *    programs fall back to plain system calls when it is missing.
 *
 * Everything else is allowed, in particular read/write/send/recv/poll/epoll on every TCP socket
 * and on every fd outside the range: the data path of a ztap TCP socket is a native AF_UNIX
 * stream, as with the library. Other architectures' syscalls (x32, i386 compat) are allowed:
 * 32-bit programs are out of reach (docs/INTERCEPT.md).
 */
#include "zts.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <sys/syscall.h>

#if defined(__x86_64__)
#define ZTS_ARCH AUDIT_ARCH_X86_64
#define ZTS_X32_BIT 0x40000000u
#elif defined(__aarch64__)
#define ZTS_ARCH AUDIT_ARCH_AARCH64
#else
#error "ztap-seccomp supports x86-64 and aarch64"
#endif

#define ARG_LO(i) (offsetof(struct seccomp_data, args) + 8 * (i))
#define ARG_HI(i) (offsetof(struct seccomp_data, args) + 8 * (i) + 4)

/* A small assembler: instructions with symbolic forward jump targets, resolved at the end. */
enum { L_NONE = -1, L_ALLOW = 0, L_NOTIFY, L_ENOSYS, L_RANGE, L_SENDTO, L_SOCKET, L_SOCKTYPE, L_FCNTL, L_IOCTL, L_NLABELS };

struct asm_ins {
    struct sock_filter f;
    int jt, jf; /* labels, or L_NONE for "next instruction" (offset 0) */
};

struct asm_prog {
    struct asm_ins ins[128];
    int n;
    int label_at[L_NLABELS];
};

static void emit(struct asm_prog *p, uint16_t code, uint32_t k, int jt, int jf)
{
    if (p->n >= (int)(sizeof p->ins / sizeof p->ins[0]))
        abort(); /* the program is fixed: a build-time mistake */
    struct asm_ins *i = &p->ins[p->n++];
    i->f = (struct sock_filter)BPF_STMT(code, k);
    i->jt = jt;
    i->jf = jf;
}

static void label(struct asm_prog *p, int l)
{
    p->label_at[l] = p->n;
}

/* if (nr == value) goto l */
static void on_nr(struct asm_prog *p, long nr, int l)
{
    emit(p, BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, l, L_NONE);
}

int zts_filter_build(struct sock_fprog *prog, int both)
{
    static struct asm_prog p;
    memset(&p, 0, sizeof p);
    for (int i = 0; i < L_NLABELS; i++)
        p.label_at[i] = -1;

    emit(&p, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch), L_NONE, L_NONE);
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, ZTS_ARCH, L_NONE, L_ALLOW);
    emit(&p, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr), L_NONE, L_NONE);
#ifdef ZTS_X32_BIT
    emit(&p, BPF_JMP | BPF_JGE | BPF_K, ZTS_X32_BIT, L_ALLOW, L_NONE);
#endif
    static const long always[] = { SYS_connect, SYS_bind, SYS_listen, SYS_accept4,
                                   SYS_getsockname, SYS_getpeername, SYS_getsockopt,
                                   SYS_setsockopt, SYS_shutdown,
#ifdef SYS_accept
                                   SYS_accept,
#endif
    };
    for (size_t i = 0; i < sizeof always / sizeof always[0]; i++)
        on_nr(&p, always[i], L_NOTIFY);
    if (both) {
        on_nr(&p, SYS_execve, L_NOTIFY);
        on_nr(&p, SYS_execveat, L_NOTIFY);
    }
    on_nr(&p, SYS_socket, L_SOCKET);
    on_nr(&p, SYS_sendto, L_SENDTO);
    on_nr(&p, SYS_fcntl, L_FCNTL);
    on_nr(&p, SYS_ioctl, L_IOCTL);
    on_nr(&p, SYS_io_uring_setup, L_ENOSYS);
    static const long ranged[] = { SYS_recvfrom, SYS_sendmsg, SYS_recvmsg, SYS_sendmmsg,
                                   SYS_recvmmsg, SYS_read, SYS_write, SYS_readv, SYS_writev,
                                   SYS_preadv2, SYS_pwritev2, SYS_dup,
#ifdef SYS_dup2
                                   SYS_dup2,
#endif
                                   SYS_dup3 };
    for (size_t i = 0; i < sizeof ranged / sizeof ranged[0]; i++)
        on_nr(&p, ranged[i], L_RANGE);
    emit(&p, BPF_RET | BPF_K, SECCOMP_RET_ALLOW, L_NONE, L_NONE);

    /* socket(AF_INET or AF_INET6, SOCK_DGRAM | flags, proto) */
    label(&p, L_SOCKET);
    emit(&p, BPF_LD | BPF_W | BPF_ABS, ARG_LO(0), L_NONE, L_NONE);
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, AF_INET, L_SOCKTYPE, L_NONE);
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, AF_INET6, L_NONE, L_ALLOW);
    label(&p, L_SOCKTYPE);
    emit(&p, BPF_LD | BPF_W | BPF_ABS, ARG_LO(1), L_NONE, L_NONE);
    emit(&p, BPF_ALU | BPF_AND | BPF_K, 0xf, L_NONE, L_NONE); /* SOCK_TYPE_MASK */
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, SOCK_DGRAM, L_NOTIFY, L_ALLOW);

    /* sendto(fd, buf, len, flags, dest, destlen): a destination, or a datagram-range fd */
    label(&p, L_SENDTO);
    emit(&p, BPF_LD | BPF_W | BPF_ABS, ARG_LO(4), L_NONE, L_NONE);
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, 0, L_NONE, L_NOTIFY);
    emit(&p, BPF_LD | BPF_W | BPF_ABS, ARG_HI(4), L_NONE, L_NONE);
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, 0, L_RANGE, L_NOTIFY);

    /* fcntl(fd, F_DUPFD | F_DUPFD_CLOEXEC, min) on a datagram-range fd */
    label(&p, L_FCNTL);
    emit(&p, BPF_LD | BPF_W | BPF_ABS, ARG_LO(1), L_NONE, L_NONE);
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, F_DUPFD, L_RANGE, L_NONE);
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, F_DUPFD_CLOEXEC, L_RANGE, L_ALLOW);

    /* ioctl(fd, SIOCINQ | SIOCOUTQ | SIOCOUTQNSD | SIOCATMARK, ...) on any fd (a listener has no
     * queues, a TCP socket's SIOCOUTQNSD is unknown to AF_UNIX), else on a datagram-range fd */
    label(&p, L_IOCTL);
    emit(&p, BPF_LD | BPF_W | BPF_ABS, ARG_LO(1), L_NONE, L_NONE);
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, SIOCINQ, L_NOTIFY, L_NONE);
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, SIOCOUTQ, L_NOTIFY, L_NONE);
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, SIOCOUTQNSD, L_NOTIFY, L_NONE);
    emit(&p, BPF_JMP | BPF_JEQ | BPF_K, SIOCATMARK, L_NOTIFY, L_RANGE);

    /* ZTS_UDP_FD_LO <= (u32)args[0] < ZTS_UDP_FD_HI (an fd is an int: the kernel ignores the
     * upper half of the register) */
    label(&p, L_RANGE);
    emit(&p, BPF_LD | BPF_W | BPF_ABS, ARG_LO(0), L_NONE, L_NONE);
    emit(&p, BPF_JMP | BPF_JGE | BPF_K, ZTS_UDP_FD_LO, L_NONE, L_ALLOW);
    emit(&p, BPF_JMP | BPF_JGE | BPF_K, ZTS_UDP_FD_HI, L_ALLOW, L_NOTIFY);

    label(&p, L_NOTIFY);
    emit(&p, BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF, L_NONE, L_NONE);
    label(&p, L_ENOSYS);
    emit(&p, BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA), L_NONE, L_NONE);
    label(&p, L_ALLOW);
    emit(&p, BPF_RET | BPF_K, SECCOMP_RET_ALLOW, L_NONE, L_NONE);

    static struct sock_filter out[128];
    for (int i = 0; i < p.n; i++) {
        out[i] = p.ins[i].f;
        if (BPF_CLASS(out[i].code) != BPF_JMP)
            continue;
        for (int which = 0; which < 2; which++) {
            int l = which ? p.ins[i].jf : p.ins[i].jt;
            int off = 0;
            if (l != L_NONE) {
                off = p.label_at[l] - (i + 1);
                if (p.label_at[l] < 0 || off < 0 || off > 255)
                    abort(); /* forward jumps only, within 255 instructions */
            }
            if (which)
                out[i].jf = (uint8_t)off;
            else
                out[i].jt = (uint8_t)off;
        }
    }
    prog->len = (unsigned short)p.n;
    prog->filter = out;
    return 0;
}
