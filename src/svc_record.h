/* SPDX-License-Identifier: MIT */
/* Service records: the line a source publishes, its knock secret, and the port file that holds it. */
#ifndef SL_SVC_RECORD_H
#define SL_SVC_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "knock.h"

/*
 * A service source publishes one line (docs/service.md, "Finding a source"):
 *
 *   sluice-service 2 <pid> <start time> <host> <tcp port> <ipv4,...> <secret>
 *
 * on the name server and, with a port directory, in a port file. <secret>
 * is 32 hex digits, 128 random bits drawn at sluice_service_open: whoever
 * knocks must show it before the source gives out its MPI port. Readers of
 * the record are therefore trusted with the service; the port file is
 * written 0600 and read only when it is a regular file of this user that
 * nobody else may write. No MPI here.
 */

#define SL_SVC_RECORD_MAX 512         /* well under MPI_MAX_PORT_NAME: it is published as a port */
#define SL_SECRET_BYTES 16

typedef struct sl_svc_record {
    int pid;
    unsigned long long start;
    char host[64];
    unsigned port;
    char addrs[SL_KNOCK_ADDRS_MAX];
    uint8_t secret[SL_SECRET_BYTES];
} sl_svc_record_t;

/* Draw a fresh secret from the kernel's generator: SLUICE_OK or SLUICE_ESYS. */
int sl_secret_draw(uint8_t secret[SL_SECRET_BYTES]);

/* Equal secrets? In time that does not depend on where they differ. */
bool sl_secret_equal(const uint8_t a[SL_SECRET_BYTES], const uint8_t b[SL_SECRET_BYTES]);

/* `r` as a record line (no newline); SLUICE_ERANGE if it does not fit `len`. */
int sl_svc_record_format(const sl_svc_record_t *r, char *out, size_t len);

/* Parse a record line: SLUICE_OK, or SLUICE_ECORRUPT naming what is wrong. */
int sl_svc_record_parse(const char *text, sl_svc_record_t *r);

/* `<dir>/<name>.port`. */
void sl_port_file_path(char *out, size_t len, const char *dir, const char *name);

/*
 * The record line in the port file at `path`, without its newline. Never
 * blocks (a FIFO planted there is not opened for good) and trusts only a
 * regular file owned by this effective user, not writable by group or
 * others, of at most SL_SVC_RECORD_MAX bytes, reached without a symbolic link:
 * SLUICE_ENOTFOUND when there is no file, SLUICE_ECORRUPT (with a message
 * naming the file and what is wrong with it) when there is one not to be
 * trusted or read.
 */
int sl_port_file_read(const char *path, char *record, size_t len);

/* Write the port file whole or not at all (a 0600 temporary file renamed into place). */
int sl_port_file_write(const char *path, const char *record);

#endif
