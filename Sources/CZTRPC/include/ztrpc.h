/* SPDX-License-Identifier: MIT */
/*
 * ztrpc.h - wire format between libztintercept.so (C, in the app) and ztapd (Swift).
 *
 * DOC: Theory of Operation
 *
 * This header is the single definition of the protocol. The intercept library includes it
 * directly; Swift imports it as the CZTRPC module. Changes are additive only: new ops, new flag
 * bits, new fields appended to a body (the receiver must accept a body *longer* than it knows
 * and treat missing trailing bytes as zero). Incompatible changes bump ZTRPC_VERSION.
 *
 * Encoding. Every struct here is a fixed-size, naturally aligned struct with all padding
 * explicit (no compiler padding, no packed attribute), checked by _Static_assert below, so a
 * Swift mirror or a Python struct.pack("<...") format is exact. Integers are little-endian
 * (both sides run on the same Linux host). The two exceptions are ztrpc_addr.addr and
 * ztrpc_addr.port: they hold the bytes of sin6_addr / sin6_port, i.e. network byte order. Errno
 * values are Linux errno numbers. Reserved/pad fields are sent as zero and ignored on receipt.
 *
 * Addresses (version 2). A ztrpc_addr holds an IPv6 address; an IPv4 address travels in its
 * v4-mapped form ::ffff:a.b.c.d (RFC 4291 §2.5.5.2), so 10.0.0.1:80 is addr bytes
 * 00 .. 00 ff ff 0a 00 00 01, port bytes 00 50. One field thus serves AF_INET and AF_INET6
 * sockets alike, and the IPv4 peers of a dual-stack AF_INET6 socket keep their IPv4 identity
 * (the stack runs them over IPv4). All zero means "none" (unbound, not connected) and, as a bind
 * address, ::; an AF_INET socket's 0.0.0.0 is ::ffff:0.0.0.0. Which sockaddr the app sees
 * (sockaddr_in, or sockaddr_in6 with flowinfo 0) follows its socket's family
 * (ztrpc_sock_req.family, echoed in ztrpc_sockinfo.family), never the address: an AF_INET6
 * socket sees an IPv4 peer as ::ffff:a.b.c.d, like on Linux.
 *
 * Channels. There are three kinds of AF_UNIX sockets:
 *
 *  1. The RPC channel: a SOCK_SEQPACKET socket the library connects to $ZTAP_RPC (the network's
 *     RUN_DIR/NAME.sock). One request message (header + body, with SCM_RIGHTS fds) goes up;
 *     exactly one reply message (header + body, never fds) comes back; without ZTRPC_OP_KEEP
 *     the library then closes the connection. ztapd authorizes by SO_PEERCRED. A blocking
 *     CONNECT, or GETSOCKOPT(SO_ERROR) on a connect still in progress, keeps the RPC connection
 *     open until the outcome is known; if the app gives up (signal, timeout) it just closes the
 *     RPC connection and ztapd must not treat that as an error on the socket itself.
 *     A request with ZTRPC_OP_KEEP makes its connection a session instead: after the reply it
 *     carries the process's next request (one at a time), so a program pays the connection once
 *     rather than per request. Every message on a session carries SCM_CREDENTIALS (pid, euid,
 *     egid of the sender at that moment, checked by the kernel) and ztapd authorizes each request
 *     by those, not by SO_PEERCRED: a process that drops privileges after opening a session is
 *     judged by its new ids. ztapd closes a session that idles for 10 s, a message without
 *     credentials, or one sent while a reply is still due.
 *
 *  2. The data socket of an intercepted socket: one end of a socketpair the *library* creates.
 *     The library dup3()s its end (the "app end") onto the app's fd number, ztapd keeps the other
 *     end (the "daemon end").
 *       - TCP: SOCK_STREAM pair. Only application bytes flow (no in-band signalling).
 *         read/write/poll/epoll/sendfile/splice stay native. The app's shutdown(SHUT_WR) is a
 *         native shutdown of the app end: ztapd reads EOF (POLLIN|POLLRDHUP, no POLLHUP) and sends
 *         a FIN. A full close (last reference gone, including process death) gives ztapd POLLHUP:
 *         close the TCP connection (RST if SO_LINGER {1, 0} was set). There is no CLOSE or
 *         SHUTDOWN op for that reason. When the TCP connection ends, ztapd shuts down / closes
 *         its end (app reads EOF, writes get EPIPE) and keeps the error for SO_ERROR.
 *       - UDP: SOCK_SEQPACKET pair. Each message is struct ztrpc_dgram + payload, both
 *         directions: app->daemon the header names the destination (addr 0 and port 0 = "the
 *         connected peer"), daemon->app it names the source. This is framing on a message socket,
 *         not data scanning; the library adds/strips it in sendto/sendmsg/send/write and
 *         recvfrom/recvmsg/recv/read. The app's shutdown(SHUT_RD) on a UDP socket is a native
 *         SHUT_RD of the app end (ztapd's writes fail with EPIPE: drop datagrams for it, keep the
 *         socket); SHUT_WR is handled in the library. POLLHUP = the app closed it.
 *
 *  3. The accept channel of a listening TCP socket: a SOCK_SEQPACKET pair the library creates at
 *     listen() time (LISTEN op); its app end replaces the app's fd. For every new connection
 *     ztapd creates a SOCK_STREAM socketpair and sends one struct ztrpc_accept_msg on the accept
 *     channel with SCM_RIGHTS carrying exactly one fd: the new connection's app end (ztapd keys
 *     the new connection by that fd's inode before sending it, then closes its copy). The
 *     listening fd is therefore readable exactly when a connection is pending, so
 *     poll/select/epoll on listeners work natively. Closing the listener = POLLHUP on ztapd's end:
 *     stop listening, reset connections still queued. A listener is never writable on Linux, so
 *     the library plugs the channel's app end (minimal SO_SNDBUF, filled with 1-byte messages) and
 *     ztapd never reads the channel: it only watches it for the hang-up.
 *
 * Identity. ztapd identifies an intercepted socket by the (st_dev, st_ino) of its *app end*
 * (fstat on an fd received with SCM_RIGHTS), never by fd number or pid, so dup/dup2/fork/exec
 * keep working and holding the fd is the permission to control it. ztapd closes every fd it
 * receives on the RPC channel once it has taken what it needs (it must never keep an app end
 * open: that would hide the app's close). Inode numbers can be reused once a socket is freed:
 * before trusting a match, ztapd should make sure it has processed pending hangups on the
 * matching daemon end.
 *
 * References. Each TCP socket also has a secret: 64 random bits ztapd gives with its sockinfo
 * (CONNECT, BIND, GETNAME replies) and its accept message, never 0. A one-way SETSOCKOPT
 * (ZTRPC_OP_NOREPLY) may then name the socket by a struct ztrpc_sockref (the app end's identity
 * as the library saw it, plus that secret) instead of passing its fd: only a process that was
 * given the socket learns the secret, so knowing it stands for holding the fd, and the message
 * costs neither side an fd. A reference that names no live socket, or the wrong secret, is
 * dropped silently like any one-way message ztapd cannot apply.
 *
 * SCM_RIGHTS layout of a request (fds[i] in order, in one cmsg):
 *   - op with ZTRPC_F_NEW (CONNECT, BIND, UDP_OPEN on a socket ztapd does not know yet):
 *       fds[0] = app end of the new data socketpair (the identity; not yet dup3()ed),
 *       fds[1] = daemon end of the new data socketpair (ztapd keeps it).
 *   - LISTEN:
 *       fds[0] = the app's current socket (identity of the bound TCP socket),
 *       fds[1] = daemon end of the new accept channel (ztapd keeps it),
 *       fds[2] = app end of the new accept channel: the socket's new identity. ztapd closes the
 *                old data socket's daemon end; the library then dup3()s fds[2] onto the app fd.
 *   - RENEW: as LISTEN, with a SOCK_STREAM pair (fds[1] daemon end, fds[2] the new app end).
 *   - every other op: fds[0] = the app's socket fd. No fds at all is an error (EBADF).
 * Replies never carry fds. On a failed reply the library closes the socketpair it created and the
 * app's fd stays what it was (a kernel socket), so ztapd must drop any state it created for it.
 *
 * Which sockets are intercepted is decided in the library (ZTAP_ROUTES, ZTAP_DEFAULT_ROUTE);
 * ztapd answers ENETUNREACH for a CONNECT destination or EADDRNOTAVAIL for a BIND address that
 * it cannot serve.
 */
