// The MoE feed-forward block: xn = rmsnorm(h), the router's scores and top-K, and the routed
// experts (SwiGLU each) over the rows dispatched to them, on this process or their owners'.
#include <stdio.h>
#include <string.h>
#include "../base/base.h"
#include "../base/prof.h"
#include "pass.h"

// the routed experts' and router's names: DeepSeek's and Qwen3's (mlp.gate, mlp.experts.E.
// gate_proj/up_proj/down_proj), or Mixtral's (block_sparse_moe.gate, experts.E.w1/w3/w2)
static void expert_name(char *nm, size_t cap, const MoeConfig *c, int l, int e, int which) {
    static const char *const ds[3] = {"gate_proj", "up_proj", "down_proj"}, *const mx[3] = {"w1", "w3", "w2"};
    if (c->family == MOE_FAMILY_MIXTRAL) snprintf(nm, cap, "model.layers.%d.block_sparse_moe.experts.%d.%s.weight", l, e, mx[which]);
    else snprintf(nm, cap, "model.layers.%d.mlp.experts.%d.%s.weight", l, e, ds[which]);
}

static void moe_ffn_tensors(Layout *lo, const MoeConfig *c, int l, const ExpertShard *sh, ParamViews *v) {
    const int D = c->hidden_size, E = c->n_routed_experts, F = c->moe_intermediate_size;
    LayerParams *p = &v->layer[l];
    char nm[96];
    ffn_norm_tensors(lo, c, l, p);
    snprintf(nm, sizeof nm, "model.layers.%d.%s.gate.weight", l, c->family == MOE_FAMILY_MIXTRAL ? "block_sparse_moe" : "mlp");
    layout_tensor(lo, nm, E, D, role_matrix(l), &p->router);
    // this process's experts (its shard): expert j's gate_proj and up_proj side by side
    // ([2F, D], one GEMM), the experts one after another, then their down_proj
    const int n = shard_experts(sh, c);
    for (int j = 0; j < n; j++) {
        const int e = shard_expert(sh, l, j);
        const TensorRole r = {l, e, true, false, 0};
        float *view;
        expert_name(nm, sizeof nm, c, l, e, 0);
        layout_tensor(lo, nm, F, D, r, j == 0 ? &p->e_gate_up : &view);
        expert_name(nm, sizeof nm, c, l, e, 1);
        layout_tensor(lo, nm, F, D, r, &view);
    }
    for (int j = 0; j < n; j++) {
        const int e = shard_expert(sh, l, j);
        float *view;
        expert_name(nm, sizeof nm, c, l, e, 2);
        layout_tensor(lo, nm, D, F, (TensorRole){l, e, true, false, 0}, j == 0 ? &p->e_down : &view);
    }
}

static void moe_views(const LayerParams *p, MoeWeights *w) {
    w->router = p->router; w->gate_up = p->e_gate_up; w->down = p->e_down;
}

// the router's scores and top-K over xn2, then the rows' dispatch by expert (or by replica
// slot under a placement); under expert parallelism the rows start to their owners
int blk_moe_route_forward(Pass *P, int l) {
    Model *m = P->m;
    const MoeConfig *c = &m->cfg;
    const int N = P->b->N, D = c->hidden_size, E = c->n_routed_experts;
    LayerActs *la = pass_layer(P, l);
    MoeWeights mw;
    moe_views(&m->w.layer[l], &mw);
    MoeActs *ma = &la->moe;
    double t = prof_begin();
    moe_router_forward(c, ma, la->xn2, &mw, m->bias + (size_t)l * E, N);
    prof_end(PROF_ROUTER, false, t, 2.0 * N * D * E);
    if (pass_ep_place(P)) {   // rows go to replica slots, not to experts
        const MoePlacement *pl = pass_ep_place(P);
        ma->n_keys = pl->P * pl->S;
        ma->key_n = pl->rep_n + (size_t)l * E;
        ma->key_first = pl->rep_first + (size_t)l * E;
        ma->key_slot = pl->rep_slot + (size_t)l * pl->P * pl->S;
    }
    t = prof_begin();
    moe_dispatch(c, ma, P->o->train);
    prof_end(PROF_PERMUTE, false, t, 0);
    if (pass_ep_comm(P)) return moe_ep_dispatch(ma, &P->a->ew, pass_ep_comm(P), la->xn2);
    return MOE_OK;
}

int blk_moe_experts_forward(Pass *P, int l) {
    Model *m = P->m;
    LayerActs *la = pass_layer(P, l);
    MoeWeights mw;
    moe_views(&m->w.layer[l], &mw);
    if (pass_ep_comm(P)) {
        if (P->o->train) P->a->rows_l[l] += la->moe.R;
        return moe_ep_experts(&la->moe, &P->a->ew, pass_ep_comm(P), &mw);
    }
    moe_experts_forward(&la->moe, la->xn2, &mw, pass_ffn_out(P, l));
    return MOE_OK;
}

