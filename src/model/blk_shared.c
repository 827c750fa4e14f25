// The shared experts of a MoE layer: one dense SwiGLU of n_shared_experts x
// moe_intermediate_size over every token, on the MoE block's normalised input.
#include <stdio.h>
#include <string.h>
#include "../base/base.h"
#include "../base/prof.h"
#include "../kernels/gemm.h"
#include "pass.h"

static void shared_expert_tensors(Layout *lo, const MoeConfig *c, int l, const ExpertShard *sh, ParamViews *v) {
    (void)sh;
    const int D = c->hidden_size, F = c->n_shared_experts * c->moe_intermediate_size;
    LayerParams *p = &v->layer[l];
    char nm[96];
#define T(suffix, d0, d1, view) do { snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix); \
        layout_tensor(lo, nm, d0, d1, role_matrix(l), view); } while (0)
    T("mlp.shared_experts.gate_proj.weight", F, D, &p->s_gate);   // gate then up: one [2F, D] GEMM
    T("mlp.shared_experts.up_proj.weight", F, D, &p->s_up);
    T("mlp.shared_experts.down_proj.weight", D, F, &p->s_down);
#undef T
}

void blk_shared_expert_forward(Pass *P, int l) {
    const MoeConfig *c = &P->m->cfg;
    const int N = P->b->N, D = c->hidden_size, Fs = c->n_shared_experts * c->moe_intermediate_size;
    LayerActs *la = pass_layer(P, l);
    const LayerParams *p = &P->m->w.layer[l];
    double t = prof_begin();
    swiglu_ffn_forward(pass_ffn_out(P, l), la->gu, la->a, la->xn2, p->s_gate, p->s_down, N, D, Fs, true);
    prof_end(PROF_SHARED, false, t, 6.0 * N * D * Fs);
}

void blk_shared_expert_backward(Pass *P, int l) {
    const MoeConfig *c = &P->m->cfg;
    const int N = P->b->N, D = c->hidden_size, Fs = c->n_shared_experts * c->moe_intermediate_size;
    Acts *a = P->a;
    LayerActs *la = &a->layer[l];
    const LayerParams *p = &P->m->w.layer[l];
    LayerParams *gp = &P->m->g.layer[l];
    double t = prof_begin();
    if (Fs > 0)
        swiglu_ffn_backward(a->dxn, gp->s_gate, gp->s_down, a->dx, la->xn2, la->gu, la->a, p->s_gate, p->s_down,
                            a->da, N, D, Fs, P->gset ? 0.0f : 1.0f);
    prof_end(PROF_SHARED, true, t, 12.0 * N * D * Fs);
    moe_progress();
}

static int shared_expert_saved(const MoeConfig *c, int l, SavedDecl *out) {
    (void)l;
    const int F = c->n_shared_experts * c->moe_intermediate_size;
    out[0] = SAVED(SAVE_PRE_ACT, gu, 2 * F);
    out[1] = SAVED(SAVE_PRODUCT, a, F);
    return 2;
}

const BlockKind BLOCK_SHARED_EXPERT = {"shared_expert", shared_expert_tensors, shared_expert_saved};
