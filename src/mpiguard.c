/* SPDX-License-Identifier: MIT */
/* The library-wide MPI guard: serialises sluice's MPI calls below MPI_THREAD_MULTIPLE. */
#include <mpi.h>
#include <pthread.h>
#include <stdatomic.h>

#include "backoff.h"
#include "internal.h"
#include "mpiguard.h"

static pthread_mutex_t sl_mpi_mutex = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int sl_mpi_serialise = -1; /* unknown until the first context */

void sl_mpi_guard_init(void)
{
    int level = MPI_THREAD_SINGLE;
    MPI_Query_thread(&level);
    atomic_store_explicit(&sl_mpi_serialise, level < MPI_THREAD_MULTIPLE, memory_order_relaxed);
}

void sl_mpi_enter(void)
{
    /* Unknown (no context yet) counts as serialised: safe either way. */
    if (atomic_load_explicit(&sl_mpi_serialise, memory_order_relaxed))
        pthread_mutex_lock(&sl_mpi_mutex);
}

int sl_mpi_enter_until(const sl_deadline_t *deadline, const char *what)
{
    if (!atomic_load_explicit(&sl_mpi_serialise, memory_order_relaxed))
        return SLUICE_OK;
    return sl_mutex_lock_until(&sl_mpi_mutex, deadline, what,
                               "the MPI guard stayed held by another thread (inside MPI, or in "
                               "sluice_mpi_lock)");
}

void sl_mpi_leave(void)
{
    if (atomic_load_explicit(&sl_mpi_serialise, memory_order_relaxed))
        pthread_mutex_unlock(&sl_mpi_mutex);
}

bool sl_mpi_try_enter(void)
{
    return !atomic_load_explicit(&sl_mpi_serialise, memory_order_relaxed) ||
           pthread_mutex_trylock(&sl_mpi_mutex) == 0;
}

void sl_mpi_poke(void)
{
    if (!sl_mpi_try_enter())
        return;
    /* A probe that finds nothing runs the progress engine once (osc/pt2pt
     * answers one-sided requests there). */
    int flag;
    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_SELF, &flag, MPI_STATUS_IGNORE);
    sl_mpi_leave();
}

void sluice_mpi_lock(void) { sl_mpi_enter(); }

int sluice_mpi_lock_until(uint32_t timeout_ms)
{
    sl_deadline_t deadline = sl_deadline_in(timeout_ms);
    return sl_mpi_enter_until(&deadline, "sluice_mpi_lock_until");
}
void sluice_mpi_unlock(void) { sl_mpi_leave(); }

int sl_mpi_wait(MPI_Request *req, const sl_deadline_t *deadline, uint32_t spin, const char *what)
{
    sl_backoff_t b;
    sl_backoff_init(&b, spin, 1000);
    for (;;) {
        int done = 0;
        int rc = sl_mpi_enter_until(deadline, what);
        if (rc != SLUICE_OK)
            return rc; /* the request stays with MPI, as on any timeout here */
        rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        sl_mpi_leave();
        if (rc != MPI_SUCCESS)
            return sl_fail(SLUICE_EMPI, "%s failed", what);
        if (done)
            return SLUICE_OK;
        if (sl_backoff_pause(&b, deadline) != SLUICE_OK)
            return sl_fail(SLUICE_ETIMEDOUT, "%s: not every rank arrived in time", what);
    }
}
