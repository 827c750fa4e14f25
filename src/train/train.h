// Training: AdamW, the learning-rate schedule, checkpoints and the trainer loop.
#pragma once
#include <stdbool.h>
#include "../data/data.h"
#include "../model/model.h"

typedef struct {
    float lr, min_lr, weight_decay, beta1, beta2, eps, clip;
    int warmup, decay_steps;     // decay_steps 0: constant after warm-up
} OptConfig;

typedef struct {
    float *m, *v;                // moments of blob elements [lo, lo + n): all of it, or a shard
    long t;                      // optimizer steps taken
    size_t lo, n;
} AdamW;

void opt_defaults(OptConfig *o);
float lr_at(const OptConfig *o, long step);   // step counts from 1
void adamw_alloc(AdamW *a, size_t n);
void adamw_alloc_part(AdamW *a, size_t lo, size_t n);   // zero moments of elements [lo, lo + n)
void adamw_free(AdamW *a);
// keep only the moments of blob elements [lo, lo + n) (--zero 1: each data-parallel rank
// updates its own share of the parameters)
void adamw_shard(AdamW *a, size_t lo, size_t n);
// global gradient norm, and the clipping factor for it
double grad_norm(const float *g, size_t n);
float grad_clip_scale(double norm, float max_norm);
// one AdamW step on gradients scaled by gscale (the clipping factor), one pass over the blobs;
// a sharded optimizer updates only the parameters of its shard
void adamw_step(AdamW *a, const Model *m, const OptConfig *o, float lr, float gscale);
void adamw_step_ref(AdamW *a, const Model *m, const OptConfig *o, float lr);

// Mean cross-entropy over the target tokens of the first `limit` examples (all when 0),
// without balance losses or capacity: what `moe eval` reports.
int eval_loss(Model *m, const Dataset *d, int limit, int batch, double *loss, long *tokens);

typedef struct {
    OptConfig opt;
    int batch, micro_batch, seq;  // examples per step, per micro-batch; max inputs per example
    int steps;                    // total step count of the run
    double time_budget;           // seconds, 0 = none
    int ckpt_every;               // steps between periodic checkpoints, 0 = end only
    unsigned long long seed;
    bool shuffle;
    DataFormat format;
    bool quiet;
    int acts_mode;                // ACTS_TRAIN [| ACTS_RECOMPUTE] [| ACTS_BF16]
    int eval_every, eval_limit;   // --eval-data: held-out loss every N steps on the first M examples
    int ep;                       // expert-parallel group size under MPI (--ep), 1 = none
    int zero;                     // --zero 1: the optimizer's moments sharded over the ranks
    int overlap;                  // --overlap: -1 default (on under MPI), 0 off, 1 on
    int a2a;                      // --a2a: DistA2A (auto, flat, hierarchical)
    int redundant, replace_every; // dynamic expert placement: extra slots, steps between placements
    int replace_always;           // 1: move whenever it gains 2%, not only when it pays for itself
} TrainConfig;

typedef struct {                  // what a resume needs beyond the model
    long step, cursor;
    unsigned long long ckpt_id;
    const MoePlacement *place;    // saving: the experts' placement to record (NULL: contiguous)
    int *slots, slots_ep, slots_S; // loading: the recorded one, [L][ep][S] (malloc'd; NULL: none)
} TrainProgress;

// Checkpoint directory (SPEC §3): config.json, model.safetensors, train_state.safetensors.
// Saves go through a journal so that a crash leaves the previous checkpoint whole.
int ckpt_save(const char *dir, const Model *m, const AdamW *opt, const TrainConfig *tc,
              const TrainProgress *pr, bool bf16);
// The same with the moments from moment(ctx, ti, which) instead of opt->m / opt->v (which 0:
// m, 1: v of tensor ti; valid until the next call; NULL fails the save), for moments that
// are not whole in this process (--zero 1). It is called for every tensor in order, m
// before v, unless the save fails before train_state.safetensors; it returns how many
// calls it made in *calls, so that the caller can make the rest.
int ckpt_save_moments(const char *dir, const Model *m, const AdamW *opt, const TrainConfig *tc,
                      const TrainProgress *pr, const float *(*moment)(void *ctx, int ti, int which), void *ctx,
                      int *calls);
int ckpt_load_model(const char *dir, Model *m, bool with_grads);
// only routed experts [e0, e0 + ne) of each MoE layer (expert parallelism); ne 0: all
int ckpt_load_model_shard(const char *dir, Model *m, bool with_grads, int e0, int ne);
int ckpt_load_state(const char *dir, const Model *m, AdamW *opt, TrainConfig *tc, TrainProgress *pr);
bool ckpt_exists(const char *dir);
// repair an interrupted save (roll forward a complete journal, drop partial files)
int ckpt_recover(const char *dir);

typedef struct {
    const char *data;             // comma-separated paths
    const char *out;
    const char *model_cfg;        // new run
    const char *resume;           // or resume from
    const char *eval_data;        // optional held-out Q/A file
    const char *set_flags;        // which TrainConfig fields the command line gave (for resume)
} TrainArgs;

int train_check_config(const TrainConfig *tc);
int train_run(const TrainArgs *args, TrainConfig *tc, const char *given_flags);

// Gradient accumulation over micro-batches of one global batch: fills m->grads and
// returns the loss pieces. Used by train, grad and the oracle tests.
typedef struct { double loss, ce, aux; long tokens, targets; } StepLoss;
int train_accumulate(Model *m, Acts *a, Batch *b, const Dataset *d, const int *ids, int count,
                     int micro_batch, StepLoss *out);
// The same with a choice: a[1], b[1] non-NULL run each micro-batch as two interleaved halves
// (model_forward_pair); overlap starts the gradient reductions (under MPI) during the last
// backward pass instead of after it. zoff (--zero 1, NULL otherwise): rank r needs the
// summed gradient of blob elements [zoff[r], zoff[r+1]) only, and gets only that.
int train_accumulate_ex(Model *m, Acts *a[2], Batch *b[2], const Dataset *d, const int *ids, int count,
                        int micro_batch, bool overlap, const size_t *zoff, StepLoss *out);
// the global gradient norm (over the ranks of an expert-parallel group when there is one;
// with zoff, each rank's part of the summed gradient, over the world)
double train_grad_norm(const Model *m, const size_t *zoff);
