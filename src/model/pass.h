// Inside the model: a pass over one micro-batch (or one half of it), whose stages model.c
// runs one at a time for the schedule's driver (schedule.c).
#pragma once
#include "schedule.h"

typedef struct {
    Model *m;
    Acts *a;
    const Batch *b;
    const ForwardOpts *o;
    ForwardOut *out;
    float *x;              // forward: the residual stream entering the current layer
    int *kv_hi;
    double pairs;          // (query, key) pairs, for the attention FLOP count
    bool gset;             // this pass writes the gradients first: overwrite, do not add
} Pass;

// Runs stage `kind` (StageKind) of pass P at layer l (which only the per-layer stages and
// STAGE_GRADS_READY read).
int pass_run_stage(Pass *P, int kind, int l);
// After a failure: frees what a forward pass holds between its stages.
void pass_abort(Pass *P);
