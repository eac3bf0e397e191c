/* SPDX-License-Identifier: MIT */
/*
 * probe.c - test program run under LD_PRELOAD=libztintercept.so against fake_ztapd.py.
 *
 * Usage: probe CASE [args]. Each case checks the socket API the way an app uses it and exits 0
 * when every check passed; a failed check prints "FAIL file:line: what (errno)" and exits 1.
 * The fake network is 10.200.0.0/24 (see fake_ztapd.py); nothing here touches a real network:
 * every other address used is loopback. This file holds main(); the helpers the cases share are in
 * probe_util.c (also linked into seccomp_probe), the cases in probe_*.c by subject (probe.h).
 */
#include "probe.h"

const char *g_self;

int main(int argc, char **argv)
{
    g_self = argv[0];
    if (argc < 2) {
        fprintf(stderr, "usage: probe CASE\n");
        return 2;
    }
    const char *c = argv[1];
    int r;
    if (!strcmp(c, "connect_blocking")) r = case_connect_blocking();
    else if (!strcmp(c, "connect_nonblock")) r = case_connect_nonblock();
    else if (!strcmp(c, "connect_errors")) r = case_connect_errors();
    else if (!strcmp(c, "sockopts")) r = case_sockopts();
    else if (!strcmp(c, "preopts")) r = case_preopts();
    else if (!strcmp(c, "carried")) r = case_carried();
    else if (!strcmp(c, "oneway")) r = case_oneway();
    else if (!strcmp(c, "oneway_refused")) r = case_oneway_refused();
    else if (!strcmp(c, "sessions")) r = case_sessions();
    else if (!strcmp(c, "listen_accept")) r = case_listen_accept();
    else if (!strcmp(c, "udp")) r = case_udp();
    else if (!strcmp(c, "fork")) r = case_fork();
    else if (!strcmp(c, "dup")) r = case_dup();
    else if (!strcmp(c, "exec")) r = case_exec(argc, argv);
    else if (!strcmp(c, "untouched")) r = case_untouched();
    else if (!strcmp(c, "untouched6")) r = case_untouched6();
    else if (!strcmp(c, "absent")) r = case_absent();
    else if (!strcmp(c, "errno")) r = case_errno();
    else if (!strcmp(c, "threads")) r = case_threads();
    else if (!strcmp(c, "interrupted")) r = case_interrupted();
    else if (!strcmp(c, "inherited")) r = case_inherited(argc, argv);
    else if (!strcmp(c, "isolated")) r = case_isolated();
    else if (!strcmp(c, "die")) r = case_die();
    else if (!strcmp(c, "accept_blocking")) r = case_accept_blocking();
    else if (!strcmp(c, "udp_copies")) r = case_udp_copies();
    else if (!strcmp(c, "fork_race")) r = case_fork_race();
    else if (!strcmp(c, "bound_sndtimeo")) r = case_bound_sndtimeo();
    else if (!strcmp(c, "ipv6_tcp")) r = case_ipv6_tcp();
    else if (!strcmp(c, "ipv6_listen")) r = case_ipv6_listen();
    else if (!strcmp(c, "ipv6_udp")) r = case_ipv6_udp();
    else {
        fprintf(stderr, "unknown case %s\n", c);
        return 2;
    }
    if (r == 0)
        printf("OK %s\n", c);
    return r;
}
