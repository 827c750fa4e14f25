// Per-op profile for `moe bench --profile`: wall time and FLOPs of each op kind, forward
// and backward. Off by default; when off, a probe costs one branch.
#pragma once
#include <stdbool.h>

typedef enum {
    PROF_EMBED, PROF_NORM, PROF_QKV, PROF_ROPE, PROF_ATTN, PROF_OPROJ, PROF_ROUTER, PROF_PERMUTE,
    PROF_EXPERTS, PROF_UNPERMUTE, PROF_SHARED, PROF_DENSE, PROF_HEAD, PROF_XENT, PROF_BALANCE,
    PROF_OPTIM, PROF_RECOMPUTE, PROF_STASH, PROF_ZERO, PROF_MTP, PROF_N
} ProfOp;

extern bool prof_enabled;
double prof_begin(void);                                      // 0 when off
void prof_end(ProfOp op, bool backward, double t0, double flops);
void prof_reset(void);
// one table to stderr: per op forward/backward ms per step, GFLOP/s, share of the total
void prof_print(int steps);
