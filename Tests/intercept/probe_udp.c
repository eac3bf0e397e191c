/* SPDX-License-Identifier: MIT */
/*
 * probe_udp.c - UDP on the fake network: connected and unconnected datagrams, and copies of a UDP
 * fd the library did not create keeping datagram framing.
 */
#include "probe.h"

int case_udp(void)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(fd >= 0);
    struct sockaddr_in d = sin_of("10.200.0.1", 5353);
    CHECK(sendto(fd, "q1", 2, 0, (struct sockaddr *)&d, sizeof d) == 2);
    char buf[64];
    struct sockaddr_in src;
    socklen_t sl = sizeof src;
    memset(&src, 0, sizeof src);
    CHECK(recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&src, &sl) == 2);
    CHECK(memcmp(buf, "q1", 2) == 0);
    CHECK(sl == sizeof src && is_addr(&src, "10.200.0.1", 5353));
    CHECK(local_port(fd, "10.200.0.2") > 0);
    CHECK(opt_int(fd, SOL_SOCKET, SO_TYPE) == SOCK_DGRAM);
    CHECK(opt_int(fd, SOL_SOCKET, SO_PROTOCOL) == IPPROTO_UDP);
    /* Unconnected: send without address is EDESTADDRREQ, getpeername ENOTCONN. */
    CHECK(send(fd, "x", 1, 0) == -1 && errno == EDESTADDRREQ);
    struct sockaddr_in pa;
    socklen_t pl = sizeof pa;
    CHECK(getpeername(fd, (struct sockaddr *)&pa, &pl) == -1 && errno == ENOTCONN);

    /* sendmsg/recvmsg with two iovecs and a name. */
    struct iovec iov[2] = { { "ab", 2 }, { "cde", 3 } };
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_name = &d;
    m.msg_namelen = sizeof d;
    m.msg_iov = iov;
    m.msg_iovlen = 2;
    CHECK(sendmsg(fd, &m, 0) == 5);
    char r1[3], r2[8];
    struct iovec riov[2] = { { r1, 3 }, { r2, sizeof r2 } };
    memset(&m, 0, sizeof m);
    memset(&src, 0, sizeof src);
    m.msg_name = &src;
    m.msg_namelen = sizeof src;
    m.msg_iov = riov;
    m.msg_iovlen = 2;
    CHECK(recvmsg(fd, &m, 0) == 5);
    CHECK(memcmp(r1, "abc", 3) == 0 && memcmp(r2, "de", 2) == 0);
    CHECK(m.msg_namelen == sizeof src && is_addr(&src, "10.200.0.1", 5353));

    /* Truncation reports MSG_TRUNC, MSG_PEEK leaves the datagram. */
    CHECK(sendto(fd, "0123456789", 10, 0, (struct sockaddr *)&d, sizeof d) == 10);
    CHECK(recv(fd, buf, 4, MSG_PEEK) == 4);
    CHECK(recv(fd, buf, 4, MSG_TRUNC) == 10);

    /* Connected UDP: send/recv/read/write go to/from the peer. */
    struct sockaddr_in peer = sin_of("10.200.0.1", 53);
    CHECK(connect(fd, (struct sockaddr *)&peer, sizeof peer) == 0);
    peer_is(fd, "10.200.0.1", 53);
    CHECK(send(fd, "q2", 2, 0) == 2);
    CHECK(recv(fd, buf, sizeof buf, 0) == 2 && memcmp(buf, "q2", 2) == 0);
    CHECK(write(fd, "q3", 2) == 2);
    CHECK(read(fd, buf, sizeof buf) == 2 && memcmp(buf, "q3", 2) == 0);
    /* Non-blocking receive with nothing queued. */
    CHECK(recv(fd, buf, sizeof buf, MSG_DONTWAIT) == -1 && errno == EAGAIN);
    /* shutdown like a kernel UDP socket: SHUT_WR makes sends fail, reading still works... */
    CHECK(send(fd, "q5", 2, 0) == 2);
    CHECK(shutdown(fd, SHUT_WR) == 0);
    CHECK(send(fd, "q6", 2, MSG_NOSIGNAL) == -1 && errno == EPIPE);
    CHECK(recv(fd, buf, sizeof buf, 0) == 2 && memcmp(buf, "q5", 2) == 0);
    /* ...and SHUT_RD makes reads return 0. */
    CHECK(shutdown(fd, SHUT_RD) == 0);
    CHECK(recv(fd, buf, sizeof buf, 0) == 0);
    close(fd);

    /* Explicit bind to the network address, then sendto/recvfrom. */
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in b = sin_of("10.200.0.2", 5000);
    CHECK(bind(fd, (struct sockaddr *)&b, sizeof b) == 0);
    CHECK(local_port(fd, "10.200.0.2") == 5000);
    CHECK(sendto(fd, "q4", 2, 0, (struct sockaddr *)&d, sizeof d) == 2);
    sl = sizeof src;
    CHECK(recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&src, &sl) == 2);
    CHECK(is_addr(&src, "10.200.0.1", 5353));
    /* sendmmsg / recvmmsg */
    struct mmsghdr mm[2];
    struct iovec mi[2] = { { "m1", 2 }, { "m22", 3 } };
    memset(mm, 0, sizeof mm);
    for (int i = 0; i < 2; i++) {
        mm[i].msg_hdr.msg_name = &d;
        mm[i].msg_hdr.msg_namelen = sizeof d;
        mm[i].msg_hdr.msg_iov = &mi[i];
        mm[i].msg_hdr.msg_iovlen = 1;
    }
    CHECK(sendmmsg(fd, mm, 2, 0) == 2 && mm[0].msg_len == 2 && mm[1].msg_len == 3);
    char rb[2][8];
    struct iovec ri[2] = { { rb[0], 8 }, { rb[1], 8 } };
    memset(mm, 0, sizeof mm);
    for (int i = 0; i < 2; i++) {
        mm[i].msg_hdr.msg_iov = &ri[i];
        mm[i].msg_hdr.msg_iovlen = 1;
    }
    CHECK(recvmmsg(fd, mm, 2, 0, NULL) == 2 && mm[0].msg_len == 2 && mm[1].msg_len == 3);
    close(fd);
    return 0;
}

