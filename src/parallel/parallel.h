// The parallel layer: what training needs from several processes, built on src/dist (the
// process layout and MPI collectives, which only this layer includes; its DistInfo and
// collectives are part of this interface). Data parallelism's gradient sums in buckets,
// ZeRO-1's shares, dynamic expert placement at run time, one reshard routine, and the
// checkpoint of a distributed run.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include "../dist/dist.h"
#include "../io/checkpoint.h"
#include "../model/model.h"
#include "../optim/optim.h"

// ---- gradient sums
// Non-expert gradients are summed over every rank, an expert's over the replicas that hold
// it. With overlap, the sums start layer by layer (buckets) while the last backward pass
// goes on: pass par_grads_ready as ForwardOpts.grads_ready with the GradSync as its ctx.
// zoff (--zero 1, else NULL): rank r needs the sum of blob elements [zoff[r], zoff[r+1])
// only, and gets only that (a reduce-scatter).
typedef struct GradMove GradMove;
typedef struct {
    const Model *m;
    const ExpertShard *sh;
    const size_t *zoff;
    bool overlap;
    int *reqs, n, cap;
    GradMove *mv;
} GradSync;
void par_grads_begin(GradSync *gs, const Model *m, const ExpertShard *sh, const size_t *zoff, bool overlap);
int par_grads_ready(void *gs, int layer);   // layer L: the head, -1: embedding and final norm
// waits for what is in flight (or, without overlap, makes every sum now); also sums the
// gradients of experts replicated by a placement. rc: the step's result so far
int par_grads_end(GradSync *gs, int rc);
// the global gradient norm: every distinct parameter once (over the EP group; with zoff,
// each rank's part of the summed gradient, over the world)
int par_grad_norm(const Model *m, const ExpertShard *sh, const size_t *zoff, double *norm);

// ---- ZeRO stage 1: rank r keeps the moments of blob elements [off[r], off[r+1])
void par_zero_parts(size_t n, int P, size_t *off);

// ---- layouts
// Moves nb blobs laid out as from[q] on EP rank q (src[k], this rank's) to the layout to[p]
// on EP rank p (dst[k], this rank's): a tensor comes from this rank's own blob when it held
// it, else from the lowest rank that did. Every rank passes all P layouts of both.
int par_reshard(const Model *from, const Model *to, int nb, float *const *src, float *const *dst);
// the same over the S·E ranks of one whole model under pipeline parallelism (DIST_MODEL: rank
// stage·E + ep_rank); from and to have S·E layouts
int par_reshard_model(const Model *from, const Model *to, int nb, float *const *src, float *const *dst);

// ---- dynamic expert placement (--replace-every N --redundant-experts R)
// What a placement is worth: the rows it takes off a layer's busiest rank over the windows
// left in the run (the loads taken to stay as they were), at s_per_row (an expert row's
// forward and backward GEMMs at the measured sgemm peak, so the gain errs low), against
// what moving that layer's experts costs at s_per_move (one expert's weights and moments,
// measured at the last migration; 0 until there was one).
typedef struct { double s_per_row, s_per_move, windows; bool always; } PlaceCost;
// A placement np for the loads of the last window (the same on every rank: the loads are
// global and the packing deterministic), then the weights and moments move. *moved: experts
// moved; *before / *after: the worst layer's predicted busiest rank over the mean.
// sh is m's shard; it becomes np's.
int par_place_again(Model *m, ExpertShard *sh, AdamW *opt, const double *win_load, int R, PlaceCost *pc, MoePlacement *np,
                    int *moved, double *before, double *after);
// the model and optimizer state move to placement np (this rank's slots of it); sh is m's
// shard, and becomes np's
int par_migrate(Model *m, ExpertShard *sh, AdamW *opt, const MoePlacement *np);
// the slots of layer l under np that shard sh's ranks do not hold yet
int par_layer_moves(const MoeConfig *c, const ExpertShard *sh, const MoePlacement *np, int l);

// ---- checkpoints
// One standard checkpoint whatever the layout: under expert parallelism rank 0 gathers the
// experts of EP group 0 (weights and moments) into a whole model; under --zero 1 it gathers
// the moments tensor by tensor as it writes them. st->json: the trainer's state. Every rank
// learns whether the save worked.
int par_save_checkpoint(const char *dir, const Model *m, const ExpertShard *sh, const AdamW *opt, const size_t *zoff,
                        CkptState *st);
// the same with pipeline stages (ls: this rank's layers): replica 0's stages to rank 0
int par_save_checkpoint_staged(const char *dir, const Model *m, const ExpertShard *sh, const LayerShard *ls, const AdamW *opt,
                               const size_t *zoff, CkptState *st);

// ---- probe.c: collective timings for moe calibrate
// The fastest of repeated sums of n_floats over every rank of the job (the slowest rank's
// time each), repeated for about `seconds`
int par_time_allreduce(size_t n_floats, double seconds, double *best);
// The experts' exchange as moe train makes it (counts, then rows started and waited for;
// rows of width floats to every rank of the EP group): by itself (*alone), started before
// `chunks` small GEMMs that give it progress (*with), and those GEMMs alone (*work); seconds
int par_time_alltoall(int rows, int width, int chunks, double seconds, double *alone, double *with, double *work);
// The ranks' timing jitter: the wait for the slowest rank at meetings `chunks` small GEMMs
// apart over the work between them (*frac), that work's mean length (*interval, seconds), and
// the power of the interval the share falls with (*decay), for about `seconds`
int par_time_sync(int chunks, double seconds, double *frac, double *interval, double *decay);
// Ranks that outnumber the cores: `chunks` small GEMMs on every rank at once (*all), and on
// the even ranks only while the odd ones wait in a count exchange (*half); seconds
int par_time_yield(int chunks, double seconds, double *all, double *half);
