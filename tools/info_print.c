/* SPDX-License-Identifier: MIT */
/* sluice-info's two ways of printing its report: readable sections, or one JSON object. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "info.h"

/* One osc component's line: "ok at MPI_THREAD_MULTIPLE", or why not. */
static void osc_summary(const info_probe_t *multiple, const info_probe_t *serialized, char *out,
                        size_t len)
{
    if (multiple->ok)
        snprintf(out, len, "ok at MPI_THREAD_MULTIPLE");
    else if (serialized->ok)
        snprintf(out, len, "ok at MPI_THREAD_SERIALIZED only (refuses MPI_THREAD_MULTIPLE: %s)",
                 multiple->error);
    else if (!multiple->ran)
        snprintf(out, len, "not tried (MPI does not initialise)");
    else
        snprintf(out, len, "fails: %s%s%s%s", multiple->error, serialized->ran ? "; at " : "",
                 serialized->ran ? "MPI_THREAD_SERIALIZED: " : "", serialized->ran ? serialized->error : "");
}

/* ------------------------------------------------------------------ text */

#define ROW "  %-22s %s\n"

static void text_topology(const info_topo_t *t)
{
    printf("\nNode topology (hwloc)\n");
    if (!t->ok) {
        printf(ROW, "error", t->error);
        return;
    }
    printf("  %-22s %d\n", "packages", t->packages);
    printf("  %-22s %d\n", "NUMA nodes", t->n_numa);
    for (int i = 0; i < t->n_numa; i++) {
        char label[32];
        snprintf(label, sizeof label, "  node %u", t->numa[i].os_index);
        printf("  %-22s %" PRIu64 " MiB\n", label, t->numa[i].bytes >> 20);
    }
    printf("  %-22s %d\n", "cores", t->cores);
    printf("  %-22s %d\n", "PUs", t->pus);
    printf("  %-22s %d\n", "GPUs", t->n_gpus);
    for (int i = 0; i < t->n_gpus; i++) {
        const info_gpu_t *g = &t->gpus[i];
        char label[80];
        snprintf(label, sizeof label, "  %s", g->name);
        printf("  %-22s %s%s%s%s%s, NUMA node %s\n", label, g->kind, g->model[0] ? ", " : "", g->model,
               g->pci[0] ? ", PCI " : "", g->pci, g->numa[0] ? g->numa : "unknown");
    }
    if (t->my_numa >= 0)
        printf("  %-22s %d\n", "this process on NUMA", t->my_numa);
    else
        printf(ROW, "this process on NUMA", "unknown");
}

static void text_mpi(const info_mpi_t *m)
{
    printf("\nMPI\n");
    if (!m->init.ok) {
        printf(ROW, "initialises", "no");
        printf(ROW, "why", m->init.error);
        return;
    }
    printf(ROW, "library", m->library);
    printf(ROW, "standard", m->standard);
    printf(ROW, "asked for MULTIPLE", m->granted);
    printf("  %-22s %s (compiled: %s, at run time: %s)\n", "CUDA-aware",
           strcmp(m->cuda_runtime, "yes") == 0 ? "yes" : strcmp(m->cuda_runtime, "no") == 0 ? "no" : "unknown",
           m->cuda_compiled, m->cuda_runtime);
    printf("  osc components, each alone (OMPI_MCA_osc=NAME), MPI_Win_allocate on MPI_COMM_SELF:\n");
    char line[1200];
    for (int i = 0; i < INFO_N_OSC; i++) {
        osc_summary(&m->osc[i].multiple, &m->osc[i].serialized, line, sizeof line);
        printf("    %-20s %s\n", m->osc[i].name, line);
    }
    osc_summary(&m->configured_multiple, &m->configured_serialized, line, sizeof line);
    char label[160];
    snprintf(label, sizeof label, "as configured (OMPI_MCA_osc=%s)", m->osc_env[0] ? m->osc_env : "unset");
    printf("  %s: %s\n", label, line);
    printf("  (sluice's RMA transport needs MPI_THREAD_SERIALIZED or above; osc/pt2pt refuses\n"
           "   MPI_THREAD_MULTIPLE. A window on MPI_COMM_SELF is a lone process's test: a component\n"
           "   may fail it and still serve two processes; osc/rdma, for one, reaches its own\n"
           "   process through btl/self, and two processes through btl/vader or a network.)\n");
}

