/* SPDX-License-Identifier: MIT */
/* Bounded collective steps between the two ranks of a channel. */
#ifndef SL_PAIRWAIT_H
#define SL_PAIRWAIT_H

#include <mpi.h>

#include "backoff.h"

/*
 * A barrier over `comm` that gives up at `deadline` (SLUICE_ETIMEDOUT, with
 * `what` in the message) instead of blocking forever. An abandoned barrier
 * request is left to complete (or not) on its own.
 */
int sl_pair_barrier(MPI_Comm comm, const sl_deadline_t *deadline, const char *what);

/*
 * Make this side's plain stores to `win` visible to the peer, then barrier
 * (bounded): after it, each side may read what the other wrote before it.
 * A barrier alone is no memory barrier, hence the fences and MPI_Win_sync
 * around it.
 */
int sl_window_barrier(MPI_Win win, MPI_Comm comm, const sl_deadline_t *deadline, const char *what);

/*
 * Wait for `req` until `deadline`. On timeout a point-to-point request
 * (`cancel`) is cancelled and freed; a collective one is left pending.
 */
int sl_request_wait(MPI_Request *req, bool cancel, const sl_deadline_t *deadline, const char *what);

#endif
