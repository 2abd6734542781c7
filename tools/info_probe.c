/* SPDX-License-Identifier: MIT */
/* sluice-info's MPI probes: each a child process, an MPI singleton, bounded by a timeout. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mpi.h>
#if defined(__has_include)
#if __has_include(<mpi-ext.h>)
#include <mpi-ext.h> /* MPIX_CUDA_AWARE_SUPPORT, MPIX_Query_cuda_support (Open MPI) */
#endif
#endif

#include "info.h"

/*
 * Why children: MPI can be initialised once per process, with one thread
 * level and one osc selection, and a failing MPI_Init may abort the process
 * or hang. Each probe therefore runs `sluice-info --probe-...` as a child
 * in its own process group, reads what it prints, and kills the group when
 * it outlives the timeout; sluice-info itself never initialises MPI.
 */

#define PROBE_TAG "sluice-info-probe: "
#define PROBE_OUT_MAX 16384

extern char **environ;

/* ------------------------------------------------------------ child side */

static const char *level_name(int level)
{
    switch (level) {
    case MPI_THREAD_SINGLE: return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED: return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED: return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE: return "MPI_THREAD_MULTIPLE";
    }
    return "unknown";
}

/* One "key=value" line for the parent; newlines in `value` become spaces. */
static void probe_say(const char *key, const char *value)
{
    printf(PROBE_TAG "%s=", key);
    for (const char *c = value; *c; c++)
        putchar(*c == '\n' || *c == '\r' ? ' ' : *c);
    putchar('\n');
    fflush(stdout);
}

static void probe_say_mpi_error(const char *key, const char *call, int rc)
{
    char msg[MPI_MAX_ERROR_STRING] = "";
    char line[MPI_MAX_ERROR_STRING + 64];
    int n = 0;
    MPI_Error_string(rc, msg, &n);
    snprintf(line, sizeof line, "fails: %s: %s", call, msg);
    probe_say(key, line);
}

static void cuda_support(char *compiled, char *runtime, size_t len)
{
#if defined(MPIX_CUDA_AWARE_SUPPORT) && MPIX_CUDA_AWARE_SUPPORT
    snprintf(compiled, len, "yes");
#elif defined(MPIX_CUDA_AWARE_SUPPORT)
    snprintf(compiled, len, "no");
#else
    snprintf(compiled, len, "unknown");
#endif
#if defined(MPIX_CUDA_AWARE_SUPPORT)
    snprintf(runtime, len, "%s", MPIX_Query_cuda_support() ? "yes" : "no");
#else
    snprintf(runtime, len, "unknown"); /* no mpi-ext.h, or not Open MPI: cannot ask */
#endif
}

int info_probe_mpi_main(void)
{
    int provided;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
        probe_say("init", "fails: MPI_Init_thread returned an error");
        return 1;
    }
    probe_say("init", "ok");
    char lib[MPI_MAX_LIBRARY_VERSION_STRING] = "";
    int len = 0, version, subversion;
    MPI_Get_library_version(lib, &len);
    while (len > 0 && (lib[len - 1] == '\n' || lib[len - 1] == ' ' || lib[len - 1] == '\0'))
        lib[--len] = '\0';
    probe_say("library", lib);
    MPI_Get_version(&version, &subversion);
    char standard[16];
    snprintf(standard, sizeof standard, "%d.%d", version, subversion);
    probe_say("standard", standard);
    probe_say("granted", level_name(provided));
    char compiled[16], runtime[16];
    cuda_support(compiled, runtime, sizeof compiled);
    probe_say("cuda_compiled", compiled);
    probe_say("cuda_runtime", runtime);
    MPI_Finalize();
    return 0;
}

/*
 * A window the way the RMA transport uses one, on MPI_COMM_SELF: allocate,
 * a passive-target epoch, a put to itself completed by a flush, free.
 */
