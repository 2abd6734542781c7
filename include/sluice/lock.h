/* SPDX-License-Identifier: MIT */
/** @file
 * sluice_lock: a FIFO mutual-exclusion lock over any MPI communicator (docs/locks.md). */
#ifndef SLUICE_LOCK_H
#define SLUICE_LOCK_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include <sluice/status.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * A queue lock built on one-sided atomics (MPI's; the processor's on a
 * shared window when every rank shares one node): FIFO, a constant number
 * of remote operations per acquire and release whatever the number of
 * ranks, a deadline on every wait, trylock, and recovery from a holder that
 * dies (SLUICE_OWNERDEAD): on the successor's node seen by pid, on another
 * node by heartbeats missing for liveness_ms, which needs
 * MPI_THREAD_SERIALIZED or above (docs/locks.md, "A holder that dies"). The
 * lock is held by
 * a process: any of its threads may acquire it, and release it from any
 * thread. Under MPI_THREAD_SERIALIZED its MPI calls take sluice's MPI guard
 * (sluice_mpi_lock), so the application's own MPI calls must too.
 */
typedef struct sluice_lock sluice_lock_t;

/** Settings of one lock, equal on every rank (sluice_lock_create). */
typedef struct sluice_lock_options {
    size_t size;            /**< sizeof(sluice_lock_options_t): set by sluice_lock_options_init */
    uint32_t timeout_ms;    /**< deadline of create, destroy and of a release that waits for a
                                 successor to link (default 30000, 1 .. 3600000) */
    uint32_t liveness_ms;   /**< a waiter checks its predecessor at most every tenth of this;
                                 one on another node is dead after this long without a
                                 heartbeat (default 1000, 10 .. 600000) */
    uint32_t max_sleep_us;  /**< longest back-off sleep of a waiter (default 100, 1 .. 100000) */
    uint32_t mpi_atomics;   /**< 1: use MPI's one-sided atomics even where every rank shares
                                 one node (docs/locks.md, "One node"); default 0 */
} sluice_lock_options_t;

/** Fill `o` with the defaults. Never fails; any thread. */
void sluice_lock_options_init(sluice_lock_options_t *o);

/**
 * Collective over `comm` (every rank calls it, with equal options): creates
 * one lock. `comm` is duplicated, so the caller may free it afterwards; `o`
 * may be NULL for the defaults. Blocks until every rank arrived, at most
 * `o->timeout_ms` (SLUICE_ETIMEDOUT: some rank never came). `*lock_p` is
 * written only on success. Needs MPI_THREAD_SERIALIZED or above when several
 * threads use sluice.
 */
int sluice_lock_create(MPI_Comm comm, const sluice_lock_options_t *o, sluice_lock_t **lock_p);

/**
 * Wait, at most `timeout_ms`, until this process holds the lock.
 *   SLUICE_OK         held.
 *   SLUICE_OWNERDEAD  held; the previous holder died holding it, so the data
 *                     it protects may be half updated. Release as usual.
 *   SLUICE_ETIMEDOUT  not held; the lock stays usable by everyone else and
 *                     this process's place in the queue is kept for its next
 *                     acquire until a releaser passes over it.
 *   SLUICE_EALREADY   the calling thread holds it already (not recursive; another
 *                     thread of the holding process waits for its release).
 *   SLUICE_EMPI       an MPI call failed; see sluice_last_error().
 * Blocks (spin, yield, then sleep up to max_sleep_us). Any thread.
 */
int sluice_lock_acquire(sluice_lock_t *lock, uint32_t timeout_ms);

/**
 * Take the lock only if nobody holds or waits for it: SLUICE_OK, or
 * SLUICE_EAGAIN and the queue is as it was (also when another thread of this
 * process holds or waits for it). Never waits in a queue: one remote
 * compare-and-swap, and on success one remote write (over osc/pt2pt each
 * needs the home rank to make MPI progress). Any thread.
 */
int sluice_lock_try(sluice_lock_t *lock);

/**
 * Give the lock to the next waiter in request order, or free it. May wait,
 * at most the lock's timeout_ms, for a waiter that has queued but not yet
 * linked itself: SLUICE_ETIMEDOUT then, and the lock is STILL HELD by this
 * process (leaving would strand that waiter); call release again, which
 * goes on where this one stopped. SLUICE_EINVAL if this process does not
 * hold the lock. Any thread.
 */
int sluice_lock_release(sluice_lock_t *lock);

/**
 * Collective: every rank calls it once, not holding the lock. Bounded by the
 * lock's timeout_ms; on SLUICE_ETIMEDOUT (a rank never came or died) the
 * handle is freed and the window is left to MPI (MPI_Finalize may then wait
 * for the absent rank). `lock` is invalid afterwards in every case except
 * SLUICE_EBUSY (this process still holds it). NULL is a no-op.
 */
int sluice_lock_destroy(sluice_lock_t *lock);

/** This process's counters of one lock (sluice_lock_stats). */
typedef struct sluice_lock_stats {
    uint64_t acquired;      /**< acquires and trylocks that took the lock */
    uint64_t remote_ops;    /**< one-sided operations this process aimed at another rank */
    uint64_t passed_over;   /**< abandoned places this process's releases skipped */
    uint64_t owner_dead;    /**< acquires that returned SLUICE_OWNERDEAD */
    uint64_t timed_out;     /**< acquires that returned SLUICE_ETIMEDOUT */
} sluice_lock_stats_t;

/** This process's counters since create. Never blocks; any thread. */
int sluice_lock_stats(const sluice_lock_t *lock, sluice_lock_stats_t *out);

/**
 * Which atomics the lock works with: "cpu" (every rank on one node, the
 * lock's window in shared memory: the processor's atomics on it) or "mpi"
 * (MPI's one-sided atomics), decided at create alike on every rank
 * (docs/locks.md, "One node"); NULL for a NULL lock. Never blocks; any thread.
 */
const char *sluice_lock_atomics(const sluice_lock_t *lock);

#ifdef __cplusplus
}
#endif
#endif
