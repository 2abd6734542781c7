/* SPDX-License-Identifier: MIT */
/* Status page: made with the first context and gone with the last, slots follow channels,
 * counters and errors read back, only provably stale pages removed, and what is not a page is
 * refused. */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

/* Read the page at `file`, as read_back. */
static int read_file(const char *file, sluice_monitor_process_t *p)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return SLUICE_ENOTFOUND;
    p->size = sizeof *p;
    int rc = sluice_monitor_read(fd, p);
    close(fd);
    return rc;
}

/* A complete page, as a process of (pid, start) in namespace and boot `id` would have left it. */
static void write_page(const char *file, int64_t pid, uint64_t start, const sl_mon_ident_t *id,
                       const char *name)
{
    sl_mon_page_t *p = calloc(1, sizeof *p);
    assert_non_null(p);
    p->magic = SL_MON_MAGIC;
    p->version = SL_MON_VERSION;
    p->header_bytes = (uint32_t)offsetof(sl_mon_page_t, slot);
    p->slot_bytes = sizeof(sl_mon_slot_t);
    p->n_slots = SL_MON_SLOTS;
    p->stream_slots = SL_MON_STREAMS;
    p->error_bytes = SL_MON_ERROR;
    p->total_bytes = sizeof *p;
    p->pid = pid;
    p->uid = geteuid();
    p->start_time = start;
    p->ident = *id;
    snprintf(p->name, sizeof p->name, "%s", name);
    int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, sizeof *p), (ssize_t)sizeof *p);
    close(fd);
    free(p);
}

/* The page of pid `pid` in the test folder, with an optional suffix. */
static void page_path(char *out, size_t n, long pid, const char *suffix)
{
    snprintf(out, n, "%s/%s%u-%ld%s", dir, SLUICE_MONITOR_PREFIX, (unsigned)geteuid(), pid,
             suffix);
}

static bool exists(const char *file)
{
    struct stat st;
    return lstat(file, &st) == 0;
}

/* A pid that ran and is gone (reaped). */
static pid_t dead_pid(void)
{
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0)
        _exit(0);
    assert_int_equal(waitpid(child, NULL, 0), child);
    return child;
}

/* This process's identity, with one part changed: a page of another boot, or another namespace. */
static sl_mon_ident_t other_boot(void)
{
    sl_mon_ident_t id;
    sl_mon_identity(&id);
    snprintf(id.boot_id, sizeof id.boot_id, "00000000-0000-4000-8000-000000000000");
    return id;
}

static sl_mon_ident_t other_namespace(void)
{
    sl_mon_ident_t id;
    sl_mon_identity(&id);
    id.pidns_ino++;
    return id;
}

/* The page this process made under a suffixed name (its plain name being taken), or "". */
static void own_suffixed_page(char *out, size_t n)
{
    char stem[160];
    page_path(stem, sizeof stem, (long)getpid(), ".");
    const char *base = strrchr(stem, '/') + 1;
    out[0] = '\0';
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, base, strlen(base)) == 0)
            snprintf(out, n, "%s/%s", dir, e->d_name);
    closedir(d);
}

/*
 * Runs first: the sweep is once per process, when its first page is made.
 * Only a page of this namespace and boot whose process is gone goes; pages
 * of the same dead pid from another boot (a node sharing the folder) or
 * another PID namespace (a container sharing /dev/shm), a page of another
 * layout version and a file that is no page stay.
 */