static void text_options(const info_report_t *r)
{
    printf("\nOptions (sluice_options_t; a SLUICE_* variable overrides the default)\n");
    for (size_t i = 0; i < r->n_options; i++) {
        const info_option_t *o = &r->options[i];
        const sluice_option_info_t *row = o->row;
        printf("  %-22s default %" PRIu64 ", range [%" PRIu64 ", %" PRIu64 "]%s, %s\n", row->name,
               row->default_value, row->min, row->max, row->power_of_two ? ", a power of two" : "",
               row->env);
        if (strcmp(row->env, "SLUICE_TRANSPORT") == 0) /* the one option with names */
            printf("  %-22s %s=auto|shm|rma (or 0|1|2); in force: %s\n", "", row->env, r->transport);
        if (o->env_value && o->have_value)
            printf("  %-22s %s=\"%s\" in the environment: %" PRIu64 " in force\n", "", row->env,
                   o->env_value, o->value);
        else if (o->env_value)
            printf("  %-22s %s=\"%s\" in the environment\n", "", row->env, o->env_value);
        printf("  %-22s %s\n", "", row->help);
    }
    if (!r->options_ok)
        printf(ROW, "INVALID", r->options_error);
}

void info_print_text(const info_report_t *r)
{
    printf("sluice-info %s\n", r->version);
    printf("\nBuild\n");
    printf("  %-22s %s (library loaded: %d.%d)\n", "sluice version", r->version, r->library_version / 100,
           r->library_version % 100);
    printf(ROW, "CUDA", r->cuda_built ? "built in" : "not built in");
    printf(ROW, "transports compiled", "shm rma");
    printf(ROW, "sanitizer", r->sanitizer[0] ? r->sanitizer : "none");
    text_topology(&r->topo);
    text_mpi(&r->mpi);
    text_options(r);
    printf("\nTransports here\n");
    printf(ROW, "shm", r->shm_ok ? "usable (/dev/shm)" : r->shm_error);
    printf(ROW, "rma", r->rma_ok ? "usable (a window as configured)" : "not usable (see MPI above)");
    printf(ROW, "in force", r->transport);
    printf("\nVerdict\n  %s: %s\n", r->verdict_ok ? "OK" : "NOT OK", r->verdict);
}

/* ------------------------------------------------------------------ JSON */

/* A JSON string: quotes, backslashes and control characters escaped. */
static void json_str(const char *s)
{
    putchar('"');
    for (const unsigned char *c = (const unsigned char *)(s ? s : ""); *c; c++) {
        if (*c == '"' || *c == '\\')
            printf("\\%c", *c);
        else if (*c == '\n')
            printf("\\n");
        else if (*c < 0x20)
            printf("\\u%04x", *c);
        else
            putchar(*c);
    }
    putchar('"');
}

static void json_key_str(const char *key, const char *value, bool last)
{
    json_str(key);
    printf(": ");
    json_str(value);
    printf(last ? "" : ", ");
}

static void json_probe(const char *key, const info_probe_t *p, bool last)
{
    printf("\"%s\": {\"tried\": %s, \"ok\": %s, \"error\": ", key, p->ran ? "true" : "false",
           p->ok ? "true" : "false");
    if (p->ran && !p->ok)
        json_str(p->error);
    else
        printf("null");
    printf("}%s", last ? "" : ", ");
}

static void json_topology(const info_topo_t *t)
{
    printf("  \"topology\": {\"ok\": %s, \"error\": ", t->ok ? "true" : "false");
    if (t->ok)
        printf("null");
    else
        json_str(t->error);
    printf(", ");
    printf("\"packages\": %d, \"cores\": %d, \"pus\": %d,\n    \"numa_nodes\": [", t->packages, t->cores,
           t->pus);
    for (int i = 0; i < t->n_numa; i++)
        printf("%s{\"os_index\": %u, \"memory_bytes\": %" PRIu64 "}", i ? ", " : "", t->numa[i].os_index,
               t->numa[i].bytes);
    printf("],\n    \"gpus\": [");
    for (int i = 0; i < t->n_gpus; i++) {
        const info_gpu_t *g = &t->gpus[i];
        printf("%s{", i ? ", " : "");
        json_key_str("name", g->name, false);
        json_key_str("kind", g->kind, false);
        json_key_str("model", g->model, false);
        json_key_str("pci", g->pci, false);
        json_key_str("numa", g->numa, true);
        printf("}");
    }
    printf("],\n    \"process_numa\": %d},\n", t->my_numa);
}

