/* SPDX-License-Identifier: MIT */
/* Context internals shared by the channel code. */
#ifndef SL_CONTEXT_H
#define SL_CONTEXT_H

#include "internal.h"

struct sluice_context {
    MPI_Comm comm;          /* duplicate of the user's, MPI_ERRORS_RETURN */
    MPI_Comm hello_comm;    /* handshake messages only (handshake.c) */
    MPI_Comm app_comm;      /* the application's (sluice_context_comm); sluice never uses it */
    struct sl_hello_box *hello; /* their mailbox and the sends in flight */
    int rank, size;
    sluice_peer_info_t *peers; /* indexed by rank */
};

/* The rank of the other process called `name`; unique names only. */
int sl_context_find(const sluice_context_t *ctx, const char *name, int *rank_p);

#endif
