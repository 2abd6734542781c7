/* SPDX-License-Identifier: MIT */
/* The library-wide MPI guard: serialises sluice's MPI calls below MPI_THREAD_MULTIPLE. */
#ifndef SL_MPIGUARD_H
#define SL_MPIGUARD_H

#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * Below MPI_THREAD_MULTIPLE only one thread may be inside MPI at a time
 * (SERIALIZED), so every MPI call sluice makes runs under one process-wide
 * mutex, which the application may take too (sluice_mpi_lock). It is held
 * around single MPI calls, never across a wait; the only calls that may
 * block under it are the window collectives of an RMA open and close, which
 * both sides enter only after they agreed to (docs/design.md). At
 * MPI_THREAD_MULTIPLE the guard does nothing.
 */
void sl_mpi_guard_init(void);
void sl_mpi_enter(void);
void sl_mpi_leave(void);
/* Enter only if the guard is free (or not needed); true when entered. */
bool sl_mpi_try_enter(void);

/*
 * Wait for a non-blocking MPI request (a collective of create or destroy)
 * until `deadline`, polling MPI_Test under the guard with back-off (`spin`
 * polls before yielding, sleeps up to 1 ms). SLUICE_ETIMEDOUT names `what`
 * ("lock: MPI_Ibarrier", say); the request then stays with MPI, and so must
 * its buffers. SLUICE_EMPI if the test fails.
 */
struct sl_deadline;
int sl_mpi_wait(MPI_Request *req, const struct sl_deadline *deadline, uint32_t spin,
                const char *what);

/*
 * One call into MPI's progress engine, only if the guard is free (a thread
 * already inside MPI drives progress itself). Never waits.
 */
void sl_mpi_poke(void);

#endif
