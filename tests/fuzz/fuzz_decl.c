/* SPDX-License-Identifier: MIT */
/* Fuzzes sl_decl_check: any bytes as the peer's declaration, against this side's in either role. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"
#include "../../src/decl.h"

/*
 * The input is the whole message a peer sent, taken as its declaration: it
 * is copied into a heap buffer of exactly its size (so ASan reports any read
 * past it) and checked by sl_decl_check against each of this side's four
 * declarations, {controller, source} x {RMA, shared memory}, all built by
 * sl_decl_build for one small channel. An independent model says what the
 * verdict must be; the check must give that status, a message that names
 * the channel and what is wrong, and change nothing in the message but the
 * last byte of its strings.
 *
 * This side's declarations are made reproducible (fixed nonce, pid, start
 * and node) so that seeds written once keep matching: with
 * SLUICE_FUZZ_DECL_SEEDS=DIR the binary writes its seed declarations, valid
 * ones and near misses, into DIR and exits (tests/fuzz/make-corpus).
 */

int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FZ_CHANNEL "fuzz-decl"
#define FZ_NODE "fuzz-host/00000000-0000-0000-0000-000000000000"
#define FZ_RANK 5 /* the peer's rank, as messages name it */
#define FZ_STREAMS 4u

/* Types of the channel; the last has a name of the longest allowed length. */
enum { FZ_DIGI, FZ_HITS, FZ_SUMMARY, FZ_LONG, FZ_NTYPES };
static sluice_registry_t *fz_registry; /* lives as long as the fuzzer: fz_types point into it */
static const sluice_type_t *fz_types[FZ_NTYPES];

/* The controller's endpoints; the source has the same, in the other direction. */
static const struct {
    uint32_t instance;
    sluice_direction_t controller_dir;
    int type;
} fz_endpoints[] = {
    { 1, SLUICE_SEND, FZ_DIGI },
    { 2, SLUICE_SEND, FZ_HITS },
    { 7, SLUICE_RECEIVE, FZ_SUMMARY },
    { 0xfffffffeu, SLUICE_RECEIVE, FZ_LONG },
};
#define FZ_NENDPOINTS (sizeof fz_endpoints / sizeof fz_endpoints[0])

/* This side's declarations, [role - 1][shm]. */
static sl_decl_t *fz_mine[2][2];

static void fz_register_types(void)
{
    int rc = sluice_registry_create(&fz_registry);
    fz_check_status(rc, SLUICE_OK, "sluice_registry_create");
    static const sluice_column_t hit_columns[] = {
        { "energy", 4, 4 }, { "time", 4, 4 }, { "detid", 4, 4 }, { "flags", 2, 2 },
    };
    char long_name[SLUICE_NAME_MAX];
    memset(long_name, 'L', sizeof long_name - 1);
    memcpy(long_name, "fz::", 4);
    long_name[sizeof long_name - 1] = '\0';
    const sluice_type_desc_t descs[FZ_NTYPES] = {
        [FZ_DIGI] = { .size = sizeof(sluice_type_desc_t), .name = "fz::Digi",
                      .layout = SLUICE_LAYOUT_BLOCK, .elem_size = 16, .align = 8 },
        [FZ_HITS] = { .size = sizeof(sluice_type_desc_t), .name = "fz::RecHitSoA",
                      .layout = SLUICE_LAYOUT_SOA, .columns = hit_columns,
                      .n_columns = sizeof hit_columns / sizeof hit_columns[0] },
        [FZ_SUMMARY] = { .size = sizeof(sluice_type_desc_t), .name = "fz::Summary",
                         .layout = SLUICE_LAYOUT_BLOCK, .elem_size = 64, .align = 64 },
        [FZ_LONG] = { .size = sizeof(sluice_type_desc_t), .name = long_name,
                      .layout = SLUICE_LAYOUT_BLOCK, .elem_size = 1, .align = 1 },
    };
    for (int i = 0; i < FZ_NTYPES; i++) {
        rc = sluice_registry_add(fz_registry, &descs[i], &fz_types[i]);
        fz_check_status(rc, SLUICE_OK, "sluice_registry_add");
    }
}