int info_probe_osc_main(const char *osc, const char *level)
{
    int want = strcmp(level, "serialized") == 0 ? MPI_THREAD_SERIALIZED : MPI_THREAD_MULTIPLE;
    /* "-" keeps the environment's selection; a name selects that component alone. */
    if (strcmp(osc, "-") != 0)
        setenv("OMPI_MCA_osc", osc, 1);
    int provided;
    if (MPI_Init_thread(NULL, NULL, want, &provided) != MPI_SUCCESS) {
        probe_say("window", "fails: MPI_Init_thread returned an error");
        return 1;
    }
    probe_say("granted", level_name(provided));
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    void *base = NULL;
    MPI_Win win;
    int rc = MPI_Win_allocate(4096, 1, MPI_INFO_NULL, MPI_COMM_SELF, &base, &win);
    if (rc != MPI_SUCCESS) {
        probe_say_mpi_error("window", "MPI_Win_allocate", rc);
        MPI_Finalize();
        return 1;
    }
    MPI_Win_set_errhandler(win, MPI_ERRORS_RETURN);
    uint64_t word = 0x51u;
    const char *call = "MPI_Win_lock_all";
    rc = MPI_Win_lock_all(MPI_MODE_NOCHECK, win);
    if (rc == MPI_SUCCESS) {
        call = "MPI_Put";
        rc = MPI_Put(&word, 8, MPI_BYTE, 0, 0, 8, MPI_BYTE, win);
        if (rc == MPI_SUCCESS) {
            call = "MPI_Win_flush";
            rc = MPI_Win_flush(0, win);
        }
        int urc = MPI_Win_unlock_all(win);
        if (rc == MPI_SUCCESS && urc != MPI_SUCCESS) {
            call = "MPI_Win_unlock_all";
            rc = urc;
        }
    }
    if (rc == MPI_SUCCESS && memcmp(base, &word, sizeof word) != 0) {
        probe_say("window", "fails: the put did not land in the window after the flush");
        rc = MPI_ERR_OTHER;
    } else if (rc != MPI_SUCCESS) {
        probe_say_mpi_error("window", call, rc);
    } else {
        probe_say("window", "ok");
    }
    MPI_Win_free(&win);
    MPI_Finalize();
    return rc == MPI_SUCCESS ? 0 : 1;
}

/* ----------------------------------------------------------- parent side */

/*
 * Variables a launcher (mpirun, srun) put into sluice-info's environment
 * to make it one rank of a job: a child keeping them would try to join
 * that job as the same rank. The user's own MCA settings (OMPI_MCA_btl,
 * OMPI_MCA_osc, ...) stay.
 */
static bool launcher_variable(const char *kv)
{
    static const char *const drop[] = { "PMIX_", "PMI_", "OMPI_MCA_orte_", "OMPI_MCA_ess",
                                        "OMPI_MCA_pmix", "OMPI_MCA_initial_wdir",
                                        "OMPI_MCA_shmem_RUNTIME_QUERY_hint", "OMPI_MCA_mpi_oversubscribe" };
    for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
        if (strncmp(kv, drop[i], strlen(drop[i])) == 0)
            return true;
    /* OMPI_COMM_WORLD_*, OMPI_UNIVERSE_SIZE, ...: but not settings and root permission. */
    return strncmp(kv, "OMPI_", 5) == 0 && strncmp(kv, "OMPI_MCA_", 9) != 0 &&
           strncmp(kv, "OMPI_ALLOW_", 11) != 0;
}