#ifndef ZTAP_ZTRPC_H
#define ZTAP_ZTRPC_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Constants carry the type of the field they go in (Swift imports them as UInt16/UInt8/UInt32).
 * "ZTRP" as the first four bytes on the wire (little-endian u32). */
#define ZTRPC_MAGIC 0x5052545Au
#define ZTRPC_VERSION ((uint16_t)2)

/* Upper bound for any message on any channel (request, reply, accept, UDP header excluded). */
#define ZTRPC_MAX_MSG 640
/* Most option bytes a GETSOCKOPT reply carries (struct tcp_info is 280 bytes on Linux 6.18). */
#define ZTRPC_MAX_OPTLEN 384
/* Most fds any request carries (LISTEN). */
#define ZTRPC_MAX_FDS 3

/*
 * Ops (ztrpc_req_hdr.op, echoed in ztrpc_rep_hdr.op). Body types are given per op;
 * "-> X" is the reply body on success (and for CONNECT also with EINPROGRESS).
 */
/* CONNECT  ztrpc_sock_req  -> ztrpc_sockinfo.
 *   TCP: start the handshake. Without ZTRPC_F_NONBLOCK the reply comes when the outcome is known:
 *   result 0, or -1 with ECONNREFUSED/ETIMEDOUT/EHOSTUNREACH/ENETUNREACH. With ZTRPC_F_NONBLOCK
 *   ztapd answers at once, like Linux: an error it knows now (ENETUNREACH, EADDRNOTAVAIL, ...)
 *   or -1/EINPROGRESS (sockinfo with state CONNECTING, local address already assigned).
 *   The plug: a connecting socket must not be writable until the outcome is known, but a
 *   socketpair end is writable at once. So for every TCP CONNECT that starts a handshake the
 *   library shrinks the app end's SO_SNDBUF to the minimum and writes `filler` bytes into it until
 *   EAGAIN, and sends `sndbuf` (half the app end's SO_SNDBUF before, as setsockopt takes it) with
 *   fds[0] = the app end. ztapd keeps that app end open until the outcome and then
 *   restores its SO_SNDBUF (which wakes writers and pollers). On success it reads and drops
 *   exactly `filler` bytes first, so the app's own bytes follow untouched; on failure it closes
 *   its end with the filler unread, so the app end shows POLLERR|POLLHUP|POLLOUT as Linux shows
 *   for a failed connect (the error itself comes from GETSOCKOPT(SO_ERROR), which never waits),
 *   and it does so before restoring the buffer: the app end is never writable without the
 *   hang-up, which lets the library answer SO_ERROR 0 itself while the end shows none.
 *   On an existing socket, like Linux (whose socket is "connected" once a connect() returned 0 or
 *   it was accepted): EALREADY while a connect is pending; once it succeeded, 0 for the first
 *   repeated CONNECT and EISCONN afterwards; once the connection is over and the socket was never
 *   reported connected (a non-blocking or interrupted connect), the pending error (cleared, as
 *   SO_ERROR would) or else ECONNABORTED, and the socket is unconnected again (it keeps its
 *   options and an explicit bind); a blocking CONNECT's failure leaves it unconnected at once.
 *   An unconnected socket whose data socketpair ztapd closed at a failed connect cannot carry a
 *   new connection: CONNECT answers -1 / ZTRPC_E_RENEW (never an app's errno), and the library
 *   sends RENEW with a new pair and then the CONNECT again. An all-zero addr and port 0 (the
 *   app's connect(AF_UNSPEC)) on a TCP socket: abort the connection (RST).
 *   The library may stop waiting for a blocking CONNECT's reply (signal: EINTR; SO_SNDTIMEO:
 *   EINPROGRESS) and close the RPC connection; the connect then goes on, and its outcome stays
 *   pending for GETSOCKOPT(SO_ERROR).
 *   UDP: set (or with an all-zero addr and port 0, dissolve) the default peer; implicit bind if
 *   unbound. An AF_INET6 socket reaches IPv4 destinations given as ::ffff:a.b.c.d (over the
 *   stack's IPv4) unless it is IPV6_V6ONLY (then ENETUNREACH, like Linux).
 *   Data written before the handshake completes waits in the socketpair; ztapd reads it after. */
