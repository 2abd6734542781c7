/* SPDX-License-Identifier: MIT */
/* Is the peer process still alive? Checks a process on this node by pid and start time. */
#ifndef SL_LIVENESS_H
#define SL_LIVENESS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Start time of process `pid` in clock ticks after boot (field 22 of
 * /proc/<pid>/stat), or 0 if there is no such process. A pid reused by a
 * new process gets another start time, so (pid, start) names one process.
 */
uint64_t sl_proc_start_time(pid_t pid);

/* Whether the process (pid, start) still runs on this node. Never blocks. */
bool sl_proc_alive(int64_t pid, uint64_t start);

/*
 * Identity of this node: host name and boot id (/proc/sys/kernel/random/
 * boot_id), so two hosts that share a name, or one host after a reboot, are
 * told apart. Written NUL-terminated into `out` (at most `len` bytes).
 */
void sl_node_identity(char *out, size_t len);

#endif