static void sweep_removes_only_provably_stale_pages(void **state)
{
    (void)state;
    pid_t dead = dead_pid();
    sl_mon_ident_t self = { 0 }, boot = other_boot(), ns = other_namespace();
    sl_mon_identity(&self);
    assert_true(self.pidns_ino != 0 && self.boot_id[0] != '\0');
    char stale[160], far[160], near[160], old[160], junk[160];
    page_path(stale, sizeof stale, dead, "");
    page_path(far, sizeof far, dead, ".other-boot");
    page_path(near, sizeof near, dead, ".other-ns");
    page_path(old, sizeof old, dead, ".v1");
    page_path(junk, sizeof junk, dead, ".junk");
    write_page(stale, dead, 1, &self, "stale");
    write_page(far, dead, 1, &boot, "far");
    write_page(near, dead, 1, &ns, "near");
    write_page(old, dead, 1, &self, "old");
    uint32_t v1 = 1;
    int fd = open(old, O_WRONLY);
    assert_int_equal(pwrite(fd, &v1, sizeof v1, offsetof(sl_mon_page_t, version)),
                     (ssize_t)sizeof v1);
    close(fd);
    fd = open(junk, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_int_equal(write(fd, "not a page", 10), 10);
    close(fd);

    sl_mon_context_attach("sweeper");
    assert_false(exists(stale));
    assert_true(exists(far));
    assert_true(exists(near));
    assert_true(exists(old));
    assert_true(exists(junk));
    /* And the reader judges them alike: another namespace's pid is not checked here. */
    sluice_monitor_process_t *p = alloc_proc();
    assert_ok(read_file(far, p));
    assert_int_equal(p->same_namespace, 0);
    assert_int_equal(p->alive, -1);
    assert_ok(read_file(near, p));
    assert_int_equal(p->same_namespace, 0);
    assert_int_equal(p->alive, -1);
    assert_ok(read_back(p));
    assert_int_equal(p->same_namespace, 1);
    assert_int_equal(p->alive, 1);
    sl_mon_context_detach();
    unlink(far);
    unlink(near);
    unlink(old);
    unlink(junk);
    free(p);
}

/* The page's memory is reserved when it is made, not at first touch (SIGBUS on a full tmpfs). */
static void page_memory_is_reserved_when_made(void **state)
{
    (void)state;
    sl_mon_context_attach("reserved");
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true((uint64_t)st.st_blocks * 512 >= sizeof(sl_mon_page_t));
    sl_mon_context_detach();
}

/* No room for the page (here: a file size limit): no page, and channels still count. */
static void no_room_for_the_page_means_no_page_and_private_counters(void **state)
{
    (void)state;
    struct rlimit was;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &was), 0);
    struct rlimit small = { 4096, was.rlim_max };
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN); /* EFBIG, not death */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    sl_mon_context_attach("cramped");
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &was), 0);
    signal(SIGXFSZ, old_handler);
    assert_false(exists(path));
    sluice_options_t o;
    sluice_options_init(&o);
    sl_mon_slot_t *s = sl_mon_slot_claim("cramped", SLUICE_CONTROLLER, "peer", 1, &o);
    assert_non_null(s);
    atomic_fetch_add(&s->stats.bytes_sent, 8);
    assert_int_equal(atomic_load(&s->stats.bytes_sent), 8);
    sl_mon_slot_release(s);
    sl_mon_context_detach();
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

    uint64_t opening_gen = p->channel[0].generation;
    sl_mon_slot_opened(s, "shm", 12345, 99, false);
    atomic_fetch_add(&s->stats.transitions_sent, 7);
    atomic_fetch_add(&s->stats.bytes_sent, 4096);
    sl_mon_set(&s->stream[1].tx_head, 5);
    sl_mon_set(&s->stream[0].event_open, 1);
    sl_mon_set(&s->stream[1].event_open, 1);
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
    assert_int_equal(c->events_open, 2); /* the streams' event_open, summed */
    assert_int_equal(c->slot, 0);
    assert_int_not_equal(c->generation, opening_gen); /* it moves at open too */
    assert_int_equal(c->generation % 2, 0);

    sl_mon_peer(s, SLUICE_MONITOR_PEER_DEAD);
    sl_mon_peer(s, SLUICE_MONITOR_PEER_ALIVE); /* dead is final */
    sl_mon_peer(s, SLUICE_MONITOR_PEER_CLOSED);
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

/* A page left by an earlier process with this pid, of this namespace and boot, is replaced. */
static void stale_page_of_this_pid_is_replaced(void **state)
{
    (void)state;
    sl_mon_ident_t self;
    sl_mon_identity(&self);
    write_page(path, getpid(), 1, &self, "stale"); /* this pid, another start time: gone */
    sl_mon_context_attach("fresh");
    sluice_monitor_process_t *p = alloc_proc();
    assert_ok(read_back(p));
    assert_string_equal(p->name, "fresh");
    assert_int_equal(p->alive, 1);
    sl_mon_context_detach();
    assert_false(exists(path));
    free(p);
}

/*
 * Whatever is at this pid's name and is not provably stale stays: a page of
 * the same pid in another PID namespace or on another host, or a file that
 * is no page. The page is made under a suffixed name, and removed at the
 * end; the other file is untouched.
 */
static void what_is_not_provably_stale_is_kept_and_the_page_named_apart(void **state)
{
    (void)state;
    sl_mon_ident_t kinds[2] = { other_namespace(), other_boot() };
    sluice_monitor_process_t *p = alloc_proc();
    char mine[320];
    for (int k = 0; k < 3; k++) {
        struct stat before, after;
        if (k < 2) {
            write_page(path, getpid(), 1, &kinds[k], "theirs");
        } else {
            int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
            assert_int_equal(write(fd, "not a page", 10), 10);
            close(fd);
        }
        assert_int_equal(lstat(path, &before), 0);
        sl_mon_context_attach("mine");
        assert_int_equal(lstat(path, &after), 0);
        assert_int_equal(after.st_ino, before.st_ino);
        assert_int_equal(after.st_size, before.st_size);
        own_suffixed_page(mine, sizeof mine);
        assert_true(mine[0] != '\0');
        assert_ok(read_file(mine, p));
        assert_string_equal(p->name, "mine");
        assert_int_equal(p->same_namespace, 1);
        assert_int_equal(p->alive, 1);
        if (k < 2) {
            assert_ok(read_back(p));
            assert_string_equal(p->name, "theirs");
            assert_int_equal(p->same_namespace, 0);
            assert_int_equal(p->alive, -1); /* not "exited": its pid is not ours to check */
        }
        sl_mon_context_detach();
        assert_false(exists(mine));
        assert_true(exists(path));
        unlink(path);
    }
    free(p);
}

