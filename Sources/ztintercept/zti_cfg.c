/* SPDX-License-Identifier: MIT */
/*
 * zti_cfg.c - which addresses belong to the network, and sockaddr conversions.
 *
 * The network is described to the library by the environment ztctl run sets (ZTAP_NETWORK,
 * ZTAP_RPC, ZTAP_ROUTES, ZTAP_DEFAULT_ROUTE, ZTAP_BIND_ANY, ZTAP_DEBUG), read once by zti_read_config() from the constructor.
 * Addresses of both families are handled as 16 bytes (IPv4 v4-mapped), so one route check
 * serves AF_INET, AF_INET6 and ::ffff:a.b.c.d alike. Host-only addresses (loopback, the
 * unspecified address) never go to ztapd. The sockaddr helpers convert between the app's
 * sockaddr_in/sockaddr_in6 and ztrpc_addr, keeping the family the app's socket has.
 * Shared with the seccomp supervisor, which links this file too.
 */
#include "zti.h"
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/un.h>

/* ---------------------------------------------------------------------------------------------
 * Configuration and address selection
 */

/* "ADDR[/LEN]" of either family as an IPv6 prefix (IPv4 v4-mapped, its length + 96), host bits
 * cleared. Return: 0, or -1 for anything malformed. */
static int zti_parse_cidr(const char *s, size_t len, uint8_t net[16], uint8_t *bits_out)
{
    char tmp[64];
    if (len == 0 || len >= sizeof tmp)
        return -1;
    memcpy(tmp, s, len);
    tmp[len] = 0;
    int v6 = strchr(tmp, ':') != NULL;
    int bits = v6 ? 128 : 32;
    char *slash = strchr(tmp, '/');
    if (slash) {
        *slash = 0;
        char *end;
        long b = strtol(slash + 1, &end, 10);
        if (*end || end == slash + 1 || b < 0 || b > bits)
            return -1;
        bits = (int)b;
    }
    memset(net, 0, 16);
    if (v6) {
        if (inet_pton(AF_INET6, tmp, net) != 1)
            return -1;
    } else {
        if (inet_pton(AF_INET, tmp, net + 12) != 1)
            return -1;
        net[10] = net[11] = 0xff;
        bits += 96;
    }
    for (int i = 0; i < 16; i++) {
        int keep = bits - i * 8;
        if (keep <= 0)
            net[i] = 0;
        else if (keep < 8)
            net[i] &= (uint8_t)(0xff << (8 - keep));
    }
    *bits_out = (uint8_t)bits;
    return 0;
}

void zti_read_config(void)
{
    const char *v = getenv("ZTAP_DEBUG");
    zti_cfg.debug = v && *v && strcmp(v, "0") != 0;
    v = getenv("ZTAP_NETWORK");
    if (v) {
        size_t l = strnlen(v, sizeof zti_cfg.network - 1);
        memcpy(zti_cfg.network, v, l);
        zti_cfg.network[l] = 0;
    }
    v = getenv("ZTAP_DEFAULT_ROUTE");
    zti_cfg.default_route = v && strcmp(v, "1") == 0;
    v = getenv("ZTAP_BIND_ANY");
    zti_cfg.bind_any = zti_cfg.default_route || (v && strcmp(v, "1") == 0);

    v = getenv("ZTAP_ROUTES");
    while (v && *v) {
        const char *comma = strchr(v, ',');
        size_t len = comma ? (size_t)(comma - v) : strlen(v);
        while (len && (*v == ' ')) {
            v++;
            len--;
        }
        if (len) {
            uint8_t net[16], bits;
            if (zti_parse_cidr(v, len, net, &bits) < 0)
                zti_log("ignoring malformed entry in ZTAP_ROUTES: ", v, NULL, LONG_MIN, NULL);
            else if (zti_cfg.nroutes < ZTI_MAX_ROUTES) {
                memcpy(zti_cfg.route_net[zti_cfg.nroutes], net, 16);
                zti_cfg.route_len[zti_cfg.nroutes] = bits;
                zti_cfg.nroutes++;
            }
        }
        v = comma ? comma + 1 : NULL;
    }

    v = getenv("ZTAP_BROADCAST");
    while (v && *v) {
        const char *comma = strchr(v, ',');
        size_t len = comma ? (size_t)(comma - v) : strlen(v);
        char buf[INET_ADDRSTRLEN];
        struct in_addr a;
        if (len && len < sizeof buf) {
            memcpy(buf, v, len);
            buf[len] = 0;
            if (inet_pton(AF_INET, buf, &a) == 1 && zti_cfg.nbcast < ZTI_MAX_BCAST)
                zti_cfg.bcast[zti_cfg.nbcast++] = a.s_addr;
            else
                zti_log("ignoring entry in ZTAP_BROADCAST: ", buf, NULL, LONG_MIN, NULL);
        }
        v = comma ? comma + 1 : NULL;
    }

    v = getenv("ZTAP_RPC");
    if (!v || !*v) {
        if (zti_cfg.network[0] || zti_cfg.nroutes)
            zti_log("ZTAP_RPC is not set: every socket stays on the kernel", NULL, NULL, LONG_MIN, NULL);
        return;
    }
    size_t l = strlen(v);
    if (l >= sizeof zti_cfg.rpc_addr.path) {
        zti_log("ZTAP_RPC path too long: ", v, NULL, LONG_MIN, NULL);
        return;
    }
    zti_cfg.rpc_addr.family = AF_UNIX;
    memcpy(zti_cfg.rpc_addr.path, v, l + 1);
    zti_cfg.rpc_addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + l + 1);
    zti_cfg.enabled = 1;
    zti_dbg("enabled, rpc ", zti_cfg.rpc_addr.path, ", ", zti_cfg.nroutes, " route(s)");
}

