/* SPDX-License-Identifier: MIT */
/* Internal access to sluice_shared for structures built on it (the process-history registry). */
#ifndef SL_SHARED_H
#define SL_SHARED_H

#include <sluice/shared.h>

/*
 * A read-modify-write of the shared array: take the writer lock, read this
 * node's copy (while the lock is held it is current: every earlier set
 * completed on every node before releasing it), put the changes, unlock.
 * sl_shared_lock returns SLUICE_OK, SLUICE_OWNERDEAD (held; a writer died
 * part-way) or a failure (not held). sl_shared_put needs the lock held; each
 * call is one version step on every node. Blocking; any thread.
 */
int sl_shared_lock(sluice_shared_t *sh);
int sl_shared_unlock(sluice_shared_t *sh);
int sl_shared_put(sluice_shared_t *sh, size_t offset, const void *data, size_t bytes,
                  uint64_t *version_p);

/* How many nodes (copies) there are, and a read of node `node`'s copy (one
 * MPI_Get, flushed). For repairs after SLUICE_OWNERDEAD, under the lock. */
int sl_shared_nodes_n(const sluice_shared_t *sh);
int sl_shared_get(sluice_shared_t *sh, int node, size_t offset, void *buf, size_t bytes);

/*
 * One non-blocking MPI progress probe for this process, where the thread
 * level allows and MPI is not finalized: readers that poll shared memory
 * lend it so that one-sided operations aimed at this process complete
 * (emulated atomics and osc/pt2pt need the target inside MPI).
 */
void sl_shared_poke(const sluice_shared_t *sh);

#endif
