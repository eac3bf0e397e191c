// shims.c - out-of-line wrappers for Linux calls Swift cannot import (see cshims.h).
#define _GNU_SOURCE
#include "cshims.h"
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <stdlib.h>
#include <malloc.h>
#include <pthread.h>
#include <unistd.h>
#include <poll.h>
#include <dirent.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <net/if.h>
#include <linux/if_tun.h>

int cshim_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int cshim_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &ev);
}

int cshim_epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout_ms) {
    /* Directly, as the data path's calls below (not a cancellation point). */
    return (int)syscall(SYS_epoll_wait, epfd, events, maxevents, timeout_ms);
}

static long sys_result(long r) { return r < 0 ? -(long)errno : r; }

long cshim_sys_read(int fd, void *buf, size_t count) { return sys_result(syscall(SYS_read, fd, buf, count)); }
long cshim_sys_write(int fd, const void *buf, size_t count) { return sys_result(syscall(SYS_write, fd, buf, count)); }
long cshim_sys_writev(int fd, const struct iovec *iov, int count) {
    return sys_result(syscall(SYS_writev, fd, iov, count));
}
long cshim_sys_recvmsg(int fd, struct msghdr *msg, int flags) {
    return sys_result(syscall(SYS_recvmsg, fd, msg, flags));
}
long cshim_sys_sendmsg(int fd, const struct msghdr *msg, int flags) {
    return sys_result(syscall(SYS_sendmsg, fd, msg, flags));
}

int cshim_eventfd(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }

int cshim_timerfd_create(void) { return timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK); }

int cshim_timerfd_arm_relative(int fd, uint64_t ns) {
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (ns > 0) {
        its.it_value.tv_sec = (time_t)(ns / 1000000000ull);
        its.it_value.tv_nsec = (long)(ns % 1000000000ull);
    }
    return timerfd_settime(fd, 0, &its, NULL);
}

int cshim_signalfd_standard(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    signal(SIGPIPE, SIG_IGN);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0) return -1;
    return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

int cshim_signalfd_read(int fd) {
    struct signalfd_siginfo si;
    ssize_t n = read(fd, &si, sizeof si);
    if (n == (ssize_t)sizeof si) return (int)si.ssi_signo;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    if (n >= 0) { errno = EIO; }
    return -1;
}

int cshim_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return accept4(fd, addr, len, flags);
}

int cshim_socket_cloexec(int domain, int type, int protocol) {
    return socket(domain, type | SOCK_CLOEXEC, protocol);
}

int cshim_socketpair_cloexec(int domain, int type, int sv[2]) {
    return socketpair(domain, type | SOCK_CLOEXEC, 0, sv);
}

int cshim_peercred(int fd, pid_t *pid, uid_t *uid, gid_t *gid) {
    struct ucred cr;
    socklen_t len = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0) return -1;
    *pid = cr.pid;
    *uid = cr.uid;
    *gid = cr.gid;
    return 0;
}


size_t cshim_cmsg_rights_space(int nfds) {
    if (nfds < 0) nfds = 0;
    return CMSG_SPACE(sizeof(int) * (size_t)nfds);
}

size_t cshim_cmsg_put_rights(void *control, size_t space, const int *fds, int nfds) {
    if (nfds <= 0 || space < CMSG_SPACE(sizeof(int) * (size_t)nfds)) return 0;
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    memset(control, 0, space);
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    return msg.msg_controllen;
}

/* Disables SO_LINGER on anything that is not an AF_UNIX socket: a TCP socket a local client
 * sent us, with SO_LINGER {1, N} and unsent data, would make close() wait up to N seconds on our
 * event loop if ours is the last reference. */
void cshim_disable_linger_unless_unix(int fd)
{
    int domain = 0;
    socklen_t len = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain != AF_UNIX) {
        struct linger off = { .l_onoff = 0, .l_linger = 0 };
        (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &off, sizeof off);
    }
}

int cshim_cmsg_take_rights(struct msghdr *msg, int *fds, int maxfds, int *nfds) {
    int truncated = 0;
    *nfds = 0;
    if (msg->msg_controllen == 0) return 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        unsigned char *in = CMSG_DATA(c);
        for (int i = 0; i < count; i++) {
            int got;
            memcpy(&got, in + (size_t)i * sizeof(int), sizeof got);
            if (*nfds < maxfds) fds[(*nfds)++] = got;
            else { cshim_disable_linger_unless_unix(got); close(got); truncated = 1; }
        }
    }
    return truncated;
}

