/* SPDX-License-Identifier: MIT */
/* Device-memory endpoints in the open agreement: both sides must declare the same memory; a device
 * endpoint needs a device on both sides (else SLUICE_ENOTSUP with each side's reason), and both
 * sides take the same device path: the forced one, else CUDA IPC on one node, else staged. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "../../gpu/gpu.h"
#include "../../src/decl.h"

#define CHANNEL "dev"

static sluice_registry_t *registry;
static const sluice_type_t *T;

static int setup(void **state)
{
    (void)state;
    sluice_type_desc_t d = { .size = sizeof d, .name = "t::Digis", .layout = SLUICE_LAYOUT_BLOCK,
                             .elem_size = 8, .align = 8 };
    if (sluice_registry_create(&registry) != SLUICE_OK)
        return -1;
    return sluice_registry_add(registry, &d, &T) == SLUICE_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    sluice_registry_destroy(registry);
    return 0;
}

/* One side's declaration: instance 7 controller->source in `mem7`, instance 8 source->controller
 * in host memory. */
static sl_decl_t *declare(sluice_role_t role, sluice_memory_t mem7, size_t *bytes_p)
{
    bool ctrl = role == SLUICE_CONTROLLER;
    sluice_endpoint_t eps[] = {
        { .instance = 7, .direction = ctrl ? SLUICE_SEND : SLUICE_RECEIVE, .type = T,
          .memory = mem7 },
        { .instance = 8, .direction = ctrl ? SLUICE_RECEIVE : SLUICE_SEND, .type = T },
    };
    sluice_options_t o;
    sluice_options_init(&o);
    sluice_channel_desc_t d = { .size = sizeof d, .name = CHANNEL, .role = role, .peer = "peer",
                                .streams = 2, .endpoints = eps, .n_endpoints = 2 };
    sl_decl_t *decl = NULL;
    assert_ok(sl_decl_build(&d, &o, true, &decl, bytes_p));
    return decl;
}

/* The device path the last check() agreed on. */
static uint32_t last_path;

/* Check `theirs` (a copy: the check terminates its strings in place) against `mine`. */
static int check(const sl_decl_t *mine, const sl_decl_t *theirs, size_t bytes)
{
    sl_decl_t *copy = malloc(bytes);
    assert_non_null(copy);
    memcpy(copy, theirs, bytes);
    uint32_t path = 99;
    int rc = sl_decl_check(CHANNEL, 1, mine, copy, bytes, &path);
    free(copy);
    last_path = path;
    return rc;
}

/* Both sides reach the same verdict, with the same message (returned in `msg`) and, when they
 * agree, the same device path (in last_path). */
static int agree(const sl_decl_t *c, const sl_decl_t *s, size_t bytes, char *msg, size_t len)
{
    int rc_c = check(c, s, bytes);
    uint32_t path_c = last_path;
    char at_c[512];
    snprintf(at_c, sizeof at_c, "%s", rc_c ? sluice_last_error() : "");
    int rc_s = check(s, c, bytes);
    assert_int_equal(rc_c, rc_s);
    if (rc_s)
        assert_string_equal(at_c, sluice_last_error());
    else
        assert_int_equal(path_c, last_path);
    snprintf(msg, len, "%s", at_c);
    return rc_c;
}

static void host_on_both_sides_agrees(void **state)
{
    (void)state;
    size_t bytes;
    sl_decl_t *c = declare(SLUICE_CONTROLLER, SLUICE_MEMORY_HOST, &bytes);
    sl_decl_t *s = declare(SLUICE_SOURCE, SLUICE_MEMORY_HOST, &bytes);
    char msg[512];
    assert_false(sl_decl_has_device(c));
    assert_status(agree(c, s, bytes, msg, sizeof msg), SLUICE_OK);
    free(c);
    free(s);
}

static void device_on_one_side_is_a_mismatch_naming_that_side(void **state)
{
    (void)state;
    for (int dev_side = 0; dev_side < 2; dev_side++) {
        size_t bytes;
        sl_decl_t *c = declare(SLUICE_CONTROLLER, dev_side == 0 ? SLUICE_MEMORY_DEVICE : 0, &bytes);
        sl_decl_t *s = declare(SLUICE_SOURCE, dev_side == 1 ? SLUICE_MEMORY_DEVICE : 0, &bytes);
        sl_decl_set_device(dev_side == 0 ? c : s, 0, "built without CUDA");
        char msg[512];
        assert_status(agree(c, s, bytes, msg, sizeof msg), SLUICE_ETYPE);
        const char *want = dev_side == 0 ? "the controller declares it in device memory, the "
                                           "source in host memory"
                                         : "the source declares it in device memory, the "
                                           "controller in host memory";
        if (!strstr(msg, "instance 7") || !strstr(msg, want))
            fail_msg("message does not name the instance and the device side: %s", msg);
        free(c);
        free(s);
    }
}

