/* SPDX-License-Identifier: MIT */
/* The HLT demonstrator's report (docs/hlt.md): gathered by rank 0 with bounded waits, printed as
 * a table and as JSON, and judged. */
#include <stdlib.h>
#include <unistd.h>

#include "hlt.h"

/* ------------------------------------------------------------ the report */

/* Every live process sends its report to rank 0, which waits for each at most `seconds`. */
int gather(const hlt_report_t *mine, hlt_report_t *all, double seconds)
{
    int size = (int)(cfg.clients + cfg.servers);
    if (rank != 0) {
        MPI_Request rq;
        MPI_Isend(mine, sizeof *mine, MPI_BYTE, 0, HLT_TAG_REPORT, MPI_COMM_WORLD, &rq);
        int done = 0;
        for (double until = now_s() + seconds; !done && now_s() < until; usleep(1000))
            MPI_Test(&rq, &done, MPI_STATUS_IGNORE);
        return done ? 0 : 1;
    }
    all[0] = *mine;
    int missing = 0;
    MPI_Request *rq = calloc((size_t)size, sizeof *rq);
    rq[0] = MPI_REQUEST_NULL;
    for (int i = 1; i < size; i++) {
        all[i] = (hlt_report_t){ .is_client = i < (int)cfg.clients,
                                 .index = i < (int)cfg.clients ? i : i - (int)cfg.clients };
        /* Marked killed unless a report comes: a victim that lived to report did not die. */
        all[i].killed = !all[i].is_client && all[i].index == cfg.kill_server;
        MPI_Irecv(&all[i], sizeof all[i], MPI_BYTE, i, HLT_TAG_REPORT, MPI_COMM_WORLD, &rq[i]);
    }
    /* Wait for every process but the victim, which is looked at once at the end. */
    for (double until = now_s() + seconds;; usleep(1000)) {
        int waiting = 0;
        for (int i = 1; i < size; i++) {
            int got = 0;
            if (rq[i] != MPI_REQUEST_NULL && !all[i].killed) {
                MPI_Test(&rq[i], &got, MPI_STATUS_IGNORE);
                waiting += !got;
            }
        }
        if (!waiting || now_s() >= until)
            break;
    }
    for (int i = 1; i < size; i++) {
        int got = 0;
        if (rq[i] == MPI_REQUEST_NULL)
            continue;
        MPI_Test(&rq[i], &got, MPI_STATUS_IGNORE);
        if (got)
            continue;
        if (!all[i].killed) {
            fprintf(stderr, "%s %d sent no report within %.0f s\n",
                    all[i].is_client ? "client" : "server", all[i].index, seconds);
            missing = 1;
        }
        /* Cancelling a receive is local: the buffer is ours again after the wait. */
        MPI_Cancel(&rq[i]);
        MPI_Wait(&rq[i], MPI_STATUS_IGNORE);
    }
    free(rq);
    return missing;
}

static double per_event_us(double s, uint64_t n) { return n ? s * 1e6 / (double)n : 0; }

void print_report(const hlt_report_t *all, int n)
{
    printf("\n  %-9s %-10s %-9s %8s %9s %9s %8s %8s %8s %9s %9s %11s %9s\n", "process", "host",
           "path", "events", "events/s", "rejected", "moved", "p50 ms", "p99 ms", "MiB out",
           "MiB in", "sluice us/ev", "cpu us/ev");
    for (int i = 0; i < n; i++) {
        const hlt_report_t *r = &all[i];
        char who[16];
        snprintf(who, sizeof who, "%s %d", r->is_client ? "client" : "server", r->index);
        if (r->killed) {
            printf("  %-9s killed in the middle of a run (fault mode): no report\n", who);
            continue;
        }
        char moved[24] = "-", p50[24] = "-", p99[24] = "-";
        if (r->is_client) {
            snprintf(moved, sizeof moved, "%llu", (unsigned long long)r->redispatched);
            snprintf(p50, sizeof p50, "%.2f", r->p50_ms);
            snprintf(p99, sizeof p99, "%.2f", r->p99_ms);
        }
        printf("  %-9s %-10.10s %-9s %8llu %9.0f %9llu %8s %8s %8s %9.1f %9.1f %11.1f %9.0f\n",
               who, r->host, r->path, (unsigned long long)r->events,
               r->seconds > 0 ? (double)r->events / r->seconds : 0,
               (unsigned long long)r->rejected, moved, p50, p99,
               (double)r->bytes_out / (1 << 20), (double)r->bytes_in / (1 << 20),
               per_event_us(r->sluice_cpu_s, r->events + (r->is_client ? 0 : r->rejected)),
               per_event_us(r->cpu_s, r->events));
    }
    printf("  (client: rejected = cancelled by its early filter, moved = re-dispatched after a "
           "server was lost;\n   server: events = answered, rejected = cancelled while on it)\n");
    printf("  events each server took, as the clients' groups sent them:");
    for (uint32_t s = 0; s < cfg.servers; s++) {
        uint64_t sum = 0;
        for (int i = 0; i < (int)cfg.clients; i++)
            sum += all[i].per_server[s];
        printf(" server %u: %llu%s", s, (unsigned long long)sum, s + 1 < cfg.servers ? "," : "\n");
    }
}