/* A declaration as sl_decl_build makes it, with its varying fields fixed. */
static sl_decl_t *fz_declare(sluice_role_t role, bool shm, size_t *bytes_p)
{
    sluice_endpoint_t eps[FZ_NENDPOINTS];
    for (size_t i = 0; i < FZ_NENDPOINTS; i++) {
        sluice_direction_t d = fz_endpoints[i].controller_dir;
        if (role == SLUICE_SOURCE)
            d = d == SLUICE_SEND ? SLUICE_RECEIVE : SLUICE_SEND;
        eps[i] = (sluice_endpoint_t){ fz_endpoints[i].instance, d,
                                      fz_types[fz_endpoints[i].type] };
    }
    sluice_options_t o;
    sluice_options_init(&o);
    sluice_channel_desc_t d = { .size = sizeof d, .name = FZ_CHANNEL, .role = role,
                                .peer = "peer", .streams = FZ_STREAMS, .endpoints = eps,
                                .n_endpoints = FZ_NENDPOINTS };
    sl_decl_t *decl;
    size_t bytes;
    int rc = sl_decl_build(&d, &o, shm, &decl, &bytes);
    fz_check_status(rc, SLUICE_OK, "sl_decl_build");
    fz_check(bytes == sizeof(sl_decl_t) + FZ_NENDPOINTS * sizeof(sl_decl_endpoint_t),
             "sl_decl_build made %zu bytes for %zu endpoints", bytes, FZ_NENDPOINTS);
    fz_check(decl->hello.nonce != 0, "sl_decl_build gave a zero nonce");
    decl->hello.nonce = role;
    decl->pid = 1000 + role;
    decl->start = 4242;
    memset(decl->node, 0, sizeof decl->node);
    strcpy(decl->node, FZ_NODE);
    *bytes_p = bytes;
    return decl;
}

/* ------------------------------------------------------------ seeds */

static void fz_write(const char *dir, const char *name, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    fz_check(f && fwrite(p, 1, n, f) == n && fclose(f) == 0, "cannot write %s", path);
}

/* Write seed `name`: the declaration of a peer in `role` over `shm`, `grow` bytes longer (or
 * shorter, when negative), after the statement `edit` changed it through `p`. */
#define FZ_SEED(name, role, shm, grow, edit)                                                       \
    do {                                                                                           \
        size_t bytes_;                                                                             \
        sl_decl_t *base_ = fz_declare((role), (shm), &bytes_);                                     \
        size_t n_ = bytes_ + (size_t)(grow);                                                       \
        sl_decl_t *p = calloc(1, n_ > bytes_ ? n_ : bytes_);                                       \
        fz_check(p != NULL, "no memory for a seed");                                               \
        memcpy(p, base_, bytes_);                                                                  \
        edit;                                                                                      \
        fz_write(dir, (name), p, n_);                                                              \
        free(p);                                                                                   \
        free(base_);                                                                               \
    } while (0)

