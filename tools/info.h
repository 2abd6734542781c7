/* SPDX-License-Identifier: MIT */
/* sluice-info: what it learns about this machine, shared by its gathering and printing files. */
#ifndef SLUICE_INFO_H
#define SLUICE_INFO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sluice/sluice.h>

/*
 * sluice-info gathers everything into one info_report_t first (info_topo.c:
 * hwloc; info_probe.c: MPI, in child processes; info.c: build, options,
 * shared memory, the verdict), then prints it as text or JSON
 * (info_print.c). Strings are fixed arrays, empty when unknown.
 */

#define INFO_MAX_NUMA 64
#define INFO_MAX_GPUS 32
#define INFO_N_OSC 4
#define INFO_MAX_OPTIONS 32

typedef struct info_numa {
    unsigned os_index;
    uint64_t bytes;           /* local memory */
} info_numa_t;

typedef struct info_gpu {
    char name[64];            /* hwloc's OS device name ("cuda0", "card1"), or the PCI address */
    char kind[32];            /* "CUDA", "GPU", "CoProc", or "PCI display" (no OS device known) */
    char model[128];          /* what hwloc says it is, when it says */
    char pci[32];             /* PCI bus id, "" if none */
    char numa[64];            /* NUMA nodes it is attached to, "0" or "0,1"; "" unknown */
} info_gpu_t;

typedef struct info_topo {
    bool ok;
    char error[256];
    int packages, cores, pus;
    info_numa_t numa[INFO_MAX_NUMA];
    int n_numa;
    info_gpu_t gpus[INFO_MAX_GPUS];
    int n_gpus;
    int my_numa;              /* NUMA node this process last ran on, -1 unknown */
} info_topo_t;

/* One run of a child probe (sluice-info --probe-...). */
typedef struct info_probe {
    bool ran;                 /* false: not tried (a level that need not be) */
    bool ok;
    char error[512];          /* why not, in MPI's or the child's own words */
} info_probe_t;

/* One osc component, tried alone at each thread level. */
typedef struct info_osc {
    const char *name;
    info_probe_t multiple;    /* MPI_THREAD_MULTIPLE */
    info_probe_t serialized;  /* MPI_THREAD_SERIALIZED, tried when MULTIPLE fails */
} info_osc_t;

typedef struct info_mpi {
    info_probe_t init;        /* MPI initialises as a singleton */
    char library[512];        /* MPI_Get_library_version */
    char standard[16];        /* MPI_Get_version, "3.1" */
    char granted[32];         /* level granted when asked for MPI_THREAD_MULTIPLE */
    char cuda_compiled[16];   /* MPIX_CUDA_AWARE_SUPPORT: "yes", "no", "unknown" */
    char cuda_runtime[16];    /* MPIX_Query_cuda_support(): "yes", "no", "unknown" */
    info_osc_t osc[INFO_N_OSC];
    /* The selection a channel gets here: OMPI_MCA_osc as the environment has it. */
    char osc_env[128];        /* "" when unset (Open MPI's default selection) */
    info_probe_t configured_multiple, configured_serialized;
} info_mpi_t;

typedef struct info_option {
    const sluice_option_info_t *row;
    const char *env_value;    /* the variable's text, NULL when unset */
    bool have_value;          /* `value` is the one in force (the environment parsed) */
    uint64_t value;
} info_option_t;

typedef struct info_report {
    /* build */
    char version[32];         /* of the tool's build, "0.1.0" */
    int library_version;      /* sluice_version() of the loaded library */
    bool cuda_built;
    const char *sanitizer;    /* "address", "thread" or "" */
    /* options */
    info_option_t options[INFO_MAX_OPTIONS];
    size_t n_options;
    bool options_ok;
    char options_error[512];  /* sluice_last_error(), naming the variable */
    const char *transport;    /* "auto", "shm" or "rma" in force */
    /* transports */
    bool shm_ok;
    char shm_error[256];
    bool rma_ok;              /* the configured selection makes a window at SERIALIZED or above */
    /* the rest */
    info_topo_t topo;
    info_mpi_t mpi;
    bool verdict_ok;
    char verdict[2048];       /* what is missing, when !verdict_ok; otherwise what works */
} info_report_t;

/* Fill `t` from hwloc; t->ok false with t->error when the topology cannot load. */
void info_topo_gather(info_topo_t *t);

/*
 * Run the MPI probes: `self` is this program's path, each probe a child
 * process (an MPI singleton) killed after `timeout_s` seconds.
 */
void info_mpi_gather(info_mpi_t *m, const char *self, unsigned timeout_s);

/* The child's side: --probe-mpi, or --probe-osc NAME at `level` ("multiple"
 * or "serialized"). Prints "sluice-info-probe: key=value" lines; returns
 * the exit status. */
int info_probe_mpi_main(void);
int info_probe_osc_main(const char *osc, const char *level);

void info_print_text(const info_report_t *r);
void info_print_json(const info_report_t *r);

#endif
