/* SPDX-License-Identifier: MIT */
/* Bounded collective steps between the two ranks of a channel. */
#include <stdatomic.h>

#include "pairwait.h"

int sl_request_wait(MPI_Request *req, bool cancel, const sl_deadline_t *deadline, const char *what)
{
    sl_backoff_t b;
    sl_backoff_init(&b, 64, 1000);
    for (;;) {
        int done = 0;
        if (MPI_Test(req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return sl_fail(SLUICE_EMPI, "%s: MPI_Test failed", what);
        if (done)
            return SLUICE_OK;
        if (sl_backoff_pause(&b, deadline) == SLUICE_ETIMEDOUT) {
            /* Point-to-point requests can be cancelled; freeing or cancelling
             * an active collective one is erroneous, so that one is left. */
            if (cancel) {
                MPI_Cancel(req);
                MPI_Request_free(req);
            }
            return sl_fail(SLUICE_ETIMEDOUT, "%s: the peer did not arrive before the deadline",
                           what);
        }
    }
}

int sl_pair_barrier(MPI_Comm comm, const sl_deadline_t *deadline, const char *what)
{
    MPI_Request req;
    if (MPI_Ibarrier(comm, &req) != MPI_SUCCESS)
        return sl_fail(SLUICE_EMPI, "%s: MPI_Ibarrier failed", what);
    return sl_request_wait(&req, false, deadline, what);
}

int sl_window_barrier(MPI_Win win, MPI_Comm comm, const sl_deadline_t *deadline, const char *what)
{
    atomic_thread_fence(memory_order_seq_cst);
    MPI_Win_sync(win);
    int rc = sl_pair_barrier(comm, deadline, what);
    if (rc)
        return rc;
    MPI_Win_sync(win);
    atomic_thread_fence(memory_order_seq_cst);
    return SLUICE_OK;
}
