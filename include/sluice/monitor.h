/* SPDX-License-Identifier: MIT */
/** @file
 * sluice monitoring: read, without disturbing it, the status page a running
 * sluice process keeps of its channels (docs/monitor.md; tool sluice-monitor). */
#ifndef SLUICE_MONITOR_H
#define SLUICE_MONITOR_H

#include <stddef.h>
#include <stdint.h>

#include <sluice/sluice.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Channels one status page describes; a process's channels past it are not shown. */
#define SLUICE_MONITOR_CHANNELS 64
/** Streams of a channel described one by one; the channel's totals cover them all. */
#define SLUICE_MONITOR_STREAMS 64
/** Bytes kept of a channel's last error message, its NUL included. */
#define SLUICE_MONITOR_ERROR_MAX 256
/** How the names of status pages start, in sluice_monitor_dir(). */
#define SLUICE_MONITOR_PREFIX "sluice-mon-"

/** What one side knows of its peer (sluice_monitor_channel_t.peer_state). */
typedef enum sluice_monitor_peer {
    SLUICE_MONITOR_PEER_UNKNOWN = 0, /**< the channel is still opening */
    SLUICE_MONITOR_PEER_ALIVE = 1,   /**< open, and no close or death seen */
    SLUICE_MONITOR_PEER_CLOSED = 2,  /**< a wait of this side saw the peer close */
    SLUICE_MONITOR_PEER_DEAD = 3,    /**< a wait of this side found the peer process dead */
} sluice_monitor_peer_t;

/** One stream of a channel, as its side knows it. */
typedef struct sluice_monitor_stream {
    uint64_t sent;            /**< records this side published on the stream's ring */
    uint64_t peer_took;       /**< of those, taken by the peer as this side last read (a lower bound) */
    uint64_t taken;           /**< records this side took from its own ring of the stream */
    uint64_t arena_out;       /**< bytes this side holds in the peer's arena (an upper bound) */
    uint64_t arena_in;        /**< bytes of this side's own arena not yet released */
    uint64_t event;           /**< sequence number of the stream's current or last event */
    int event_open;           /**< 1 while that event's token is open here */
} sluice_monitor_stream_t;

/** One channel of a process: identity, counters and gauges. */
typedef struct sluice_monitor_channel {
    uint32_t slot;            /**< its slot in the page (0 .. SLUICE_MONITOR_CHANNELS-1) */
    uint64_t generation;      /**< the slot's generation: changes when the slot is given to a
                                   channel, again when that channel is open, and when it is
                                   freed; (slot, generation) names one channel in one state */
    char name[64];            /**< the channel's name */
    sluice_role_t role;       /**< this side's role */
    char peer[64];            /**< the peer's process name */
    char transport[8];        /**< "shm" or "rma"; "" while opening */
    int open;                 /**< 1 once open; 0 while the open is under way */
    uint32_t streams;         /**< the channel's streams */
    uint32_t ring_depth;      /**< records per stream ring */
    uint32_t global_depth;    /**< records in the global ring */
    uint64_t arena_bytes;     /**< arena bytes per stream and direction */
    int64_t peer_pid;         /**< the peer's process id (on its node), 0 while opening */
    uint64_t peer_start;      /**< its start time, in clock ticks after boot */
    int peer_local;           /**< the peer runs on this node (its pid can be checked here) */
    sluice_monitor_peer_t peer_state; /**< what this side last learned of its peer */
    int peer_exited;          /**< 1 when the peer runs on this node and the reader found its
                                   process gone (whatever this side has learned yet); always 0
                                   for a page of another PID namespace or host */
    sluice_channel_stats_t stats; /**< the counters sluice_channel_stats returns */
    uint64_t events_open;     /**< events whose token is open on this side, summed over the
                                   streams described one by one (n_streams): a lower bound when
                                   streams > n_streams */
    uint64_t runs_open;       /**< runs begun and not yet ended, as this side sent or took them */
    uint64_t lumis_open;      /**< lumis likewise */
    uint64_t run;             /**< the last run begun */
    uint64_t lumi;            /**< the last lumi begun */
    uint64_t global_sent;     /**< controller: global records published */
    uint64_t global_peer_took; /**< controller: of those, taken by the source as last read */
    uint64_t global_taken;    /**< source: global records taken */
    uint64_t errors;          /**< calls on the channel that failed: every negative status but
                                   EAGAIN, EPEERCLOSED, ECANCELED and EALREADY (docs/monitor.md) */
    int last_status;          /**< status of the last of them, 0 if none */
    char last_error[SLUICE_MONITOR_ERROR_MAX]; /**< its message; "" if none or torn */
    uint32_t n_streams;       /**< entries of `stream` filled: min(streams, SLUICE_MONITOR_STREAMS) */
    sluice_monitor_stream_t stream[SLUICE_MONITOR_STREAMS]; /**< the first streams */
} sluice_monitor_channel_t;

/** One process's status page, copied out (sluice_monitor_read). About 300 KiB: not on a small stack. */
typedef struct sluice_monitor_process {
    size_t size;              /**< sizeof(sluice_monitor_process_t), set by the caller */
    int64_t pid;              /**< the process */
    uint32_t uid;             /**< the user it runs as, as it recorded */
    uint64_t start_time;      /**< its start time, in clock ticks after boot */
    char name[64];            /**< the process name of its first context */
    char host[64];            /**< the host it runs on */
    int rank;                 /**< its rank in MPI_COMM_WORLD, -1 unknown */
    int world_size;           /**< the size of MPI_COMM_WORLD, 0 unknown */
    char job[64];             /**< SLURM_JOB_ID, "" outside Slurm */
    char mpi_job[64];         /**< the MPI launcher's job (PMIX_NAMESPACE, else OMPI's jobid) */
    uint64_t updated_ns;      /**< CLOCK_MONOTONIC of its last channel open, close, error or peer change */
    int same_namespace;       /**< 1 when the page was made in the reader's PID namespace on
                                   this boot of this machine: only then does its pid mean a
                                   process here. 0: another container or host shares the folder */
    int alive;                /**< 1 while the process (pid and start time) still runs here, 0
                                   once it is gone; -1 (unknown) when same_namespace is 0 */
    uint32_t n_channels;      /**< entries of `channel` filled */
    sluice_monitor_channel_t channel[SLUICE_MONITOR_CHANNELS]; /**< its channels, in slot order */
} sluice_monitor_process_t;

/**
 * Where status pages live: SLUICE_MONITOR_DIR when set (tests), otherwise
 * /dev/shm. A constant string or the environment's; never NULL.
 */
const char *sluice_monitor_dir(void);

/**
 * Copy the status page open on `fd` (opened read-only by the caller, who
 * has checked whom the file belongs to) into `*out`, whose `size` the
 * caller set. The page is mapped read-only and unmapped before return:
 * the process is never written to, locked against or signalled. A slot
 * that changes owner while it is read is read again, a bounded number of
 * times, then left out. SLUICE_EAGAIN: the page is still being set up
 * (read again later); SLUICE_EVERSION: another layout version;
 * SLUICE_ECORRUPT: not a status page, or sizes that do not fit the file;
 * SLUICE_ESYS: fstat or mmap failed; SLUICE_EINVAL: `out` is NULL or its
 * size wrong. sluice_last_error() says which. `*out` is complete only on
 * SLUICE_OK. Never blocks; any thread; needs no MPI.
 */
int sluice_monitor_read(int fd, sluice_monitor_process_t *out);

#ifdef __cplusplus
}
#endif
#endif
