/* SPDX-License-Identifier: MIT */
/* Service records: format, parse, the knock secret, and the port file read with suspicion. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "svc_record.h"

#define SL_RECORD_VERSION 2u      /* 2: the secret was added */

int sl_secret_draw(uint8_t secret[SL_SECRET_BYTES])
{
    /* Blocking only until the kernel's pool is first initialised (early boot). */
    size_t got = 0;
    while (got < SL_SECRET_BYTES) {
        ssize_t n = getrandom(secret + got, SL_SECRET_BYTES - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return sl_fail(SLUICE_ESYS, "service: getrandom failed: %s", strerror(errno));
        got += (size_t)n;
    }
    return SLUICE_OK;
}

bool sl_secret_equal(const uint8_t a[SL_SECRET_BYTES], const uint8_t b[SL_SECRET_BYTES])
{
    /* No early exit: a stranger timing its knocks learns nothing of the
     * secret. (A plain accumulator: gcc and clang keep such a loop whole.) */
    uint8_t diff = 0;
    for (size_t i = 0; i < SL_SECRET_BYTES; i++)
        diff |= (uint8_t)(a[i] ^ b[i]);
    return diff == 0;
}

int sl_svc_record_format(const sl_svc_record_t *r, char *out, size_t len)
{
    char hex[2 * SL_SECRET_BYTES + 1];
    for (size_t i = 0; i < SL_SECRET_BYTES; i++)
        snprintf(hex + 2 * i, 3, "%02x", r->secret[i]);
    int n = snprintf(out, len, "sluice-service %u %d %llu %s %u %s %s", SL_RECORD_VERSION, r->pid,
                     r->start, r->host, r->port, r->addrs, hex);
    if (n < 0 || (size_t)n >= len)
        return sl_fail(SLUICE_ERANGE, "service: the record of %s does not fit %zu bytes", r->host,
                       len);
    return SLUICE_OK;
}

static int sl_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int sl_svc_record_parse(const char *text, sl_svc_record_t *r)
{
    unsigned version = 0;
    char hex[2 * SL_SECRET_BYTES + 2] = "";
    int n = sscanf(text, "sluice-service %u %d %llu %63s %u %255s %33s", &version, &r->pid,
                   &r->start, r->host, &r->port, r->addrs, hex);
    if (n != 7 || version != SL_RECORD_VERSION || r->port == 0 || r->port > 65535 ||
        strlen(hex) != 2 * SL_SECRET_BYTES)
        return sl_fail(SLUICE_ECORRUPT, "not a sluice service record of version %u: \"%.80s\"",
                       SL_RECORD_VERSION, text);
    for (size_t i = 0; i < SL_SECRET_BYTES; i++) {
        int hi = sl_hex_digit(hex[2 * i]), lo = sl_hex_digit(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return sl_fail(SLUICE_ECORRUPT, "service record of %s: the secret is not 32 "
                                            "lower-case hex digits",
                           r->host);
        r->secret[i] = (uint8_t)(hi << 4 | lo);
    }
    return SLUICE_OK;
}

void sl_port_file_path(char *out, size_t len, const char *dir, const char *name)
{
    snprintf(out, len, "%s/%s.port", dir, name);
}

int sl_port_file_read(const char *path, char *record, size_t len)
{
    /* O_NONBLOCK: a FIFO opens at once instead of waiting for a writer; the
     * fstat below then refuses it. O_NOFOLLOW: the file itself, not where a
     * link planted in a shared directory points. */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return SLUICE_ENOTFOUND;
        return sl_fail(SLUICE_ECORRUPT, "port file %s ignored: cannot open it: %s%s", path,
                       strerror(errno), errno == ELOOP ? " (a symbolic link)" : "");
    }
    struct stat st;
    int rc = SLUICE_OK;
    if (fstat(fd, &st) != 0)
        rc = sl_fail(SLUICE_ECORRUPT, "port file %s ignored: fstat failed: %s", path,
                     strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rc = sl_fail(SLUICE_ECORRUPT, "port file %s ignored: not a regular file (mode %o)", path,
                     (unsigned)st.st_mode);
    else if (st.st_uid != geteuid())
        rc = sl_fail(SLUICE_ECORRUPT, "port file %s ignored: owned by uid %u, not by this user "
                                      "(uid %u)",
                     path, (unsigned)st.st_uid, (unsigned)geteuid());
    else if (st.st_mode & (S_IWGRP | S_IWOTH))
        rc = sl_fail(SLUICE_ECORRUPT, "port file %s ignored: writable by others (mode %03o)",
                     path, (unsigned)(st.st_mode & 0777));
    else if (st.st_size <= 0 || (size_t)st.st_size > len)
        rc = sl_fail(SLUICE_ECORRUPT, "port file %s ignored: %lld bytes, a record line has 1..%zu",
                     path, (long long)st.st_size, len);
    ssize_t n = 0;
    if (rc == SLUICE_OK) {
        do /* the line and its newline: len - 1 bytes are enough */
            n = read(fd, record, (size_t)st.st_size < len ? (size_t)st.st_size : len - 1);
        while (n < 0 && errno == EINTR);
        if (n <= 0)
            rc = sl_fail(SLUICE_ECORRUPT, "port file %s ignored: cannot read it: %s", path,
                         n < 0 ? strerror(errno) : "empty");
    }
    close(fd);
    if (rc)
        return rc;
    record[n] = '\0';
    record[strcspn(record, "\n")] = '\0';
    return SLUICE_OK;
}

int sl_port_file_write(const char *path, const char *record)
{
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    /* 0600: the record holds the knock secret. fchmod, since the umask could
     * only take bits away and a reader insists on exactly this owner's file. */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return sl_fail(SLUICE_ESYS, "service: cannot create %s: %s", tmp, strerror(errno));
    size_t len = strlen(record);
    bool ok = fchmod(fd, 0600) == 0 && write(fd, record, len) == (ssize_t)len &&
              write(fd, "\n", 1) == 1;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        int rc = sl_fail(SLUICE_ESYS, "service: cannot write port file %s: %s", path,
                         strerror(errno));
        unlink(tmp);
        return rc;
    }
    return SLUICE_OK;
}
