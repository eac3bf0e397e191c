// cshims.h - C shims for the Linux calls Swift cannot import directly.
//
// Why this exists: sys/epoll.h, sys/eventfd.h, sys/timerfd.h, sys/signalfd.h are not part of
// the Glibc module; CMSG_* are macros; TUNSETIFF is an _IOW macro; struct ucred, accept4 and
// setns need _GNU_SOURCE, which a Swift target cannot switch on for the Glibc module. Every
// function here returns -1 and leaves errno set on failure, exactly like libc.
#ifndef ZTAP_CSHIMS_H
#define ZTAP_CSHIMS_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/signalfd.h>
#include <signal.h>

// epoll / eventfd / timerfd / signalfd: thin out-of-line wrappers so the constants come with them.
int cshim_epoll_create(void);
int cshim_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);
int cshim_epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout_ms);
int cshim_eventfd(void);
int cshim_timerfd_create(void);
/// Arms a one-shot monotonic timer `ns` nanoseconds from now; 0 disarms.
int cshim_timerfd_arm_relative(int fd, uint64_t ns);
/// Blocks SIGTERM/SIGINT/SIGHUP/SIGPIPE... in the calling thread (inherited by threads it
/// creates) and returns a signalfd for SIGTERM, SIGINT, SIGHUP. SIGPIPE is ignored.
int cshim_signalfd_standard(void);
/// Reads one signal from a signalfd; returns the signal number, 0 on EAGAIN, -1 on error.
int cshim_signalfd_read(int fd);

// The data path's calls made directly (syscall(2)): libc's wrappers of these are cancellation
// points, which in a threaded process enable and disable asynchronous cancellation around every
// call (~2% of ztapd's CPU under load); ztapd never cancels a thread. Each returns the result or
// -errno.
long cshim_sys_read(int fd, void *buf, size_t count);
long cshim_sys_write(int fd, const void *buf, size_t count);
long cshim_sys_writev(int fd, const struct iovec *iov, int count);
long cshim_sys_recvmsg(int fd, struct msghdr *msg, int flags);
long cshim_sys_sendmsg(int fd, const struct msghdr *msg, int flags);

// Sockets.
int cshim_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
int cshim_socket_cloexec(int domain, int type, int protocol);
int cshim_socketpair_cloexec(int domain, int type, int sv[2]);
/// SO_PEERCRED of a connected AF_UNIX socket.
int cshim_peercred(int fd, pid_t *pid, uid_t *uid, gid_t *gid);
/// Control-buffer bytes for `nfds` SCM_RIGHTS fds (CMSG_SPACE).
size_t cshim_cmsg_rights_space(int nfds);
/// Writes one SCM_RIGHTS message for `fds` into `control` (`space` bytes); returns msg_controllen.
size_t cshim_cmsg_put_rights(void *control, size_t space, const int *fds, int nfds);
/// Collects the SCM_RIGHTS fds of a received message into `fds` (at most `maxfds`, count in
/// *nfds); extra fds are closed. Returns 1 if any were dropped.
int cshim_cmsg_take_rights(struct msghdr *msg, int *fds, int maxfds, int *nfds);
/// sendmsg of one buffer with SCM_CREDENTIALS {pid, uid, gid} and `nfds` SCM_RIGHTS, as the
/// library sends a session's requests (tests speak it with this). Returns sendmsg's result.
long cshim_send_with_creds(int fd, const void *buf, size_t len, int pid, unsigned uid, unsigned gid,
                           const int *fds, int nfds);