/* Copies of a ztap UDP socket the library did not make itself keep the datagram framing: one by
 * fcntl(F_DUPFD), one received over SCM_RIGHTS, one on an fd number above 65535. */
int case_udp_copies(void)
{
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in peer = sin_of("10.200.0.1", 53);
    CHECK(connect(u, (struct sockaddr *)&peer, sizeof peer) == 0);
    char buf[8];
    int f = fcntl(u, F_DUPFD, 100);
    CHECK(f >= 100);
    CHECK(write(f, "fd", 2) == 2);
    CHECK(read(f, buf, sizeof buf) == 2 && memcmp(buf, "fd", 2) == 0);

    /* Passed over a unix socket: the receiver has never seen it. */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    union { struct cmsghdr align; char b[CMSG_SPACE(sizeof(int))]; } cb;
    struct iovec iov = { "x", 1 };
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = cb.b;
    m.msg_controllen = sizeof cb.b;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &u, sizeof u);
    CHECK(sendmsg(sv[0], &m, 0) == 1);
    char one;
    struct iovec riov = { &one, 1 };
    memset(&m, 0, sizeof m);
    memset(&cb, 0, sizeof cb);
    m.msg_iov = &riov;
    m.msg_iovlen = 1;
    m.msg_control = cb.b;
    m.msg_controllen = sizeof cb.b;
    CHECK(recvmsg(sv[1], &m, 0) == 1);
    int got;
    memcpy(&got, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof got);
    CHECK(write(got, "sc", 2) == 2);
    CHECK(read(got, buf, sizeof buf) == 2 && memcmp(buf, "sc", 2) == 0);
    close(got);
    close(sv[0]);
    close(sv[1]);

    /* A high fd number (the table grows past 65536 entries). */
    struct rlimit rl;
    CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    if (rl.rlim_max > 70010) {
        rl.rlim_cur = 70010;
        CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
        CHECK(dup2(u, 70000) == 70000);
        CHECK(write(70000, "hi", 2) == 2);
        CHECK(read(70000, buf, sizeof buf) == 2 && memcmp(buf, "hi", 2) == 0);
        peer_is(70000, "10.200.0.1", 53);
        close(70000);
    } else {
        printf("SKIP high fd: RLIMIT_NOFILE hard limit %llu\n", (unsigned long long)rl.rlim_max);
    }

    /* recvmmsg that gets fewer datagrams than asked for is a success: errno untouched. */
    CHECK(write(u, "a", 1) == 1 && write(u, "b", 1) == 1);
    usleep(100000);
    char rb[4][4];
    struct iovec ri[4] = { { rb[0], 4 }, { rb[1], 4 }, { rb[2], 4 }, { rb[3], 4 } };
    struct mmsghdr mm[4];
    memset(mm, 0, sizeof mm);
    for (int i = 0; i < 4; i++) {
        mm[i].msg_hdr.msg_iov = &ri[i];
        mm[i].msg_hdr.msg_iovlen = 1;
    }
    errno = 4242;
    CHECK(recvmmsg(u, mm, 4, MSG_DONTWAIT, NULL) == 2);
    CHECK(errno == 4242);

    /* shutdown(SHUT_WR) is the socket's, not the fd number's: a copy made after it sees it. */
    CHECK(shutdown(u, SHUT_WR) == 0);
    int f2 = fcntl(u, F_DUPFD, 200);
    CHECK(send(f2, "no", 2, MSG_NOSIGNAL) == -1 && errno == EPIPE);
    close(f2);
    close(f);
    close(u);
    return 0;
}