void json_report(FILE *f, const hlt_report_t *all, int n, bool ok)
{
    fprintf(f, "{\n  \"config\": {\"clients\": %u, \"servers\": %u, \"streams\": %u, "
               "\"events_per_client\": %u, \"raw_bytes\": %zu, \"feds\": %u, "
               "\"lumi_events\": %u, \"open_lumis\": %u, \"work_us\": %.0f, "
               "\"offload_pct\": %u, \"reject_pct\": %u, \"kill_server\": %d},\n",
            cfg.clients, cfg.servers, cfg.streams, cfg.events, raw_bytes, cfg.feds,
            cfg.lumi_events, cfg.open_lumis, cfg.work_us, cfg.offload_pct, cfg.reject_pct,
            cfg.kill_server);
    for (int pass = 0; pass < 2; pass++) {
        fprintf(f, "  \"%s\": [", pass ? "servers" : "clients");
        const char *sep = "\n";
        for (int i = 0; i < n; i++) {
            const hlt_report_t *r = &all[i];
            if (r->is_client != !pass)
                continue;
            fprintf(f, "%s    {\"index\": %d, \"killed\": %s", sep, r->index,
                    r->killed ? "true" : "false");
            sep = ",\n";
            if (r->killed) {
                fprintf(f, "}");
                continue;
            }
            fprintf(f, ", \"host\": \"%s\", \"events\": %llu, \"events_per_s\": %.1f, "
                       "\"rejected\": %llu, \"bytes_out\": %llu, \"bytes_in\": %llu, "
                       "\"sluice_cpu_us_per_event\": %.2f, \"cpu_us_per_event\": %.1f",
                    r->host, (unsigned long long)r->events,
                    r->seconds > 0 ? (double)r->events / r->seconds : 0,
                    (unsigned long long)r->rejected, (unsigned long long)r->bytes_out,
                    (unsigned long long)r->bytes_in,
                    per_event_us(r->sluice_cpu_s, r->events + (pass ? r->rejected : 0)),
                    per_event_us(r->cpu_s, r->events));
            if (pass) {
                fprintf(f, ", \"max_open_lumis\": %u}", r->max_open_lumis);
                continue;
            }
            fprintf(f, ", \"transport\": \"%s\", \"path\": \"%s\", \"verified\": %llu, "
                       "\"redispatched\": %llu, "
                       "\"latency_ms\": {\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f}, "
                       "\"per_server\": [",
                    r->transport, r->path, (unsigned long long)r->verified,
                    (unsigned long long)r->redispatched, r->p50_ms, r->p90_ms, r->p99_ms);
            for (uint32_t s = 0; s < cfg.servers; s++)
                fprintf(f, "%s%llu", s ? ", " : "", (unsigned long long)r->per_server[s]);
            fprintf(f, "]}");
        }
        fprintf(f, "\n  ],\n");
    }
    fprintf(f, "  \"verdict\": \"%s\"\n}\n", ok ? "OK" : "FAILED");
}

/* Rank 0: every client's events accounted for and checked; in the fault mode, some moved. */
bool judge(const hlt_report_t *all, int n)
{
    bool ok = true;
    uint64_t moved = 0, lumis = 0;
    for (int i = 0; i < n; i++) {
        const hlt_report_t *r = &all[i];
        if (r->killed)
            continue;
        if (r->failed) {
            printf("  %s %d failed (its messages are above)\n", r->is_client ? "client" : "server",
                   r->index);
            ok = false;
        }
        if (!r->is_client) {
            lumis = r->max_open_lumis > lumis ? r->max_open_lumis : lumis;
            continue;
        }
        moved += r->redispatched;
        if (r->events != cfg.events || r->verified + r->rejected != cfg.events) {
            printf("  client %d: %llu of %u events finished (%llu verified, %llu rejected)\n",
                   r->index, (unsigned long long)r->events, cfg.events,
                   (unsigned long long)r->verified, (unsigned long long)r->rejected);
            ok = false;
        }
    }
    printf("  lumis of one client open at once on a server: up to %llu\n",
           (unsigned long long)lumis);
    if (cfg.kill_server >= 0 && !all[cfg.clients + (uint32_t)cfg.kill_server].killed) {
        printf("  fault mode: server %d reported at the end: it did not die\n", cfg.kill_server);
        ok = false;
    } else if (cfg.kill_server >= 0 && !moved) {
        printf("  fault mode: server %d was killed, but no event was re-dispatched\n",
               cfg.kill_server);
        ok = false;
    } else if (cfg.kill_server >= 0) {
        printf("  fault mode: server %d was killed; %llu event(s) re-dispatched to the others, "
               "none lost\n", cfg.kill_server, (unsigned long long)moved);
    }
    return ok;
}
