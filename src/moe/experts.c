#include <math.h>
#include <omp.h>
#include <string.h>
#include "../base/base.h"
#include "../base/prof.h"
#include "../kernels/gemm.h"
#include "../ops/ops.h"
#include "moe.h"

void moe_work_alloc(MoeWork *w, int Nmax, int E, int K, int D, int F, bool own_dgu) {
    size_t NK = (size_t)Nmax * K;
    // dxe reuses dye: an expert's input gradient is written after its output gradient is used
    w->dye = MOE_NEW(float, NK * D);
    w->dxe = w->dye;
    w->dae = MOE_NEW(float, NK * F);
    w->dgu = own_dgu ? MOE_NEW(float, NK * 2 * F) : NULL;
    w->dw = MOE_NEW(float, NK);
    w->ds = MOE_NEW(float, (size_t)Nmax * E);
    w->wrow = MOE_NEW(float, NK);
    w->dwrow = MOE_NEW(float, NK);
}
void moe_work_free(MoeWork *w) {
    void *p[] = {w->dye, w->dae, w->dgu, w->dw, w->ds, w->wrow, w->dwrow};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++) moe_free(p[i]);
}

// rows [r0, r0 + M) of dst <- rows row_tok[r] of src (the permutation's gather, one expert's part)
static void gather_rows(float *dst, const float *src, const int *row_tok, int r0, int M, int D) {
    for (int r = r0; r < r0 + M; r++) memcpy(dst + (size_t)r * D, src + (size_t)row_tok[r] * D, sizeof(float) * D);
}

// Many experts: one expert per thread at a time (BLAS runs single-threaded inside the
// region), so that small per-expert GEMMs do not pay a fork/join each, the busiest experts
// first so that the threads finish together; few experts: each GEMM on all threads.
static int *busiest_first(int n, const int *off) {
    int *ord = MOE_NEW(int, n);
    for (int i = 0; i < n; i++) ord[i] = i;
    for (int i = 1; i < n; i++)   // insertion sort by rows, descending (n is small)
        for (int j = i; j > 0 && off[ord[j] + 1] - off[ord[j]] > off[ord[j - 1] + 1] - off[ord[j - 1]]; j--) {
            int t = ord[j]; ord[j] = ord[j - 1]; ord[j - 1] = t;
        }
    return ord;
}

void moe_grouped_forward(int n, const int *off, float *xe, float *gu, float *ae, float *ye,
                         const MoeWeights *W, int D, int F, const float *xn, const int *row_tok) {
    const bool by_expert = n >= 2 * omp_get_max_threads();
    int *ord = busiest_first(n, off);
#pragma omp parallel for schedule(dynamic, 1) if (by_expert)
    for (int i = 0; i < n; i++) {
        const int e = ord[i];
        const int r0 = off[e], M = off[e + 1] - r0;
        if (M == 0) continue;
        if (xn) gather_rows(xe, xn, row_tok, r0, M, D);   // expert by expert: its rows are still in cache for the GEMM
        float *g = gu + (size_t)r0 * 2 * F, *act = ae + (size_t)r0 * F;
        linear_forward(g, xe + (size_t)r0 * D, W->gate_up + (size_t)e * 2 * F * D, M, D, 2 * F, false);   // [M,2F]
        swiglu_rows_forward(act, g, M, F);
        linear_forward(ye + (size_t)r0 * D, act, W->down + (size_t)e * D * F, M, F, D, false);          // [M,D]
        if (omp_get_thread_num() == 0) moe_progress();
    }
    moe_free(ord);
}

void moe_grouped_backward(int n, const int *off, const float *xe, const float *gu, const float *ae, float *dy,
                          float *dae, float *dgu, float *dx, const MoeWeights *W, MoeGrads *G, int D, int F,
                          const float *wrow, float *dwrow, const float *dsrc, const int *row_tok) {
    const bool by_expert = n >= 2 * omp_get_max_threads();
    int *ord = busiest_first(n, off);
    const float bw = G->set ? 0.0f : 1.0f;
#pragma omp parallel for schedule(dynamic, 1) if (by_expert)
    for (int i = 0; i < n; i++) {
        const int e = ord[i], r0 = off[e], M = off[e + 1] - r0;
        if (M == 0) {   // no rows, no GEMMs: a first write is a clear
            if (G->set) {
                memset(G->gate_up + (size_t)e * 2 * F * D, 0, sizeof(float) * 2 * F * D);
                memset(G->down + (size_t)e * D * F, 0, sizeof(float) * D * F);
            }
            continue;
        }
        float *da = dae + (size_t)r0 * F, *dg = dgu + (size_t)r0 * 2 * F, *dxr = dx + (size_t)r0 * D;
        float *dyr = dy + (size_t)r0 * D;
        if (dsrc) gather_rows(dy, dsrc, row_tok, r0, M, D);   // the rows' output gradients, as the expert starts
        const float *aer = ae + (size_t)r0 * F, *Wd = W->down + (size_t)e * D * F;
        if (wrow) {   // g = dy W_down; dw = g . ae; dae = w g; dW_down += (w dy)^T ae
            linear_backward_set(da, NULL, dyr, aer, Wd, M, F, D);
            for (int i = 0; i < M; i++) {
                float *g = da + (size_t)i * F, *d = dyr + (size_t)i * D, w = wrow[r0 + i], dot = 0;
                const float *ar = aer + (size_t)i * F;
#pragma omp simd reduction(+ : dot)
                for (int f = 0; f < F; f++) { dot += g[f] * ar[f]; g[f] *= w; }
#pragma omp simd
                for (int j = 0; j < D; j++) d[j] *= w;
                dwrow[r0 + i] = dot;
            }
            linear_backward_beta(NULL, G->down + (size_t)e * D * F, dyr, aer, Wd, M, F, D, 0.0f, bw);
        } else
            linear_backward_beta(da, G->down + (size_t)e * D * F, dyr, aer, Wd, M, F, D, 0.0f, bw);
        swiglu_rows_backward(dg, da, gu + (size_t)r0 * 2 * F, M, F);
        linear_backward_beta(dxr, G->gate_up + (size_t)e * 2 * F * D, dg, xe + (size_t)r0 * D,
                             W->gate_up + (size_t)e * 2 * F * D, M, D, 2 * F, 0.0f, bw);
        if (omp_get_thread_num() == 0) moe_progress();
    }
    moe_free(ord);
}