static const uint8_t zti_v4_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

int zti_addr_is_v4(const struct ztrpc_addr *a)
{
    return memcmp(a->addr, zti_v4_prefix, sizeof zti_v4_prefix) == 0;
}

int zti_addr_is_broadcast(const struct ztrpc_addr *a)
{
    if (!zti_addr_is_v4(a))
        return 0;
    uint32_t v;
    memcpy(&v, a->addr + 12, 4);
    if (v == 0xffffffffu)
        return 1;
    for (int i = 0; i < zti_cfg.nbcast; i++)
        if (zti_cfg.bcast[i] == v)
            return 1;
    return 0;
}

int zti_broadcast_denied(int fd, const struct ztrpc_addr *a)
{
    if (!zti_addr_is_broadcast(a))
        return 0;
    int on = 0, saved = errno;
    socklen_t l = sizeof on;
    if (zti_real.getsockopt(fd, SOL_SOCKET, SO_BROADCAST, &on, &l) < 0)
        on = 0;
    errno = saved;
    return on ? 0 : EACCES;
}

static int zti_addr_is_zero(const uint8_t b[16])
{
    for (int i = 0; i < 16; i++)
        if (b[i])
            return 0;
    return 1;
}

/* Inside one of ZTAP_ROUTES. */
static int zti_in_routes(const uint8_t b[16])
{
    for (int i = 0; i < zti_cfg.nroutes; i++) {
        const uint8_t *n = zti_cfg.route_net[i];
        int bits = zti_cfg.route_len[i], j = 0;
        for (; bits >= 8; j++, bits -= 8)
            if (b[j] != n[j])
                break;
        if (bits >= 8)
            continue;
        if (bits == 0 || ((b[j] ^ n[j]) & (uint8_t)(0xff << (8 - bits))) == 0)
            return 1;
    }
    return 0;
}

/* Addresses that never leave the host or name no host: IPv4 127/8 and 0/8; IPv6 ::, ::1 and
 * multicast. Link-local fe80::/10 is on every interface of the host: only an explicit route
 * takes it to the network. */
static int zti_is_hostonly(const uint8_t b[16])
{
    if (memcmp(b, zti_v4_prefix, sizeof zti_v4_prefix) == 0)
        return b[12] == 127 || b[12] == 0;
    if (b[0] == 0xff)
        return 1;
    static const uint8_t zero[15];
    return memcmp(b, zero, sizeof zero) == 0 && (b[15] == 0 || b[15] == 1); /* :: and ::1 */
}

/**
 * zti_dest_selected() - does a connect/sendto destination belong to the network?
 * @a: destination (IPv4 v4-mapped)
 *
 * Return: 1 if ZTAP_ROUTES covers it, or if ZTAP_DEFAULT_ROUTE=1 and it is not loopback,
 * 0.0.0.0/8, ::, multicast or link-local; else 0.
 */
