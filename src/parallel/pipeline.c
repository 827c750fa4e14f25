// Pipeline schedules (pipeline.h)
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "pipeline.h"

// the k-th forward or backward of a stage's list: in groups of S micro-batches, the chunks
// in turn (forwards from the first chunk, backwards from the last)
static PipeOp nth(int kind, int k, int S, int V) {
    const int grp = k / (S * V), i = k % (S * V);
    int chunk = i / S;
    if (kind == PIPE_B) chunk = V - 1 - chunk;
    return (PipeOp){(unsigned char)kind, (unsigned char)chunk, grp * S + i % S};
}

int pipe_list(int S, int V, int stage, int m, PipeOp *ops, int *warmup) {
    if (S < 1 || V < 1 || m < 1) MOE_ERR("pipeline: sizes must be positive (stages %d, virtual %d, micro-batches %d)", S, V, m);
    if (V > PIPE_MAX_V) MOE_ERR("pipeline: --vpp %d is more than %d", V, PIPE_MAX_V);
    if (S > PIPE_MAX_STAGES) MOE_ERR("pipeline: --pp %d is more than %d", S, PIPE_MAX_STAGES);
    if (stage < 0 || stage >= S) MOE_ERR("pipeline: stage %d of %d", stage, S);
    if (V > 1 && m % S) MOE_ERR("--vpp %d needs the micro-batches a step (%d) to be a multiple of --pp %d", V, m, S);
    const int T = m * V;
    // Megatron's warm-up: the forwards that fill the pipe before this stage's first backward
    int W = V == 1 ? S - stage - 1 : 2 * (S - stage - 1) + (V - 1) * S;
    if (V > 1 && m == S) W = T;   // (one group: all forwards first, as Megatron does)
    if (W > T) W = T;
    int n = 0;
    for (int k = 0; k < W; k++) ops[n++] = nth(PIPE_F, k, S, V);
    for (int i = 0; i < T - W; i++) {
        ops[n++] = nth(PIPE_F, W + i, S, V);
        ops[n++] = nth(PIPE_B, i, S, V);
    }
    for (int k = T - W; k < T; k++) ops[n++] = nth(PIPE_B, k, S, V);
    if (warmup) *warmup = W;
    return MOE_OK;
}

int pipe_check(int S, int V, int m, PipeSim *sim) {
    PipeOp probe[1];
    if (S < 1 || V < 1 || m < 1 || S > PIPE_MAX_STAGES || V > PIPE_MAX_V) return pipe_list(S, V, 0, m, probe, NULL);
    const int T = m * V, G = S * V, len = 2 * T;
    PipeOp *ops = MOE_NEW(PipeOp, (size_t)S * len);
    double *fdone = MOE_NEW(double, (size_t)m * G), *bdone = MOE_NEW(double, (size_t)m * G), *tfree = MOE_NEW(double, S);
    int *ptr = MOE_NEW(int, S), *lastb = MOE_NEW(int, G), *live = MOE_NEW(int, (size_t)S * V), *live_all = MOE_NEW(int, S);
    int rc = MOE_OK;
    for (int s = 0; s < S && rc == MOE_OK; s++) rc = pipe_list(S, V, s, m, ops + (size_t)s * len, NULL);
    if (rc != MOE_OK) goto done;
    for (size_t i = 0; i < (size_t)m * G; i++) fdone[i] = bdone[i] = -1;
    for (int g = 0; g < G; g++) lastb[g] = -1;
    memset(sim, 0, sizeof *sim);
    const double tf = 1.0 / V, tb = 2.0 / V;
    // each stage runs its list in order; a pass starts when its stage is free and its input
    // exists (the previous chunk's forward; the next chunk's backward and its own forward)
    for (bool moved = true; moved;) {
        moved = false;
        for (int s = 0; s < S; s++) {
            while (ptr[s] < len) {
                const PipeOp o = ops[(size_t)s * len + ptr[s]];
                const int g = o.chunk * S + s;
                double *me = (o.kind == PIPE_F ? fdone : bdone) + (size_t)o.mb * G + g;
                if (*me >= 0) { rc = MOE_FAIL; moe_seterr("pipeline check: stage %d runs pass %d of micro-batch %d twice", s, o.kind, o.mb); goto done; }
                double ready;
                if (o.kind == PIPE_F) {
                    if (g > 0 && fdone[(size_t)o.mb * G + g - 1] < 0) break;
                    ready = g > 0 ? fdone[(size_t)o.mb * G + g - 1] : 0;
                } else {
                    const double f = fdone[(size_t)o.mb * G + g];
                    if (f < 0) break;
                    if (g < G - 1 && bdone[(size_t)o.mb * G + g + 1] < 0) break;
                    ready = g < G - 1 ? bdone[(size_t)o.mb * G + g + 1] : f;
                    if (o.mb <= lastb[g]) {
                        rc = MOE_FAIL;
                        moe_seterr("pipeline check: chunk %d's backward of micro-batch %d after that of %d", g, o.mb, lastb[g]);
                        goto done;
                    }
                    lastb[g] = o.mb;
                }
                const double start = ready > tfree[s] ? ready : tfree[s];
                *me = tfree[s] = start + (o.kind == PIPE_F ? tf : tb);
                int *lv = &live[s * V + o.chunk];
                const int d = o.kind == PIPE_F ? 1 : -1;
                *lv += d;
                live_all[s] += d;
                if (*lv > sim->in_flight[o.chunk]) sim->in_flight[o.chunk] = *lv;
                if (*lv > sim->at[s][o.chunk]) sim->at[s][o.chunk] = *lv;
                if (live_all[s] > sim->in_flight_total) sim->in_flight_total = live_all[s];
                if (*me > sim->makespan) sim->makespan = *me;
                ptr[s]++;
                moved = true;
            }
        }
    }
    for (int s = 0; s < S; s++)
        if (ptr[s] < len) {
            const PipeOp o = ops[(size_t)s * len + ptr[s]];
            rc = MOE_FAIL;
            moe_seterr("pipeline check: deadlock: stage %d waits at its pass %d (%s of micro-batch %d, chunk %d)", s, ptr[s],
                       o.kind == PIPE_F ? "forward" : "backward", o.mb, o.chunk);
            goto done;
        }
    const double busy = T * (tf + tb);
    sim->bubble = (sim->makespan - busy) / busy;
done:
    moe_free(ops); moe_free(fdone); moe_free(bdone); moe_free(tfree);
    moe_free(ptr); moe_free(lastb); moe_free(live); moe_free(live_all);
    return rc;
}