// the experts' outputs join the stream (under expert parallelism they arrive); training:
// the balance loss and the load statistics
int blk_moe_finish_forward(Pass *P, int l) {
    Model *m = P->m;
    Acts *a = P->a;
    const MoeConfig *c = &m->cfg;
    const int N = P->b->N, E = c->n_routed_experts;
    MoeActs *ma = &pass_layer(P, l)->moe;
    if (pass_ep_comm(P)) MOE_TRY(moe_ep_combine(ma, pass_ep_comm(P), pass_ffn_out(P, l)));
    if (!P->o->train) return MOE_OK;
    double t = prof_begin();
    if (c->aux_scope == MOE_AUX_EP_GROUP && pass_ep_comm(P)) {
        double share;
        MOE_TRY(moe_aux_ep_group(c, ma, pass_ep_comm(P), P->o->aux_scale, &share));
        P->out->aux += share;
    } else {
        P->out->aux += moe_aux_loss(c, ma, NULL, P->b->seq_start, P->b->n_seq, P->o->aux_scale);
    }
    prof_end(PROF_BALANCE, false, t, 0);
    for (int e = 0; e < E; e++) a->load[(size_t)l * E + e] += ma->load[e];
    a->dropped += ma->dropped;
    a->drop_l[l] += ma->dropped;
    a->assigned += (long)N * c->num_experts_per_tok;
    return MOE_OK;
}

// the routed experts' backward pass on this process, or (expert parallelism) their output
// gradients start to the owners
int blk_moe_backward_start(Pass *P, int l) {
    Model *m = P->m;
    Acts *a = P->a;
    LayerActs *la = &a->layer[l];
    LayerParams *gp = &m->g.layer[l];
    MoeWeights mw;
    moe_views(&m->w.layer[l], &mw);
    MoeGrads mg = {gp->router, gp->e_gate_up, gp->e_down, P->gset};
    if (pass_ep_comm(P)) return moe_ep_backward_send(&la->moe, &a->mw, &a->ew, pass_ep_comm(P), a->dx);
    moe_experts_backward(&la->moe, &a->mw, a->dx, &mw, &mg, a->dxn, false);
    return MOE_OK;
}

// the routing weights' backward pass (their gradients work->dw are at hand), balance loss,
// router
void blk_moe_router_backward(Pass *P, int l) {
    Model *m = P->m;
    Acts *a = P->a;
    const MoeConfig *c = &m->cfg;
    const int N = P->b->N, D = c->hidden_size, E = c->n_routed_experts;
    LayerActs *la = &a->layer[l];
    LayerParams *gp = &m->g.layer[l];
    MoeWeights mw;
    moe_views(&m->w.layer[l], &mw);
    MoeGrads mg = {gp->router, gp->e_gate_up, gp->e_down, P->gset};
    MoeActs *ma = &la->moe;
    double t = prof_begin();
    moe_weights_backward(c, ma, &a->mw);
    moe_aux_loss(c, ma, &a->mw, P->b->seq_start, P->b->n_seq, P->o->aux_scale);
    prof_end(PROF_BALANCE, true, t, 0);
    t = prof_begin();
    moe_router_backward(c, ma, &a->mw, la->xn2, &mw, &mg, a->dxn);
    prof_end(PROF_ROUTER, true, t, 4.0 * N * D * E);
    moe_progress();
}


// expert parallelism: the owners' expert GEMMs on the output gradients that arrived
int blk_moe_owner_backward(Pass *P, int l) {
    Model *m = P->m;
    const LayerParams *p = &m->w.layer[l];
    LayerParams *gp = &m->g.layer[l];
    MoeWeights mw;
    moe_views(p, &mw);
    MoeGrads mg = {gp->router, gp->e_gate_up, gp->e_down, P->gset};
    return moe_ep_backward_experts(&P->a->layer[l].moe, &P->a->mw, &P->a->ew, pass_ep_comm(P), &mw, &mg);
}


// expert parallelism: the experts' input gradients and the routing weights' gradients arrive
int blk_moe_backward_finish(Pass *P, int l) {
    return moe_ep_backward_finish(&P->a->layer[l].moe, &P->a->mw, pass_ep_comm(P), P->a->dxn);
}

static int moe_ffn_saved(const MoeConfig *c, int l, SavedDecl *out) {
    (void)l;
    const int D = c->hidden_size, F = c->moe_intermediate_size;
    int n = 0;
    out[n++] = SAVED(SAVE_EXPERT_INPUT, xn2, D);
    out[n++] = SAVED_ROWS(SAVE_ROWS_PRE_ACT, gu, 2 * F);
    out[n++] = SAVED_ROWS(SAVE_ROWS_IN, xe, D);
    out[n++] = SAVED_ROWS(SAVE_ROWS_PRODUCT, ae, F);
    if (c->sandwich_norm) out[n++] = SAVED(SAVE_ACT, fy, D);   // the FFN's output before its post-norm
    return n;
}

const BlockKind BLOCK_MOE_FFN = {"moe_ffn", moe_ffn_tensors, moe_ffn_saved};
