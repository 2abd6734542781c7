/* SPDX-License-Identifier: MIT */
/* Type registry and fingerprints: layout changes change the fingerprint, sizes are right. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(same_description_gives_same_fingerprint_across_registries),
        cmocka_unit_test(any_layout_change_changes_the_fingerprint),
        cmocka_unit_test(same_name_with_another_layout_is_refused),
        cmocka_unit_test(soa_columns_are_aligned_and_sized),
        cmocka_unit_test(bad_descriptions_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
