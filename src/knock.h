/* SPDX-License-Identifier: MIT */
/* The knock: a small TCP exchange that tells a service a controller is at its door. */
#ifndef SL_KNOCK_H
#define SL_KNOCK_H

#include <stddef.h>
#include <stdint.h>

#include "backoff.h"

/*
 * MPI_Comm_accept cannot be bounded or cancelled, so a service enters it
 * only once a controller has said, over TCP, that it is about to connect
 * (docs/service.md, "Protocol"). This file is that TCP part: a listening
 * socket on every IPv4 address of the host, and reads, writes and connects
 * that all end by a deadline. No MPI.
 */

#define SL_KNOCK_ADDRS_MAX 256   /* "a.b.c.d,a.b.c.d,..." of one host */

typedef struct sl_knock_listener {
    int fd;
    uint16_t port;
    char addrs[SL_KNOCK_ADDRS_MAX]; /* this host's IPv4 addresses, loopback last */
} sl_knock_listener_t;

/* Listen on an ephemeral port of every address. */
int sl_knock_listen(sl_knock_listener_t *l);
void sl_knock_unlisten(sl_knock_listener_t *l);

/* Next connection, waiting until `deadline`: a connected fd, or SLUICE_EAGAIN
 * when none came (nothing was taken). */
int sl_knock_accept(sl_knock_listener_t *l, const sl_deadline_t *deadline, int *fd_p);

/* Connect to `port` at the first address of the comma-separated `addrs`
 * that answers, giving each at most `try_ms` (an address that drops packets
 * must not use up the others' time) and all of them `deadline`.
 * SLUICE_ENOTFOUND when none did. */
int sl_knock_dial(const char *addrs, uint16_t port, uint32_t try_ms, const sl_deadline_t *deadline,
                  int *fd_p);

/* All of `len` bytes, or SLUICE_ETIMEDOUT / SLUICE_EPEERCLOSED / SLUICE_ESYS. */
int sl_knock_write(int fd, const void *buf, size_t len, const sl_deadline_t *deadline);
int sl_knock_read(int fd, void *buf, size_t len, const sl_deadline_t *deadline);

#endif
