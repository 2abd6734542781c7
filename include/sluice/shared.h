/* SPDX-License-Identifier: MIT */
/** @file
 * sluice_shared: read-mostly data with one copy per node, written from any rank (docs/locks.md). */
#ifndef SLUICE_SHARED_H
#define SLUICE_SHARED_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include <sluice/status.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * A byte array of fixed size with one copy per node, in shared memory that
 * every rank of the node maps: calibrations, conditions, a process-history
 * registry. Any rank may set a region at any time; the call returns when
 * every node's copy holds it. Every rank reads its node's copy in place.
 *
 * Versions. Each copy carries a version word: even when the copy is stable,
 * odd while a set is writing it. A set writes every copy to one version, 2
 * above the highest of them, so all copies show the same version once a set
 * returned. A reader that sees
 * the same even version before and after reading has read exactly what the
 * set that produced that version left (and every set before it): no torn
 * update. sluice_shared_read does this check for the caller.
 */
typedef struct sluice_shared sluice_shared_t;

/** Settings of one sluice_shared, equal on every rank (sluice_shared_create). */
typedef struct sluice_shared_options {
    size_t size;          /**< sizeof(sluice_shared_options_t): set by sluice_shared_options_init */
    uint32_t timeout_ms;  /**< deadline of create, destroy, a set's lock and a read's retries
                               (default 30000, 1 .. 3600000) */
} sluice_shared_options_t;

/** Fill `o` with the defaults. Never fails; any thread. */
void sluice_shared_options_init(sluice_shared_options_t *o);

/**
 * Collective over `comm` (every rank calls it with the same `bytes`, from 1
 * to 2^40): one copy per node, zero-filled, version 0. One rank per node
 * creates the node's segment (POSIX shared memory, mode 0600, created
 * exclusively, unlinked once every rank of the node mapped it). Bounded by
 * timeout_ms. `*sh_p` written only on success. `o` may be NULL.
 */
int sluice_shared_create(MPI_Comm comm, size_t bytes, const sluice_shared_options_t *o,
                         sluice_shared_t **sh_p);

/**
 * Write `bytes` bytes from `data` at `offset` into every node's copy. Not
 * collective: any rank, any time. Writers are serialised by a sluice_lock;
 * returns once every copy holds the data, with the new version (the same on
 * every node) in `*version_p` (may be NULL).
 *   SLUICE_OK         written everywhere.
 *   SLUICE_OWNERDEAD  written everywhere, but an earlier writer died part-way:
 *                     its region may hold half its data on some nodes (rewrite
 *                     it if it matters); the versions are made equal again.
 *   SLUICE_ERANGE     the region does not fit; nothing written.
 *   SLUICE_ETIMEDOUT  the lock did not come within timeout_ms (nothing
 *                     written), or, after writing everywhere, it could not be
 *                     handed on (sluice_last_error() says which).
 *   SLUICE_EMPI       MPI failed part-way: some copies stay odd, and their
 *                     readers time out until the next set repairs them.
 * Blocks; any thread.
 */
int sluice_shared_set(sluice_shared_t *sh, size_t offset, const void *data, size_t bytes,
                      uint64_t *version_p);

/**
 * Copy `bytes` bytes at `offset` of this node's copy into `buf`, untorn:
 * retried while a set is writing, at most timeout_ms (SLUICE_ETIMEDOUT; `buf`
 * then holds a torn copy). `*version_p` (may be NULL) is the even version the
 * copy is from. Makes no MPI call except one non-blocking progress probe per
 * look (MPI_Iprobe; only at MPI_THREAD_SERIALIZED or above, before
 * MPI_Finalize), which keeps sets over osc/pt2pt going. Any thread.
 */
int sluice_shared_read(const sluice_shared_t *sh, size_t offset, void *buf, size_t bytes,
                       uint64_t *version_p);

/** @{ */
/**
 * In-place access: this node's copy (sluice_shared_size bytes, valid until
 * destroy) and its version word (a full fence, then an acquire load). To
 * read in place without tearing, call sluice_shared_version, read the data,
 * call it again: equal and even means consistent (the fence keeps the data
 * reads before the second call; no fence of the caller's own is needed).
 * Never blocks; any thread.
 */
const void *sluice_shared_data(const sluice_shared_t *sh);
size_t sluice_shared_size(const sluice_shared_t *sh);
uint64_t sluice_shared_version(const sluice_shared_t *sh);
/** @} */

/**
 * Wait, at most `timeout_ms`, until this node's copy has an even version
 * newer than `newer_than`; `*version_p` gets it. SLUICE_ETIMEDOUT otherwise.
 * Polls shared memory (spin, yield, sleep), with the progress probe of
 * sluice_shared_read. Any thread.
 */
int sluice_shared_wait(const sluice_shared_t *sh, uint64_t newer_than, uint32_t timeout_ms,
                       uint64_t *version_p);

/**
 * Collective. Bounded by timeout_ms: on SLUICE_ETIMEDOUT (a rank never came)
 * the mapping is removed and the window left to MPI. NULL is a no-op.
 */
int sluice_shared_destroy(sluice_shared_t *sh);

#ifdef __cplusplus
}
#endif
#endif
