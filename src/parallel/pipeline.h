// Pipeline parallelism's schedule as data (issue 15, docs/PIPELINE.md): the layers are cut
// into S·V chunks, global chunk g on stage g % S (stage r holds r, r+S, ...: V "virtual"
// stages a device). Each stage runs its own list of forward and backward passes of
// (micro-batch, local chunk), Megatron's interleaved one-forward-one-backward order: warm-up
// forwards, then one forward and one backward in turn, then the cool-down backwards.
#pragma once
#include <stdbool.h>
#include "../data/data.h"
#include "../model/model.h"

#define PIPE_MAX_V 16
#define PIPE_MAX_STAGES 64
#define PIPE_STAMP 2   // floats at the end of each message: the sender's clock (a double) at the send
enum { PIPE_F = 0, PIPE_B = 1, PIPE_PAIR = 2 };

// one pass: a forward or backward of micro-batch mb through local chunk j (global j·S + stage);
// a pair: the forward of (mb, chunk) and the backward of (mb2, chunk2) run as one SCHED_PAIR
typedef struct { unsigned char kind, chunk, chunk2; int mb, mb2; } PipeOp;

// Stage `stage`'s list for m micro-batches into ops[2·m·V] (*n_ops of them: m·V forwards and
// m·V backwards, or with `pair` each steady forward and backward one PIPE_PAIR); *warmup:
// the forwards before the first backward. V > 1 needs m a multiple of S (the order walks the
// micro-batches in groups of S). An error (one line) for impossible sizes.
int pipe_list(int S, int V, int stage, int m, bool pair, PipeOp *ops, int *n_ops, int *warmup);

// The lists of every stage simulated with a forward of a chunk taking time 1/V and a backward
// 2/V, a chunk's input ready when the previous chunk's pass ends (no transfer time): checks
// that every (micro-batch, chunk) has one forward and then one backward, that nothing
// deadlocks, and that each chunk's backwards run in ascending micro-batch order (so that a
// layer's gradient sums the micro-batches in the order one process does).
typedef struct {
    double makespan;               // time until the last stage's last pass ends
    double busy;                   // the busiest stage's time in passes
    double bubble;                 // idle fraction: (makespan - busy) / busy
    int in_flight[PIPE_MAX_V];     // stage 0... per local chunk: the most micro-batches forwarded
                                   // and not yet backwarded at once (activations kept), max over stages
    int in_flight_total;           // the most kept at once over a stage's chunks, max over stages
    int at[PIPE_MAX_STAGES][PIPE_MAX_V];   // per stage and local chunk: the most kept at once
    double peak_bytes[PIPE_MAX_STAGES];    // per stage: the most activation bytes kept at once
                                           // (PipeCost's bytes; a framework that allocates as it
                                           // goes holds this, not the sum of at[]'s pools)
} PipeSim;
int pipe_check(int S, int V, int m, bool pair, PipeSim *sim);
// The same simulation with each pass's own time (moe simulate): tf[s·V + j] and tb[s·V + j]
// the forward and backward of stage s's local chunk j, and p2p the transfer between stages
// (a chunk's input ready p2p after its neighbour's pass ends); bytes[s·V + j] (or NULL) what
// one micro-batch's forward of that chunk keeps until its backward. cost NULL: pipe_check's times.
typedef struct { const double *tf, *tb; double p2p; const double *bytes; } PipeCost;
int pipe_simulate(int S, int V, int m, bool pair, const PipeCost *cost, PipeSim *sim);

// ---- the driver: one stage's passes of one optimizer step (par_pipe_run)
// Each local chunk keeps a pool of activations, one per micro-batch it holds at once
// (pipe_check's count); micro-batch mb takes slot mb % pool (each chunk's forwards and
// backwards both run in micro-batch order). A stage receives the stream from the previous
// chunk's stage and sends its own on (non-blocking sends; a receive waits), and backward
// the stream's gradient the other way.
typedef struct Pipe {
    LayerShard ls;
    int m;                         // micro-batches a step
    int n_ops;
    PipeOp *ops;
    int pool[PIPE_MAX_V];
    Acts *acts[PIPE_MAX_V];        // [pool]
    Batch *batch[PIPE_MAX_V];
    float *sendbuf[PIPE_MAX_V];    // [pool][Nmax*D]: what goes to a neighbour, until it is sent
    int *sendreq[PIPE_MAX_V];
    int Nmax, D;
    float *ahead[2];               // [Nmax*D] the next pass's inputs (its forward's stream, its
    int ahead_req[2];              // backward's gradient), received while this one computes
    bool overlap;                  // receives posted a pass ahead (else when the pass starts)
    bool pair;                     // steady forwards and backwards run as pairs (SCHED_PAIR)
    double bubble_ms, exposed_ms;  // this step: waited for the neighbours' data; for its own sends to leave
    double transit_ms;             // of bubble_ms: waited while the data was on its way (after it was sent)
} Pipe;
// the pools for m micro-batches of at most ntok tokens and mb examples each (acts_mode: acts_alloc's)
int par_pipe_alloc(Pipe *p, const Model *model, const LayerShard *ls, int m, int ntok, int mb, int acts_mode, bool overlap, bool pair);
void par_pipe_free(Pipe *p);
// Stage ls.stage's list for one step over examples ids[0, count) in micro-batches of
// micro_batch: the gradients added to model->grads (fo: the step's scales; grad_set must be
// false), the sums of the losses this stage computed (ce and MTP only on the last stage) and
// of the tokens entering the stack (first stage), the load statistics added into stats.
int par_pipe_run(Pipe *p, Model *model, const ForwardOpts *fo, const Dataset *d, const int *ids, int count, int micro_batch,
                 ForwardOut *sum, long *tokens, Acts *stats);

// The eval loss of the first `limit` examples of d (all: 0) in micro-batches of `batch`,
// through this rank's stage: forward passes only, the last stage's loss summed to every stage
int par_pipe_eval(const LayerShard *ls, Model *m, const ExpertShard *sh, const Dataset *d, int limit, int batch, double *loss,
                  long *tokens);