/* A peer found dead: its page goes only if it is that very process's, of this namespace and
 * boot. */
static void forget_removes_only_the_dead_peer_page_of_this_namespace(void **state)
{
    (void)state;
    pid_t dead = dead_pid();
    char peer[160];
    page_path(peer, sizeof peer, dead, "");
    sl_mon_ident_t self, boot = other_boot(), ns = other_namespace();
    sl_mon_identity(&self);
    const sl_mon_ident_t *foreign[2] = { &boot, &ns };
    for (int k = 0; k < 2; k++) {
        write_page(peer, dead, 77, foreign[k], "peer");
        sl_mon_forget(dead, 77);
        assert_true(exists(peer));
        unlink(peer);
    }
    write_page(peer, dead, 77, &self, "peer");
    sl_mon_forget(dead, 78); /* another process of that pid */
    assert_true(exists(peer));
    sl_mon_forget(dead, 77);
    assert_false(exists(peer));
}

/* The statuses of a healthy run are not channel errors; failures are. */
static void only_failures_count_as_errors(void **state)
{
    (void)state;
    const int normal[] = { SLUICE_OK, SLUICE_ABSENT, SLUICE_EOF, SLUICE_EAGAIN,
                           SLUICE_EPEERCLOSED, SLUICE_ECANCELED, SLUICE_EALREADY };
    for (size_t i = 0; i < sizeof normal / sizeof normal[0]; i++)
        if (sl_mon_counts(normal[i]))
            fail_msg("%s counts as an error", sluice_strerror(normal[i]));
    const int failures[] = { SLUICE_EINVAL, SLUICE_ETIMEDOUT, SLUICE_EORDER, SLUICE_EBUSY,
                             SLUICE_ENOTFOUND, SLUICE_ETYPE, SLUICE_EFAILED, SLUICE_EPEERDEAD,
                             SLUICE_ECORRUPT, SLUICE_EMPI };
    for (size_t i = 0; i < sizeof failures / sizeof failures[0]; i++)
        if (!sl_mon_counts(failures[i]))
            fail_msg("%s does not count as an error", sluice_strerror(failures[i]));
}

/* Two threads learn of the peer at once, one "closed", one "dead": dead wins, every time. */
static sl_mon_slot_t *race_slot;
static _Atomic int race_go;

static void *race_closed(void *arg)
{
    (void)arg;
    while (!atomic_load(&race_go))
        ;
    sl_mon_peer(race_slot, SLUICE_MONITOR_PEER_CLOSED);
    return NULL;
}

static void peer_dead_is_final_against_a_racing_closed(void **state)
{
    (void)state;
    sluice_options_t o;
    sluice_options_init(&o);
    for (int i = 0; i < 200; i++) {
        race_slot = sl_mon_slot_claim("race", SLUICE_SOURCE, "peer", 1, &o);
        assert_non_null(race_slot);
        sl_mon_slot_opened(race_slot, "shm", 1, 1, false);
        atomic_store(&race_go, 0);
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, race_closed, NULL), 0);
        atomic_store(&race_go, 1);
        sl_mon_peer(race_slot, SLUICE_MONITOR_PEER_DEAD);
        pthread_join(t, NULL);
        assert_int_equal(atomic_load(&race_slot->peer_state), SLUICE_MONITOR_PEER_DEAD);
        sl_mon_slot_release(race_slot);
    }
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
        cmocka_unit_test(sweep_removes_only_provably_stale_pages), /* first: the sweep is once */
        cmocka_unit_test(page_lives_from_first_context_to_last),
        cmocka_unit_test(page_memory_is_reserved_when_made),
        cmocka_unit_test(no_room_for_the_page_means_no_page_and_private_counters),
        cmocka_unit_test(slot_follows_the_channel_and_carries_its_counters),
        cmocka_unit_test(without_a_slot_in_the_page_counters_are_private),
        cmocka_unit_test(stale_page_of_this_pid_is_replaced),
        cmocka_unit_test(what_is_not_provably_stale_is_kept_and_the_page_named_apart),
        cmocka_unit_test(forget_removes_only_the_dead_peer_page_of_this_namespace),
        cmocka_unit_test(only_failures_count_as_errors),
        cmocka_unit_test(peer_dead_is_final_against_a_racing_closed),
        cmocka_unit_test(what_is_not_a_page_is_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