void moe_gather(MoeActs *a, const float *xn) {
    const int D = a->D;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < a->A; r++) memcpy(a->xe + (size_t)r * D, xn + (size_t)a->row_tok[r] * D, sizeof(float) * D);
}

void moe_grouped_gate_up(int n, const int *off, float *xe, float *gu, const MoeWeights *W, int D, int F,
                         const float *xn, const int *row_tok) {
    const bool by_expert = n >= 2 * omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) if (by_expert)
    for (int e = 0; e < n; e++) {
        int r0 = off[e], M = off[e + 1] - r0;
        if (M == 0) continue;
        if (xn) gather_rows(xe, xn, row_tok, r0, M, D);
        linear_forward(gu + (size_t)r0 * 2 * F, xe + (size_t)r0 * D, W->gate_up + (size_t)e * 2 * F * D, M, D, 2 * F, false);
    }
}

void moe_experts_gate_up(MoeActs *a, const float *xn, const MoeWeights *W) {
    moe_grouped_gate_up(a->E, a->offsets, a->xe, a->gu, W, a->D, a->F, xn, a->row_tok);
}

void moe_experts_forward(MoeActs *a, const float *xn, const MoeWeights *W, float *out) {
    const int D = a->D, F = a->F;
    // row r of xe is a copy of its token's input, gathered as each expert starts
    double t = prof_begin();
    moe_grouped_forward(a->E, a->offsets, a->xe, a->gu, a->ae, a->ye, W, D, F, xn, a->row_tok);
    prof_end(PROF_EXPERTS, false, t, 6.0 * a->A * D * F);
    t = prof_begin();
    moe_combine(a, out);
    prof_end(PROF_UNPERMUTE, false, t, 0);
}

void moe_combine(const MoeActs *a, float *out) {
    // every token sums its kept experts' rows with their weights
    const int D = a->D, K = a->K, N = a->N;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *o = out + (size_t)n * D;
        for (int k = 0; k < K; k++) {
            int r = a->row[n * K + k];
            if (r < 0) continue;
            float w = a->w[n * K + k];
            const float *y = a->ye + (size_t)r * D;
            for (int i = 0; i < D; i++) o[i] += w * y[i];
        }
    }
}

void moe_combine_backward(const MoeActs *a, MoeWork *wk, const float *dout) {
    // out_n = sum_k w_nk y_r  =>  dy_r = w_nk dout_n ; dw_nk = dout_n . y_r
    const int D = a->D, K = a->K, N = a->N;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < a->A; r++) {
        int n = a->row_tok[r], slot = a->row_slot[r];
        const float *dn = dout + (size_t)n * D, *y = a->ye + (size_t)r * D;
        float *dy = wk->dye + (size_t)r * D, w = a->w[slot], dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int i = 0; i < D; i++) { dy[i] = w * dn[i]; dot += dn[i] * y[i]; }
        wk->dw[slot] = dot;
    }
    for (int i = 0; i < N * K; i++)
        if (a->row[i] < 0) wk->dw[i] = 0;   // a dropped assignment adds nothing
}

void moe_scatter_backward(const MoeActs *a, const float *dxe, float *dxn) {
    // each token sums the input gradients of its rows
    const int D = a->D, K = a->K, N = a->N;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *d = dxn + (size_t)n * D;
        for (int k = 0; k < K; k++) {
            int r = a->row[n * K + k];
            if (r < 0) continue;
            const float *s = dxe + (size_t)r * D;
            for (int i = 0; i < D; i++) d[i] += s[i];
        }
    }
}