static const uint32_t ALL = SL_DEVICE_CUDA | SL_DEVICE_GPU | SL_DEVICE_IPC | SL_DEVICE_STAGED;

static void device_without_a_device_on_both_sides_is_not_supported_with_both_reasons(void **state)
{
    (void)state;
    static const struct {
        uint32_t device;
        const char *why;
    } sides[] = {
        { 0, "built without CUDA" },
        { SL_DEVICE_CUDA, "no CUDA device: no CUDA-capable device is detected" },
        { SL_DEVICE_CUDA | SL_DEVICE_GPU | SL_DEVICE_IPC | SL_DEVICE_STAGED, "1 CUDA device" },
    };
    for (size_t i = 0; i < 3; i++) {
        for (size_t j = 0; j < 3; j++) {
            size_t bytes;
            sl_decl_t *c = declare(SLUICE_CONTROLLER, SLUICE_MEMORY_DEVICE, &bytes);
            sl_decl_t *s = declare(SLUICE_SOURCE, SLUICE_MEMORY_DEVICE, &bytes);
            assert_true(sl_decl_has_device(c) && sl_decl_has_device(s));
            sl_decl_set_device(c, sides[i].device, sides[i].why);
            sl_decl_set_device(s, sides[j].device, sides[j].why);
            char msg[512], want[512];
            int rc = agree(c, s, bytes, msg, sizeof msg);
            if (i == 2 && j == 2) {
                /* A device on both sides, one node: CUDA IPC. */
                assert_status(rc, SLUICE_OK);
                assert_int_equal(last_path, SLUICE_DEVICE_PATH_IPC);
            } else {
                assert_status(rc, SLUICE_ENOTSUP);
                snprintf(want, sizeof want, "controller: %s; source: %s", sides[i].why,
                         sides[j].why);
                if (!strstr(msg, "instance 7 is declared in device memory") || !strstr(msg, want))
                    fail_msg("message does not give both reasons (%s): %s", want, msg);
            }
            free(c);
            free(s);
        }
    }
}

/* Both sides with a device: (controller's forced path, source's, same node, IPC bits) -> path. */
static void device_path_is_chosen_alike_on_both_sides(void **state)
{
    (void)state;
    enum { A = SLUICE_DEVICE_PATH_AUTO, I = SLUICE_DEVICE_PATH_IPC, S = SLUICE_DEVICE_PATH_STAGED };
    static const struct {
        uint32_t force_c, force_s;
        bool same_node;
        uint32_t dev_c, dev_s;
        int status;
        uint32_t path;
        const char *says;
    } cases[] = {
        { A, A, true, ALL, ALL, SLUICE_OK, I, NULL },
        { A, A, false, ALL, ALL, SLUICE_OK, S, NULL },
        { A, A, true, ALL, ALL & ~SL_DEVICE_IPC, SLUICE_OK, S, NULL },
        { S, A, true, ALL, ALL, SLUICE_OK, S, NULL },
        { A, S, true, ALL, ALL, SLUICE_OK, S, NULL },
        { I, I, true, ALL, ALL, SLUICE_OK, I, NULL },
        { I, A, false, ALL, ALL, SLUICE_ENOTSUP, 0,
          "device path ipc was forced, but the two sides are on different nodes" },
        { A, I, true, ALL & ~SL_DEVICE_IPC, ALL, SLUICE_ENOTSUP, 0,
          "device path ipc was forced, but the controller cannot share device memory" },
        { I, S, true, ALL, ALL, SLUICE_ETYPE, 0,
          "the controller forces device path ipc, the source staged" },
        { A, A, false, ALL, ALL & ~SL_DEVICE_STAGED, SLUICE_ENOTSUP, 0,
          "the source cannot stage device memory through the host" },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        size_t bytes;
        sl_decl_t *c = declare(SLUICE_CONTROLLER, SLUICE_MEMORY_DEVICE, &bytes);
        sl_decl_t *s = declare(SLUICE_SOURCE, SLUICE_MEMORY_DEVICE, &bytes);
        sl_decl_set_device(c, cases[k].dev_c, "c");
        sl_decl_set_device(s, cases[k].dev_s, "s");
        c->device_path = cases[k].force_c;
        s->device_path = cases[k].force_s;
        if (!cases[k].same_node) { /* over RMA: shared memory needs one node */
            snprintf(s->node, sizeof s->node, "elsewhere");
            c->transport_shm = s->transport_shm = 0;
        }
        char msg[512];
        int rc = agree(c, s, bytes, msg, sizeof msg);
        if (rc != cases[k].status)
            fail_msg("case %zu: %s, want %s (%s)", k, sluice_strerror(rc),
                     sluice_strerror(cases[k].status), msg);
        if (rc == SLUICE_OK && last_path != cases[k].path)
            fail_msg("case %zu: path %s, want %s", k, sl_device_path_name(last_path),
                     sl_device_path_name(cases[k].path));
        if (cases[k].says && !strstr(msg, cases[k].says))
            fail_msg("case %zu: message does not say \"%s\": %s", k, cases[k].says, msg);
        free(c);
        free(s);
    }
    /* Host-only channels take no device path, whatever is forced. */
    size_t bytes;
    sl_decl_t *c = declare(SLUICE_CONTROLLER, SLUICE_MEMORY_HOST, &bytes);
    sl_decl_t *s = declare(SLUICE_SOURCE, SLUICE_MEMORY_HOST, &bytes);
    c->device_path = SLUICE_DEVICE_PATH_IPC;
    char msg[512];
    assert_status(agree(c, s, bytes, msg, sizeof msg), SLUICE_OK);
    assert_int_equal(last_path, 0);
    /* A path no sluice peer forces is a corrupt message. */
    s->device_path = 3;
    assert_status(check(c, s, bytes), SLUICE_ECORRUPT);
    assert_non_null(strstr(sluice_last_error(), "device path 3"));
    free(c);
    free(s);
}