#define ZTRPC_OP_CONNECT ((uint16_t)1)
/* BIND     ztrpc_sock_req  -> ztrpc_sockinfo (local address with the assigned port if port 0).
 *   EADDRINUSE unless reusable (SO_REUSEADDR/SO_REUSEPORT as in Linux), EADDRNOTAVAIL for an
 *   address not on this network. ::ffff:0.0.0.0 = every IPv4 address of the network; all zero
 *   (::, an AF_INET6 socket's wildcard) = every address of both families, or with
 *   ZTRPC_F_V6ONLY only the IPv6 ones (Linux's dual stack). */
#define ZTRPC_OP_BIND ((uint16_t)2)
/* LISTEN   ztrpc_listen_req -> no body. Socket must be bound TCP (else EINVAL / EOPNOTSUPP).
 *   Calling it again on a listener only updates the backlog (fds[1], fds[2] absent then). */
#define ZTRPC_OP_LISTEN ((uint16_t)3)
/* GETSOCKOPT ztrpc_sockopt -> ztrpc_sockopt (value filled, optlen set). The request's optlen is
 *   the app's buffer size (at most ZTRPC_MAX_OPTLEN); the reply's optlen is the option's full size
 *   (the library copies what fits, like the kernel) and the value runs past the struct's 16 bytes
 *   when it is longer: the reply body is 16 + max(16, optlen) bytes.
 *   SOL_SOCKET/SO_ERROR returns the pending error in value (as int) and clears it, like Linux;
 *   while a connect is pending that is 0 (it never waits). Every other option answers as Linux
 *   does, the optlen it would report included (a short buffer gets what the kernel copies);
 *   unknown names ENOPROTOOPT. */
