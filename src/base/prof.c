#include "prof.h"
#include <stdio.h>
#include <string.h>
#include "base.h"

bool prof_enabled = false;
static double prof_sec[PROF_N][2], prof_flops[PROF_N][2];
static const char *NAMES[PROF_N] = {"embed", "rmsnorm", "qkv proj", "rope", "attention", "o proj", "router",
                                    "permute", "expert gemms", "unpermute", "shared expert", "dense ffn",
                                    "output head", "cross-entropy", "balance loss", "optimizer", "recompute",
                                    "bf16 stash", "zero grads", "mtp input"};

double prof_begin(void) { return prof_enabled ? time_now() : 0; }
void prof_end(ProfOp op, bool bwd, double t0, double flops) {
    if (!prof_enabled) return;
    prof_sec[op][bwd] += time_now() - t0;
    prof_flops[op][bwd] += flops;
}
void prof_reset(void) { memset(prof_sec, 0, sizeof prof_sec); memset(prof_flops, 0, sizeof prof_flops); }
void prof_print(int steps) {
    double total = 0;
    for (int i = 0; i < PROF_N; i++) total += prof_sec[i][0] + prof_sec[i][1];
    fprintf(stderr, "%-14s %10s %10s %10s %10s %7s\n", "op", "fwd ms", "bwd ms", "fwd GF/s", "bwd GF/s", "share");
    for (int i = 0; i < PROF_N; i++) {
        double f = prof_sec[i][0], b = prof_sec[i][1];
        if (f + b == 0) continue;
        char gf[2][16];
        for (int d = 0; d < 2; d++) {
            double s = prof_sec[i][d];
            if (prof_flops[i][d] > 0 && s > 0) snprintf(gf[d], 16, "%.1f", prof_flops[i][d] / s * 1e-9);
            else snprintf(gf[d], 16, "-");
        }
        fprintf(stderr, "%-14s %10.2f %10.2f %10s %10s %6.1f%%\n", NAMES[i], 1e3 * f / steps, 1e3 * b / steps, gf[0], gf[1],
                100 * (f + b) / total);
    }
    fprintf(stderr, "%-14s %10.2f ms per step (sum of the ops)\n", "total", 1e3 * total / steps);
}
