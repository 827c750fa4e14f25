// Training: gradient accumulation over micro-batches, the training loop, its run log and
// progress line, and what a resume restores.
#pragma once
#include <stdbool.h>
#include <stdio.h>
#include "../data/data.h"
#include "../model/model.h"
#include "../optim/optim.h"

// the settings a resume continues as saved unless the command line gives them
enum {
    TRAIN_SET_LR = 1 << 0, TRAIN_SET_MIN_LR = 1 << 1, TRAIN_SET_WEIGHT_DECAY = 1 << 2, TRAIN_SET_BETA1 = 1 << 3,
    TRAIN_SET_BETA2 = 1 << 4, TRAIN_SET_CLIP = 1 << 5, TRAIN_SET_WARMUP = 1 << 6, TRAIN_SET_DECAY_STEPS = 1 << 7,
    TRAIN_SET_BATCH = 1 << 8, TRAIN_SET_MICRO_BATCH = 1 << 9, TRAIN_SET_SEQ = 1 << 10, TRAIN_SET_SEED = 1 << 11,
    TRAIN_SET_CKPT_EVERY = 1 << 12, TRAIN_SET_FORMAT = 1 << 13, TRAIN_SET_SHUFFLE = 1 << 14,
    TRAIN_SET_DATA_WEIGHTS = 1 << 15,
};

typedef struct {
    OptConfig opt;
    int batch, micro_batch, seq;  // examples per step, per micro-batch; max inputs per example
    int steps;                    // total step count of the run
    double time_budget;           // seconds, 0 = none
#define TRAIN_STEPS_UNBOUNDED 2147483647   // steps: until the time budget runs out
    int ckpt_every;               // steps between periodic checkpoints, 0 = end only
    unsigned long long seed;
    bool shuffle;
    int n_weights;                // --data-weights: one per --data file (0: the files in turn, as one set)
    double data_weights[32];
    DataFormat format;
    bool quiet;
    int acts_mode;                // ACTS_TRAIN [| ACTS_RECOMPUTE] [| ACTS_BF16]
    int eval_every, eval_limit;   // --eval-data: held-out loss every N steps on the first M examples
    int ep;                       // expert-parallel group size under MPI (--ep), 1 = none
    int pp, vpp;                  // pipeline stages and chunks a stage (--pp, --vpp), 1 = none
    int n_pp_layers, pp_layers[64]; // --pp-layers: the stack's layers in each chunk (0: even cuts)
    int zero;                     // --zero 1: the optimizer's moments sharded over the ranks
    int overlap;                  // --overlap: -1 default (on under MPI), 0 off, 1 on
    int a2a;                      // --a2a: DistA2A (auto, flat, hierarchical)
    int redundant, replace_every; // dynamic expert placement: extra slots, steps between placements
    int replace_always;           // 1: move whenever it gains 2%, not only when it pays for itself
    unsigned given;               // TRAIN_SET_* bits: the settings the command line gave
} TrainConfig;

typedef struct {                  // where a run is, beyond the model and optimizer
    long step, cursor;            // steps taken, examples consumed
    int *slots, slots_ep, slots_S; // loading: a recorded placement, [L][ep][S] (NULL: none)
} TrainProgress;

typedef struct {
    const char *data;             // comma-separated paths
    const char *out;
    const char *model_cfg;        // new run
    const char *resume;           // or resume from (a checkpoint with its training state)
    const char *init_from;        // or fine-tune: a checkpoint's weights (moe.c's or Hugging
                                  // Face's), a fresh optimizer, step 0
    const char *eval_data;        // optional held-out Q/A file
} TrainArgs;

int train_check_config(const TrainConfig *tc);
int train_run(const TrainArgs *args, TrainConfig *tc);

// resume.c: the train state's JSON (train_state.safetensors's metadata), read back into
// the saved settings (what names the source in errors); the merge keeps a setting the
// command line gave (tc->given) and takes the rest from saved; log.jsonl's lines of steps
// up to `last` carried to to_path
char *train_state_json(const TrainConfig *tc, const TrainProgress *pr, long adam_t, const MoePlacement *pl);
int train_state_read(const char *json, const char *what, const MoeConfig *c, TrainConfig *saved, TrainProgress *pr,
                     long *adam_t);
void train_resume_merge(TrainConfig *tc, const TrainConfig *saved);
int train_log_carry(const char *from_dir, const char *to_path, long last);

// Gradient accumulation over micro-batches of one global batch: fills m->grads and
// returns the loss pieces. Used by train, grad and the oracle tests.
typedef struct { double loss, ce, aux, mtp; long tokens, targets; } StepLoss;   // mtp: per module, unweighted
int train_accumulate(Model *m, Acts *a, Batch *b, const Dataset *d, const int *ids, int count,
                     int micro_batch, StepLoss *out);
// The same with a choice: a[1], b[1] non-NULL run each micro-batch as two interleaved halves
// (SCHED_TRAIN_HALVES); overlap starts the gradient reductions (under MPI) during the last
// backward pass instead of after it. zoff (--zero 1, NULL otherwise): rank r needs the
// summed gradient of blob elements [zoff[r], zoff[r+1]) only, and gets only that.
// sh: the experts m holds (expert parallelism; NULL: all).
int train_accumulate_ex(Model *m, const ExpertShard *sh, Acts *a[2], Batch *b[2], const Dataset *d, const int *ids,
                        int count, int micro_batch, bool overlap, const size_t *zoff, StepLoss *out);

// The same under pipeline parallelism: this stage's passes of the step (parallel/pipeline.h),
// the gradients summed over the stage's data ranks (the embedding over both ends), the losses
// and load statistics (into stats) over the world
struct Pipe;
int train_accumulate_pipe(Model *m, const ExpertShard *sh, struct Pipe *p, Acts *stats, const Dataset *d, const int *ids,
                          int count, int micro_batch, StepLoss *out);

// trainlog.c: DIR/log.jsonl (rank 0 writes it), the progress line on stderr and, at the end,
// each MoE layer's load figures over the run
typedef struct {
    long step;
    StepLoss sl;
    float lr;
    double gnorm, dt, tps, mfu;                         // dt: the step's slowest rank
    double comm_ms, exposed_ms, ep_exposed, dp_exposed; // under MPI
    int moved;                                          // experts moved after this step, -1: none
    double eval_ce;                                     // -1: no held-out loss this step
    double elapsed;                                     // seconds since the run (this process) began
    double bubble_ms, pp_exposed_ms;                    // pipeline: waited for neighbours (the most over ranks)
    double pp_transit_ms;                               // of the bubble: while the data was in transit
    bool stop_time;                                     // the time budget ends the run here
} StepFigures;

typedef struct {
    const MoeConfig *c;
    FILE *log;
    bool quiet, tty;
    int ep, steps;                // EP group size; the run's total steps
    double time_budget, t_print;
    long start_step, n_bal, run_assigned;
    double *bal_sum, *bal_last;   // per MoE layer: sums over the run of max/mean, MaxVio, IS; the last 50
    long *run_drop;
    LoadStats *ls;                // this step's, per layer
} TrainLog;
// root: this rank writes the log (a resume carries the lines of steps up to pr->step over)
int trainlog_open(TrainLog *r, const MoeConfig *c, const TrainArgs *ar, const TrainConfig *tc, long start_step, bool root, int ep);
// collective under expert parallelism (the ranks' expert rows)
int trainlog_step(TrainLog *r, const Acts *a, const StepFigures *f);
// ok false: the run failed; only the progress line is ended
void trainlog_summary(const TrainLog *r, bool ok, long step, double seconds, double loss, const char *out);
void trainlog_close(TrainLog *r);
