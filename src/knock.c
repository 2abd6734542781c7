/* SPDX-License-Identifier: MIT */
/* The knock: TCP listen, dial, read and write, each ending by a deadline. */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "knock.h"

/* Milliseconds left until `d`, for poll(): at least 0, at most a second so
 * that a clock step never holds a wait longer than that past its deadline. */
static int sl_ms_left(const sl_deadline_t *d)
{
    uint64_t now = sl_now_ns();
    if (now >= d->at_ns)
        return 0;
    uint64_t ms = (d->at_ns - now + 999999u) / 1000000u;
    return ms > 1000 ? 1000 : (int)ms;
}

/* Wait until `fd` is ready for `events`: SLUICE_OK, or SLUICE_ETIMEDOUT. */
static int sl_wait_fd(int fd, short events, const sl_deadline_t *d)
{
    for (;;) {
        struct pollfd p = { .fd = fd, .events = events };
        int n = poll(&p, 1, sl_ms_left(d));
        if (n > 0)
            return SLUICE_OK; /* ready, or an error the next call reports */
        if (n < 0 && errno != EINTR)
            return sl_fail(SLUICE_ESYS, "knock: poll failed: %s", strerror(errno));
        if (sl_deadline_passed(d))
            return SLUICE_ETIMEDOUT;
    }
}

/* The host's IPv4 addresses, up and not loopback first, then loopback. */
static void sl_host_addrs(char *out, size_t len)
{
    out[0] = '\0';
    struct ifaddrs *all;
    if (getifaddrs(&all) != 0) {
        snprintf(out, len, "127.0.0.1");
        return;
    }
    for (int loopback = 0; loopback <= 1; loopback++) {
        for (struct ifaddrs *i = all; i; i = i->ifa_next) {
            if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP) ||
                !!(i->ifa_flags & IFF_LOOPBACK) != loopback)
                continue;
            char a[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)i->ifa_addr)->sin_addr, a, sizeof a);
            size_t used = strlen(out);
            if (used + strlen(a) + 2 > len)
                break; /* the first ones are enough to be reached by */
            snprintf(out + used, len - used, "%s%s", used ? "," : "", a);
        }
    }
    freeifaddrs(all);
    if (!out[0])
        snprintf(out, len, "127.0.0.1");
}

int sl_knock_listen(sl_knock_listener_t *l)
{
    l->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l->fd < 0)
        return sl_fail(SLUICE_ESYS, "knock: socket failed: %s", strerror(errno));
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY) };
    socklen_t sl = sizeof sa;
    if (bind(l->fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(l->fd, 64) != 0 ||
        getsockname(l->fd, (struct sockaddr *)&sa, &sl) != 0) {
        int rc = sl_fail(SLUICE_ESYS, "knock: cannot listen on a TCP port: %s", strerror(errno));
        close(l->fd);
        l->fd = -1;
        return rc;
    }
    l->port = ntohs(sa.sin_port);
    sl_host_addrs(l->addrs, sizeof l->addrs);
    return SLUICE_OK;
}

void sl_knock_unlisten(sl_knock_listener_t *l)
{
    if (l->fd >= 0)
        close(l->fd);
    l->fd = -1;
}

int sl_knock_accept(sl_knock_listener_t *l, const sl_deadline_t *deadline, int *fd_p)
{
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            *fd_p = fd;
            return SLUICE_OK;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
            return sl_fail(SLUICE_ESYS, "knock: accept failed: %s", strerror(errno));
        if (sl_deadline_passed(deadline))
            return SLUICE_EAGAIN;
        int rc = sl_wait_fd(l->fd, POLLIN, deadline);
        if (rc == SLUICE_ETIMEDOUT)
            return SLUICE_EAGAIN;
        if (rc)
            return rc;
    }
}

/* One address: a connected fd, or a negative status. */
static int sl_dial_one(const char *addr, uint16_t port, const sl_deadline_t *d, int *fd_p)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
        return sl_fail(SLUICE_ECORRUPT, "knock: \"%s\" is not an IPv4 address", addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return sl_fail(SLUICE_ESYS, "knock: socket failed: %s", strerror(errno));
    int rc = SLUICE_OK;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (errno != EINPROGRESS)
            rc = SLUICE_ENOTFOUND;
        else if ((rc = sl_wait_fd(fd, POLLOUT, d)) == SLUICE_OK) {
            int err = 0;
            socklen_t el = sizeof err;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
            rc = err ? SLUICE_ENOTFOUND : SLUICE_OK;
        }
    }
    if (rc) {
        close(fd);
        return rc;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    *fd_p = fd;
    return SLUICE_OK;
}

int sl_knock_dial(const char *addrs, uint16_t port, uint32_t try_ms, const sl_deadline_t *deadline,
                  int *fd_p)
{
    char list[SL_KNOCK_ADDRS_MAX];
    snprintf(list, sizeof list, "%s", addrs);
    char *save = NULL;
    for (char *a = strtok_r(list, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
        sl_deadline_t one = sl_deadline_in(try_ms);
        if (one.at_ns > deadline->at_ns)
            one = *deadline;
        int rc = sl_dial_one(a, port, &one, fd_p);
        if (rc == SLUICE_OK || rc == SLUICE_ESYS)
            return rc;
        if (sl_deadline_passed(deadline))
            break;
    }
    return sl_fail(SLUICE_ENOTFOUND, "knock: nobody answers on port %u of %s", (unsigned)port,
                   addrs);
}

int sl_knock_write(int fd, const void *buf, size_t len, const sl_deadline_t *deadline)
{
    const char *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (errno == EPIPE || errno == ECONNRESET)
            return sl_fail(SLUICE_EPEERCLOSED, "knock: the other side hung up");
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return sl_fail(SLUICE_ESYS, "knock: send failed: %s", strerror(errno));
        if (sl_wait_fd(fd, POLLOUT, deadline))
            return sl_fail(SLUICE_ETIMEDOUT, "knock: the other side did not read in time");
    }
    return SLUICE_OK;
}

int sl_knock_read(int fd, void *buf, size_t len, const sl_deadline_t *deadline)
{
    char *p = buf;
    while (len) {
        ssize_t n = recv(fd, p, len, 0);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n == 0 || errno == ECONNRESET)
            return sl_fail(SLUICE_EPEERCLOSED, "knock: the other side hung up");
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return sl_fail(SLUICE_ESYS, "knock: recv failed: %s", strerror(errno));
        if (sl_wait_fd(fd, POLLIN, deadline))
            return sl_fail(SLUICE_ETIMEDOUT, "knock: the other side did not answer in time");
    }
    return SLUICE_OK;
}