#define ZTRPC_OP_GETSOCKOPT ((uint16_t)4)
/* SETSOCKOPT ztrpc_sockopt -> no body. optlen is the app's optlen; when it is longer than 16 the
 *   value runs past the struct like a GETSOCKOPT reply's (at most ZTRPC_MAX_OPTLEN bytes of it
 *   travel: the body is 16 + max(16, min(optlen, ZTRPC_MAX_OPTLEN)) bytes). ztapd answers as
 *   Linux does (ENOPROTOOPT for unknown names, EINVAL for a short optlen, EPERM/EACCES without
 *   the capability, judged by the requesting process's CapEff).
 *   Never sent (answered or applied in the library): SO_TYPE, SO_DOMAIN, SO_PROTOCOL,
 *   SO_ACCEPTCONN, and SO_RCVTIMEO/SO_SNDTIMEO/SO_RCVLOWAT/SO_SNDLOWAT (and SO_PEEK_OFF on TCP),
 *   which act on the app's fd natively. Options set before interception arrive with the
 *   creating request instead (ztrpc_sock_req.opts and the ztrpc_optlist that may follow it). */
#define ZTRPC_OP_SETSOCKOPT ((uint16_t)5)
/* ZTRPC_OP_NOREPLY on a SETSOCKOPT's op: ztapd applies it and closes the connection without a
 *   reply; the library does not wait. Only for IPPROTO_TCP TCP_NODELAY, TCP_CORK and
 *   TCP_QUICKACK with optlen >= sizeof(int) on a TCP socket: Linux accepts every such call, so
 *   the library already knows the answer (0), and apps toggle them per response (nginx's
 *   tcp_nopush: two per request). ztapd reads what the app wrote before applying the option, so
 *   the bytes the app wrote first go out under the old setting, as they would on Linux. Any other
 *   request with the bit set is dropped unanswered. Such a request may come without fds when its
 *   optlen is at most 16 and a struct ztrpc_sockref follows the ztrpc_sockopt (body 56 bytes):
 *   it names the socket (see "References"). */
