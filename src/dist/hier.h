// The EP group's hierarchical all-to-all (hier.c), private to dist.c: an exchange in three
// phases of point-to-point messages (to the host's leader, between leaders, back to the
// host's ranks), advanced by hier_step until done, so that several may be in flight.
#pragma once
#include <mpi.h>
#include <stdbool.h>

typedef struct Hier Hier;
// (re)builds the map of the EP group's ranks by host (MPI_COMM_TYPE_SHARED); *hosts: how many
int hier_setup(MPI_Comm ep_comm, int *hosts);
void hier_finalize(void);
// starts an exchange of rows of `width` floats: scnt[d] rows to EP rank d, laid out in rank
// order from send; what comes back lands in rank order in recv (blocks for the counts)
int hier_start(const float *send, const int *scnt, float *recv, int width, Hier **out);
// advances h (blocking: to the end); true when it is done, or ended early by a failure
bool hier_step(Hier *h, bool block);
// why the exchange failed, or NULL
const char *hier_error(const Hier *h);
void hier_free(Hier *h);
