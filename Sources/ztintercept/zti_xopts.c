/* SPDX-License-Identifier: MIT */
/*
 * zti_xopts.c - the options beyond ztrpc_sockopts that travel from a kernel socket to the ztap
 * socket replacing it (ztrpc.h: ztrpc_optlist after the creating request), shared by the
 * library (zti_opts.c: recorded by a "was set" bit, read back at interception) and ztap-seccomp
 * (zts_table.c: read back and compared with a fresh socket's values, since it does not see the
 * kernel socket's setsockopt calls). No libc replacements here: ztap-seccomp links this file.
 */
#include "zti.h"

#include <string.h>

/* Options recorded by "was set" bit and read back from the kernel socket at interception. */
const struct zti_xopt zti_xopts[] = {
    { SOL_SOCKET, 1 },   /* SO_DEBUG */
    { SOL_SOCKET, 5 },   /* SO_DONTROUTE */
    { SOL_SOCKET, 6 },   /* SO_BROADCAST */
    { SOL_SOCKET, 10 },  /* SO_OOBINLINE */
    { SOL_SOCKET, 11 },  /* SO_NO_CHECK */
    { SOL_SOCKET, 12 },  /* SO_PRIORITY */
    { SOL_SOCKET, 25 },  /* SO_BINDTODEVICE */
    { SOL_SOCKET, 29 },  /* SO_TIMESTAMP_OLD */
    { SOL_SOCKET, 35 },  /* SO_TIMESTAMPNS_OLD */
    { SOL_SOCKET, 36 },  /* SO_MARK */
    { SOL_SOCKET, 37 },  /* SO_TIMESTAMPING_OLD */
    { SOL_SOCKET, 40 },  /* SO_RXQ_OVFL */
    { SOL_SOCKET, 41 },  /* SO_WIFI_STATUS */
    { SOL_SOCKET, 42 },  /* SO_PEEK_OFF (TCP: also carried to the app's end by zti_install) */
    { SOL_SOCKET, 43 },  /* SO_NOFCS */
    { SOL_SOCKET, 44 },  /* SO_LOCK_FILTER */
    { SOL_SOCKET, 45 },  /* SO_SELECT_ERR_QUEUE */
    { SOL_SOCKET, 46 },  /* SO_BUSY_POLL */
    { SOL_SOCKET, 47 },  /* SO_MAX_PACING_RATE */
    { SOL_SOCKET, 49 },  /* SO_INCOMING_CPU */
    { SOL_SOCKET, 60 },  /* SO_ZEROCOPY */
    { SOL_SOCKET, 61 },  /* SO_TXTIME */
    { SOL_SOCKET, 62 },  /* SO_BINDTOIFINDEX */
    { SOL_SOCKET, 63 },  /* SO_TIMESTAMP_NEW */
    { SOL_SOCKET, 64 },  /* SO_TIMESTAMPNS_NEW */
    { SOL_SOCKET, 65 },  /* SO_TIMESTAMPING_NEW */
    { SOL_SOCKET, 69 },  /* SO_PREFER_BUSY_POLL */
    { SOL_SOCKET, 72 },  /* SO_BUF_LOCK */
    { SOL_SOCKET, 74 },  /* SO_TXREHASH */
    { SOL_SOCKET, 75 },  /* SO_RCVMARK */
    { SOL_SOCKET, 82 },  /* SO_RCVPRIORITY */
    { SOL_SOCKET, SO_RCVLOWAT },
    { IPPROTO_IP, 1 },   /* IP_TOS */
    { IPPROTO_IP, 2 },   /* IP_TTL */
    { IPPROTO_IP, 4 },   /* IP_OPTIONS (up to 40 bytes: replayed) */
    { IPPROTO_IP, 6 },   /* IP_RECVOPTS */
    { IPPROTO_IP, 7 },   /* IP_RETOPTS */
    { IPPROTO_IP, 8 },   /* IP_PKTINFO */
    { IPPROTO_IP, 10 },  /* IP_MTU_DISCOVER */
    { IPPROTO_IP, 11 },  /* IP_RECVERR */
    { IPPROTO_IP, 12 },  /* IP_RECVTTL */
    { IPPROTO_IP, 13 },  /* IP_RECVTOS */
    { IPPROTO_IP, 15 },  /* IP_FREEBIND */
    { IPPROTO_IP, 18 },  /* IP_PASSSEC */
    { IPPROTO_IP, 19 },  /* IP_TRANSPARENT */
    { IPPROTO_IP, 20 },  /* IP_RECVORIGDSTADDR */
    { IPPROTO_IP, 21 },  /* IP_MINTTL */
    { IPPROTO_IP, 23 },  /* IP_CHECKSUM */
    { IPPROTO_IP, 24 },  /* IP_BIND_ADDRESS_NO_PORT */
    { IPPROTO_IP, 25 },  /* IP_RECVFRAGSIZE */
    { IPPROTO_IP, 26 },  /* IP_RECVERR_RFC4884 */
    { IPPROTO_IP, 33 },  /* IP_MULTICAST_TTL */
    { IPPROTO_IP, 34 },  /* IP_MULTICAST_LOOP */
    { IPPROTO_IP, 49 },  /* IP_MULTICAST_ALL */
    { IPPROTO_IP, 50 },  /* IP_UNICAST_IF */
    { IPPROTO_IP, 51 },  /* IP_LOCAL_PORT_RANGE */
    { IPPROTO_TCP, 2 },  /* TCP_MAXSEG */
    { IPPROTO_TCP, 3 },  /* TCP_CORK */
    { IPPROTO_TCP, 7 },  /* TCP_SYNCNT */
    { IPPROTO_TCP, 8 },  /* TCP_LINGER2 */
    { IPPROTO_TCP, 9 },  /* TCP_DEFER_ACCEPT */
    { IPPROTO_TCP, 10 }, /* TCP_WINDOW_CLAMP */
    { IPPROTO_TCP, 13 }, /* TCP_CONGESTION */
    { IPPROTO_TCP, 16 }, /* TCP_THIN_LINEAR_TIMEOUTS */
    { IPPROTO_TCP, 18 }, /* TCP_USER_TIMEOUT */
    { IPPROTO_TCP, 23 }, /* TCP_FASTOPEN */
    { IPPROTO_TCP, 25 }, /* TCP_NOTSENT_LOWAT */
    { IPPROTO_TCP, 27 }, /* TCP_SAVE_SYN */
    { IPPROTO_TCP, 30 }, /* TCP_FASTOPEN_CONNECT */
    { IPPROTO_TCP, 34 }, /* TCP_FASTOPEN_NO_COOKIE */
    { IPPROTO_TCP, 36 }, /* TCP_INQ */
    { IPPROTO_TCP, 37 }, /* TCP_TX_DELAY */
    { IPPROTO_TCP, 44 }, /* TCP_RTO_MAX_MS */
    { IPPROTO_TCP, 45 }, /* TCP_RTO_MIN_US */
    { IPPROTO_TCP, 46 }, /* TCP_DELACK_MAX_US */
    { IPPROTO_UDP, 1 },  /* UDP_CORK */
    { IPPROTO_UDP, 100 }, /* UDP_ENCAP */
    { IPPROTO_UDP, 101 }, /* UDP_NO_CHECK6_TX */
    { IPPROTO_UDP, 102 }, /* UDP_NO_CHECK6_RX */
    { IPPROTO_UDP, 103 }, /* UDP_SEGMENT */
    { IPPROTO_UDP, 104 }, /* UDP_GRO */
    { IPPROTO_IPV6, 16 }, /* IPV6_UNICAST_HOPS */
    { IPPROTO_IPV6, 18 }, /* IPV6_MULTICAST_HOPS */
    { IPPROTO_IPV6, 23 }, /* IPV6_MTU_DISCOVER */
    { IPPROTO_IPV6, 25 }, /* IPV6_RECVERR */
    { IPPROTO_IPV6, 49 }, /* IPV6_RECVPKTINFO */
    { IPPROTO_IPV6, 51 }, /* IPV6_RECVHOPLIMIT */
    { IPPROTO_IPV6, 62 }, /* IPV6_DONTFRAG */
    { IPPROTO_IPV6, 66 }, /* IPV6_RECVTCLASS */
    { IPPROTO_IPV6, 67 }, /* IPV6_TCLASS */
    { IPPROTO_IPV6, 75 }, /* IPV6_TRANSPARENT */
    { IPPROTO_IPV6, 78 }, /* IPV6_FREEBIND */
};
const int zti_nxopts = (int)(sizeof zti_xopts / sizeof zti_xopts[0]);
_Static_assert(sizeof zti_xopts / sizeof zti_xopts[0] <= 64 * ZTI_XOPT_WORDS, "zti_ent.xopts too small");
_Static_assert(sizeof zti_xopts / sizeof zti_xopts[0] <= ZTI_MAX_PREOPTS, "struct zti_preopts too small");

/**
 * zti_preopts_pack() - the first collected options that fit a creating request
 * @p: collected options
 * @list: filled with the count
 * @recs: room for ZTRPC_MAX_PREOPTS records
 *
 * Return: how many were packed (the rest go by zti_preopts_replay()).
 */
int zti_preopts_pack(const struct zti_preopts *p, struct ztrpc_optlist *list, struct ztrpc_sockopt *recs)
{
    int n = 0;
    for (int i = 0; i < p->n && n < ZTRPC_MAX_PREOPTS; i++) {
        if (p->o[i].len > sizeof recs[n].value)
            break; /* a long one keeps its order by going with the replayed rest */
        memset(&recs[n], 0, sizeof recs[n]);
        recs[n].level = p->o[i].level;
        recs[n].name = p->o[i].name;
        recs[n].optlen = p->o[i].len;
        memcpy(recs[n].value, p->o[i].value, p->o[i].len);
        n++;
    }
    list->count = (uint32_t)n;
    list->reserved = 0;
    return n;
}