/* In the forked child, before exec: it is single-threaded, so setenv is safe. */
static void scrub_environment(void)
{
    for (;;) {
        char name[256] = "";
        for (char **e = environ; *e; e++) {
            if (launcher_variable(*e)) {
                size_t n = strcspn(*e, "=");
                snprintf(name, sizeof name, "%.*s", (int)(n < sizeof name ? n : sizeof name - 1), *e);
                break;
            }
        }
        if (!name[0] || unsetenv(name) != 0)
            return;
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct probe_run {
    char out[PROBE_OUT_MAX];  /* stdout and stderr together, truncated */
    size_t len;
    bool timed_out;
    int status;               /* waitpid status, when !timed_out */
} probe_run_t;

/* Run `self argv...` with `osc` (or NULL) as OMPI_MCA_osc, at most timeout_s seconds. */
static int probe_spawn(const char *self, char *const args[], const char *osc, unsigned timeout_s,
                       probe_run_t *run)
{
    int fds[2];
    memset(run, 0, sizeof *run);
    if (pipe(fds) != 0)
        return -errno;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        return -e;
    }
    if (pid == 0) {
        setpgid(0, 0);
        dup2(fds[1], STDOUT_FILENO);
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        scrub_environment();
        if (osc)
            setenv("OMPI_MCA_osc", osc, 1);
        execv(self, args);
        fprintf(stderr, "cannot run %s: %s\n", self, strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid); /* also here: the kill below must not race the child's own call */
    close(fds[1]);
    /* The singleton's helper daemon may inherit the pipe and hold it open
     * after the child is gone, so end-of-file alone does not end the wait:
     * the child's exit does. */
    double deadline = now_s() + timeout_s;
    bool exited = false, eof = false;
    while (!exited) {
        struct pollfd p = { .fd = fds[0], .events = POLLIN };
        if (!eof && poll(&p, 1, 50) > 0) {
            char buf[1024];
            ssize_t n = read(fds[0], buf, sizeof buf);
            if (n <= 0) {
                eof = true;
            } else {
                size_t room = sizeof run->out - 1 - run->len;
                size_t k = (size_t)n < room ? (size_t)n : room;
                memcpy(run->out + run->len, buf, k);
                run->len += k;
            }
        } else if (eof) {
            usleep(20000);
        }
        if (waitpid(pid, &run->status, WNOHANG) == pid) {
            exited = true;
        } else if (now_s() > deadline) {
            kill(-pid, SIGKILL); /* the process group this call made: the child and its helpers */
            waitpid(pid, &run->status, 0);
            run->timed_out = true;
            exited = true;
        }
    }
    /* What the child wrote just before it exited. */
    struct pollfd p = { .fd = fds[0], .events = POLLIN };
    while (run->len < sizeof run->out - 1 && poll(&p, 1, 0) > 0) {
        ssize_t n = read(fds[0], run->out + run->len, sizeof run->out - 1 - run->len);
        if (n <= 0)
            break;
        run->len += (size_t)n;
    }
    run->out[run->len] = '\0';
    close(fds[0]);
    return 0;
}

/* The line after `line` in a NUL-terminated buffer, or NULL at its end. */
static const char *next_line(const char *line)
{
    const char *nl = strchr(line, '\n');
    return nl ? nl + 1 : NULL;
}

/* The value of the child's "key=" line, or false when it did not say. */
static bool probe_get(const probe_run_t *run, const char *key, char *value, size_t len)
{
    size_t klen = strlen(key);
    for (const char *line = run->out; line && *line; line = next_line(line)) {
        if (strncmp(line, PROBE_TAG, strlen(PROBE_TAG)) != 0)
            continue;
        const char *kv = line + strlen(PROBE_TAG);
        if (strncmp(kv, key, klen) != 0 || kv[klen] != '=')
            continue;
        size_t n = strcspn(kv + klen + 1, "\n");
        snprintf(value, len, "%.*s", (int)n, kv + klen + 1);
        return true;
    }
    return false;
}

/*
 * The gist of a child's own output: the first sentence of Open MPI's first
 * framed message (the text after a line of dashes, up to a blank line), or
 * else its last line.
 */
static void probe_gist(const char *out, char *gist, size_t len)
{
    gist[0] = '\0';
    const char *frame = strstr(out, "\n-----");
    frame = strncmp(out, "-----", 5) == 0 ? out : frame ? frame + 1 : NULL;
    if (frame && (frame = strchr(frame, '\n'))) {
        size_t used = 0;
        for (const char *line = frame + 1; *line && *line != '\n' && *line != '-';) {
            size_t n = strcspn(line, "\n");
            int k = snprintf(gist + used, len - used, "%s%.*s", used ? " " : "", (int)n, line);
            if (k < 0 || (size_t)k >= len - used)
                break;
            used += (size_t)k;
            line += n + (line[n] == '\n');
        }
        char *stop = strstr(gist, ".  ");
        if (!stop)
            stop = strstr(gist, ". ");
        if (stop)
            stop[1] = '\0';
        if (gist[0])
            return;
    }
    for (const char *line = out; line && *line; line = next_line(line)) {
        size_t n = strcspn(line, "\n");
        if (n > 0 && line[0] != '-' && strncmp(line, PROBE_TAG, strlen(PROBE_TAG)))
            snprintf(gist, len, "%.*s", (int)n, line);
    }
}

/* Why a child said nothing: how it ended, the gist of its output, and how to see all of it. */
static void probe_silence(const probe_run_t *run, unsigned timeout_s, char *const args[], char *why,
                          size_t len)
{
    char gist[256];
    probe_gist(run->out, gist, sizeof gist);
    char how[64];
    if (run->timed_out)
        snprintf(how, sizeof how, "no answer within %u s (killed)", timeout_s);
    else if (WIFSIGNALED(run->status))
        snprintf(how, sizeof how, "killed by signal %d", WTERMSIG(run->status));
    else
        snprintf(how, sizeof how, "exited with status %d", WEXITSTATUS(run->status));
    snprintf(why, len, "%s%s%s (all of it: sluice-info %s%s%s%s%s)", how, gist[0] ? ": " : "", gist,
             args[1], args[2] ? " " : "", args[2] ? args[2] : "", args[2] && args[3] ? " " : "",
             args[2] && args[3] ? args[3] : "");
}

/* Run one probe and read the answer under `key` ("ok" or "fails: ..."). */
static void probe_answer(const char *self, char *const args[], const char *osc, unsigned timeout_s,
                         const char *key, info_probe_t *p, probe_run_t *run)
{
    char answer[sizeof p->error];
    p->ran = true;
    int rc = probe_spawn(self, args, osc, timeout_s, run);
    if (rc) {
        snprintf(p->error, sizeof p->error, "cannot start a child: %s", strerror(-rc));
    } else if (!probe_get(run, key, answer, sizeof answer)) {
        probe_silence(run, timeout_s, args, p->error, sizeof p->error);
    } else if (strcmp(answer, "ok") == 0) {
        p->ok = true;
    } else {
        const char *why = strncmp(answer, "fails: ", 7) == 0 ? answer + 7 : answer;
        snprintf(p->error, sizeof p->error, "%s", why);
    }
}

static void probe_osc(const char *self, const char *osc, unsigned timeout_s, info_probe_t *multiple,
                      info_probe_t *serialized, probe_run_t *run)
{
    const char *name = osc ? osc : "-";
    char *multiple_args[] = { (char *)self, "--probe-osc", (char *)name, "multiple", NULL };
    probe_answer(self, multiple_args, osc, timeout_s, "window", multiple, run);
    char granted[64];
    if (multiple->ok && probe_get(run, "granted", granted, sizeof granted) &&
        strcmp(granted, "MPI_THREAD_MULTIPLE") != 0) {
        multiple->ok = false;
        snprintf(multiple->error, sizeof multiple->error,
                 "a window works, but MPI granted %s when asked for MPI_THREAD_MULTIPLE", granted);
    }
    if (multiple->ok)
        return;
    char *serialized_args[] = { (char *)self, "--probe-osc", (char *)name, "serialized", NULL };
    probe_answer(self, serialized_args, osc, timeout_s, "window", serialized, run);
}

void info_mpi_gather(info_mpi_t *m, const char *self, unsigned timeout_s)
{
    static const char *const components[INFO_N_OSC] = { "sm", "rdma", "pt2pt", "ucx" };
    static probe_run_t run; /* 16 KiB: not on the stack */
    memset(m, 0, sizeof *m);
    for (int i = 0; i < INFO_N_OSC; i++)
        m->osc[i].name = components[i];
    const char *env = getenv("OMPI_MCA_osc");
    snprintf(m->osc_env, sizeof m->osc_env, "%s", env ? env : "");

    char *args[] = { (char *)self, "--probe-mpi", NULL };
    probe_answer(self, args, NULL, timeout_s, "init", &m->init, &run);
    if (!m->init.ok)
        return; /* every other probe would fail the same way */
    probe_get(&run, "library", m->library, sizeof m->library);
    probe_get(&run, "standard", m->standard, sizeof m->standard);
    probe_get(&run, "granted", m->granted, sizeof m->granted);
    probe_get(&run, "cuda_compiled", m->cuda_compiled, sizeof m->cuda_compiled);
    probe_get(&run, "cuda_runtime", m->cuda_runtime, sizeof m->cuda_runtime);

    for (int i = 0; i < INFO_N_OSC; i++)
        probe_osc(self, m->osc[i].name, timeout_s, &m->osc[i].multiple, &m->osc[i].serialized, &run);
    probe_osc(self, NULL, timeout_s, &m->configured_multiple, &m->configured_serialized, &run);
}
