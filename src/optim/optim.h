// The optimizer: AdamW over the parameter blob (whole, or one rank's share of it under
// --zero 1), the learning-rate schedule and gradient clipping.
#pragma once
#include <stddef.h>
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
