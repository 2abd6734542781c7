/* SPDX-License-Identifier: MIT */
/** @file
 * sluice_history: a job-wide registry of process histories, resolved by 16-byte id on any node. */
#ifndef SLUICE_HISTORY_H
#define SLUICE_HISTORY_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include <sluice/status.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * A framework's process history (the chain of process names, releases and
 * configuration hashes behind a run's data) is large and rarely changes; its
 * 16-byte id travels with every transition. The registry holds each history
 * once per node (on sluice_shared, docs/locks.md): a sender registers the
 * full history once, sends only the id, and the receiver, on any node of the
 * communicator, resolves the id by reading its node's copy in place.
 * Histories are never changed or removed once registered, so a resolved
 * pointer stays valid until the registry is destroyed.
 */
typedef struct sluice_history sluice_history_t;

/** @var SLUICE_HISTORY_ID_BYTES
 * Bytes of a process-history id (sluice_transition_t.history). */
enum { SLUICE_HISTORY_ID_BYTES = 16 };

/**
 * Collective over `comm`: a registry for at most `max_entries` histories
 * (1 .. 2^20) holding at most `heap_bytes` bytes of history in all (1 ..
 * 2^36). Bounded by `timeout_ms` (0: 30000). `*h_p` written only on success.
 */
int sluice_history_create(MPI_Comm comm, uint32_t max_entries, size_t heap_bytes,
                          uint32_t timeout_ms, sluice_history_t **h_p);

/**
 * Register `bytes` bytes (may be 0) under `id`; not collective, any rank,
 * any thread. Returns once every node's copy has it:
 *   SLUICE_OK        registered now;
 *   SLUICE_EALREADY  the same id with the same bytes was registered before
 *                    (by anyone): nothing to do;
 *   SLUICE_EINVAL    the id is registered with other bytes (named in
 *                    sluice_last_error());
 *   SLUICE_ELIMIT    no entry or heap space left;
 *   SLUICE_ETIMEDOUT the writer lock did not come in time (nothing changed).
 * Blocks (one sluice_lock acquire, then one-sided puts to each node).
 */
int sluice_history_register(sluice_history_t *h, const uint8_t id[SLUICE_HISTORY_ID_BYTES],
                            const void *blob, size_t bytes);

/**
 * Resolve `id` on this node's copy: `*blob_p` points into shared memory
 * (read-only, valid until destroy), `*bytes_p` its length. SLUICE_ENOTFOUND
 * if it is not registered (yet). While a registration is writing this
 * node's copy it retries (spin, yield, sleep), at most the registry's
 * timeout (SLUICE_ETIMEDOUT: the registrar died part-way). Makes one
 * non-blocking MPI progress probe per look, like sluice_shared_read, so a
 * caller that polls for an id keeps the registration it waits for going.
 * Any thread.
 */
int sluice_history_lookup(const sluice_history_t *h, const uint8_t id[SLUICE_HISTORY_ID_BYTES],
                          const void **blob_p, size_t *bytes_p);

/** Collective; bounded like sluice_shared_destroy. NULL is a no-op. */
int sluice_history_destroy(sluice_history_t *h);

#ifdef __cplusplus
}
#endif
#endif