#define ZTRPC_OP_NOREPLY ((uint16_t)0x8000)
/* ZTRPC_OP_KEEP on any answered op: the connection stays open for further requests after the
 *   reply (a session; see "Channels" above). The reply's op is the op without the bit. */
#define ZTRPC_OP_KEEP ((uint16_t)0x4000)
/* GETNAME  no body -> ztrpc_sockinfo. Also serves as "query": the library sends it for an
 *   AF_UNIX fd it does not know (after exec, or an fd received over SCM_RIGHTS). A socket that
 *   is not a ztapd socket: -1 / ENOTSOCK. */
#define ZTRPC_OP_GETNAME ((uint16_t)6)
/* UDP_OPEN ztrpc_sock_req (addr ignored, proto must be UDP) -> ztrpc_sockinfo.
 *   Implicit bind to the wildcard of the socket's family (0.0.0.0, or :: with the rules of
 *   BIND) on an ephemeral port, for sendto()/sendmsg() on an unbound UDP socket. */
#define ZTRPC_OP_UDP_OPEN ((uint16_t)7)
/* CHANNEL  no body, fds[0] = the read end of a pipe -> result 0. The pipe becomes the process's
 *   one-way channel (see "Channels" 1. and ZTRPC_OP_NOREPLY): the library writes each one-way
 *   SETSOCKOPT by reference (header + ztrpc_sockopt + ztrpc_sockref, never fds) with one write,
 *   so messages never interleave (at most PIPE_BUF), and ztapd reads them in order like those of
 *   a SEQPACKET channel, judged by the ids of the process that registered the pipe. A pipe costs
 *   either side no socket buffer per message: about a third of a SEQPACKET message's cost
 *   (bench/, BENCHMARKS.md). The library writes with pwritev2(RWF_NOSIGNAL) so that a channel
 *   ztapd closed (a malformed message, a restart) never raises SIGPIPE; where the kernel lacks
 *   the flag (before Linux 6.18: EOPNOTSUPP) it keeps the SEQPACKET channel. -1 / EBADF: fds[0]
 *   is not the read end of a pipe; EMFILE: the user has too many channels. */
#define ZTRPC_OP_CHANNEL ((uint16_t)8)
/* RENEW    no body -> ztrpc_sockinfo. A TCP socket left unconnected by a failed connect, whose
 *   data socketpair ztapd closed (CONNECT answered ZTRPC_E_RENEW), gets a new one:
 *   fds[0] = the app's socket, fds[1] = daemon end of a new SOCK_STREAM socketpair (ztapd keeps
 *   it), fds[2] = its app end, the socket's new identity (as LISTEN's accept channel). Options,
 *   binding and secret stay; on success the library dup3()s fds[2] onto the app's fd. EINVAL:
 *   the socket is not such a socket (its pair is alive, or it is connected or listening). */
#define ZTRPC_OP_RENEW ((uint16_t)9)
/* ztrpc_rep_hdr.err of a CONNECT that needs a RENEW first: outside errno's range. */
#define ZTRPC_E_RENEW ((int32_t)0x7a00)

/* ztapd's own option level for SETSOCKOPT. ZTRPC_ZT_SHUTDOWN (value: int, ZTRPC_SHUT_* bits,
 * added to what was there): the app's shutdown() of a UDP socket, which Linux only remembers
 * (sends then fail with EPIPE, reads return 0). It is kept per socket in ztapd, so copies made
 * by dup, fork or exec see it too; GETNAME reports it in ztrpc_sockinfo.shut. On a TCP socket
 * (whose shutdown is native) only ZTRPC_SHUT_RD counts: sent just before a native SHUT_RD or
 * SHUT_RDWR, it tells ztapd that the hang-up to come may be a shutdown rather than a close. */
#define ZTRPC_SOL_ZTAP 0x7a74
#define ZTRPC_ZT_SHUTDOWN 1
#define ZTRPC_SHUT_RD ((uint16_t)1)
#define ZTRPC_SHUT_WR ((uint16_t)2)

