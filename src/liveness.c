/* SPDX-License-Identifier: MIT */
/* Is the peer process still alive? Checks a process on this node by pid and start time. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "liveness.h"

uint64_t sl_proc_start_time(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    /* The command name (field 2) is in parentheses and may hold spaces:
     * count fields from the last ')'. */
    const char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    char state = 0;
    unsigned long long start = 0;
    /* After ')': state (3), then fields 4..21, then starttime (22). */
    if (sscanf(p + 1, " %c %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s "
                      "%llu",
               &state, &start) != 2)
        return 0;
    /* A zombie has exited: it only waits for its parent to reap it. */
    if (state == 'Z' || state == 'X')
        return 0;
    return start ? (uint64_t)start : 1;
}

bool sl_proc_alive(int64_t pid, uint64_t start)
{
    if (pid <= 0)
        return true; /* unknown: nothing to judge by */
    uint64_t now = sl_proc_start_time((pid_t)pid);
    return now != 0 && (start == 0 || now == start);
}

void sl_node_identity(char *out, size_t len)
{
    char host[256] = "", boot[64] = "";
    gethostname(host, sizeof host - 1);
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, boot, sizeof boot - 1);
        close(fd);
        boot[n > 0 ? n : 0] = '\0';
        boot[strcspn(boot, "\n")] = '\0';
    }
    snprintf(out, len, "%s/%s", host, boot);
}
