/* SPDX-License-Identifier: MIT */
/* Type registry and fingerprints: layout changes change the fingerprint, sizes are right. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

static const sluice_column_t rechit_cols[] = {
    { "energy", 4, 4 }, { "time", 4, 4 }, { "detid", 4, 4 }, { "flags", 2, 2 },
};

static sluice_type_desc_t soa_desc(const char *name, const sluice_column_t *cols, uint32_t n)
{
    return (sluice_type_desc_t){ .size = sizeof(sluice_type_desc_t), .name = name,
                                 .layout = SLUICE_LAYOUT_SOA, .columns = cols, .n_columns = n };
}

static sluice_type_desc_t block_desc(const char *name, uint32_t size, uint32_t align)
{
    return (sluice_type_desc_t){ .size = sizeof(sluice_type_desc_t), .name = name,
                                 .layout = SLUICE_LAYOUT_BLOCK, .elem_size = size, .align = align };
}

static void same_description_gives_same_fingerprint_across_registries(void **state)
{
    (void)state;
    sluice_registry_t *a, *b;
    assert_ok(sluice_registry_create(&a));
    assert_ok(sluice_registry_create(&b));
    const sluice_type_t *ta, *tb;
    sluice_type_desc_t d = soa_desc("hcal::RecHitSoA", rechit_cols, 4);
    assert_ok(sluice_registry_add(a, &d, &ta));
    assert_ok(sluice_registry_add(b, &d, &tb));
    assert_int_equal(sluice_type_fingerprint(ta), sluice_type_fingerprint(tb));
    assert_string_equal(sluice_type_name(ta), "hcal::RecHitSoA");
    sluice_registry_destroy(a);
    sluice_registry_destroy(b);
}

static void any_layout_change_changes_the_fingerprint(void **state)
{
    (void)state;
    sluice_registry_t *r;
    assert_ok(sluice_registry_create(&r));
    sluice_column_t renamed[4], resized[4], realigned[4];
    memcpy(renamed, rechit_cols, sizeof renamed);
    memcpy(resized, rechit_cols, sizeof resized);
    memcpy(realigned, rechit_cols, sizeof realigned);
    renamed[1].name = "t";
    resized[3].elem_size = 4;
    realigned[0].align = 8;
    sluice_type_desc_t d[6] = {
        soa_desc("same", rechit_cols, 4), soa_desc("same", renamed, 4),
        soa_desc("same", resized, 4),     soa_desc("same", realigned, 4),
        soa_desc("same", rechit_cols, 3), block_desc("same", 16, 4),
    };
    /* One registry each: the name is the same, only the layout differs. */
    uint64_t fp[6];
    for (int i = 0; i < 6; i++) {
        sluice_registry_t *one;
        const sluice_type_t *t;
        assert_ok(sluice_registry_create(&one));
        assert_ok(sluice_registry_add(one, &d[i], &t));
        fp[i] = sluice_type_fingerprint(t);
        for (int j = 0; j < i; j++)
            assert_int_not_equal(fp[i], fp[j]);
        sluice_registry_destroy(one);
    }
    /* And the name alone changes it too. */
    const sluice_type_t *a, *b;
    sluice_type_desc_t da = soa_desc("hcal::RecHitSoA", rechit_cols, 4);
    sluice_type_desc_t db = soa_desc("hcal::DigiSoA", rechit_cols, 4);
    assert_ok(sluice_registry_add(r, &da, &a));
    assert_ok(sluice_registry_add(r, &db, &b));
    assert_int_not_equal(sluice_type_fingerprint(a), sluice_type_fingerprint(b));
    sluice_registry_destroy(r);
}

static void same_name_with_another_layout_is_refused(void **state)
{
    (void)state;
    sluice_registry_t *r;
    assert_ok(sluice_registry_create(&r));
    const sluice_type_t *a, *b, *c;
    sluice_type_desc_t d1 = block_desc("Digi", 8, 8), d2 = block_desc("Digi", 16, 8);
    assert_ok(sluice_registry_add(r, &d1, &a));
    assert_ok(sluice_registry_add(r, &d1, &b));
    assert_ptr_equal(a, b);
    assert_status(sluice_registry_add(r, &d2, &c), SLUICE_ETYPE);
    assert_non_null(strstr(sluice_last_error(), "Digi"));
    assert_ok(sluice_registry_find(r, "Digi", &c));
    assert_ptr_equal(a, c);
    assert_status(sluice_registry_find(r, "Nope", &c), SLUICE_ENOTFOUND);
    sluice_registry_destroy(r);
}