/* Request flags (ztrpc_sock_req.flags). */
#define ZTRPC_F_NONBLOCK ((uint16_t)0x0001) /* CONNECT: answer at once, EINPROGRESS if pending (filler) */
#define ZTRPC_F_NEW ((uint16_t)0x0002)      /* fds[1] is the daemon end of a new data socketpair */
/* Sent by ztctl run's seccomp supervisor (ztap-seccomp) on behalf of a traced process, whose pid
 * is in ztrpc_sock_req.pid: shown by `ztctl connections`, never used to authorize (the RPC
 * peer's credentials are the target's: see Sources/ztseccomp/zts_target.c). */
#define ZTRPC_F_SECCOMP ((uint16_t)0x0004)
/* An AF_INET6 socket with IPV6_V6ONLY set (the library reads it from the kernel socket it
 * replaces; after bind Linux refuses to change it, so it is fixed for the socket's life). */
#define ZTRPC_F_V6ONLY ((uint16_t)0x0008)

/* ztrpc_sockinfo.state */
#define ZTRPC_STATE_UNBOUND ((uint8_t)0)
#define ZTRPC_STATE_BOUND ((uint8_t)1)
#define ZTRPC_STATE_CONNECTING ((uint8_t)2)
#define ZTRPC_STATE_CONNECTED ((uint8_t)3) /* UDP: has a default peer */
#define ZTRPC_STATE_LISTENING ((uint8_t)4)
#define ZTRPC_STATE_CLOSED ((uint8_t)5) /* TCP connection over (error in SO_ERROR, or orderly close) */

/* ztrpc_sockopts.mask bits: which fields the app set before the socket was intercepted. */
#define ZTRPC_OPT_REUSEADDR 0x0001u
#define ZTRPC_OPT_REUSEPORT 0x0002u
#define ZTRPC_OPT_KEEPALIVE 0x0004u
#define ZTRPC_OPT_NODELAY 0x0008u
#define ZTRPC_OPT_LINGER 0x0010u
#define ZTRPC_OPT_RCVBUF 0x0020u
#define ZTRPC_OPT_SNDBUF 0x0040u
#define ZTRPC_OPT_KEEPIDLE 0x0080u
#define ZTRPC_OPT_KEEPINTVL 0x0100u
#define ZTRPC_OPT_KEEPCNT 0x0200u

/* A socket address of either family (see "Addresses" above). 24 bytes. */
struct ztrpc_addr {
    uint8_t addr[16];  /* sin6_addr; IPv4 as ::ffff:a.b.c.d */
    uint16_t port;     /* sin6_port, network order */
    uint16_t reserved; /* 0 (ztrpc_dgram: error marker) */
    uint32_t scope_id; /* sin6_scope_id of a link-local address, else 0 */
};

/* Every request starts with this. 16 bytes. */
struct ztrpc_req_hdr {
    uint32_t magic;   /* ZTRPC_MAGIC */
    uint16_t version; /* ZTRPC_VERSION */
    uint16_t op;      /* ZTRPC_OP_* */
    uint32_t id;      /* chosen by the library, echoed in the reply */
    uint32_t len;     /* body length in bytes, following this header */
};

/* Every reply starts with this. 24 bytes. If the request's magic/version is wrong ztapd replies
 * with its own version, result -1, errno EPROTO; unknown op: -1 / EOPNOTSUPP. */
struct ztrpc_rep_hdr {
    uint32_t magic;   /* ZTRPC_MAGIC */
    uint16_t version; /* ZTRPC_VERSION */
    uint16_t op;      /* the request's op */
    uint32_t id;      /* the request's id */
    int32_t result;   /* 0 on success, -1 on failure (as the libc call would return) */
    int32_t err;      /* errno when result is -1 (also EINPROGRESS), else 0 */
    uint32_t len;     /* body length in bytes, following this header */
};

/* Socket options the app set on the kernel socket before interception; carried by requests with
 * ZTRPC_F_NEW so ztapd creates the stack socket with them. 40 bytes. */
struct ztrpc_sockopts {
    uint32_t mask;     /* ZTRPC_OPT_* : which of the fields below are set */
    uint32_t bools;    /* ZTRPC_OPT_REUSEADDR|REUSEPORT|KEEPALIVE|NODELAY bits: value 1 if set */
    int32_t linger_onoff;
    int32_t linger_secs;
    int32_t rcvbuf;    /* as passed to setsockopt (not doubled) */
    int32_t sndbuf;
    int32_t keepidle;  /* seconds */
    int32_t keepintvl; /* seconds */
    int32_t keepcnt;
    uint32_t reserved;
};