static void fz_write_seeds(const char *dir)
{
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        fz_check(false, "cannot create %s", dir);
    const sluice_role_t C = SLUICE_CONTROLLER, S = SLUICE_SOURCE;
    /* Valid: each is accepted by one of this side's declarations. */
    FZ_SEED("controller-rma", C, false, 0, (void)0);
    FZ_SEED("source-rma", S, false, 0, (void)0);
    FZ_SEED("controller-shm", C, true, 0, (void)0);
    FZ_SEED("source-shm", S, true, 0, (void)0);
    FZ_SEED("trailing-bytes", S, false, 40, (void)0);
    /* Strings without a NUL (and bytes after the channel's): over RMA, where
     * the node does not matter, still accepted, each cut at its last byte. */
    FZ_SEED("unterminated-strings", S, false, 0, {
        memset(p->hello.channel + sizeof FZ_CHANNEL, 'c',
               sizeof p->hello.channel - sizeof FZ_CHANNEL);
        memset(p->node, 'n', sizeof p->node);
        memset(p->endpoints[3].type_name, 'L', SLUICE_NAME_MAX);
    });
    FZ_SEED("unterminated-node", C, true, 0, memset(p->node, 'n', sizeof p->node));
    FZ_SEED("unterminated-channel", C, false, 0,
            memset(p->hello.channel, 'c', sizeof p->hello.channel));
    /* Malformed. */
    FZ_SEED("short", S, false, -(long)(FZ_NENDPOINTS * sizeof(sl_decl_endpoint_t) + 1), (void)0);
    FZ_SEED("hello-only", S, false,
            -(long)(sizeof(sl_decl_t) - sizeof(sl_hello_t) +
                    FZ_NENDPOINTS * sizeof(sl_decl_endpoint_t)),
            (void)0);
    FZ_SEED("endpoints-past-end", S, false, 0, p->n_endpoints++);
    FZ_SEED("endpoints-huge", C, false, 0, p->n_endpoints = UINT64_MAX);
    /* 2^61 endpoints of 120 bytes: 15 * 2^64, a multiplication that wraps to 0. */
    FZ_SEED("endpoints-wrap", S, false, 0, p->n_endpoints = 1ull << 61);
    FZ_SEED("bad-magic", S, false, 0, p->hello.magic ^= 1);
    FZ_SEED("kind-ack", C, false, 0, p->hello.kind = SL_HELLO_ACK);
    FZ_SEED("other-channel", S, false, 0, strcpy(p->hello.channel, "fuzz-decm"));
    FZ_SEED("role-zero", S, false, 0, p->role = 0);
    FZ_SEED("role-three", C, true, 0, p->role = 3);
    FZ_SEED("direction-zero", S, false, 0, p->endpoints[2].direction = 0);
    FZ_SEED("memory-two", C, false, 0, p->endpoints[1].memory = 2);
    FZ_SEED("device-path-three", S, true, 0, p->device_path = 3);
    /* Well formed, but not in agreement. */
    FZ_SEED("version", S, false, 0, p->version++);
    FZ_SEED("streams", C, false, 0, p->streams = FZ_STREAMS + 1);
    FZ_SEED("arena-bytes", S, true, 0, p->arena_bytes *= 2);
    FZ_SEED("transport", S, false, 0, p->transport_shm = 2);
    FZ_SEED("other-node", C, true, 0, p->node[0] = 'o');
    FZ_SEED("fingerprint", S, false, 0, p->endpoints[1].fingerprint ^= 1);
    FZ_SEED("missing-endpoint", C, false, 0, p->n_endpoints--);
    FZ_SEED("instance-moved", S, true, 0, p->endpoints[2].instance = 8);
    FZ_SEED("direction-swapped", C, false, 0, p->endpoints[0].direction = SLUICE_RECEIVE);
    /* A device endpoint against this side's host one, with the reason it gives unterminated. */
    FZ_SEED("memory-device", S, true, 0, {
        p->endpoints[1].memory = SLUICE_MEMORY_DEVICE;
        p->device = SL_DEVICE_PROBED;
        memset(p->device_why, 'w', sizeof p->device_why);
    });
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_register_types();
    size_t bytes;
    for (int r = 0; r < 2; r++)
        for (int shm = 0; shm < 2; shm++)
            fz_mine[r][shm] = fz_declare((sluice_role_t)(r + 1), shm, &bytes);
    /* The declarations of the two roles agree: each side accepts the other's. */
    for (int r = 0; r < 2; r++) {
        sl_decl_t *peer = fz_declare((sluice_role_t)(2 - r), true, &bytes);
        uint32_t path;
        int rc = sl_decl_check(FZ_CHANNEL, FZ_RANK, fz_mine[r][1], peer, bytes, &path);
        fz_check_status(rc, SLUICE_OK, "sl_decl_check of the other role's own declaration");
        free(peer);
    }
    const char *dir = getenv("SLUICE_FUZZ_DECL_SEEDS");
    if (dir) {
        fz_write_seeds(dir);
        exit(0);
    }
    return 0;
}

/* ------------------------------------------------------------ model */

/*
 * `p` is the peer's message after the check's own in-place termination
 * (which the model applies too). The verdict, written apart from decl.c:
 * the first thing wrong, in the order the check looks, and a piece of
 * text its message must hold.
 */