/// Room for one SCM_CREDENTIALS cmsg (struct ucred).
size_t cshim_cmsg_creds_space(void);
/// The SCM_CREDENTIALS of a received message: 1 with *pid/*uid/*gid set, else 0.
int cshim_cmsg_creds(struct msghdr *msg, int *pid, unsigned *uid, unsigned *gid);
/// Batched receive (recvmmsg): `hdrs` holds `n` message headers made by cshim_mmsg_prepare,
/// message i landing in buf + i*slot (at most `slot` bytes) with its control in ctl + i*ctlspace.
/// A batch shorter than `n` from a non-blocking call means the queue was empty after it, so no
/// read has to fail with EAGAIN to say so.
size_t cshim_mmsg_space(unsigned n);
void cshim_mmsg_prepare(void *hdrs, unsigned n, void *buf, size_t slot, void *ctl, size_t ctlspace);
/// recvmmsg(fd, hdrs, n, flags) through syscall(2), as the cshim_sys_* calls (the count or
/// -errno); resets each header's control length and flags first.
int cshim_recvmmsg(int fd, void *hdrs, unsigned n, int flags);
/// Message i of a batch: its header (for the cmsg shims) and its length.
struct msghdr *cshim_mmsg_msg(void *hdrs, unsigned i);
unsigned cshim_mmsg_len(void *hdrs, unsigned i);
/// Turns SO_LINGER off on an fd that is not an AF_UNIX socket (before closing a client's fd).
void cshim_disable_linger_unless_unix(int fd);
/// Binds an AF_UNIX socket to `path` (must fit sun_path).
int cshim_bind_unix(int fd, const char *path);
int cshim_connect_unix(int fd, const char *path);
/// Identity of an fd for lookups that survive dup/fork: st_dev and st_ino.
int cshim_fd_identity(int fd, uint64_t *dev, uint64_t *ino);

// TAP.
/// Opens /dev/net/tun in TAP mode (IFF_TAP|IFF_NO_PI|extra_flags) as `name` (may be empty for a
/// kernel-chosen name); the final name is written back to `name_out` (IFNAMSIZ bytes).
int cshim_tap_open(const char *name, int extra_flags, char *name_out);
/// IFF_VNET_HDR, for `extra_flags` (each frame read or written starts with a virtio_net_hdr).
int cshim_iff_vnet_hdr(void);
/// TUNSETVNETHDRSZ: the virtio header length of a TAP opened with IFF_VNET_HDR. 0 or -1/errno.
int cshim_tap_set_vnet_hdr_size(int fd, int size);
/// TUNSETOFFLOAD with `flags` (CSHIM_TUN_F_*): which offloaded frames the reader takes. The
/// kernel refuses the whole set (EINVAL) when it knows one flag not. 0 or -1/errno.
int cshim_tap_set_offload(int fd, unsigned int flags);
/// TUN_F_* (linux/if_tun.h; USO4/USO6 are newer than some installed headers: Linux 6.2).
#define CSHIM_TUN_F_CSUM 0x01
#define CSHIM_TUN_F_TSO4 0x02
#define CSHIM_TUN_F_TSO6 0x04
#define CSHIM_TUN_F_TSO_ECN 0x08
#define CSHIM_TUN_F_USO4 0x20
#define CSHIM_TUN_F_USO6 0x40
int cshim_if_nametoindex(const char *name);
/* getrandom(2) into @buf (flags 0), retried on EINTR: bytes written, or -1. */
long cshim_getrandom(void *buf, unsigned long len);

// Process / capabilities helpers.
int cshim_set_keepcaps(int on);
int cshim_setns_net(int fd);
/// sd_notify(3) subset: sends `state` to $NOTIFY_SOCKET if set. Returns 1 sent, 0 no socket, -1 error.
int cshim_sd_notify(const char *state);
/// Number of open fds of this process (counts /proc/self/fd entries).
int cshim_count_open_fds(void);

// Who is on the other end (trust checks on fds a client hands over).
/// 1 if `fd` is an AF_UNIX socket with no name on either side (a socketpair end), 0 otherwise.
int cshim_unix_unnamed(int fd);
/// A pidfd for the peer process of a connected AF_UNIX socket (SO_PEERPIDFD, Linux 6.5+),
/// or -1 with errno (ENOPROTOOPT on older kernels).
int cshim_peer_pidfd(int fd);
/* malloc_trim(0): give the free pages of glibc's arenas back to the kernel. */
int cshim_malloc_trim(void);
/// 1 while the process `pidfd` names is alive (so its pid still means that process), else 0.
int cshim_pidfd_alive(int pidfd);

/// pidfd_open(2) for `pid` (no flags): the fd, or -errno (-ESRCH: no such process).
int cshim_pidfd_open(int pid);

/// 1 once the process behind `pidfd` has exited (the pidfd polls readable), else 0.
int cshim_pidfd_exited(int pidfd);

#endif
