// The dense feed-forward block: x + Wd (silu(Wg xn) * Wu xn), xn = rmsnorm(h).
#include <stdio.h>
#include <string.h>
#include "../base/base.h"
#include "../base/prof.h"
#include "../kernels/gemm.h"
#include "../kernels/simd.h"
#include "pass.h"

static void dense_ffn_tensors(Layout *lo, const MoeConfig *c, int l, const ExpertShard *sh, ParamViews *v) {
    (void)sh;
    const int D = c->hidden_size, F = c->intermediate_size;
    LayerParams *p = &v->layer[l];
    char nm[96];
#define T(suffix, d0, d1, role, view) do { snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix); \
        layout_tensor(lo, nm, d0, d1, role, view); } while (0)
    T("post_attention_layernorm.weight", D, 0, role_norm(l), &p->post_norm);
    T("mlp.gate_proj.weight", F, D, role_matrix(l), &p->gate);   // gate then up: one [2F, D] GEMM
    T("mlp.up_proj.weight", F, D, role_matrix(l), &p->up);
    T("mlp.down_proj.weight", D, F, role_matrix(l), &p->down);
#undef T
}

void swiglu_ffn_forward(float *out, float *gu, float *act, const float *x, const float *Wgu, const float *Wd, int N,
                        int D, int F, bool acc) {
    linear_forward(gu, x, Wgu, N, D, 2 * F, false);
    swiglu_rows_forward(act, gu, N, F);
    linear_forward(out, act, Wd, N, F, D, acc);
}

void swiglu_ffn_backward(float *dx, float *dWgu, float *dWd, const float *dout, const float *x, float *gu,
                         const float *act, const float *Wgu, const float *Wd, float *da, int N, int D, int F, float bw) {
    linear_backward_beta(da, dWd, dout, act, Wd, N, F, D, 0.0f, bw);
    swiglu_rows_backward(gu, da, gu, N, F);
    linear_backward_beta(dx, dWgu, gu, x, Wgu, N, D, 2 * F, 1.0f, bw);
}

// The FFN's input (dense or MoE): xn2 = rmsnorm(h), and the next layer's stream starts as h
// (the FFN adds to it)
void blk_ffn_norm_forward(Pass *P, int l) {
    const MoeConfig *c = &P->m->cfg;
    const int N = P->b->N, D = c->hidden_size;
    LayerActs *la = pass_layer(P, l);
    double t = prof_begin();
    rmsnorm_forward(la->xn2, la->rstd2, la->h, P->m->w.layer[l].post_norm, N, D, c->rms_norm_eps);
    prof_end(PROF_NORM, false, t, 0);
    memcpy(pass_resid(P->a, l + 1, N), la->h, sizeof(float) * (size_t)N * D);
    moe_progress();
}

// dh += rmsnorm^T(dxn): the FFN's input gradient through its norm
void blk_ffn_norm_backward(Pass *P, int l) {
    const MoeConfig *c = &P->m->cfg;
    const int N = P->b->N, D = c->hidden_size;
    LayerActs *la = &P->a->layer[l];
    LayerParams *gp = &P->m->g.layer[l];
    if (P->gset) memset(gp->post_norm, 0, sizeof(float) * D);
    double t = prof_begin();
    rmsnorm_backward(P->a->dh, gp->post_norm, P->a->dxn, la->h, P->m->w.layer[l].post_norm, la->rstd2, N, D);
    prof_end(PROF_NORM, true, t, 0);
}

void blk_dense_ffn_forward(Pass *P, int l) {
    const MoeConfig *c = &P->m->cfg;
    const int N = P->b->N, D = c->hidden_size;
    LayerActs *la = pass_layer(P, l);
    const LayerParams *p = &P->m->w.layer[l];
    double t = prof_begin();
    swiglu_ffn_forward(pass_resid(P->a, l + 1, N), la->gu, la->a, la->xn2, p->gate, p->down, N, D, c->intermediate_size, true);
    prof_end(PROF_DENSE, false, t, 6.0 * N * D * c->intermediate_size);
}

void blk_dense_ffn_backward(Pass *P, int l) {
    const MoeConfig *c = &P->m->cfg;
    const int N = P->b->N, D = c->hidden_size;
    Acts *a = P->a;
    LayerActs *la = &a->layer[l];
    const LayerParams *p = &P->m->w.layer[l];
    LayerParams *gp = &P->m->g.layer[l];
    double t = prof_begin();
    swiglu_ffn_backward(a->dxn, gp->gate, gp->down, a->dx, la->xn2, la->gu, la->a, p->gate, p->down, a->da,
                        N, D, c->intermediate_size, P->gset ? 0.0f : 1.0f);
    prof_end(PROF_DENSE, true, t, 12.0 * N * D * c->intermediate_size);
}

static int dense_ffn_saved(const MoeConfig *c, int l, SavedDecl *out) {
    (void)l;
    const int D = c->hidden_size, F = c->intermediate_size;
    int n = 0;
    out[n++] = SAVED(SAVE_NORM_OUT, xn2, D);
    if (F > 0) { out[n++] = SAVED(SAVE_PRE_ACT, gu, 2 * F); out[n++] = SAVED(SAVE_PRODUCT, a, F); }
    return n;
}

const BlockKind BLOCK_DENSE_FFN = {"dense_ffn", dense_ffn_tensors, dense_ffn_saved};
