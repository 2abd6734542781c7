/* SPDX-License-Identifier: MIT */
/* sluice-info: what sluice finds on this node (build, topology, MPI, options) and whether a channel can open here. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "info.h"

/*
 * Exit status: 0 when a channel could be opened here (the options in the
 * environment are valid, MPI initialises, and the transport in force, or
 * one of the two under "auto", is usable); 1 otherwise, with one line on
 * stderr saying what is missing; 2 for a bad command line.
 */

#ifndef SLUICE_INFO_VERSION
#define SLUICE_INFO_VERSION "unknown"
#endif

static void usage(FILE *f)
{
    fprintf(f, "usage: sluice-info [--json] [--timeout SECONDS]\n"
               "  Prints sluice's build, this node's topology (hwloc), the MPI library and\n"
               "  which osc components make windows here, and the option table with the\n"
               "  SLUICE_* variables in force. Exits 0 when a channel could open here.\n"
               "  --json             one JSON object instead of text\n"
               "  --timeout SECONDS  bound of each MPI probe (a child process; default 20)\n"
               "The probes, to run by hand and see all that MPI prints:\n"
               "  sluice-info --probe-mpi\n"
               "  sluice-info --probe-osc NAME|- [multiple|serialized]   (-: OMPI_MCA_osc as set)\n");
}

static void gather_build(info_report_t *r)
{
    snprintf(r->version, sizeof r->version, "%s", SLUICE_INFO_VERSION);
    r->library_version = sluice_version();
#ifdef SLUICE_INFO_CUDA
    r->cuda_built = true;
#endif
    /* The tool is compiled with the library's flags, so its sanitizer is the library's. */
    r->sanitizer = "";
#if defined(__SANITIZE_ADDRESS__)
    r->sanitizer = "address";
#elif defined(__SANITIZE_THREAD__)
    r->sanitizer = "thread";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    r->sanitizer = "address";
#elif __has_feature(thread_sanitizer)
    r->sanitizer = "thread";
#endif
#endif
}

/* The table, the environment's text for each variable, and the values in force. */
static void gather_options(info_report_t *r)
{
    static const char *const transports[] = { "auto", "shm", "rma" };
    sluice_options_t in_force;
    sluice_options_init(&in_force);
    int rc = sluice_options_from_env(&in_force);
    r->options_ok = rc == SLUICE_OK;
    if (!r->options_ok) {
        snprintf(r->options_error, sizeof r->options_error, "%s", sluice_last_error());
        sluice_options_init(&in_force); /* the transport below: the default */
    }
    const sluice_option_info_t *row;
    for (size_t i = 0; (row = sluice_option_info(i)) && r->n_options < INFO_MAX_OPTIONS; i++) {
        info_option_t *o = &r->options[r->n_options++];
        o->row = row;
        o->env_value = getenv(row->env);
        o->have_value = r->options_ok && sluice_option_value(&in_force, i, &o->value) == SLUICE_OK;
    }
    r->transport = in_force.transport < 3 ? transports[in_force.transport] : "?";
}

/* A small segment made, mapped, written and removed, as the shm transport makes its own. */
static void gather_shm(info_report_t *r)
{
    char name[64];
    snprintf(name, sizeof name, "/sluice-info.%ld", (long)getpid());
    const char *step = "shm_open";
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        void *p = MAP_FAILED;
        step = "ftruncate";
        if (ftruncate(fd, 4096) == 0) {
            step = "mmap";
            p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        }
        if (p != MAP_FAILED) {
            memset(p, 0x51, 4096);
            munmap(p, 4096);
            r->shm_ok = true;
        }
        int e = errno;
        close(fd);
        shm_unlink(name);
        errno = e;
    }
    if (!r->shm_ok)
        snprintf(r->shm_error, sizeof r->shm_error, "%s of %s failed: %s (is /dev/shm mounted and writable?)",
                 step, name, strerror(errno));
}

static void verdict(info_report_t *r)
{
    const info_mpi_t *m = &r->mpi;
    const info_probe_t *rma = m->configured_multiple.ok ? &m->configured_multiple : &m->configured_serialized;
    r->rma_ok = m->init.ok && rma->ok;
    const char *osc = m->osc_env[0] ? m->osc_env : "unset: Open MPI's default selection";
    bool forced = getenv("SLUICE_TRANSPORT") != NULL;
    r->verdict_ok = false;
    if (!r->options_ok) {
        snprintf(r->verdict, sizeof r->verdict, "invalid option in the environment: %s", r->options_error);
    } else if (!m->init.ok) {
        snprintf(r->verdict, sizeof r->verdict, "MPI does not initialise here: %s", m->init.error);
    } else if (strcmp(r->transport, "shm") == 0 && !r->shm_ok) {
        snprintf(r->verdict, sizeof r->verdict, "SLUICE_TRANSPORT=shm, but shared memory is not usable: %s",
                 r->shm_error);
    } else if (strcmp(r->transport, "rma") == 0 && !r->rma_ok) {
        snprintf(r->verdict, sizeof r->verdict,
                 "SLUICE_TRANSPORT=rma, but no osc component can make a window here "
                 "(OMPI_MCA_osc %s): %s", osc, rma->error);
    } else if (!r->shm_ok && !r->rma_ok) {
        snprintf(r->verdict, sizeof r->verdict,
                 "no transport is usable: shm: %s; rma (OMPI_MCA_osc %s): %s", r->shm_error, osc,
                 rma->error);
    } else {
        r->verdict_ok = true;
        snprintf(r->verdict, sizeof r->verdict, "a channel can open here: transport %s%s; %s%s%s",
                 r->transport, forced ? ", from SLUICE_TRANSPORT" : "", r->shm_ok ? "shm usable" : "",
                 r->shm_ok && r->rma_ok ? ", " : "", r->rma_ok ? "rma usable" : "");
    }
}

/* The path to run this program again: /proc/self/exe, which a PATH lookup cannot fool. */
static void self_path(const char *argv0, char *out, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", out, len - 1);
    if (n > 0) {
        out[n] = '\0';
        return;
    }
    snprintf(out, len, "%s", argv0);
}

int main(int argc, char **argv)
{
    bool json = false;
    unsigned timeout_s = 20;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--probe-mpi") == 0)
            return info_probe_mpi_main();
        if (strcmp(argv[i], "--probe-osc") == 0 && i + 1 < argc)
            return info_probe_osc_main(argv[i + 1], i + 2 < argc ? argv[i + 2] : "multiple");
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            char *end;
            unsigned long v = strtoul(argv[++i], &end, 10);
            if (*end || v < 1 || v > 3600) {
                fprintf(stderr, "sluice-info: --timeout takes 1 to 3600 seconds, not '%s'\n", argv[i]);
                return 2;
            }
            timeout_s = (unsigned)v;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "sluice-info: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }

    static info_report_t r; /* some KiB of fixed strings: not on the stack */
    char self[4096];
    self_path(argv[0], self, sizeof self);
    gather_build(&r);
    gather_options(&r);
    gather_shm(&r);
    info_topo_gather(&r.topo);
    info_mpi_gather(&r.mpi, self, timeout_s);
    verdict(&r);

    if (json)
        info_print_json(&r);
    else
        info_print_text(&r);
    fflush(stdout);
    if (!r.verdict_ok) {
        fprintf(stderr, "sluice-info: %s\n", r.verdict);
        return 1;
    }
    return 0;
}