void moe_experts_forward_ref(const MoeActs *a, const float *xn,
                             const MoeWeights *W, float *out) {
    // token by token, expert by expert, straight from the formula
    const int D = a->D, F = a->F, K = a->K;
    float *h = MOE_NEW(float, F);
    for (int n = 0; n < a->N; n++)
        for (int k = 0; k < K; k++) {
            if (a->row[n * K + k] < 0) continue;
            int e = a->sel[n * K + k];
            const float *x = xn + (size_t)n * D;
            for (int f = 0; f < F; f++) {
                double g = 0, u = 0;
                for (int i = 0; i < D; i++) {
                    g += (double)W->gate_up[((size_t)e * 2 * F + f) * D + i] * x[i];
                    u += (double)W->gate_up[((size_t)e * 2 * F + F + f) * D + i] * x[i];
                }
                h[f] = (float)(g / (1 + exp(-g)) * u);
            }
            for (int i = 0; i < D; i++) {
                double y = 0;
                for (int f = 0; f < F; f++) y += (double)W->down[((size_t)e * D + i) * F + f] * h[f];
                out[(size_t)n * D + i] += (float)(a->w[n * K + k] * y);
            }
        }
    moe_free(h);
}

void moe_experts_backward(MoeActs *a, MoeWork *wk, const float *dout, const MoeWeights *W, MoeGrads *G, float *dxn,
                          bool have_ye) {
    const int D = a->D, F = a->F;
    double t = prof_begin();
    if (have_ye) moe_combine_backward(a, wk, dout);
    else   // each row's weight; its token's dout (as it is) is gathered in the expert loop
        for (int r = 0; r < a->A; r++) wk->wrow[r] = a->w[a->row_slot[r]];
    prof_end(PROF_UNPERMUTE, true, t, 0);
    t = prof_begin();
    // dxe overwrites dye expert by expert: an expert's dy is used up before its dx is written
    // without a dgu of its own the gate/up gradients overwrite gu, which is read only before
    moe_grouped_backward(a->E, a->offsets, a->xe, a->gu, a->ae, wk->dye, wk->dae, wk->dgu ? wk->dgu : a->gu, wk->dxe, W, G, D, F,
                         have_ye ? NULL : wk->wrow, wk->dwrow, have_ye ? NULL : dout, a->row_tok);
    prof_end(PROF_EXPERTS, true, t, 12.0 * a->A * D * F);
    if (!have_ye) moe_rows_dw(a, wk);
    t = prof_begin();
    moe_scatter_backward(a, wk->dxe, dxn);
    prof_end(PROF_PERMUTE, true, t, 0);
}

void moe_rows_dw(const MoeActs *a, MoeWork *wk) {
    for (int i = 0; i < a->N * a->K; i++) wk->dw[i] = 0;   // a dropped assignment adds nothing
    for (int r = 0; r < a->A; r++) wk->dw[a->row_slot[r]] = wk->dwrow[r];
}

void moe_weights_backward(const MoeConfig *c, const MoeActs *a, MoeWork *wk) {
    // w_k = rsf * s_k / S (S = sum_j s_j + eps when normalised, else 1)
    //   ds_j = rsf * (dw_j / S - sum_k dw_k s_k / S^2)
    const int N = a->N, E = a->E, K = a->K;
    const float rsf = c->routed_scaling_factor;
    memset(wk->ds, 0, sizeof(float) * (size_t)N * E);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const int *sel = a->sel + (size_t)n * K;
        const float *s = a->scores + (size_t)n * E, *dw = wk->dw + (size_t)n * K;
        float *ds = wk->ds + (size_t)n * E;
        if (c->norm_topk_prob) {
            float S = 1e-20f, dot = 0;
            for (int k = 0; k < K; k++) S += s[sel[k]];
            for (int k = 0; k < K; k++) dot += dw[k] * s[sel[k]];
            for (int k = 0; k < K; k++) ds[sel[k]] += rsf * (dw[k] / S - dot / (S * S));
        } else {
            for (int k = 0; k < K; k++) ds[sel[k]] += rsf * dw[k];
        }
    }
}

void moe_router_backward(const MoeConfig *c, const MoeActs *a, MoeWork *wk, const float *xn,
                         const MoeWeights *W, MoeGrads *G, float *dxn) {
    const int N = a->N, E = a->E;
    // ds -> dlogits, in place
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *s = a->scores + (size_t)n * E;
        float *d = wk->ds + (size_t)n * E;
        if (c->scoring_func == MOE_SCORE_SOFTMAX) {
            float dot = 0;
            for (int e = 0; e < E; e++) dot += d[e] * s[e];
            for (int e = 0; e < E; e++) d[e] = s[e] * (d[e] - dot);
        } else {
            for (int e = 0; e < E; e++) d[e] *= s[e] * (1.0f - s[e]);
        }
    }
    linear_backward_beta(dxn, G->router, wk->ds, xn, W->router, N, a->D, E, 1.0f, G->set ? 0.0f : 1.0f);
}
