// Process layout under an MPI launcher, and the collectives training uses. The binary
// always links Open MPI; MPI is initialised only when a launcher (mpirun, srun) started
// us, so ./moe runs without one, and every call here is then a no-op on one process.
//
// P ranks form P/E data-parallel replicas of E ranks each: rank r is expert-parallel
// rank r % E of EP group r / E (consecutive ranks, so that a group sits on one host when
// the launcher fills hosts in order). Non-expert gradients are summed over all P ranks;
// an expert's gradient over the P/E ranks that hold it (the "replicas" group).
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include "../moe/moe.h"

// Pipeline parallelism (--pp S) cuts the world into S stages of P/S consecutive ranks each;
// within a stage the layout above holds (EP groups of E ranks, P/(S·E) replicas). Groups:
// the stage's ranks (its data ranks: what DIST_WORLD is without stages), the S ranks of one
// place in every stage (DIST_PIPE: point-to-point between neighbours, sums over stages),
// the ranks of the first and last stages (DIST_EMBED: the embedding both hold), and the S·E
// ranks of one replica (DIST_MODEL: one whole model, for a checkpoint's gather).
typedef enum { DIST_WORLD, DIST_EP, DIST_REPLICAS, DIST_STAGE, DIST_PIPE, DIST_EMBED, DIST_MODEL } DistGroup;
// the expert-parallel all-to-all: flat (one MPI_Ialltoallv), or hierarchical (within a host
// to its leader, one exchange between hosts, back within the host); auto picks hierarchical
// when the EP group spans hosts with several ranks on some host
typedef enum { DIST_A2A_AUTO, DIST_A2A_FLAT, DIST_A2A_HIER } DistA2A;

typedef struct {
    int rank, size;        // world
    bool mpi;
    int ep, ep_rank;       // expert-parallel group size and this rank's place in it
    int dp, dp_rank;       // replicas (P / (S·E)) and this rank's replica within its stage
    int pp, stage;         // pipeline stages and this rank's
    int ssize, srank;      // ranks a stage and this rank's place in its stage
    int hosts;             // hosts the EP group spans
    bool hier;             // hierarchical all-to-all in use
    MoeComm moe;           // the EP group's transport for the MoE layers
    double ms, exposed_ms; // time the collectives below were in flight, and were waited for
} DistInfo;

int dist_init(int *argc, char ***argv);
void dist_finalize(void);
DistInfo *dist_info(void);
// split the world into pp stages of size/pp ranks, each into EP groups of ep ranks (pp must
// divide size, ep the stage's ranks)
int dist_setup(int ep, int pp, DistA2A mode);
// point-to-point over DIST_PIPE: n floats to / from the rank of stage `stage` in this rank's
// place, started (dist_wait(*req) completes it; the buffer is not to be touched before).
// Messages between two ranks with one tag arrive in the order they were sent.
int dist_pipe_isend(const float *buf, size_t n, int stage, int tag, int *req);
int dist_pipe_irecv(float *buf, size_t n, int stage, int tag, int *req);
// sum over a group, in place
int dist_sum_f32(float *buf, size_t n, DistGroup g);
// the same, started (the buffer is not to be touched until dist_wait(*req)); *req -1 when
// there is nothing to do
int dist_sum_f32_start(float *buf, size_t n, DistGroup g, int *req);
int dist_wait(int req);
// --zero 1 (over the ranks of a pipeline stage; without stages, the world): the sum of
// buf[0, sum of cnt), of which rank r gets cnt[r] elements, at
// the start of buf (in place, MPI_Reduce_scatter's way); started when req is not NULL
int dist_sum_part_f32(float *buf, const int *cnt, int *req);
int dist_sum_f64(double *buf, int n, DistGroup g);
int dist_sum_long(long *buf, int n, DistGroup g);
int dist_max_f64(double *buf, int n, DistGroup g);
// rank 0 of the world receives n floats from each rank of EP group 0 (world ranks 0..ep-1)
// into recv[ep * n]; recv is only read on rank 0
int dist_gather_ep0(const float *send, size_t n, float *recv);
int dist_bcast_int(int *v, int n);
// --zero 1: stage rank r owns elements [off[r], off[r+1]) of a blob of off[ssize] floats. allgather
// gives every rank every part of buf (in place); gather puts each rank's part (part: its
// own) into full[off[ssize]] on the stage's rank 0 (full is only written there)
int dist_allgather_f32(float *buf, const size_t *off);
int dist_gather_f32(const float *part, const size_t *off, float *full);
// all-to-all of floats over group g (DIST_EP or DIST_MODEL; counts and displacements in floats)
int dist_alltoallv_f32(const float *send, const int *scnt, const int *sdsp, float *recv, const int *rcnt,
                       const int *rdsp, DistGroup g);
// end every rank of the job (after a failure on this one)
void dist_abort(int code);