/* CONNECT, BIND, UDP_OPEN. 80 bytes. With ZTRPC_F_NEW it may be followed by a ztrpc_optlist and
 * `count` ztrpc_sockopt records (value at most 16 bytes each): options the app set on its kernel
 * socket beyond the fields of ztrpc_sockopts, applied in order as if by SETSOCKOPT before the
 * socket is created (so the SYN already carries IP_TTL, TCP_MAXSEG, ...). A library with more
 * than ZTRPC_MAX_PREOPTS of them sends the rest as SETSOCKOPT requests once the socket exists. */
struct ztrpc_sock_req {
    struct ztrpc_addr addr; /* CONNECT: destination; BIND: local address; UDP_OPEN: ignored */
    uint16_t flags;         /* ZTRPC_F_* */
    uint8_t proto;          /* IPPROTO_TCP (6) or IPPROTO_UDP (17) */
    uint8_t family;         /* the app's socket: AF_INET (2) or AF_INET6 (10); 0 reads as AF_INET */
    uint32_t filler;        /* TCP CONNECT: filler bytes plugging the app end (0: not plugged) */
    struct ztrpc_sockopts opts; /* meaningful with ZTRPC_F_NEW */
    int32_t sndbuf;         /* TCP CONNECT with filler: SO_SNDBUF to restore (setsockopt value) */
    int32_t pid;            /* with ZTRPC_F_SECCOMP: the traced process (informational); else 0 */
};

/* Header of the option records that may follow a ztrpc_sock_req. 8 bytes. */
struct ztrpc_optlist {
    uint32_t count; /* ztrpc_sockopt records that follow */
    uint32_t reserved;
};
/* Records a request carries at most (header, ztrpc_sock_req, optlist and 13 records: 520 bytes,
 * within ZTRPC_MAX_MSG). */
#define ZTRPC_MAX_PREOPTS 13

/* LISTEN. 8 bytes. */
struct ztrpc_listen_req {
    int32_t backlog; /* as passed to listen(); ztapd clamps it */
    uint32_t reserved;
};

/* GETSOCKOPT / SETSOCKOPT request and GETSOCKOPT reply. 32 bytes.
 * value holds, by option: int (4 bytes: SO_REUSEADDR, SO_KEEPALIVE, SO_RCVBUF, SO_SNDBUF,
 * SO_ERROR, TCP_NODELAY, TCP_KEEPIDLE, ...), struct linger as two int32 (SO_LINGER), struct
 * timeval as two int64 (seconds, microseconds). optlen is the number of meaningful bytes. */
struct ztrpc_sockopt {
    int32_t level; /* SOL_SOCKET (1), IPPROTO_TCP (6), IPPROTO_IP (0) */
    int32_t name;  /* Linux option number */
    uint32_t optlen;
    uint32_t reserved;
    uint8_t value[16];
};

/* Reply body of CONNECT, BIND, UDP_OPEN, GETNAME. 88 bytes. */
struct ztrpc_sockinfo {
    uint8_t proto;  /* 6 TCP, 17 UDP */
    uint8_t state;  /* ZTRPC_STATE_* */
    uint8_t shut;   /* UDP: ZTRPC_SHUT_* the app did (TCP: always 0, its shutdown is native) */
    uint8_t family; /* the socket's family as the app created it: AF_INET or AF_INET6 */
    int32_t backlog;         /* listeners; else 0 */
    struct ztrpc_addr local; /* all zero when unbound */
    struct ztrpc_addr peer;  /* all zero when not connected */
    uint32_t flags;          /* ZTRPC_SI_* */
    uint32_t secret[2];      /* TCP: the socket's secret (see "References"), low word first; UDP: 0 */
    uint32_t reserved;       /* 0 */
    uint64_t dev, ino;       /* the app end's identity as ztapd keys it (fstat of fds[0]); 0, 0: not given */
};
/* ztrpc_sockinfo.flags: an AF_INET6 socket with IPV6_V6ONLY. */
#define ZTRPC_SI_V6ONLY 0x0001u

