/* SPDX-License-Identifier: MIT */
/* Status page: made with the first context and gone with the last, slots follow channels,
 * counters and errors read back, and what is not a page is refused. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "../../src/monitor.h"

static char dir[64];
static char path[160];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/sluice-test-monitor.XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    setenv("SLUICE_MONITOR_DIR", dir, 1);
    unsetenv("SLUICE_MONITOR");
    snprintf(path, sizeof path, "%s/%s%u-%d", dir, SLUICE_MONITOR_PREFIX, (unsigned)geteuid(),
             (int)getpid());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    rmdir(dir);
    return 0;
}

/* Read this process's page; the status of sluice_monitor_read. */
static int read_back(sluice_monitor_process_t *p)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return SLUICE_ENOTFOUND;
    p->size = sizeof *p;
    int rc = sluice_monitor_read(fd, p);
    close(fd);
    return rc;
}

static sluice_monitor_process_t *alloc_proc(void)
{
    sluice_monitor_process_t *p = calloc(1, sizeof *p);
    assert_non_null(p);
    return p;
}

static void page_lives_from_first_context_to_last(void **state)
{
    (void)state;
    sl_mon_context_attach("controller");
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_uid, geteuid());
    sl_mon_context_attach("second"); /* one page per process */
    sl_mon_context_detach();
    assert_int_equal(stat(path, &st), 0);
    sluice_monitor_process_t *p = alloc_proc();
    assert_ok(read_back(p));
    assert_int_equal(p->pid, getpid());
    assert_int_equal(p->uid, geteuid());
    assert_string_equal(p->name, "controller");
    assert_int_equal(p->alive, 1);
    assert_int_equal(p->n_channels, 0);
    sl_mon_context_detach();
    assert_int_not_equal(stat(path, &st), 0);
    free(p);
}

static void slot_follows_the_channel_and_carries_its_counters(void **state)
{
    (void)state;
    sluice_options_t o;
    sluice_options_init(&o);
    sl_mon_context_attach("controller");
    sl_mon_slot_t *s = sl_mon_slot_claim("hlt", SLUICE_CONTROLLER, "source", 2, &o);
    assert_non_null(s);
    sluice_monitor_process_t *p = alloc_proc();
    assert_ok(read_back(p));
    assert_int_equal(p->n_channels, 1);
    assert_string_equal(p->channel[0].name, "hlt");
    assert_int_equal(p->channel[0].open, 0); /* still opening */
    assert_int_equal(p->channel[0].peer_state, SLUICE_MONITOR_PEER_UNKNOWN);

    sl_mon_slot_opened(s, "shm", 12345, 99, false);
    atomic_fetch_add(&s->stats.transitions_sent, 7);
    atomic_fetch_add(&s->stats.bytes_sent, 4096);
    sl_mon_set(&s->stream[1].tx_head, 5);
    sl_mon_transition(s, SLUICE_BEGIN_RUN, 3, 0);
    sl_mon_transition(s, SLUICE_BEGIN_LUMI, 3, 8);
    assert_ok(read_back(p));
    const sluice_monitor_channel_t *c = &p->channel[0];
    assert_int_equal(c->open, 1);
    assert_string_equal(c->transport, "shm");
    assert_string_equal(c->peer, "source");
    assert_int_equal(c->peer_pid, 12345);
    assert_int_equal(c->peer_state, SLUICE_MONITOR_PEER_ALIVE);
    assert_int_equal(c->role, SLUICE_CONTROLLER);
    assert_int_equal(c->stats.transitions_sent, 7);
    assert_int_equal(c->stats.bytes_sent, 4096);
    assert_int_equal(c->n_streams, 2);
    assert_int_equal(c->stream[1].sent, 5);
    assert_int_equal(c->runs_open, 1);
    assert_int_equal(c->lumis_open, 1);
    assert_int_equal(c->lumi, 8);

    sl_mon_peer(s, SLUICE_MONITOR_PEER_DEAD);
    sl_mon_peer(s, SLUICE_MONITOR_PEER_ALIVE); /* dead is final */
    sl_mon_error(s, SLUICE_ETIMEDOUT, "channel \"hlt\": no progress within 30000 ms");
    assert_ok(read_back(p));
    assert_int_equal(p->channel[0].peer_state, SLUICE_MONITOR_PEER_DEAD);
    assert_int_equal(p->channel[0].errors, 1);
    assert_int_equal(p->channel[0].last_status, SLUICE_ETIMEDOUT);
    assert_string_equal(p->channel[0].last_error, "channel \"hlt\": no progress within 30000 ms");

    sl_mon_slot_release(s);
    assert_ok(read_back(p));
    assert_int_equal(p->n_channels, 0);
    /* A new channel in the freed slot starts from zero. */
    s = sl_mon_slot_claim("next", SLUICE_SOURCE, "controller", 1, &o);
    assert_ok(read_back(p));
    assert_int_equal(p->n_channels, 1);
    assert_string_equal(p->channel[0].name, "next");
    assert_int_equal(p->channel[0].stats.transitions_sent, 0);
    assert_int_equal(p->channel[0].errors, 0);
    sl_mon_slot_release(s);
    sl_mon_context_detach();
    free(p);
}

