/* SPDX-License-Identifier: MIT */
/* sandbox.h - ztapd's own system-call allow-list (see sandbox.c). */
#ifndef ZTAP_SANDBOX_H
#define ZTAP_SANDBOX_H

/**
 * zt_sandbox_install() - confine every thread of the process to ztapd's allow-list
 *
 * Call once setup is done (privileges dropped, sockets open). A call outside the list raises
 * SIGSYS; the handler writes "ztapd: seccomp: blocked system call N (NAME)" to stderr and ends
 * the process with status 159 (128 + SIGSYS).
 *
 * Return: 0, or -errno (the filter is then not installed).
 */
int zt_sandbox_install(void);

/**
 * zt_sandbox_allowed() - whether system call @name is on the allow-list (for tests)
 * Return: 1 allowed (possibly with argument checks), 0 not, -1 unknown name on this arch.
 */
int zt_sandbox_allowed(const char *name);

/**
 * zt_sandbox_selftest() - show on this kernel that the filter works, then trip it
 *
 * Installs the filter, prints to stdout that socket(AF_INET) is refused and a thread still
 * starts, then makes a call off the list (ptrace): the process ends through the SIGSYS handler
 * with status 159. Return: only on failure, -errno.
 */
int zt_sandbox_selftest(void);

#endif
