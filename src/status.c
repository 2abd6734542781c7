/* SPDX-License-Identifier: MIT */
/* Status strings and the thread-local last-error message. */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

static _Thread_local char sl_last_error[512];

const char *sluice_strerror(int status)
{
    switch ((sluice_status_t)status) {
    case SLUICE_OK: return "success";
    case SLUICE_ABSENT: return "product absent for this event";
    case SLUICE_EOF: return "end of job";
    case SLUICE_OWNERDEAD: return "lock granted; its previous holder died holding it";
    case SLUICE_EINVAL: return "invalid argument";
    case SLUICE_ERANGE: return "value out of range";
    case SLUICE_EAGAIN: return "full or empty now, retry after progress";
    case SLUICE_ETIMEDOUT: return "deadline passed";
    case SLUICE_EORDER: return "transition out of order";
    case SLUICE_ELIMIT: return "too many open runs, lumis or reservations";
    case SLUICE_EBUSY:
        return "in use (an unfinished event or reservation, a call under way, a name served by "
               "another process)";
    case SLUICE_EALREADY: return "already done";
    case SLUICE_ENOMEM: return "out of memory";
    case SLUICE_ENOTFOUND: return "not found";
    case SLUICE_ENOTSUP: return "not supported";
    case SLUICE_ETYPE: return "type mismatch between sender and receiver";
    case SLUICE_ETOOBIG: return "product larger than the receiver's arena";
    case SLUICE_EFAILED: return "the peer failed this event";
    case SLUICE_ECANCELED: return "the controller cancelled this event";
    case SLUICE_EPEERCLOSED: return "peer closed the channel";
    case SLUICE_ECORRUPT: return "corrupt shared-memory header or record";
    case SLUICE_EVERSION: return "segment layout version mismatch";
    case SLUICE_EPEERDEAD: return "the peer process died";
    case SLUICE_EMPI: return "MPI call failed";
    case SLUICE_ESYS: return "system call failed";
    case SLUICE_EDEVICE: return "CUDA call failed";
    }
    return "unknown status";
}

const char *sluice_last_error(void) { return sl_last_error; }

int sl_fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sl_last_error, sizeof sl_last_error, fmt, ap);
    va_end(ap);
    return status;
}

uint64_t sl_fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}