size_t cshim_cmsg_creds_space(void) { return CMSG_SPACE(sizeof(struct ucred)); }

long cshim_send_with_creds(int fd, const void *buf, size_t len, int pid, unsigned uid, unsigned gid,
                           const int *fds, int nfds) {
    if (nfds < 0 || nfds > 8) { errno = EINVAL; return -1; }
    union { struct cmsghdr align; char b[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(8 * sizeof(int))]; } c;
    memset(&c, 0, sizeof c);
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = c.b,
                        .msg_controllen = CMSG_SPACE(sizeof(struct ucred)) + (nfds ? CMSG_SPACE(nfds * sizeof(int)) : 0) };
    struct cmsghdr *h = CMSG_FIRSTHDR(&m);
    h->cmsg_level = SOL_SOCKET; h->cmsg_type = SCM_CREDENTIALS; h->cmsg_len = CMSG_LEN(sizeof(struct ucred));
    struct ucred u = { .pid = pid, .uid = uid, .gid = gid };
    memcpy(CMSG_DATA(h), &u, sizeof u);
    if (nfds) {
        h = CMSG_NXTHDR(&m, h);
        h->cmsg_level = SOL_SOCKET; h->cmsg_type = SCM_RIGHTS; h->cmsg_len = CMSG_LEN(nfds * sizeof(int));
        memcpy(CMSG_DATA(h), fds, nfds * sizeof(int));
    }
    return sendmsg(fd, &m, MSG_NOSIGNAL);
}

/* The headers of a batch: its control space, n mmsghdrs, then their n iovecs (one buffer slot
 * each); each header's control length is set again before every call, as the kernel shrinks it. */
struct cshim_mmsg_batch_head { size_t ctlspace; };

size_t cshim_mmsg_space(unsigned n) {
    return sizeof(struct cshim_mmsg_batch_head) + (size_t)n * (sizeof(struct mmsghdr) + sizeof(struct iovec));
}

static struct mmsghdr *mmsg_hdrs(void *hdrs) {
    return (struct mmsghdr *)((char *)hdrs + sizeof(struct cshim_mmsg_batch_head));
}

void cshim_mmsg_prepare(void *hdrs, unsigned n, void *buf, size_t slot, void *ctl, size_t ctlspace) {
    struct cshim_mmsg_batch_head *t = hdrs;
    t->ctlspace = ctlspace;
    struct mmsghdr *h = mmsg_hdrs(hdrs);
    struct iovec *iov = (struct iovec *)(h + n);
    memset(h, 0, (size_t)n * sizeof *h);
    for (unsigned i = 0; i < n; i++) {
        iov[i].iov_base = (char *)buf + (size_t)i * slot;
        iov[i].iov_len = slot;
        h[i].msg_hdr.msg_iov = &iov[i];
        h[i].msg_hdr.msg_iovlen = 1;
        h[i].msg_hdr.msg_control = (char *)ctl + (size_t)i * ctlspace;
    }
}

int cshim_recvmmsg(int fd, void *hdrs, unsigned n, int flags) {
    struct cshim_mmsg_batch_head *t = hdrs;
    struct mmsghdr *h = mmsg_hdrs(hdrs);
    for (unsigned i = 0; i < n; i++) {
        h[i].msg_hdr.msg_controllen = t->ctlspace;
        h[i].msg_hdr.msg_flags = 0;
        h[i].msg_len = 0;
    }
    return (int)sys_result(syscall(SYS_recvmmsg, fd, h, n, flags, NULL));
}

struct msghdr *cshim_mmsg_msg(void *hdrs, unsigned i) { return &mmsg_hdrs(hdrs)[i].msg_hdr; }

unsigned cshim_mmsg_len(void *hdrs, unsigned i) { return mmsg_hdrs(hdrs)[i].msg_len; }

int cshim_cmsg_creds(struct msghdr *msg, int *pid, unsigned *uid, unsigned *gid) {
    if (msg->msg_controllen == 0) return 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_CREDENTIALS ||
            c->cmsg_len < CMSG_LEN(sizeof(struct ucred))) continue;
        struct ucred u;
        memcpy(&u, CMSG_DATA(c), sizeof u);
        *pid = u.pid; *uid = u.uid; *gid = u.gid;
        return 1;
    }
    return 0;
}