static void soa_columns_are_aligned_and_sized(void **state)
{
    (void)state;
    static const sluice_column_t cols[] = { { "x", 1, 1 }, { "y", 8, 8 }, { "z", 2, 64 } };
    sluice_registry_t *r;
    assert_ok(sluice_registry_create(&r));
    const sluice_type_t *t;
    sluice_type_desc_t d = soa_desc("Mixed", cols, 3);
    assert_ok(sluice_registry_add(r, &d, &t));
    size_t off, bytes;
    assert_ok(sluice_type_column_offset(t, 3, 0, &off));
    assert_int_equal(off, 0);
    assert_ok(sluice_type_column_offset(t, 3, 1, &off));
    assert_int_equal(off, 8);           /* 3 bytes of x, aligned to 8 */
    assert_ok(sluice_type_column_offset(t, 3, 2, &off));
    assert_int_equal(off, 64);          /* 8 + 24 = 32, aligned to 64 */
    assert_ok(sluice_type_bytes(t, 3, &bytes));
    assert_int_equal(bytes, 70);
    assert_status(sluice_type_column_offset(t, 3, 3, &off), SLUICE_EINVAL);
    assert_status(sluice_type_bytes(t, UINT64_MAX / 2, &bytes), SLUICE_ERANGE);
    sluice_registry_destroy(r);
}

static void bad_descriptions_are_refused(void **state)
{
    (void)state;
    sluice_registry_t *r;
    assert_ok(sluice_registry_create(&r));
    const sluice_type_t *t;
    sluice_type_desc_t d = block_desc("Bad", 8, 3);
    assert_status(sluice_registry_add(r, &d, &t), SLUICE_EINVAL); /* alignment */
    d = block_desc("", 8, 8);
    assert_status(sluice_registry_add(r, &d, &t), SLUICE_EINVAL); /* name */
    d = block_desc("Zero", 0, 8);
    assert_status(sluice_registry_add(r, &d, &t), SLUICE_EINVAL);
    d = soa_desc("NoCols", rechit_cols, 0);
    assert_status(sluice_registry_add(r, &d, &t), SLUICE_EINVAL);
    d = (sluice_type_desc_t){ .size = sizeof d, .name = "Custom", .layout = SLUICE_LAYOUT_CUSTOM };
    assert_status(sluice_registry_add(r, &d, &t), SLUICE_EINVAL); /* no callbacks */
    sluice_registry_destroy(r);
}

/* ------------------------------------------------------------ many threads at once */

enum { REG_THREADS = 8, REG_TYPES = 64, REG_SHARED = 16, REG_RACERS = 2 };

static const sluice_column_t xy_cols[] = { { "x", 4, 4 }, { "y", 8, 8 } };

/*
 * Type `k` of thread `t`: the first REG_SHARED are the same for every
 * thread (name and layout); the others are the thread's own. The last one
 * of threads 0 and REG_THREADS - 1 is "race::layout", with a block layout of
 * another element size in each: only one of them can be registered.
 */
static sluice_type_desc_t reg_desc(int t, int k, char *name, size_t n)
{
    if (k == REG_TYPES - 1 && (t == 0 || t == REG_THREADS - 1)) {
        snprintf(name, n, "race::layout");
        return block_desc(name, t == 0 ? 4 : 8, 4);
    }
    if (k < REG_SHARED)
        snprintf(name, n, "shared::%d", k);
    else
        snprintf(name, n, "own::%d::%d", t, k);
    if (k % 3 == 0)
        return soa_desc(name, xy_cols, 2);
    return block_desc(name, (uint32_t)(k % 5 + 1) * 4, 4);
}

typedef struct reg_job {
    sluice_registry_t *reg;
    pthread_barrier_t *start;
    const uint64_t (*want)[REG_TYPES]; /* fingerprints, from a registry of one thread */
    int t;
    const sluice_type_t *got[REG_TYPES];
    int rc[REG_TYPES];
    int failures;
    char failure[256];
} reg_job_t;

static void reg_fail(reg_job_t *j, const char *what, const char *name, int rc)
{
    if (j->failures++ == 0)
        snprintf(j->failure, sizeof j->failure, "thread %d: %s \"%s\": %d (%s: %s)", j->t, what,
                 name, rc, sluice_strerror(rc), sluice_last_error());
}

static void *reg_thread(void *arg)
{
    reg_job_t *j = arg;
    pthread_barrier_wait(j->start);
    for (int i = 0; i < REG_TYPES; i++) {
        /* Each thread starts at another index: the shared names are added in
         * every order, some by several threads at once. */
        int k = (i + j->t * (REG_TYPES / REG_THREADS)) % REG_TYPES;
        char name[64];
        sluice_type_desc_t d = reg_desc(j->t, k, name, sizeof name);
        j->rc[k] = sluice_registry_add(j->reg, &d, &j->got[k]);
        if (j->rc[k] != SLUICE_OK && strcmp(name, "race::layout") != 0)
            reg_fail(j, "add", name, j->rc[k]);
        /* What this thread added is found at once, as the very same type. */
        const sluice_type_t *f = NULL;
        int rc = sluice_registry_find(j->reg, name, &f);
        if (j->rc[k] == SLUICE_OK && (rc != SLUICE_OK || f != j->got[k]))
            reg_fail(j, "find of its own", name, rc);
        /* Another thread's: absent yet, or complete. */
        int u = (j->t + 1 + i) % REG_THREADS, m = REG_SHARED + i % (REG_TYPES - REG_SHARED - 1);
        snprintf(name, sizeof name, "own::%d::%d", u, m);
        rc = sluice_registry_find(j->reg, name, &f);
        if (rc == SLUICE_OK && (strcmp(sluice_type_name(f), name) != 0 ||
                                sluice_type_fingerprint(f) != j->want[u][m]))
            reg_fail(j, "find of another thread's", name, rc);
        else if (rc != SLUICE_OK && rc != SLUICE_ENOTFOUND)
            reg_fail(j, "find of another thread's", name, rc);
    }
    return NULL;
}

