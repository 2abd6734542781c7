/* SPDX-License-Identifier: MIT */
/** @file
 * sluice services: a source that separately launched controllers connect to by name. */
#ifndef SLUICE_SERVICE_H
#define SLUICE_SERVICE_H

#include <sluice/sluice.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * A service is one source process that controllers of other jobs (other
 * mpirun or srun commands, started before or after it) connect to by a
 * name (docs/service.md). Each connection yields a two-rank context,
 * controller rank 0 and source rank 1, on which both sides open a channel
 * as in one job: on one node it uses sluice's own shared-memory segments,
 * across nodes the RMA transport.
 *
 * The name is found through Open MPI's name server (the jobs were started
 * with `mpirun --ompi-server file:URI`) and, when a port directory is given,
 * through a port file `<dir>/<name>.port` on a file system both sides see.
 * With Open MPI 4.1 the MPI connection itself needs the name server too,
 * whichever way the name was found. The published record holds a random
 * secret that a controller must show before the source answers: anyone who
 * can read the record (the name server's clients, the port file's owner)
 * can connect; nobody else gets an answer from the source. A controller
 * takes a port file only if it is a regular file of its own user that
 * nobody else may write; otherwise it asks the name server.
 *
 * Every call here needs MPI initialised. The MPI calls are made under the
 * MPI guard (sluice_mpi_lock), waited for until the call's deadline
 * (SLUICE_ETIMEDOUT); the name-server calls themselves wait as long as the
 * name server does not answer. Around MPI_Open_port, MPI_Close_port and the
 * name-server calls the error handlers of MPI_COMM_WORLD and MPI_COMM_SELF
 * are MPI_ERRORS_RETURN for a moment: an application thread must not change
 * them meanwhile (docs/service.md, "Known gaps"). Any thread, one call per
 * service at a time.
 */
typedef struct sluice_service sluice_service_t;

/** Settings of sluice_service_open and sluice_service_connect; NULL for the defaults. */
typedef struct sluice_service_options {
    size_t size;              /**< sizeof(sluice_service_options_t) */
    const char *port_dir;     /**< also a port file here; NULL: $SLUICE_PORT_DIR, else none */
    uint32_t timeout_ms;      /**< deadline of open and connect, and of the exchange inside
                                   accept once a controller knocked; 0: 30000 */
} sluice_service_options_t;

/**
 * Source: serve `name` (1..63 characters of [A-Za-z0-9._-]). Publishes it on
 * the name server if the job has one and writes the port file if a port
 * directory is set (mode 0600: it holds the secret); fails
 * (SLUICE_ENOTFOUND) if neither could be done.
 * SLUICE_EBUSY if a live process already serves the name (a record left by
 * a dead one is replaced). Controllers may knock from now on; they wait
 * until sluice_service_accept takes them.
 */
int sluice_service_open(const char *name, const sluice_service_options_t *options,
                        sluice_service_t **svc_p);

/**
 * Source: take the next controller that knocked, waiting at most
 * `timeout_ms` for one (0: do not wait), and create a context with it,
 * naming this process `proc_name`. SLUICE_ETIMEDOUT (or SLUICE_EAGAIN for
 * 0) when none came: nothing was kept. A knock that is not a sluice
 * controller of this version or does not know the record's secret, or a
 * controller that goes away before the connection is made, is dropped
 * without an answer and the wait goes on. The source enters the MPI accept
 * only after acknowledging the controller's go, and only within the
 * service timeout counted from the knock.
 */
int sluice_service_accept(sluice_service_t *svc, const char *proc_name, uint32_t timeout_ms,
                          sluice_context_t **ctx_p);

/**
 * Controller: connect to the source serving `name` and create a context
 * with it, naming this process `proc_name`. Retries until the options'
 * deadline while the name is not served yet (the source may start later),
 * or while its source is busy accepting another controller; then
 * SLUICE_ENOTFOUND (no live source serves the name; the message says why a
 * port file was ignored) or SLUICE_ETIMEDOUT (one does but did not accept
 * in time). Enters the MPI connect only once the source acknowledged it is
 * entering its accept.
 */
int sluice_service_connect(const char *name, const char *proc_name,
                           const sluice_service_options_t *options, sluice_context_t **ctx_p);

/** Source: withdraw the name (name server and port file) and free the service.
 * Contexts already accepted stay valid. */
void sluice_service_close(sluice_service_t *svc);

#ifdef __cplusplus
}
#endif
#endif