/* Channels past the page's slots, with monitoring off, or with no context, still count. */
static void without_a_slot_in_the_page_counters_are_private(void **state)
{
    (void)state;
    sluice_options_t o;
    sluice_options_init(&o);
    sl_mon_context_attach("many");
    sl_mon_slot_t *s[SL_MON_SLOTS + 1];
    for (int i = 0; i <= (int)SL_MON_SLOTS; i++) {
        char name[16];
        snprintf(name, sizeof name, "ch%d", i);
        s[i] = sl_mon_slot_claim(name, SLUICE_CONTROLLER, "peer", 1, &o);
        assert_non_null(s[i]);
    }
    atomic_fetch_add(&s[SL_MON_SLOTS]->stats.products_sent, 1);
    assert_int_equal(atomic_load(&s[SL_MON_SLOTS]->stats.products_sent), 1);
    sluice_monitor_process_t *p = alloc_proc();
    assert_ok(read_back(p));
    assert_int_equal(p->n_channels, SL_MON_SLOTS);
    for (int i = 0; i <= (int)SL_MON_SLOTS; i++)
        sl_mon_slot_release(s[i]);
    sl_mon_context_detach();

    setenv("SLUICE_MONITOR", "0", 1);
    sl_mon_context_attach("off");
    struct stat st;
    assert_int_not_equal(stat(path, &st), 0);
    sl_mon_slot_t *off = sl_mon_slot_claim("quiet", SLUICE_SOURCE, "peer", 1, &o);
    assert_non_null(off);
    sl_mon_error(off, SLUICE_EPEERDEAD, "dead");
    assert_int_equal(atomic_load(&off->errors), 1);
    sl_mon_slot_release(off);
    sl_mon_context_detach();
    unsetenv("SLUICE_MONITOR");
    free(p);
}

/* A page left by an earlier process with this pid is replaced. */
static void stale_page_of_this_pid_is_replaced(void **state)
{
    (void)state;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "stale page", 10), 10);
    close(fd);
    sl_mon_context_attach("fresh");
    sluice_monitor_process_t *p = alloc_proc();
    assert_ok(read_back(p));
    assert_string_equal(p->name, "fresh");
    sl_mon_context_detach();
    free(p);
}

/* The reader checks before it trusts: a file that is not a page is refused, a page being made is "again". */
static void what_is_not_a_page_is_refused(void **state)
{
    (void)state;
    sluice_monitor_process_t *p = alloc_proc();
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    p->size = sizeof *p;
    assert_status(sluice_monitor_read(fd, p), SLUICE_EAGAIN); /* empty: being set up */
    assert_int_equal(ftruncate(fd, sizeof(sl_mon_page_t)), 0);
    assert_status(sluice_monitor_read(fd, p), SLUICE_EAGAIN); /* magic not stored yet */
    uint64_t junk = 0x1122334455667788ull;
    assert_int_equal(pwrite(fd, &junk, sizeof junk, 0), (ssize_t)sizeof junk);
    assert_status(sluice_monitor_read(fd, p), SLUICE_ECORRUPT);
    uint64_t magic = SL_MON_MAGIC;
    uint32_t version = SL_MON_VERSION + 1;
    assert_int_equal(pwrite(fd, &magic, sizeof magic, 0), (ssize_t)sizeof magic);
    assert_int_equal(pwrite(fd, &version, sizeof version, offsetof(sl_mon_page_t, version)),
                     (ssize_t)sizeof version);
    assert_status(sluice_monitor_read(fd, p), SLUICE_EVERSION);
    version = SL_MON_VERSION; /* right version, but sizes of another layout */
    assert_int_equal(pwrite(fd, &version, sizeof version, offsetof(sl_mon_page_t, version)),
                     (ssize_t)sizeof version);
    assert_status(sluice_monitor_read(fd, p), SLUICE_ECORRUPT);
    p->size = 8;
    assert_status(sluice_monitor_read(fd, p), SLUICE_EINVAL);
    close(fd);
    unlink(path);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(page_lives_from_first_context_to_last),
        cmocka_unit_test(slot_follows_the_channel_and_carries_its_counters),
        cmocka_unit_test(without_a_slot_in_the_page_counters_are_private),
        cmocka_unit_test(stale_page_of_this_pid_is_replaced),
        cmocka_unit_test(what_is_not_a_page_is_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
