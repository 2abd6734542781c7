/* SPDX-License-Identifier: MIT */
/** @file
 * sluice options: a typed table of channel settings with environment overrides. */
#ifndef SLUICE_OPTIONS_H
#define SLUICE_OPTIONS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Channel options. Always initialise with sluice_options_init(), which sets
 * `size` and every default; fields added later go at the end, and the library
 * reads only the first `size` bytes, so old callers keep working.
 */
typedef struct sluice_options {
    size_t size;              /**< sizeof(sluice_options_t), set by sluice_options_init */
    uint32_t ring_depth;      /**< records per stream ring; a power of two */
    uint32_t global_depth;    /**< records in the global (run/lumi) ring; a power of two */
    uint64_t arena_bytes;     /**< product arena bytes per stream and direction */
    uint32_t max_open_lumis;  /**< lumis open at once */
    uint32_t timeout_ms;      /**< deadline of every blocking wait */
    uint32_t spin;            /**< polls spent spinning before yielding */
    uint32_t max_sleep_us;    /**< longest sleep between polls once backed off */
    uint32_t transport;       /**< a sluice_transport_choice_t */
    uint64_t liveness_ms;     /**< a dead peer is reported (SLUICE_EPEERDEAD) within this */
    uint32_t device_path;     /**< a sluice_device_path_choice_t: how device products travel */
} sluice_options_t;

/** Which transport a channel uses. AUTO chooses by where the peer runs;
 * the others force one, for tests and debugging. */
typedef enum sluice_transport_choice {
    SLUICE_TRANSPORT_AUTO = 0, /**< shared memory with a peer on this node, else RMA */
    SLUICE_TRANSPORT_SHM = 1,  /**< shared memory; SLUICE_ENOTSUP for a peer on another node */
    SLUICE_TRANSPORT_RMA = 2,  /**< MPI one-sided windows, also with a peer on this node */
} sluice_transport_choice_t;

/** How products in device memory travel (docs/gpu.md). AUTO takes the best
 * path both sides have; the others force one, and a forced path that either
 * side lacks fails the open on both sides with SLUICE_ENOTSUP. */
typedef enum sluice_device_path_choice {
    SLUICE_DEVICE_PATH_AUTO = 0,   /**< CUDA IPC on one node, else staged through host memory */
    SLUICE_DEVICE_PATH_IPC = 1,    /**< CUDA IPC: the sender writes into the receiver's GPU memory */
    SLUICE_DEVICE_PATH_STAGED = 2, /**< through the host arena: device-to-host, then host-to-device */
} sluice_device_path_choice_t;

/** Set every field to its default. Never fails. */
void sluice_options_init(sluice_options_t *options);

/**
 * Override fields from SLUICE_* environment variables (SLUICE_RING_DEPTH,
 * SLUICE_GLOBAL_DEPTH, SLUICE_ARENA_BYTES, SLUICE_MAX_OPEN_LUMIS,
 * SLUICE_TIMEOUT_MS, SLUICE_SPIN, SLUICE_MAX_SLEEP_US, SLUICE_TRANSPORT, SLUICE_LIVENESS_MS,
 * SLUICE_DEVICE_PATH). Sizes accept a K, M or G suffix; SLUICE_TRANSPORT also
 * accepts auto, shm or rma, and SLUICE_DEVICE_PATH auto, ipc or staged. Returns SLUICE_ERANGE or SLUICE_EINVAL, with a message naming
 * the variable, if a value is malformed or out of range; `options` is then
 * unchanged.
 */
int sluice_options_from_env(sluice_options_t *options);

/** Check every field against its range; SLUICE_ERANGE names the first bad one. */
int sluice_options_validate(const sluice_options_t *options);

/** One row of the option table, for tools that print it (tools/sluice-info). */
typedef struct sluice_option_info {
    const char *name;         /**< field name, e.g. "ring_depth" */
    const char *env;          /**< environment variable, e.g. "SLUICE_RING_DEPTH" */
    uint64_t default_value;   /**< what sluice_options_init sets */
    uint64_t min;             /**< smallest valid value */
    uint64_t max;             /**< largest valid value */
    int power_of_two;         /**< nonzero if the value must be a power of two */
    const char *help;         /**< one line on what the option does */
} sluice_option_info_t;

/** The i-th row of the option table, or NULL past its end. */
const sluice_option_info_t *sluice_option_info(size_t i);

/**
 * The value of the i-th row's field in `options` (initialised with
 * sluice_options_init), in *value_p. SLUICE_EINVAL if `i` is past the end of
 * the table or the field lies outside options->size; *value_p is then left
 * alone. Never blocks; any thread.
 */
int sluice_option_value(const sluice_options_t *options, size_t i, uint64_t *value_p);

#ifdef __cplusplus
}
#endif
#endif
