/* SPDX-License-Identifier: MIT */
/* The open handshake's messages on the wire: what each side declares, and its check. */
#ifndef SL_DECL_H
#define SL_DECL_H

#include "internal.h"

#define SL_DECL_MAGIC 0x4c43454449554c53ull /* "SLUIDECL" */

/* What a handshake message is (sl_hello_t.kind). */
enum { SL_HELLO_DECL = 1, SL_HELLO_ACK = 2, SL_HELLO_ABORT = 3 };

/* One endpoint as sent in the handshake. */
typedef struct sl_decl_endpoint {
    uint32_t instance;
    uint32_t direction;       /* sluice_direction_t */
    uint32_t memory;          /* sluice_memory_t: where its products live */
    uint32_t reserved;
    uint64_t fingerprint;
    char type_name[SLUICE_NAME_MAX];
} sl_decl_endpoint_t;

/*
 * Every handshake message starts with this: which channel, which attempt
 * (a fresh random nonce per open), and for an ACK which of the peer's
 * attempts it acknowledges. Plain data, sent as bytes.
 */
typedef struct sl_hello {
    uint64_t magic;           /* SL_DECL_MAGIC */
    uint32_t kind;            /* SL_HELLO_DECL, SL_HELLO_ACK or SL_HELLO_ABORT */
    uint32_t reserved;
    char channel[64];
    uint64_t nonce;           /* the sender's attempt */
    uint64_t acked;           /* ACK: the receiver's attempt it acknowledges */
} sl_hello_t;

/* A DECL: what each side declares. */
typedef struct sl_decl {
    sl_hello_t hello;
    uint32_t version;
    uint32_t role;            /* sluice_role_t */
    uint32_t streams;
    uint32_t ring_depth;
    uint32_t global_depth;
    uint32_t max_open_lumis;
    uint32_t transport_shm;   /* 1: shared memory, 0: RMA */
    uint32_t device;          /* SL_DEVICE_* bits; 0 unless it declares a device endpoint */
    uint32_t device_path;     /* the device path it forces (option device_path), 0: any */
    uint32_t reserved1;
    uint64_t arena_bytes;
    int64_t pid;              /* the declaring process, for liveness and segment names */
    uint64_t start;           /* its start time (liveness.h) */
    char node[160];           /* host name and boot id (sl_node_identity) */
    char device_why[128];     /* with SL_DEVICE_PROBED: what it can do with device memory, in words */
    uint64_t n_endpoints;
    sl_decl_endpoint_t endpoints[];
} sl_decl_t;

/*
 * What a side that declares a device-memory endpoint found it can do
 * (sl_decl_t.device; docs/gpu.md). The agreement picks a data path both
 * sides have, or fails the open on both sides with SLUICE_ENOTSUP and both
 * reasons.
 */
enum {
    SL_DEVICE_PROBED = 1u << 0, /* it declares a device endpoint and looked (device_why is set) */
    SL_DEVICE_CUDA = 1u << 1,   /* built with a device layer (CUDA, or the tests' emulation) */
    SL_DEVICE_GPU = 1u << 2,    /* sees at least one device */
    SL_DEVICE_IPC = 1u << 3,    /* can export and map device memory between processes of a node */
    SL_DEVICE_STAGED = 1u << 4, /* can copy between its device and the host arena */
};

/*
 * What this side declares for channel `d` (already validated), with a fresh
 * attempt nonce: a malloc'd message of *bytes_p bytes that the caller frees.
 * SLUICE_ENOMEM, or SLUICE_ERANGE when the endpoints do not fit a message.
 */
int sl_decl_build(const sluice_channel_desc_t *d, const sluice_options_t *o, bool shm,
                  sl_decl_t **decl_p, size_t *bytes_p);

/* Whether `decl` declares an endpoint in device memory. */
bool sl_decl_has_device(const sl_decl_t *decl);

/* Record what this side can do with device memory: SL_DEVICE_* bits (PROBED is added) and why. */
void sl_decl_set_device(sl_decl_t *decl, uint32_t device, const char *why);

/* The device path a side calls what it names (sluice_device_path_choice_t; 0: "none"). */
const char *sl_device_path_name(uint32_t path);

/*
 * Check the declaration `theirs` of `bytes` bytes that rank `from_rank`
 * sent for `channel` against this side's own `mine`. Every field of
 * `theirs` may be hostile: nothing is read outside its `bytes`, and its
 * strings (channel, node, device reason, type names) are NUL-terminated in place, so that
 * after SLUICE_OK the caller may use them as C strings. SLUICE_ECORRUPT for
 * a message no sluice peer sends (too short, endpoints past its end, wrong
 * magic or kind, an unknown role, direction or memory); SLUICE_EINVAL when
 * both sides opened the channel in the same role; SLUICE_ETYPE when the
 * declarations disagree (a field, an instance's type or memory, or the
 * device paths the two force), SLUICE_ENOTSUP for shared memory across
 * nodes and for device-memory endpoints without a data path both sides
 * have; the message names the channel and what differs. On SLUICE_OK,
 * *device_path_p is the device path both sides take (SLUICE_DEVICE_PATH_IPC
 * or _STAGED), or 0 when no endpoint is in device memory. Calls no MPI;
 * never blocks; any thread.
 */
int sl_decl_check(const char *channel, int from_rank, const sl_decl_t *mine, sl_decl_t *theirs,
                  size_t bytes, uint32_t *device_path_p);

#endif
