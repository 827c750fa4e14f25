// The dense feed-forward block: x + Wd (silu(Wg xn) * Wu xn), xn = rmsnorm(h); and what every
// FFN (dense or MoE) shares: its input norm, and under the sandwich norm its post-norm
// x = h + rmsnorm(ffn(xn)).
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "../base/base.h"
#include "../base/prof.h"
#include "../kernels/gemm.h"
#include "../kernels/simd.h"
#include "pass.h"

// an FFN's input norm (post_attention_layernorm; pre_mlp_layernorm under the sandwich norm,
// whose post-norm post_mlp_layernorm starts at c_mlp / sqrt(L))
void ffn_norm_tensors(Layout *lo, const MoeConfig *c, int l, LayerParams *p) {
    char nm[96];
    const int D = c->hidden_size;
    snprintf(nm, sizeof nm, "model.layers.%d.%s.weight", l, c->sandwich_norm ? "pre_mlp_layernorm" : "post_attention_layernorm");
    layout_tensor(lo, nm, D, 0, role_norm(l), &p->post_norm);
    if (!c->sandwich_norm) return;
    snprintf(nm, sizeof nm, "model.layers.%d.post_mlp_layernorm.weight", l);
    layout_tensor(lo, nm, D, 0, role_gain(l, 0.432f / sqrtf((float)c->num_hidden_layers)), &p->ffn_post_norm);
}

static void dense_ffn_tensors(Layout *lo, const MoeConfig *c, int l, const ExpertShard *sh, ParamViews *v) {
    (void)sh;
    const int D = c->hidden_size, F = c->intermediate_size;
    LayerParams *p = &v->layer[l];
    char nm[96];
#define T(suffix, d0, d1, role, view) do { snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix); \
        layout_tensor(lo, nm, d0, d1, role, view); } while (0)
    ffn_norm_tensors(lo, c, l, p);
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
    if (c->sandwich_norm) memset(la->fy, 0, sizeof(float) * (size_t)N * D);
    moe_progress();
}

float *pass_ffn_out(Pass *P, int l) {
    return P->m->cfg.sandwich_norm ? pass_layer(P, l)->fy : pass_resid(P->a, l + 1, P->b->N);
}

// the sandwich norm: x = h + rmsnorm(ffn output), once the FFN's parts have added theirs
void blk_ffn_post_forward(Pass *P, int l) {
    const MoeConfig *c = &P->m->cfg;
    LayerActs *la = pass_layer(P, l);
    sandwich_add(P->a->tmp, pass_resid(P->a, l + 1, P->b->N), la->fy, la->rstd_fy, P->m->w.layer[l].ffn_post_norm,
                 P->b->N, c->hidden_size, c->rms_norm_eps);
}

// a->dx, the gradient at the layer's output, becomes the gradient at the FFN's output
void blk_ffn_post_backward(Pass *P, int l) {
    const MoeConfig *c = &P->m->cfg;
    Acts *a = P->a;
    const int N = P->b->N, D = c->hidden_size;
    LayerActs *la = &a->layer[l];
    sandwich_backward(a->tmp, P->m->g.layer[l].ffn_post_norm, a->dx, la->fy, P->m->w.layer[l].ffn_post_norm,
                      la->rstd_fy, N, D, P->gset);
    memcpy(a->dx, a->tmp, sizeof(float) * (size_t)N * D);
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
    swiglu_ffn_forward(pass_ffn_out(P, l), la->gu, la->a, la->xn2, p->gate, p->down, N, D, c->intermediate_size, true);
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
    if (c->sandwich_norm) out[n++] = SAVED(SAVE_ACT, fy, D);
    return n;
}

const BlockKind BLOCK_DENSE_FFN = {"dense_ffn", dense_ffn_tensors, dense_ffn_saved};
