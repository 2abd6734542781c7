/* SPDX-License-Identifier: MIT */
/** @file
 * sluice status codes: one integer type for every call's result. */
#ifndef SLUICE_STATUS_H
#define SLUICE_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

/**
 * 0 is success. Positive values are informational results that are not
 * failures. Negative values are failures, grouped by what they break:
 *
 *   -1 .. -19   one call: bad argument, bad state, retry later; nothing changed
 *   -20 .. -39  one stream or one product: that exchange failed
 *   -40 .. -59  the peer: it is gone, closed, or its memory cannot be trusted
 *   -60 .. -79  the whole channel or context: MPI or the OS refused
 */
typedef enum sluice_status {
    SLUICE_OK = 0,           /**< success */
    SLUICE_ABSENT = 1,       /**< the product is absent for this event (not an error) */
    SLUICE_EOF = 2,          /**< end of job: no more transitions will come */
    SLUICE_OWNERDEAD = 3,    /**< lock granted; its previous holder died holding it (sluice/lock.h) */

    SLUICE_EINVAL = -1,      /**< an argument is invalid */
    SLUICE_ERANGE = -2,      /**< an option or size is out of its allowed range */
    SLUICE_EAGAIN = -3,      /**< full or empty now: retry after progress */
    SLUICE_ETIMEDOUT = -4,   /**< the deadline passed before the wait ended */
    SLUICE_EORDER = -5,      /**< the transition breaks the ordering rules */
    SLUICE_ELIMIT = -6,      /**< too many open lumis, runs or reservations */
    SLUICE_EBUSY = -7,       /**< in use: an unfinished event or reservation on the stream, a
                                  call under way, a service name another process serves */
    SLUICE_EALREADY = -8,    /**< already done (released twice, finished twice) */
    SLUICE_ENOMEM = -9,      /**< local memory allocation failed */
    SLUICE_ENOTFOUND = -10,  /**< no such process name, instance or type */
    SLUICE_ENOTSUP = -11,    /**< not supported by this build or transport */

    SLUICE_ETYPE = -20,      /**< sender and receiver types disagree */
    SLUICE_ETOOBIG = -21,    /**< the product can never fit in the peer's arena */
    SLUICE_EFAILED = -22,    /**< the peer failed this event (sluice_event_fail): see its message */
    SLUICE_ECANCELED = -23,  /**< the controller cancelled this event (sluice_group_cancel) */

    SLUICE_EPEERCLOSED = -40, /**< the peer closed the channel */
    SLUICE_ECORRUPT = -41,   /**< a header, record or offset from shared memory is invalid */
    SLUICE_EVERSION = -42,   /**< the peer's segment has another layout version */
    SLUICE_EPEERDEAD = -43,  /**< the peer process died (it did not close): see sluice.h */

    SLUICE_EMPI = -60,       /**< an MPI call failed */
    SLUICE_ESYS = -61,       /**< an operating-system call failed */
    SLUICE_EDEVICE = -62,    /**< a CUDA call failed (device products): sluice_last_error names it */
} sluice_status_t;

/** A constant, static description of a status code; never NULL. Thread-safe. */
const char *sluice_strerror(int status);

/**
 * The detailed message of the last failure in the calling thread (for
 * example the type-mismatch message naming the instance and both types), or
 * "" if none. The buffer is thread-local and stays valid until the next
 * failing sluice call in the same thread, like dlerror().
 */
const char *sluice_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
