// Process layout under an MPI launcher. The binary always links Open MPI; MPI is
// initialised only when a launcher (mpirun, srun) started us, so ./moe runs without one.
#pragma once
#include <stdbool.h>

typedef struct { int rank, size; bool mpi; } DistInfo;

int dist_init(int *argc, char ***argv, DistInfo *d);
void dist_finalize(const DistInfo *d);