static int fz_expected(const sl_decl_t *mine, const sl_decl_t *p, size_t size, char *what,
                       size_t what_len)
{
    const sl_decl_t *ctrl = mine->role == SLUICE_CONTROLLER ? mine : p;
    const sl_decl_t *src = ctrl == mine ? p : mine;
    uint64_t need;
    snprintf(what, what_len, "malformed declaration of %zu bytes from rank %d", size, FZ_RANK);
    if (size < sizeof(sl_decl_t) ||
        __builtin_mul_overflow(p->n_endpoints, (uint64_t)sizeof(sl_decl_endpoint_t), &need) ||
        __builtin_add_overflow(need, (uint64_t)sizeof(sl_decl_t), &need) || need > size)
        return SLUICE_ECORRUPT;
    snprintf(what, what_len, "from rank %d is no declaration", FZ_RANK);
    if (p->hello.magic != SL_DECL_MAGIC || p->hello.kind != SL_HELLO_DECL)
        return SLUICE_ECORRUPT;
    snprintf(what, what_len, "declaration for channel \"%s\"", p->hello.channel);
    if (strcmp(p->hello.channel, FZ_CHANNEL) != 0)
        return SLUICE_ECORRUPT;
    snprintf(what, what_len, "declares role %u", p->role);
    if (p->role != SLUICE_CONTROLLER && p->role != SLUICE_SOURCE)
        return SLUICE_ECORRUPT;
    for (uint64_t i = 0; i < p->n_endpoints; i++) {
        snprintf(what, what_len, "instance %u with direction %u", p->endpoints[i].instance,
                 p->endpoints[i].direction);
        if (p->endpoints[i].direction != SLUICE_SEND &&
            p->endpoints[i].direction != SLUICE_RECEIVE)
            return SLUICE_ECORRUPT;
        snprintf(what, what_len, "instance %u in memory %u", p->endpoints[i].instance,
                 p->endpoints[i].memory);
        if (p->endpoints[i].memory != SLUICE_MEMORY_HOST &&
            p->endpoints[i].memory != SLUICE_MEMORY_DEVICE)
            return SLUICE_ECORRUPT;
    }
    snprintf(what, what_len, "forces device path %u", p->device_path);
    if (p->device_path > SLUICE_DEVICE_PATH_STAGED)
        return SLUICE_ECORRUPT;
    snprintf(what, what_len, "both sides");
    if (p->role == mine->role)
        return SLUICE_EINVAL;
    const struct {
        const char *name;
        uint64_t c, s;
    } fields[] = {
        { "version", ctrl->version, src->version },
        { "streams", ctrl->streams, src->streams },
        { "ring_depth", ctrl->ring_depth, src->ring_depth },
        { "global_depth", ctrl->global_depth, src->global_depth },
        { "max_open_lumis", ctrl->max_open_lumis, src->max_open_lumis },
        { "arena_bytes", ctrl->arena_bytes, src->arena_bytes },
        { "transport_shm", ctrl->transport_shm, src->transport_shm },
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        snprintf(what, what_len, "%s differs: controller %llu, source %llu", fields[i].name,
                 (unsigned long long)fields[i].c, (unsigned long long)fields[i].s);
        if (fields[i].c != fields[i].s)
            return SLUICE_ETYPE;
    }
    snprintf(what, what_len, "different nodes");
    if (ctrl->transport_shm && strcmp(ctrl->node, src->node) != 0)
        return SLUICE_ENOTSUP;
    /* Every endpoint of either side has a partner: same instance, the
     * other direction, the same fingerprint and memory (the first such, if
     * several). */
    const sl_decl_t *sides[2][2] = { { ctrl, src }, { src, ctrl } };
    for (int k = 0; k < 2; k++) {
        const sl_decl_t *a = sides[k][0], *b = sides[k][1];
        for (uint64_t i = 0; i < a->n_endpoints; i++) {
            const sl_decl_endpoint_t *e = &a->endpoints[i];
            uint32_t other = e->direction == SLUICE_SEND ? SLUICE_RECEIVE : SLUICE_SEND;
            const sl_decl_endpoint_t *partner = NULL;
            for (uint64_t j = 0; j < b->n_endpoints && !partner; j++)
                if (b->endpoints[j].instance == e->instance && b->endpoints[j].direction == other)
                    partner = &b->endpoints[j];
            snprintf(what, what_len, "instance %u (", e->instance);
            if (!partner || partner->fingerprint != e->fingerprint ||
                partner->memory != e->memory)
                return SLUICE_ETYPE;
        }
    }
    /* Then device memory, from the controller's first device endpoint: a
     * device on both sides, forced paths that agree, and a path both have
     * (IPC needs one node and both able to share; otherwise staging). */
    const sl_decl_endpoint_t *dev = NULL;
    for (uint64_t i = 0; i < ctrl->n_endpoints && !dev; i++)
        if (ctrl->endpoints[i].memory == SLUICE_MEMORY_DEVICE)
            dev = &ctrl->endpoints[i];
    if (dev) {
        snprintf(what, what_len, "instance %u is declared in device memory", dev->instance);
        if (!(ctrl->device & SL_DEVICE_GPU) || !(src->device & SL_DEVICE_GPU))
            return SLUICE_ENOTSUP;
        snprintf(what, what_len, "forces device path");
        if (ctrl->device_path && src->device_path && ctrl->device_path != src->device_path)
            return SLUICE_ETYPE;
        uint32_t forced = ctrl->device_path ? ctrl->device_path : src->device_path;
        bool ipc = strcmp(ctrl->node, src->node) == 0 && (ctrl->device & SL_DEVICE_IPC) &&
                   (src->device & SL_DEVICE_IPC);
        snprintf(what, what_len, "device path ipc was forced");
        if (forced == SLUICE_DEVICE_PATH_IPC && !ipc)
            return SLUICE_ENOTSUP;
        snprintf(what, what_len, "cannot stage device memory");
        if ((!(ctrl->device & SL_DEVICE_STAGED) || !(src->device & SL_DEVICE_STAGED)) &&
            (forced == SLUICE_DEVICE_PATH_STAGED || !ipc))
            return SLUICE_ENOTSUP;
    }
    what[0] = '\0';
    return SLUICE_OK;
}