static void json_mpi(const info_mpi_t *m)
{
    printf("  \"mpi\": {");
    json_probe("init", &m->init, false);
    json_key_str("library", m->library, false);
    json_key_str("standard", m->standard, false);
    json_key_str("thread_multiple_granted", m->granted, false);
    printf("\n    \"cuda_aware\": {");
    json_key_str("compiled", m->cuda_compiled, false);
    json_key_str("runtime", m->cuda_runtime, true);
    printf("},\n    \"osc\": [");
    char line[1200];
    for (int i = 0; i < INFO_N_OSC; i++) {
        const info_osc_t *o = &m->osc[i];
        osc_summary(&o->multiple, &o->serialized, line, sizeof line);
        printf("%s\n      {\"name\": \"%s\", \"ok\": %s, ", i ? "," : "", o->name,
               o->multiple.ok || o->serialized.ok ? "true" : "false");
        json_probe("multiple", &o->multiple, false);
        json_probe("serialized", &o->serialized, false);
        json_key_str("summary", line, true);
        printf("}");
    }
    printf("],\n    \"configured\": {\"osc_env\": ");
    if (m->osc_env[0])
        json_str(m->osc_env);
    else
        printf("null");
    printf(", \"ok\": %s, ", m->configured_multiple.ok || m->configured_serialized.ok ? "true" : "false");
    json_probe("multiple", &m->configured_multiple, false);
    json_probe("serialized", &m->configured_serialized, true);
    printf("}},\n");
}

static void json_options(const info_report_t *r)
{
    printf("  \"options\": [");
    for (size_t i = 0; i < r->n_options; i++) {
        const info_option_t *o = &r->options[i];
        printf("%s\n    {", i ? "," : "");
        json_key_str("name", o->row->name, false);
        json_key_str("env", o->row->env, false);
        printf("\"default\": %" PRIu64 ", \"min\": %" PRIu64 ", \"max\": %" PRIu64
               ", \"power_of_two\": %s, ",
               o->row->default_value, o->row->min, o->row->max, o->row->power_of_two ? "true" : "false");
        printf("\"env_value\": ");
        if (o->env_value)
            json_str(o->env_value);
        else
            printf("null");
        if (o->have_value)
            printf(", \"value\": %" PRIu64 ", ", o->value);
        else
            printf(", \"value\": null, ");
        json_key_str("help", o->row->help, true);
        printf("}");
    }
    printf("],\n  \"options_ok\": %s, \"options_error\": ", r->options_ok ? "true" : "false");
    if (r->options_ok)
        printf("null");
    else
        json_str(r->options_error);
    printf(",\n");
}

void info_print_json(const info_report_t *r)
{
    printf("{\n  \"sluice\": {");
    json_key_str("version", r->version, false);
    printf("\"library_version\": \"%d.%d\", \"cuda\": %s, \"transports\": [\"shm\", \"rma\"], ",
           r->library_version / 100, r->library_version % 100, r->cuda_built ? "true" : "false");
    printf("\"sanitizer\": ");
    if (r->sanitizer[0])
        json_str(r->sanitizer);
    else
        printf("null");
    printf("},\n");
    json_topology(&r->topo);
    json_mpi(&r->mpi);
    json_options(r);
    printf("  \"transports\": {\"shm\": {\"usable\": %s, \"error\": ", r->shm_ok ? "true" : "false");
    if (r->shm_ok)
        printf("null");
    else
        json_str(r->shm_error);
    printf("}, \"rma\": {\"usable\": %s}, ", r->rma_ok ? "true" : "false");
    json_key_str("in_force", r->transport, true);
    printf("},\n  \"ok\": %s, ", r->verdict_ok ? "true" : "false");
    json_key_str("verdict", r->verdict, true);
    printf("\n}\n");
}