static void a_type_mismatch_is_reported_before_the_device_verdict(void **state)
{
    (void)state;
    size_t bytes;
    sl_decl_t *c = declare(SLUICE_CONTROLLER, SLUICE_MEMORY_DEVICE, &bytes);
    sl_decl_t *s = declare(SLUICE_SOURCE, SLUICE_MEMORY_DEVICE, &bytes);
    sl_decl_set_device(c, 0, "built without CUDA");
    sl_decl_set_device(s, 0, "built without CUDA");
    s->endpoints[1].fingerprint ^= 1;
    char msg[512];
    assert_status(agree(c, s, bytes, msg, sizeof msg), SLUICE_ETYPE);
    assert_non_null(strstr(msg, "type mismatch on instance 8"));
    free(c);
    free(s);
}

static void an_unknown_memory_or_an_unterminated_reason_is_caught(void **state)
{
    (void)state;
    size_t bytes;
    sl_decl_t *c = declare(SLUICE_CONTROLLER, SLUICE_MEMORY_DEVICE, &bytes);
    sl_decl_t *s = declare(SLUICE_SOURCE, SLUICE_MEMORY_DEVICE, &bytes);
    sl_decl_set_device(c, 0, "built without CUDA");
    /* A reason that fills its field without a NUL is cut at its last byte. */
    memset(s->device_why, 'w', sizeof s->device_why);
    s->device = SL_DEVICE_PROBED;
    assert_status(check(c, s, bytes), SLUICE_ENOTSUP);
    assert_non_null(strstr(sluice_last_error(), "source: www"));
    s->endpoints[0].memory = 2;
    assert_status(check(c, s, bytes), SLUICE_ECORRUPT);
    assert_non_null(strstr(sluice_last_error(), "instance 7 in memory 2"));
    free(c);
    free(s);
}

/* The GPU layer agrees with itself: a build without CUDA never sees a device and says so; a CUDA
 * build either sees one or gives the runtime's reason. */
static void gpu_layer_says_why_there_is_no_device(void **state)
{
    (void)state;
    char why[128] = "untouched";
    int n = sl_gpu_available(why, sizeof why);
    assert_true(n >= 0);
    if (!sl_gpu_built()) {
        assert_int_equal(n, 0);
        assert_string_equal(why, "built without CUDA");
    } else if (n == 0) {
        if (strncmp(why, "no CUDA device: ", 16) != 0 || strlen(why) <= 16)
            fail_msg("no reason: %s", why);
    } else {
        assert_string_equal(sl_gpu_layer(), "cuda");
        assert_string_equal(why, "untouched");
    }
    /* A short buffer is cut, never overrun. */
    char tiny[8];
    memset(tiny, 'x', sizeof tiny);
    if (sl_gpu_available(tiny, 4) == 0)
        assert_int_equal(strlen(tiny), 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(host_on_both_sides_agrees),
        cmocka_unit_test(device_on_one_side_is_a_mismatch_naming_that_side),
        cmocka_unit_test(device_without_a_device_on_both_sides_is_not_supported_with_both_reasons),
        cmocka_unit_test(device_path_is_chosen_alike_on_both_sides),
        cmocka_unit_test(a_type_mismatch_is_reported_before_the_device_verdict),
        cmocka_unit_test(an_unknown_memory_or_an_unterminated_reason_is_caught),
        cmocka_unit_test(gpu_layer_says_why_there_is_no_device),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