/* The terminations the check makes in place, when it gets as far as making them. */
static bool fz_terminate(sl_decl_t *p, size_t size)
{
    if (size < sizeof(sl_decl_t) ||
        p->n_endpoints > (size - sizeof(sl_decl_t)) / sizeof(sl_decl_endpoint_t) ||
        p->hello.magic != SL_DECL_MAGIC || p->hello.kind != SL_HELLO_DECL)
        return false;
    p->hello.channel[sizeof p->hello.channel - 1] = '\0';
    p->node[sizeof p->node - 1] = '\0';
    p->device_why[sizeof p->device_why - 1] = '\0';
    for (uint64_t i = 0; i < p->n_endpoints; i++)
        p->endpoints[i].type_name[SLUICE_NAME_MAX - 1] = '\0';
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Exactly `size` bytes (malloc'd, so aligned like a received message):
     * a read past the message is a heap overflow. */
    sl_decl_t *model = malloc(size);
    sl_decl_t *theirs = malloc(size);
    fz_check(size == 0 || (model && theirs), "no memory for %zu bytes", size);
    if (size)
        memcpy(model, data, size);
    bool terminated = fz_terminate(model, size);
    char what[512];
    for (int r = 0; r < 2; r++) {
        for (int shm = 0; shm < 2; shm++) {
            const sl_decl_t *mine = fz_mine[r][shm];
            if (size)
                memcpy(theirs, data, size);
            int want = fz_expected(mine, model, size, what, sizeof what);
            uint32_t path;
            int rc = sl_decl_check(FZ_CHANNEL, FZ_RANK, mine, theirs, size, &path);
            fz_check(rc == want,
                     "sl_decl_check as %s over %s returned %d (%s), the model expects %d (%s: %s)",
                     r ? "source" : "controller", shm ? "shm" : "rma", rc, sluice_strerror(rc),
                     want, sluice_strerror(want), what);
            /* Nothing changed in the message but the last byte of its strings. */
            fz_check(size == 0 || memcmp(theirs, model, size) == 0 ||
                         (rc != SLUICE_OK && memcmp(theirs, data, size) == 0),
                     "sl_decl_check changed the message beyond its strings' terminators");
            if (rc == SLUICE_OK) {
                /* Accepted: what the caller will read lies inside the message. */
                fz_check(terminated && size >= sizeof(sl_decl_t) &&
                             theirs->n_endpoints <=
                                 (size - sizeof(sl_decl_t)) / sizeof(sl_decl_endpoint_t),
                         "accepted a declaration of %llu endpoints in %zu bytes",
                         (unsigned long long)theirs->n_endpoints, size);
                fz_check(theirs->role + mine->role == SLUICE_CONTROLLER + SLUICE_SOURCE,
                         "accepted role %u against role %u", theirs->role, mine->role);
                continue;
            }
            /* Error messages name the thing (STYLE.md): the channel, then what is wrong. */
            const char *msg = sluice_last_error();
            static const char prefix[] = "channel \"" FZ_CHANNEL "\": ";
            fz_check(strncmp(msg, prefix, sizeof prefix - 1) == 0,
                     "message does not start with the channel: %s", msg);
            fz_check(strstr(msg, what) != NULL, "message does not hold \"%s\": %s", what, msg);
        }
    }
    free(theirs);
    free(model);
    return 0;
}
