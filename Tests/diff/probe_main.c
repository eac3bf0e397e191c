/* SPDX-License-Identifier: MIT */
/*
 * probe_main.c - the differential socket probe (issue 9, "Linux-identical sockets").
 *
 * DOC: Theory of Operation
 *
 * The same binary runs twice: once on Linux's own sockets (a veth between two namespaces: the
 * reference) and once under `ztctl run` (its sockets on ztapd's stack). Its peer, peer.py, runs
 * on a kernel stack in both. Each case performs socket calls and prints what it saw, one line
 * per observation, in a form that does not change between runs (probe.h); run_diff.py compares
 * the two transcripts case by case.
 *
 * Each case runs in a child of its own (own process group), so a case that crashes, hangs or
 * leaks state cannot disturb the next one: the child is killed after --timeout seconds and the
 * transcript says so. Output goes straight to fd 1 with one write(2) per line, so lines of the
 * case and of its own children (fork cases) never interleave mid-line, and the order is fixed
 * by the cases waiting for their children.
 *
 * Usage:
 *   probe --list                          case names and one-line descriptions
 *   probe --ctl PATH [--timeout S] [--all | CASE...]
 *   probe --exec-child NAME ARGS...       internal: the far side of an exec case
 * The control path can also come from $ZTDIFF_CTL (it is needed by exec'd children).
 */
#include "probe.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct probe_case {
    const char *name;
    const char *desc;
    void (*fn)(void);
};

static const struct probe_case g_cases[] = {
#define X(name, desc) { #name, desc, case_##name },
#include "probe_cases.h"
#undef X
};
static const int g_ncases = sizeof g_cases / sizeof g_cases[0];

int exec_child(int argc, char **argv); /* probe_proc.c */

static void on_sigpipe(int sig)
{
    (void)sig;
    static const char msg[] = "signal SIGPIPE\n";
    ssize_t w = write(1, msg, sizeof msg - 1);
    (void)w;
}

/* The environment every case starts from: SIGPIPE reported as a transcript line (so a write
 * that raises it shows, and the case goes on), default dispositions otherwise. */
static void case_setup(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigpipe;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGPIPE, &sa, NULL);
    signal(SIGALRM, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void run_case(const struct probe_case *c, int timeout_s)
{
    out("=== CASE %s", c->name);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        case_setup();
        c->fn();
        _exit(0);
    }
    if (pid < 0) {
        out("=== END %s: fork failed %s", c->name, errname(errno));
        return;
    }
    setpgid(pid, pid);
    double start = now(), deadline = start + timeout_s;
    int status = 0;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (now() > deadline) {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            out("=== END %s: TIMEOUT after %d s", c->name, timeout_s);
            return;
        }
        msleep(2);
    }
    /* Whatever the case left behind in its process group (a stuck grandchild) goes too. */
    kill(-pid, SIGKILL);
    fprintf(stderr, "probe: %s took %.2f s\n", c->name, now() - start); /* not in the transcript */
    if (WIFEXITED(status))
        out("=== END %s: exit %d", c->name, WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        out("=== END %s: killed by %s", c->name, strsignal(WTERMSIG(status)));
    else
        out("=== END %s: status 0x%x", c->name, status);
}

static const struct probe_case *find_case(const char *name)
{
    for (int i = 0; i < g_ncases; i++)
        if (strcmp(g_cases[i].name, name) == 0)
            return &g_cases[i];
    return NULL;
}

int main(int argc, char **argv)
{
    g_self_exe = "/proc/self/exe";
    g_ctl_path = getenv("ZTDIFF_CTL");
    if (argc >= 2 && strcmp(argv[1], "--exec-child") == 0)
        return exec_child(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "--list") == 0) {
        for (int i = 0; i < g_ncases; i++)
            printf("%s\t%s\n", g_cases[i].name, g_cases[i].desc);
        return 0;
    }
    int timeout_s = 20, all = 0, first = argc;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--ctl") == 0 && i + 1 < argc) {
            g_ctl_path = argv[++i];
        } else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            timeout_s = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--all") == 0) {
            all = 1;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "probe: unknown option %s\n", argv[i]);
            return 2;
        } else {
            first = i;
            break;
        }
    }
    if (!g_ctl_path) {
        fprintf(stderr, "usage: probe --ctl PATH [--timeout S] [--all | CASE...] | --list\n");
        return 2;
    }
    setenv("ZTDIFF_CTL", g_ctl_path, 1);
    if (all) {
        for (int i = 0; i < g_ncases; i++)
            run_case(&g_cases[i], timeout_s);
        return 0;
    }
    int rc = 0;
    for (int i = first; i < argc; i++) {
        const struct probe_case *c = find_case(argv[i]);
        if (!c) {
            fprintf(stderr, "probe: no case %s (see --list)\n", argv[i]);
            rc = 2;
            continue;
        }
        run_case(c, timeout_s);
    }
    return rc;
}
