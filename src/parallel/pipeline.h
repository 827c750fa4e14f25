// Pipeline parallelism's schedule as data (issue 15, docs/PIPELINE.md): the layers are cut
// into S·V chunks, global chunk g on stage g % S (stage r holds r, r+S, ...: V "virtual"
// stages a device). Each stage runs its own list of forward and backward passes of
// (micro-batch, local chunk), Megatron's interleaved one-forward-one-backward order: warm-up
// forwards, then one forward and one backward in turn, then the cool-down backwards.
#pragma once
#include <stdbool.h>

#define PIPE_MAX_V 16
#define PIPE_MAX_STAGES 64
enum { PIPE_F = 0, PIPE_B = 1 };

// one pass: a forward or backward of micro-batch mb through local chunk j (global j·S + stage)
typedef struct { unsigned char kind; unsigned char chunk; int mb; } PipeOp;

// Stage `stage`'s list for m micro-batches: ops[2·m·V] (m·V forwards and m·V backwards);
// *warmup: the forwards before the first backward. V > 1 needs m a multiple of S (the order
// walks the micro-batches in groups of S). An error (one line) for impossible sizes.
int pipe_list(int S, int V, int stage, int m, PipeOp *ops, int *warmup);

// The lists of every stage simulated with a forward of a chunk taking time 1/V and a backward
// 2/V, a chunk's input ready when the previous chunk's pass ends (no transfer time): checks
// that every (micro-batch, chunk) has one forward and then one backward, that nothing
// deadlocks, and that each chunk's backwards run in ascending micro-batch order (so that a
// layer's gradient sums the micro-batches in the order one process does).
typedef struct {
    double makespan;               // time until the last stage's last pass ends
    double bubble;                 // idle fraction: (makespan - busy) / busy, the largest over stages
    int in_flight[PIPE_MAX_V];     // stage 0... per local chunk: the most micro-batches forwarded
                                   // and not yet backwarded at once (activations kept), max over stages
    int in_flight_total;           // the most kept at once over a stage's chunks, max over stages
    int at[PIPE_MAX_STAGES][PIPE_MAX_V];   // per stage and local chunk: the most kept at once
} PipeSim;
int pipe_check(int S, int V, int m, PipeSim *sim);
