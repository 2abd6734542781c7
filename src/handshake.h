/* SPDX-License-Identifier: MIT */
/* The open agreement: the acknowledged exchange of declarations (decl.h). */
#ifndef SL_HANDSHAKE_H
#define SL_HANDSHAKE_H

#include "channel.h"
#include "decl.h"

/* What both sides agreed on, as this side needs it after the handshake. */
typedef struct sl_agreement {
    uint64_t my_nonce, peer_nonce;
    int64_t peer_pid;
    uint64_t peer_start;
    bool same_node;           /* equal host name and boot id */
    uint32_t device_path;     /* how device products travel (sl_decl_check), 0: none declared */
} sl_agreement_t;

/*
 * Agree with the peer on opening `ch` (docs/design.md, "Opening"): both
 * declarations are exchanged and checked, each side acknowledges the
 * other's attempt, and only when this side holds the peer's declaration and
 * the peer's acknowledgement of its own does it return SLUICE_OK; the peer
 * then has (or will have) the same. Bounded by `deadline`, except that a
 * side that has acknowledged the peer waits up to one more timeout for the
 * peer's acknowledgement or abort. A side that gives up sends an abort so
 * the peer drops this attempt; declarations of older attempts are
 * recognised and dropped. The declaration's buffer is kept until its send
 * completed. Safe from several threads opening other channels at once.
 */
int sl_handshake(sluice_channel_t *ch, sl_decl_t *mine, size_t bytes,
                 const sl_deadline_t *deadline, sl_agreement_t *out);

/* Per context: the mailbox of handshake messages and the sends in flight. */
int sl_hello_init(sluice_context_t *ctx);
void sl_hello_fini(sluice_context_t *ctx);

#endif