int zti_dest_selected(const struct ztrpc_addr *a)
{
    if (!zti_cfg.enabled || zti_is_hostonly(a->addr))
        return 0;
    if (zti_in_routes(a->addr))
        return 1;
    int link_local = a->addr[0] == 0xfe && (a->addr[1] & 0xc0) == 0x80;
    return zti_cfg.default_route && !link_local;
}

/**
 * zti_bind_selected() - does a bind address belong to the network?
 * @a: local address (IPv4 v4-mapped)
 *
 * Return: 1 for an address inside ZTAP_ROUTES, or a wildcard (0.0.0.0, ::, ::ffff:0.0.0.0) when
 * ZTAP_BIND_ANY=1 or ZTAP_DEFAULT_ROUTE=1; else 0.
 */
int zti_bind_selected(const struct ztrpc_addr *a)
{
    if (!zti_cfg.enabled)
        return 0;
    int v4_any = zti_addr_is_v4(a) && !a->addr[12] && !a->addr[13] && !a->addr[14] && !a->addr[15];
    if (v4_any || zti_addr_is_zero(a->addr))
        return zti_cfg.bind_any;
    if (zti_is_hostonly(a->addr))
        return 0;
    return zti_in_routes(a->addr);
}

/* ---------------------------------------------------------------------------------------------
 * Socket addresses
 */

int zti_addr_from_sockaddr(int domain, const struct sockaddr *sa, socklen_t len, int v4_on_v6,
                           struct ztrpc_addr *out)
{
    memset(out, 0, sizeof *out);
    if (!sa || len < (socklen_t)sizeof(sa_family_t))
        return EINVAL;
    sa_family_t f;
    memcpy(&f, sa, sizeof f);
    if (f == AF_UNSPEC)
        return 0;
    if (f == AF_INET && (domain == AF_INET || v4_on_v6)) {
        struct sockaddr_in sin;
        if (len < (socklen_t)sizeof sin)
            return EINVAL;
        memcpy(&sin, sa, sizeof sin);
        memcpy(out->addr, zti_v4_prefix, sizeof zti_v4_prefix);
        memcpy(out->addr + 12, &sin.sin_addr, 4);
        out->port = sin.sin_port;
        return 0;
    }
    if (f == AF_INET6 && domain == AF_INET6) {
        struct sockaddr_in6 sin6;
        memset(&sin6, 0, sizeof sin6);
        if (len < 24) /* SIN6_LEN_RFC2133: without sin6_scope_id */
            return EINVAL;
        memcpy(&sin6, sa, len < (socklen_t)sizeof sin6 ? len : (socklen_t)sizeof sin6);
        memcpy(out->addr, &sin6.sin6_addr, 16);
        out->port = sin6.sin6_port;
        out->scope_id = sin6.sin6_scope_id;
        return 0;
    }
    /* Linux checks the length its own family needs before the family. */
    if (len < (socklen_t)(domain == AF_INET6 ? 24 : sizeof(struct sockaddr_in)))
        return EINVAL;
    return EAFNOSUPPORT;
}

socklen_t zti_make_sockaddr(int domain, const struct ztrpc_addr *a, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof *out);
    if (domain == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = a->port;
        memcpy(&sin6->sin6_addr, a->addr, 16);
        sin6->sin6_scope_id = a->scope_id;
        return (socklen_t)sizeof *sin6;
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)out;
    sin->sin_family = AF_INET;
    sin->sin_port = a->port;
    memcpy(&sin->sin_addr, a->addr + 12, 4);
    return (socklen_t)sizeof *sin;
}

/**
 * zti_fill_sockaddr() - store an address as the app's socket shows it, truncating like the kernel
 * @domain: the app's socket family (AF_INET: sockaddr_in; AF_INET6: sockaddr_in6)
 * @a: address
 * @out: caller's buffer (may be NULL)
 * @len: in: buffer size; out: the full size of the address
 */
void zti_fill_sockaddr(int domain, const struct ztrpc_addr *a, struct sockaddr *out, socklen_t *len)
{
    struct sockaddr_storage ss;
    socklen_t full = zti_make_sockaddr(domain, a, &ss);
    if (!len)
        return;
    if (out) {
        socklen_t n = *len < full ? *len : full;
        memcpy(out, &ss, n);
    }
    *len = full;
}
