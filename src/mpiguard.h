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
 * around single MPI calls, or the few of one RMA publication (record puts,
 * a flush, stamp puts, a local flush), never across a wait. A holder is not always
 * quick, though: an application thread may keep it (sluice_mpi_lock), and
 * some MPI calls have no bound of their own (MPI_Win_flush towards a dead
 * peer on osc/pt2pt; the window collectives of an RMA open and close). So
 * sluice waits for it with a deadline, sl_mpi_enter_until, everywhere it
 * has one: the deadline of the call it serves, or the liveness period for
 * the RMA data path, whose transport slots take none (docs/design.md, "MPI
 * threading contract"). The untimed sl_mpi_enter is left only where there
 * is no deadline and nothing to give up: context teardown, and the steps
 * of a lock hand-over that must not stop half-way (rma/lock.c). At
 * MPI_THREAD_MULTIPLE the guard does nothing.
 */
struct sl_deadline;
void sl_mpi_guard_init(void);
void sl_mpi_enter(void);
/*
 * Enter the guard unless it stays held until `deadline`: SLUICE_OK when
 * entered (leave with sl_mpi_leave), else SLUICE_ETIMEDOUT naming `what`
 * ("rma: MPI_Put", say) with nothing entered. Never waits when the guard is
 * free or not needed.
 */
int sl_mpi_enter_until(const struct sl_deadline *deadline, const char *what);
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
int sl_mpi_wait(MPI_Request *req, const struct sl_deadline *deadline, uint32_t spin,
                const char *what);

/*
 * One call into MPI's progress engine, only if the guard is free (a thread
 * already inside MPI drives progress itself). Never waits.
 */
void sl_mpi_poke(void);

#endif