/* One message on a listener's accept channel, with SCM_RIGHTS(new connection's app end).
 * The connection has the listener's family. 80 bytes. */
struct ztrpc_accept_msg {
    uint32_t magic; /* ZTRPC_MAGIC */
    uint32_t flags; /* ZTRPC_AM_* */
    struct ztrpc_addr local; /* the connection's local address (the listener's network address) */
    struct ztrpc_addr peer;  /* the remote peer */
    uint32_t secret[2];      /* the new connection's secret (see "References"), low word first */
    uint64_t dev, ino;       /* the app end's identity as fstat shows it (0, 0: not given) */
};
/* ztrpc_accept_msg.flags: the app end is O_NONBLOCK (ztapd makes the pair non-blocking, which
 * spares an accept4(SOCK_NONBLOCK) every fcntl; a blocking accept clears it). */
#define ZTRPC_AM_NONBLOCK 0x0001u

/* Names a TCP socket without passing its fd (see "References"). 24 bytes. */
struct ztrpc_sockref {
    uint64_t dev;    /* st_dev of the app end */
    uint64_t ino;    /* st_ino of the app end */
    uint64_t secret; /* from the socket's sockinfo or accept message */
};

/* Prefix of every message on a UDP data socket, both directions. 24 bytes. */
struct ztrpc_dgram {
    struct ztrpc_addr addr; /* app->daemon: destination (all zero: connected peer); daemon->app: source */
};
/* daemon->app only: addr.reserved = ZTRPC_DGRAM_ERROR | errno marks a message without payload
 * that reports an ICMP error for a connected socket (Linux's sk_err: ECONNREFUSED after a port
 * unreachable); addr is the peer. The library returns -1 with that errno from the receive call
 * that meets it (consuming it even with MSG_PEEK), as the kernel reports it once. */
#define ZTRPC_DGRAM_ERROR ((uint16_t)0x8000)
#define ZTRPC_DGRAM_ERRNO_MASK ((uint16_t)0x0fff)

#ifdef __cplusplus
#define ZTRPC_STATIC_ASSERT static_assert
#else
#define ZTRPC_STATIC_ASSERT _Static_assert
#endif
#define ZTRPC_CHECK_SIZE(t, n) ZTRPC_STATIC_ASSERT(sizeof(t) == (n), #t " must be " #n " bytes")
ZTRPC_CHECK_SIZE(struct ztrpc_addr, 24);
ZTRPC_CHECK_SIZE(struct ztrpc_req_hdr, 16);
ZTRPC_CHECK_SIZE(struct ztrpc_rep_hdr, 24);
ZTRPC_CHECK_SIZE(struct ztrpc_sockopts, 40);
ZTRPC_CHECK_SIZE(struct ztrpc_sock_req, 80);
ZTRPC_CHECK_SIZE(struct ztrpc_listen_req, 8);
ZTRPC_CHECK_SIZE(struct ztrpc_optlist, 8);
ZTRPC_STATIC_ASSERT(16 + 80 + 8 + ZTRPC_MAX_PREOPTS * 32 <= ZTRPC_MAX_MSG, "pre-options fit a message");
ZTRPC_CHECK_SIZE(struct ztrpc_sockopt, 32);
ZTRPC_CHECK_SIZE(struct ztrpc_sockinfo, 88);
ZTRPC_CHECK_SIZE(struct ztrpc_accept_msg, 80);
ZTRPC_CHECK_SIZE(struct ztrpc_sockref, 24);
ZTRPC_CHECK_SIZE(struct ztrpc_dgram, 24);
ZTRPC_STATIC_ASSERT(offsetof(struct ztrpc_sock_req, opts) == 32, "sock_req layout");
ZTRPC_STATIC_ASSERT(offsetof(struct ztrpc_sockinfo, local) == 8, "sockinfo layout");
ZTRPC_STATIC_ASSERT(offsetof(struct ztrpc_rep_hdr, len) == 20, "rep_hdr layout");
#undef ZTRPC_CHECK_SIZE
#undef ZTRPC_STATIC_ASSERT

#ifdef __cplusplus
}
#endif
#endif /* ZTAP_ZTRPC_H */