static void eight_threads_add_and_find_types_at_once(void **state)
{
    (void)state;
    /* The fingerprint each type must have, from registries of one thread. */
    static uint64_t want[REG_THREADS][REG_TYPES];
    for (int t = 0; t < REG_THREADS; t++) {
        sluice_registry_t *one;
        assert_ok(sluice_registry_create(&one));
        for (int k = 0; k < REG_TYPES; k++) {
            char name[64];
            sluice_type_desc_t d = reg_desc(t, k, name, sizeof name);
            const sluice_type_t *ty;
            assert_ok(sluice_registry_add(one, &d, &ty));
            want[t][k] = sluice_type_fingerprint(ty);
        }
        sluice_registry_destroy(one);
    }
    sluice_registry_t *r;
    assert_ok(sluice_registry_create(&r));
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, REG_THREADS);
    static reg_job_t jobs[REG_THREADS];
    pthread_t th[REG_THREADS];
    for (int t = 0; t < REG_THREADS; t++) {
        jobs[t] = (reg_job_t){ .reg = r, .start = &start, .want = want, .t = t };
        assert_int_equal(pthread_create(&th[t], NULL, reg_thread, &jobs[t]), 0);
    }
    for (int t = 0; t < REG_THREADS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&start);
    for (int t = 0; t < REG_THREADS; t++)
        if (jobs[t].failures)
            fail_msg("%d failures, the first: %s", jobs[t].failures, jobs[t].failure);

    const sluice_type_t *f;
    /* A shared name is one type, whichever thread came first. */
    for (int k = 0; k < REG_SHARED; k++) {
        char name[64];
        snprintf(name, sizeof name, "shared::%d", k);
        assert_ok(sluice_registry_find(r, name, &f));
        for (int t = 0; t < REG_THREADS; t++)
            assert_ptr_equal(jobs[t].got[k], f);
        assert_int_equal(sluice_type_fingerprint(f), want[0][k]);
    }
    /* Every thread's own types are there, once each. */
    for (int t = 0; t < REG_THREADS; t++) {
        for (int k = REG_SHARED; k < REG_TYPES - 1; k++) {
            char name[64];
            snprintf(name, sizeof name, "own::%d::%d", t, k);
            assert_ok(sluice_registry_find(r, name, &f));
            assert_ptr_equal(f, jobs[t].got[k]);
            assert_int_equal(sluice_type_fingerprint(f), want[t][k]);
        }
    }
    /* The two layouts of "race::layout": one is registered, the other refused. */
    const int a = 0, b = REG_THREADS - 1, k = REG_TYPES - 1;
    int ra = jobs[a].rc[k], rb = jobs[b].rc[k];
    if (!((ra == SLUICE_OK && rb == SLUICE_ETYPE) || (ra == SLUICE_ETYPE && rb == SLUICE_OK)))
        fail_msg("the two layouts of race::layout were added with %d (%s) and %d (%s)", ra,
                 sluice_strerror(ra), rb, sluice_strerror(rb));
    const reg_job_t *won = ra == SLUICE_OK ? &jobs[a] : &jobs[b];
    assert_ok(sluice_registry_find(r, "race::layout", &f));
    assert_ptr_equal(f, won->got[k]);
    assert_int_equal(sluice_type_fingerprint(f), want[won->t][k]);
    assert_int_not_equal(want[a][k], want[b][k]);
    /* Threads 1 to 6 have a type of their own at that index. */
    assert_status(sluice_registry_find(r, "own::0::63", &f), SLUICE_ENOTFOUND);
    assert_ok(sluice_registry_find(r, "own::1::63", &f));
    sluice_registry_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(same_description_gives_same_fingerprint_across_registries),
        cmocka_unit_test(any_layout_change_changes_the_fingerprint),
        cmocka_unit_test(same_name_with_another_layout_is_refused),
        cmocka_unit_test(soa_columns_are_aligned_and_sized),
        cmocka_unit_test(bad_descriptions_are_refused),
        cmocka_unit_test(eight_threads_add_and_find_types_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
