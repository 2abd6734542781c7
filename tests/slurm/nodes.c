/* SPDX-License-Identifier: MIT */
/*
 * Under srun -N 2: the two ranks run on different hosts, Open MPI sees two
 * nodes (MPI_COMM_TYPE_SHARED splits them apart), and a one-sided exchange
 * (MPI_Put + flush, then MPI_Get + flush) crosses between them intact.
 */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        MPI_Finalize();                                                                            \
        return 1;                                                                                  \
    } while (0)

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != 2)
        FAIL("needs exactly 2 ranks, got %d", size);

    char host[MPI_MAX_PROCESSOR_NAME] = { 0 }, hosts[2][MPI_MAX_PROCESSOR_NAME];
    int n;
    MPI_Get_processor_name(host, &n);
    MPI_Allgather(host, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, hosts, MPI_MAX_PROCESSOR_NAME,
                  MPI_CHAR, MPI_COMM_WORLD);
    if (strcmp(hosts[0], hosts[1]) == 0)
        FAIL("both ranks on host %s", hosts[0]);

    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
    int node_size;
    MPI_Comm_size(node, &node_size);
    MPI_Comm_free(&node);
    if (node_size != 1)
        FAIL("MPI_COMM_TYPE_SHARED put %d ranks on one node", node_size);

    /* One-sided: rank 0 puts into rank 1's window; rank 1 gets it back from its own. */
    enum { N = 1 << 16 };
    unsigned char *base;
    MPI_Win win;
    if (MPI_Win_allocate(N, 1, MPI_INFO_NULL, MPI_COMM_WORLD, &base, &win) != MPI_SUCCESS)
        FAIL("MPI_Win_allocate failed (over TCP only osc/pt2pt can make windows)");
    memset(base, 0, N);
    static unsigned char pattern[N], back[N];
    for (int i = 0; i < N; i++)
        pattern[i] = (unsigned char)(i * 7 + 3);
    MPI_Win_lock_all(0, win);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        MPI_Put(pattern, N, MPI_BYTE, 1, 0, N, MPI_BYTE, win);
        MPI_Win_flush(1, win);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 1) {
        MPI_Win_sync(win);
        MPI_Get(back, N, MPI_BYTE, 1, 0, N, MPI_BYTE, win);
        MPI_Win_flush(1, win);
    }
    MPI_Win_unlock_all(win);
    MPI_Win_free(&win);
    int bad = rank == 1 && memcmp(back, pattern, N) != 0;
    int any;
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
    if (any)
        FAIL("one-sided exchange between %s and %s damaged the data", hosts[0], hosts[1]);
    if (rank == 0)
        printf("ranks on %s and %s: two nodes, one-sided exchange of %d bytes intact\n", hosts[0],
               hosts[1], N);
    MPI_Finalize();
    return 0;
}