static int fill_sun(struct sockaddr_un *sun, const char *path) {
    memset(sun, 0, sizeof *sun);
    sun->sun_family = AF_UNIX;
    size_t l = strlen(path);
    if (l == 0 || l >= sizeof sun->sun_path) { errno = ENAMETOOLONG; return -1; }
    memcpy(sun->sun_path, path, l + 1);
    return 0;
}

int cshim_bind_unix(int fd, const char *path) {
    struct sockaddr_un sun;
    if (fill_sun(&sun, path) != 0) return -1;
    return bind(fd, (struct sockaddr *)&sun, sizeof sun);
}

int cshim_connect_unix(int fd, const char *path) {
    struct sockaddr_un sun;
    if (fill_sun(&sun, path) != 0) return -1;
    return connect(fd, (struct sockaddr *)&sun, sizeof sun);
}

int cshim_fd_identity(int fd, uint64_t *dev, uint64_t *ino) {
    struct stat st;
    if (fstat(fd, &st) != 0) return -1;
    *dev = (uint64_t)st.st_dev;
    *ino = (uint64_t)st.st_ino;
    return 0;
}

int cshim_tap_open(const char *name, int extra_flags, char *name_out) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = (short)(IFF_TAP | IFF_NO_PI | extra_flags);
    if (name && name[0]) {
        if (strlen(name) >= IFNAMSIZ) { close(fd); errno = ENAMETOOLONG; return -1; }
        strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    }
    if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    if (name_out) {
        memcpy(name_out, ifr.ifr_name, IFNAMSIZ);
        name_out[IFNAMSIZ - 1] = 0;
    }
    return fd;
}

int cshim_iff_vnet_hdr(void) { return IFF_VNET_HDR; }

int cshim_tap_set_vnet_hdr_size(int fd, int size) { return ioctl(fd, TUNSETVNETHDRSZ, &size); }

int cshim_tap_set_offload(int fd, unsigned int flags) { return ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags); }

int cshim_if_nametoindex(const char *name) { return (int)if_nametoindex(name); }

int cshim_set_keepcaps(int on) { return prctl(PR_SET_KEEPCAPS, on ? 1 : 0, 0, 0, 0); }

int cshim_setns_net(int fd) { return setns(fd, CLONE_NEWNET); }

int cshim_sd_notify(const char *state) {
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !path[0]) return 0;
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    size_t l = strlen(path);
    if (l >= sizeof sun.sun_path) { errno = ENAMETOOLONG; return -1; }
    memcpy(sun.sun_path, path, l);
    if (sun.sun_path[0] == '@') sun.sun_path[0] = 0; // abstract namespace
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    ssize_t n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sun,
                       (socklen_t)(offsetof(struct sockaddr_un, sun_path) + l));
    int e = errno;
    close(fd);
    if (n < 0) { errno = e; return -1; }
    return 1;
}

int cshim_count_open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; // the DIR's own fd
}

int cshim_unix_unnamed(int fd) {
    struct sockaddr_un a;
    socklen_t len = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &len) != 0 || len != sizeof(sa_family_t) ||
        a.sun_family != AF_UNIX) return 0;
    len = sizeof a;
    if (getpeername(fd, (struct sockaddr *)&a, &len) != 0 || len != sizeof(sa_family_t)) return 0;
    return 1;
}

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

int cshim_peer_pidfd(int fd) {
    int pidfd = -1;
    socklen_t len = sizeof pidfd;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) != 0) return -1;
    return pidfd;
}

int cshim_pidfd_alive(int pidfd) {
    /* Signal 0: only the existence check. ESRCH once the process has exited. */
    return syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) == 0;
}

int cshim_pidfd_open(int pid) {
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    return fd >= 0 ? fd : -errno;
}

int cshim_pidfd_exited(int pidfd) {
    /* A pidfd polls readable once its process has exited. */
    struct pollfd p = { .fd = pidfd, .events = POLLIN };
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP)) ? 1 : 0;
}

/* Returns the free pages of glibc's malloc arenas to the kernel (malloc_trim(3)). */
int cshim_malloc_trim(void) { return malloc_trim(0); }

long cshim_getrandom(void *buf, unsigned long len)
{
    ssize_t r;
    do {
        r = getrandom(buf, len, 0);
    } while (r < 0 && errno == EINTR);
    return (long)r;
}
