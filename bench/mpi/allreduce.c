/* The reference for bench/mpi/run.sh: MPI_Allreduce (sum, in place) on float buffers of the given sizes in MiB,
   timed on rank 0 between barriers. Prints "MiB GB/s" per size, where GB/s is buffer bytes / seconds per call. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, reps = 5;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    for (int a = 1; a < argc; a++) {
        long mib = atol(argv[a]);
        long n = mib * (1L << 20) / (long)sizeof(float);
        float *x = malloc(n * sizeof(float));
        for (long i = 0; i < n; i++) x[i] = 1.0f;
        MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); /* warm-up: first touch, connections */
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        for (int r = 0; r < reps; r++) MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        MPI_Barrier(MPI_COMM_WORLD);
        double s = (MPI_Wtime() - t0) / reps;
        if (rank == 0) printf("%ld %.3f\n", mib, n * sizeof(float) / s / 1e9);
        free(x);
    }
    MPI_Finalize();
    return 0;
}
