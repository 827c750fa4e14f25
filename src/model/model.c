#include "model.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../base/base.h"
#include "../base/prof.h"
#include "../kernels/bf16.h"
#include "../kernels/gemm.h"
#include "../kernels/simd.h"
#include "pass.h"

// ---------------------------------------------------------------- activations

#define HEAD_CHUNK 256   // rows of the output head per GEMM while training

void acts_alloc(Acts *a, const Model *m, int Nmax, int mode) {
    const bool train = mode & ACTS_TRAIN, full = train && (mode & ACTS_RECOMPUTE_FULL),
               rc = full || (train && (mode & ACTS_RECOMPUTE)), bf = train && (mode & ACTS_BF16);
    const MoeConfig *c = &m->cfg;
    memset(a, 0, sizeof *a);
    int L = c->num_hidden_layers, D = c->hidden_size, Hq = c->num_attention_heads * c->head_dim,
        Hk = c->num_key_value_heads * c->head_dim, H = c->num_attention_heads,
        Fe = c->moe_intermediate_size, Fs = c->n_shared_experts * Fe, E = c->n_routed_experts,
        K = c->num_experts_per_tok, V = c->vocab_size;
    int Fmax = 0;   // the widest feed-forward among the layers there are (dense or shared experts)
    for (int l = 0; l < L; l++) Fmax = imax(Fmax, config_layer_is_moe(c, l) ? Fs : c->intermediate_size);
    const bool any_moe = config_n_moe_layers(c) > 0;
    // under expert parallelism the experts' rows live on their owners, kept per layer in f32
    // buffers grown to what arrives (moe/ep.c), holding the values one process would read
    // back (MOE_KEEP_*): no shared, recomputed or bf16-stashed expert rows here
    const bool ep = mode & ACTS_EP, local_moe = any_moe && !ep;
    a->ep = ep;
    a->Nmax = Nmax; a->L = L; a->D = D; a->train = train; a->recompute = rc; a->full = full; a->bf16 = bf;
    MemCategory old = mem_category(MEM_ACTS);
    size_t ND = (size_t)Nmax * D, NK = (size_t)Nmax * K;
    mem_category(MEM_WORK);
    if (rc) {   // one set of recomputed intermediates for all layers
        a->rc_xn = MOE_NEW(float, ND);
        a->rc_a = MOE_NEW(float, (size_t)Nmax * Fmax);
        if (local_moe) { a->rc_xe = MOE_NEW(float, NK * D); a->rc_ae = MOE_NEW(float, NK * Fe); }
    }
    if (full) {
        a->rc_h = MOE_NEW(float, ND);
        if (local_moe && !bf) a->rc_mgu = MOE_NEW(float, NK * 2 * Fe);   // (bf16: ws_mgu)
    }
    // the experts' outputs are summed into each layer's output and not needed again (the
    // backward pass gets dw from dout W_down . ae, under expert parallelism on the owners):
    // one buffer for all layers, which in training is the backward pass's dye (no forward
    // runs inside a layer's backward)
    if (train && any_moe) moe_work_alloc(&a->mw, Nmax, E, K, D, Fe, false);
    if (any_moe) a->rc_ye = train ? a->mw.dye : MOE_NEW(float, NK * D);
    if (any_moe) a->router_logits = MOE_NEW(float, (size_t)Nmax * E);   // scratch of every router
    if (bf) {   // the f32 working set every layer computes in; layers keep bf16 copies
        a->ws_q = MOE_NEW(float, (size_t)Nmax * Hq); a->ws_att = MOE_NEW(float, (size_t)Nmax * Hq);
        a->ws_k = MOE_NEW(float, (size_t)Nmax * Hk); a->ws_v = MOE_NEW(float, (size_t)Nmax * Hk);
        if (!full) a->ws_h = MOE_NEW(float, ND);
        a->ws_gu = MOE_NEW(float, (size_t)Nmax * 2 * Fmax);
        if (!rc) { a->ws_xn1 = MOE_NEW(float, ND); a->ws_xn2 = MOE_NEW(float, ND); a->ws_a = MOE_NEW(float, (size_t)Nmax * Fmax); }
        if (local_moe) {
            a->ws_mgu = MOE_NEW(float, NK * 2 * Fe);
            if (!rc) { a->ws_mxe = MOE_NEW(float, NK * D); a->ws_mae = MOE_NEW(float, NK * Fe); }
        }
    }
    mem_category(MEM_ACTS);
    int nstore = train ? L : 1;
    // the residual stream: every layer's input kept in f32, or (bf16, inference) two in turn
    a->xs = MOE_NEW(float, ND * (train && !bf ? L + 1 : 2));
    a->layer = MOE_NEW(LayerActs, nstore);
    for (int l = 0; l < nstore; l++) {
        LayerActs *la = &a->layer[l];
        int li = train ? l : 0;
        bool moe = train ? config_layer_is_moe(c, li) : any_moe;
        int F = train ? (moe ? Fs : c->intermediate_size) : Fmax;
        la->rstd1 = MOE_NEW(float, Nmax);
        la->rstd2 = MOE_NEW(float, Nmax);
        la->lse = MOE_NEW(float, (size_t)Nmax * H);
        if (bf) {
            la->q = a->ws_q; la->k = a->ws_k; la->v = a->ws_v; la->att = a->ws_att;
            la->h = full ? a->rc_h : a->ws_h;
            la->xn1 = rc ? a->rc_xn : a->ws_xn1;
            la->xn2 = rc ? a->rc_xn : a->ws_xn2;
            if (F > 0) { la->gu = a->ws_gu; la->a = rc ? a->rc_a : a->ws_a; }
        } else {
            la->q = MOE_NEW(float, (size_t)Nmax * Hq); la->att = MOE_NEW(float, (size_t)Nmax * Hq);
            la->k = MOE_NEW(float, (size_t)Nmax * Hk); la->v = MOE_NEW(float, (size_t)Nmax * Hk);
            la->h = full ? a->rc_h : MOE_NEW(float, ND);
            la->xn1 = rc ? a->rc_xn : MOE_NEW(float, ND);
            la->xn2 = rc ? a->rc_xn : MOE_NEW(float, ND);
            if (F > 0) {
                la->gu = MOE_NEW(float, (size_t)Nmax * 2 * F);
                la->a = rc ? a->rc_a : MOE_NEW(float, (size_t)Nmax * F);
            }
        }
        if (moe) {
            int borrow = MOE_BORROW_LOGITS | (rc || bf ? MOE_BORROW_XE_AE : 0) | (bf || full ? MOE_BORROW_GU : 0) | MOE_BORROW_YE;
            if (ep) borrow = MOE_BORROW_LOGITS | MOE_BORROW_XE_AE | MOE_BORROW_GU | MOE_BORROW_YE;
            moe_acts_alloc(&la->moe, Nmax, E, K, D, Fe, borrow);
            la->moe.logits = a->router_logits;
            if (ep && bf)
                la->moe.keep = MOE_KEEP_BF16 | (rc ? MOE_KEEP_RECOMPUTE_AE : 0) | (full ? MOE_KEEP_RECOMPUTE_GU : 0);
            la->moe.ye = a->rc_ye;
            if (!ep) {
                if (rc) { la->moe.xe = a->rc_xe; la->moe.ae = a->rc_ae; }
                else if (bf) { la->moe.xe = a->ws_mxe; la->moe.ae = a->ws_mae; }
                if (bf) la->moe.gu = a->ws_mgu;
                else if (full) la->moe.gu = a->rc_mgu;
            }
        }
        if (bf) {   // room for the largest stash this layer can need
            size_t per_tok = D + 2 * Hq + 2 * Hk + (full ? 0 : D) + (rc ? (moe ? D : 0) : 2 * D) + (F > 0 ? 2 * F + (rc ? 0 : F) : 0);
            size_t per_row = moe && !ep ? (full ? 0 : 2 * Fe) + (rc ? 0 : D + Fe) : 0;
            la->stash = MOE_NEW(unsigned short, (size_t)Nmax * per_tok + NK * per_row);
        }
    }
    a->rstdf = MOE_NEW(float, Nmax); a->xf = MOE_NEW(float, ND); a->xt = MOE_NEW(float, ND);
    // training runs the head in chunks of HEAD_CHUNK rows, its backward fused in: no [N,V] buffer
    a->logits = MOE_NEW(float, (size_t)(train ? imin(Nmax, HEAD_CHUNK) : Nmax) * V);
    if (train) { mem_category(MEM_WORK); a->dh = MOE_NEW(float, ND); a->dxt = a->dh; mem_category(MEM_ACTS); }   // see bwd_begin
    a->out_rows = MOE_NEW(int, Nmax);
    if (train) {
        mem_category(MEM_WORK);   // backward-pass scratch, reused by every layer
        a->dx = MOE_NEW(float, ND); a->dxn = MOE_NEW(float, ND);
        a->dq = MOE_NEW(float, (size_t)Nmax * Hq); a->datt = MOE_NEW(float, (size_t)Nmax * Hq);
        a->dk = MOE_NEW(float, (size_t)Nmax * Hk); a->dv = MOE_NEW(float, (size_t)Nmax * Hk);
        a->da = MOE_NEW(float, (size_t)Nmax * Fmax);   // (the FFNs' gate/up gradients go over gu)
    }
    a->load = MOE_NEW(long, (size_t)L * imax(E, 1));
    a->drop_l = MOE_NEW(long, L);
    a->rows_l = MOE_NEW(long, L);
    mem_category(old);
}

void acts_free(Acts *a) {
    int nstore = a->train ? a->L : 1;
    for (int l = 0; l < nstore; l++) {
        LayerActs *la = &a->layer[l];
        if (a->bf16) la->q = la->k = la->v = la->att = la->h = la->gu = NULL;   // the shared working set
        if (a->recompute || a->bf16) la->xn1 = la->xn2 = la->a = NULL;
        if (a->full) la->h = NULL;
        void *p[] = {la->rstd1, la->xn1, la->q, la->k, la->v, la->att, la->lse, la->h, la->rstd2,
                     la->xn2, la->gu, la->a, la->stash};
        for (size_t i = 0; i < sizeof p / sizeof *p; i++) moe_free(p[i]);
        if (la->moe.scores) { moe_ep_acts_free(&la->moe); moe_acts_free(&la->moe); }
    }
    if (a->rc_ye == a->mw.dye) a->rc_ye = NULL;   // shared buffers, freed once
    void *p[] = {a->xs, a->layer, a->rstdf, a->xf, a->xt, a->logits, a->out_rows, a->dx, a->dh,
                 a->dxn, a->dq, a->datt, a->dk, a->dv, a->da, a->load, a->drop_l, a->rows_l,
                 a->rc_xn, a->rc_a, a->rc_xe, a->rc_ae, a->rc_h, a->rc_ye, a->rc_mgu, a->router_logits, a->ws_q, a->ws_k, a->ws_v, a->ws_att, a->ws_h,
                 a->ws_xn1, a->ws_xn2, a->ws_gu, a->ws_a, a->ws_mgu, a->ws_mxe, a->ws_mae};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++) moe_free(p[i]);
    if (a->mw.ds) moe_work_free(&a->mw);
    moe_ep_work_free(&a->ew);
    memset(a, 0, sizeof *a);
}

// The residual stream entering layer l (l = L: the stack's output).
static float *resid(const Acts *a, int l, int N) {
    if (a->train && !a->bf16) return a->xs + (size_t)l * N * a->D;
    return a->xs + (size_t)(l % 2) * a->Nmax * a->D;
}

// ACTS_BF16: the f32 intermediates of layer l that its backward pass reads, in a fixed
// order; packed after its forward pass, unpacked before its backward pass. A MoE layer's
// xn2 is kept whatever the recomputation: the experts' rows are gathered from it, and an
// owner under expert parallelism, which holds those rows and not h, rounds them to bf16
// (MOE_KEEP_BF16) to the values gather(bf16(xn2)) gives here (rmsnorm(bf16(h)) would not).
typedef struct { float *p; size_t n; } StashItem;
static int stash_items(const Acts *a, const Model *m, int l, int N, StashItem *it) {
    const MoeConfig *c = &m->cfg;
    const LayerActs *la = &a->layer[l];
    const size_t D = c->hidden_size, Hq = (size_t)c->num_attention_heads * c->head_dim,
                 Hk = (size_t)c->num_key_value_heads * c->head_dim, Fe = c->moe_intermediate_size;
    const bool moe = config_layer_is_moe(c, l);
    const size_t F = moe ? (size_t)c->n_shared_experts * Fe : (size_t)c->intermediate_size;
    int n = 0;
    it[n++] = (StashItem){la->x, N * D};
    it[n++] = (StashItem){la->q, N * Hq};
    it[n++] = (StashItem){la->k, N * Hk};
    it[n++] = (StashItem){la->v, N * Hk};
    it[n++] = (StashItem){la->att, N * Hq};
    if (!a->full) it[n++] = (StashItem){la->h, N * D};
    if (!a->recompute) it[n++] = (StashItem){la->xn1, N * D};
    if (!a->recompute || moe) it[n++] = (StashItem){la->xn2, N * D};
    if (F > 0) {
        it[n++] = (StashItem){la->gu, N * 2 * F};
        if (!a->recompute) it[n++] = (StashItem){la->a, N * F};
    }
    if (moe && !a->ep) {
        const size_t A = la->moe.A;
        if (!a->full) it[n++] = (StashItem){la->moe.gu, A * 2 * Fe};
        if (!a->recompute) { it[n++] = (StashItem){la->moe.xe, A * D}; it[n++] = (StashItem){la->moe.ae, A * Fe}; }
    }
    return n;
}
static void stash_layer(const Acts *a, const Model *m, int l, int N, bool pack) {
    const double t = prof_begin();
    StashItem it[16];
    int n = stash_items(a, m, l, N, it);
    unsigned short *s = a->layer[l].stash;
    for (int i = 0; i < n; i++) {
        float *p = it[i].p;
        const long cnt = (long)it[i].n;
        const long chunk = 1 << 14, nc = (cnt + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (nc > 1)
        for (long c = 0; c < nc; c++) {
            const long j = c * chunk, len = c == nc - 1 ? cnt - j : chunk;
            if (pack) vec_to_bf16(s + j, p + j, len);
            else vec_from_bf16(p + j, s + j, len);
        }
        s += cnt;
    }
    prof_end(PROF_STASH, !pack, t, 0);   // packing after the forward pass, unpacking before the backward
}

// ---------------------------------------------------------------- forward

// out (+)= swiglu(x); Wgu is gate_proj followed by up_proj in the blob: one [2F,D] GEMM
static void swiglu_ffn_forward(float *out, float *gu, float *act, const float *x, const float *Wgu,
                               const float *Wd, int N, int D, int F, bool acc) {
    linear_forward(gu, x, Wgu, N, D, 2 * F, false);
    swiglu_rows_forward(act, gu, N, F);
    linear_forward(out, act, Wd, N, F, D, acc);
}

static void moe_views(const LayerParams *p, MoeWeights *w) {
    w->router = p->router; w->gate_up = p->e_gate_up; w->down = p->e_down;
}

// A pass over one micro-batch (Pass, pass.h) runs in stages, one StageKind each; the
// schedule (schedule.c) decides their order, interleaving two halves of a micro-batch so
// that one half's expert-parallel exchanges are in flight while the other half computes.

// expert parallelism: the transport to the other experts' owners (NULL: every expert here),
// and a dynamic placement's slots
static MoeComm *ep_comm(const Pass *P) { return P->o->shard ? P->o->shard->comm : NULL; }
static const MoePlacement *ep_place(const Pass *P) { return P->o->shard ? P->o->shard->place : NULL; }

static int fwd_begin(Pass *P) {
    Model *m = P->m;
    Acts *a = P->a;
    const Batch *b = P->b;
    const MoeConfig *c = &m->cfg;
    const int N = b->N, D = c->hidden_size;
    if (N > a->Nmax) MOE_ERR("internal: batch of %d tokens exceeds the %d allocated", N, a->Nmax);
    for (int n = 0; n < N; n++)
        if (b->pos[n] >= c->max_position_embeddings)
            MOE_ERR("sequence position %d exceeds max_position_embeddings %d", b->pos[n], c->max_position_embeddings);
    P->out->ce_sum = 0;
    P->out->aux = 0;
    P->kv_hi = MOE_NEW(int, N > 0 ? N : 1);
    P->pairs = 0;
    for (int n = 0; n < N; n++) {
        P->kv_hi[n] = P->o->cache ? P->o->slot[n] : n;
        P->pairs += P->kv_hi[n] - b->kv_lo[n] + 1;
    }
    P->x = resid(a, 0, N);
    double t = prof_begin();
    embed_forward(P->x, b->tokens, m->w.embed, N, D);
    prof_end(PROF_EMBED, false, t, 0);
    return MOE_OK;
}

// attention block, then the dense FFN, or the router and the dispatch of the MoE layer
static int fwd_attn(Pass *P, int l) {
    Model *m = P->m;
    Acts *a = P->a;
    const Batch *b = P->b;
    const ForwardOpts *o = P->o;
    const MoeConfig *c = &m->cfg;
    const int N = b->N, D = c->hidden_size, H = c->num_attention_heads, Hkv = c->num_key_value_heads,
              hd = c->head_dim, E = c->n_routed_experts;
    const int Hq = H * hd, Hk = Hkv * hd;
    LayerActs *la = &a->layer[a->train ? l : 0];
    const LayerParams *p = &m->w.layer[l];
    float *x = P->x, *xnext = resid(a, l + 1, N);
    la->x = x;
    double t = prof_begin();
    rmsnorm_forward(la->xn1, la->rstd1, x, p->in_norm, N, D, c->rms_norm_eps);
    prof_end(PROF_NORM, false, t, 0);
    t = prof_begin();
    // wq, wk, wv lie one after another in the blob; three GEMMs straight into q, k, v (12%
    // faster on bench-s than one fused GEMM followed by a copy splitting its rows)
    const float *wk = p->wq + (size_t)Hq * D, *wv = wk + (size_t)Hk * D;
    linear_forward(la->q, la->xn1, p->wq, N, D, Hq, false);
    linear_forward(la->k, la->xn1, wk, N, D, Hk, false);
    linear_forward(la->v, la->xn1, wv, N, D, Hk, false);
    prof_end(PROF_QKV, false, t, 2.0 * N * D * (Hq + 2 * Hk));
    moe_progress();
    t = prof_begin();
    rope_forward(la->q, b->pos, &m->rope, N, H, hd);
    rope_forward(la->k, b->pos, &m->rope, N, Hkv, hd);
    prof_end(PROF_ROPE, false, t, 0);
    const float *K = la->k, *Vv = la->v;
    if (o->cache) {   // append the new keys to the cache, attend over it
        float *ck = o->cache->k[l], *cv = o->cache->v[l];
        for (int n = 0; n < N; n++) {
            memcpy(ck + (size_t)o->slot[n] * Hk, la->k + (size_t)n * Hk, sizeof(float) * Hk);
            memcpy(cv + (size_t)o->slot[n] * Hk, la->v + (size_t)n * Hk, sizeof(float) * Hk);
        }
        K = ck; Vv = cv;
    }
    t = prof_begin();
    if (o->cache) attention_forward(la->att, la->lse, la->q, K, Vv, b->kv_lo, P->kv_hi, N, H, Hkv, hd);
    else attention_forward_train(la->att, la->lse, la->q, K, Vv, b->kv_lo, N, H, Hkv, hd);
    prof_end(PROF_ATTN, false, t, 4.0 * P->pairs * H * hd);
    moe_progress();
    t = prof_begin();
    memcpy(la->h, x, sizeof(float) * (size_t)N * D);
    linear_forward(la->h, la->att, p->wo, N, Hq, D, true);
    prof_end(PROF_OPROJ, false, t, 2.0 * N * Hq * D);
    t = prof_begin();
    rmsnorm_forward(la->xn2, la->rstd2, la->h, p->post_norm, N, D, c->rms_norm_eps);
    prof_end(PROF_NORM, false, t, 0);
    memcpy(xnext, la->h, sizeof(float) * (size_t)N * D);
    moe_progress();
    if (!config_layer_is_moe(c, l)) {
        t = prof_begin();
        swiglu_ffn_forward(xnext, la->gu, la->a, la->xn2, p->gate, p->down, N, D, c->intermediate_size, true);
        prof_end(PROF_DENSE, false, t, 6.0 * N * D * c->intermediate_size);
        return MOE_OK;
    }
    MoeWeights mw;
    moe_views(p, &mw);
    MoeActs *ma = &la->moe;
    t = prof_begin();
    moe_router_forward(c, ma, la->xn2, &mw, m->bias + (size_t)l * E, N);
    prof_end(PROF_ROUTER, false, t, 2.0 * N * D * E);
    if (ep_place(P)) {   // rows go to replica slots, not to experts
        const MoePlacement *pl = ep_place(P);
        ma->n_keys = pl->P * pl->S;
        ma->key_n = pl->rep_n + (size_t)l * E;
        ma->key_first = pl->rep_first + (size_t)l * E;
        ma->key_slot = pl->rep_slot + (size_t)l * pl->P * pl->S;
    }
    t = prof_begin();
    moe_dispatch(c, ma, o->train);
    prof_end(PROF_PERMUTE, false, t, 0);
    if (ep_comm(P)) return moe_ep_dispatch(ma, &a->ew, ep_comm(P), la->xn2);
    return MOE_OK;
}

static int fwd_experts(Pass *P, int l) {
    Model *m = P->m;
    if (!config_layer_is_moe(&m->cfg, l)) return MOE_OK;
    LayerActs *la = &P->a->layer[P->a->train ? l : 0];
    MoeWeights mw;
    moe_views(&m->w.layer[l], &mw);
    if (ep_comm(P)) {
        if (P->o->train) P->a->rows_l[l] += la->moe.R;
        return moe_ep_experts(&la->moe, &P->a->ew, ep_comm(P), &mw);
    }
    moe_experts_forward(&la->moe, la->xn2, &mw, resid(P->a, l + 1, P->b->N));
    return MOE_OK;
}

static int fwd_shared(Pass *P, int l) {
    const MoeConfig *c = &P->m->cfg;
    const int N = P->b->N, D = c->hidden_size, Fs = c->n_shared_experts * c->moe_intermediate_size;
    if (!config_layer_is_moe(c, l) || Fs == 0) return MOE_OK;
    LayerActs *la = &P->a->layer[P->a->train ? l : 0];
    const LayerParams *p = &P->m->w.layer[l];
    double t = prof_begin();
    swiglu_ffn_forward(resid(P->a, l + 1, N), la->gu, la->a, la->xn2, p->s_gate, p->s_down, N, D, Fs, true);
    prof_end(PROF_SHARED, false, t, 6.0 * N * D * Fs);
    return MOE_OK;
}

// the routed experts' outputs join the stream; balance loss and statistics; bf16 stash
static int fwd_finish(Pass *P, int l) {
    Model *m = P->m;
    Acts *a = P->a;
    const MoeConfig *c = &m->cfg;
    const int N = P->b->N, E = c->n_routed_experts;
    LayerActs *la = &a->layer[a->train ? l : 0];
    float *xnext = resid(a, l + 1, N);
    if (config_layer_is_moe(c, l)) {
        MoeActs *ma = &la->moe;
        if (ep_comm(P)) MOE_TRY(moe_ep_combine(ma, ep_comm(P), xnext));
        if (P->o->train) {
            double t = prof_begin();
            if (c->aux_scope == MOE_AUX_EP_GROUP && ep_comm(P)) {
                double share;
                MOE_TRY(moe_aux_ep_group(c, ma, ep_comm(P), P->o->aux_scale, &share));
                P->out->aux += share;
            } else {
                P->out->aux += moe_aux_loss(c, ma, NULL, P->b->seq_start, P->b->n_seq, P->o->aux_scale);
            }
            prof_end(PROF_BALANCE, false, t, 0);
            for (int e = 0; e < E; e++) a->load[(size_t)l * E + e] += ma->load[e];
            a->dropped += ma->dropped;
            a->drop_l[l] += ma->dropped;
            a->assigned += (long)N * c->num_experts_per_tok;
        }
    }
    if (a->bf16) stash_layer(a, m, l, N, true);
    P->x = xnext;
    return MOE_OK;
}

// output head over the rows that need logits only
static int fwd_end(Pass *P) {
    Model *m = P->m;
    Acts *a = P->a;
    const Batch *b = P->b;
    const ForwardOpts *o = P->o;
    const MoeConfig *c = &m->cfg;
    const int N = b->N, D = c->hidden_size, V = c->vocab_size;
    moe_free(P->kv_hi);
    P->kv_hi = NULL;
    double t = prof_begin();
    rmsnorm_forward(a->xf, a->rstdf, P->x, m->w.norm, N, D, c->rms_norm_eps);
    prof_end(PROF_NORM, false, t, 0);
    if (o->train) {
        a->n_out = 0;
        for (int n = 0; n < N; n++)
            if (b->targets[n] >= 0) a->out_rows[a->n_out++] = n;
    }
    int Nt = a->n_out;
    for (int i = 0; i < Nt; i++) memcpy(a->xt + (size_t)i * D, a->xf + (size_t)a->out_rows[i] * D, sizeof(float) * D);
    int *tg = NULL, ok = b->targets != NULL;
    if (ok) {
        tg = MOE_NEW(int, Nt > 0 ? Nt : 1);
        for (int i = 0; i < Nt; i++) { tg[i] = b->targets[a->out_rows[i]]; ok &= tg[i] >= 0; }
    }
    if (!o->train) {   // all the logits at once: generation reads them
        t = prof_begin();
        linear_forward(a->logits, a->xt, m->w.head, Nt, D, V, false);
        prof_end(PROF_HEAD, false, t, 2.0 * Nt * D * V);
        t = prof_begin();
        if (ok) xent_forward_backward(a->logits, tg, Nt, V, 0.0f, &P->out->ce_sum);
        prof_end(PROF_XENT, false, t, 0);
    } else {
        // chunk by chunk: logits, fused softmax cross-entropy (-> dlogits), then the head's
        // backward pass at once: dxt = dlogits W, dW += dlogits^T xt
        for (int i0 = 0; i0 < Nt; i0 += HEAD_CHUNK) {
            const int nc = imin(HEAD_CHUNK, Nt - i0);
            const float *xt = a->xt + (size_t)i0 * D;
            t = prof_begin();
            linear_forward(a->logits, xt, m->w.head, nc, D, V, false);
            prof_end(PROF_HEAD, false, t, 2.0 * nc * D * V);
            t = prof_begin();
            if (ok) xent_forward_backward(a->logits, tg + i0, nc, V, o->ce_scale, &P->out->ce_sum);
            prof_end(PROF_XENT, false, t, 0);
            t = prof_begin();
            linear_backward_beta(a->dxt + (size_t)i0 * D, m->g.head, a->logits, xt, m->w.head, nc, D, V, 0.0f,
                                 P->gset && i0 == 0 ? 0.0f : 1.0f);
            prof_end(PROF_HEAD, true, t, 4.0 * nc * D * V);
            moe_progress();
        }
    }
    if (o->train && P->gset && Nt == 0) memset(m->g.head, 0, sizeof(float) * (size_t)V * D);   // no rows, no GEMM
    moe_free(tg);
    return MOE_OK;
}

// ---------------------------------------------------------------- backward

// the gate/up gradients are written over gu (read only before, element by element)
static void swiglu_ffn_backward(float *dx, float *dWgu, float *dWd, const float *dout, const float *x,
                                float *gu, const float *act, const float *Wgu, const float *Wd,
                                float *da, int N, int D, int F, float bw) {
    linear_backward_beta(da, dWd, dout, act, Wd, N, F, D, 0.0f, bw);
    swiglu_rows_backward(gu, da, gu, N, F);
    linear_backward_beta(dx, dWgu, gu, x, Wgu, N, D, 2 * F, 1.0f, bw);
}

// the head's backward pass ran with the forward pass (a->dxt); the rest starts here
static void bwd_begin(Pass *P) {
    Model *m = P->m;
    Acts *a = P->a;
    const MoeConfig *c = &m->cfg;
    const int N = P->b->N, D = c->hidden_size, L = c->num_hidden_layers, Nt = a->n_out;
    const size_t ND = (size_t)N * D;
    P->pairs = 0;
    for (int n = 0; n < N; n++) P->pairs += n - P->b->kv_lo[n] + 1;
    float *dxf = a->dxn;
    memset(dxf, 0, sizeof(float) * ND);
    for (int i = 0; i < Nt; i++) memcpy(dxf + (size_t)a->out_rows[i] * D, a->dxt + (size_t)i * D, sizeof(float) * D);
    double t = prof_begin();
    memset(a->dx, 0, sizeof(float) * ND);
    if (P->gset) memset(m->g.norm, 0, sizeof(float) * D);
    rmsnorm_backward(a->dx, m->g.norm, dxf, resid(a, L, N), m->w.norm, a->rstdf, N, D);
    prof_end(PROF_NORM, true, t, 0);
}

// x_{l+1} = h + ffn(xn2), xn2 = rmsnorm(h): dh = dx + rmsnorm^T(ffn^T(dx)). First what
// the backward pass reads comes back (bf16 unpack, recomputation); then the dense FFN's
// backward pass, or the routed experts' (on one process), or their output gradients start
// to the experts' owners
static int bwd_ffn_or_send(Pass *P, int l) {
    Model *m = P->m;
    Acts *a = P->a;
    const MoeConfig *c = &m->cfg;
    const int N = P->b->N, D = c->hidden_size, Hq = c->num_attention_heads * c->head_dim,
              Fe = c->moe_intermediate_size, Fs = c->n_shared_experts * Fe;
    const size_t ND = (size_t)N * D;
    LayerActs *la = &a->layer[l];
    const LayerParams *p = &m->w.layer[l];
    LayerParams *gp = &m->g.layer[l];
    float *dx = a->dx, *dh = a->dh, *dxn = a->dxn;
    if (a->bf16) stash_layer(a, m, l, N, false);
    memcpy(dh, dx, sizeof(float) * ND);
    memset(dxn, 0, sizeof(float) * ND);
    if (a->recompute) {   // the FFN's inputs and SwiGLU products, as the forward pass made them
        double t = prof_begin();
        if (a->full) {   // h = x + att Wo^T
            memcpy(la->h, la->x, sizeof(float) * ND);
            linear_forward(la->h, la->att, p->wo, N, Hq, D, true);
        }
        if (!(a->bf16 && config_layer_is_moe(c, l)))   // (bf16: a MoE layer's xn2 is unpacked)
            rmsnorm_forward(la->xn2, NULL, la->h, p->post_norm, N, D, c->rms_norm_eps);
        if (!config_layer_is_moe(c, l)) swiglu_rows_forward(la->a, la->gu, N, c->intermediate_size);
        else {
            if (!a->ep) {
                if (a->full) {   // the gather and the experts' gate and up projections again
                    MoeWeights mw;
                    moe_views(p, &mw);
                    moe_experts_gate_up(&la->moe, la->xn2, &mw);
                } else moe_gather(&la->moe, la->xn2);
                swiglu_rows_forward(la->moe.ae, la->moe.gu, la->moe.A, Fe);
            }
            if (Fs > 0) swiglu_rows_forward(la->a, la->gu, N, Fs);
        }
        prof_end(PROF_RECOMPUTE, true, t, 0);
    }
    if (!config_layer_is_moe(c, l)) {
        double t = prof_begin();
        swiglu_ffn_backward(dxn, gp->gate, gp->down, dx, la->xn2, la->gu, la->a, p->gate, p->down, a->da,
                            N, D, c->intermediate_size, P->gset ? 0.0f : 1.0f);
        prof_end(PROF_DENSE, true, t, 12.0 * N * D * c->intermediate_size);
        return MOE_OK;
    }
    MoeWeights mw;
    moe_views(p, &mw);
    MoeGrads mg = {gp->router, gp->e_gate_up, gp->e_down, P->gset};
    if (ep_comm(P)) return moe_ep_backward_send(&la->moe, &a->mw, &a->ew, ep_comm(P), dx);
    moe_experts_backward(&la->moe, &a->mw, dx, &mw, &mg, dxn, false);
    return MOE_OK;
}

// the routing weights' backward pass (their gradients work->dw are at hand), balance loss,
// router
static void bwd_router(Pass *P, int l) {
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

// the router (on one process; under expert parallelism the owners send the weights'
// gradients back with the rows, and bwd_attention runs it), shared experts
static int bwd_router_shared(Pass *P, int l) {
    Model *m = P->m;
    Acts *a = P->a;
    const MoeConfig *c = &m->cfg;
    if (!config_layer_is_moe(c, l)) return MOE_OK;
    const int N = P->b->N, D = c->hidden_size, Fs = c->n_shared_experts * c->moe_intermediate_size;
    LayerActs *la = &a->layer[l];
    const LayerParams *p = &m->w.layer[l];
    LayerParams *gp = &m->g.layer[l];
    if (!ep_comm(P)) bwd_router(P, l);
    double t = prof_begin();
    if (Fs > 0)
        swiglu_ffn_backward(a->dxn, gp->s_gate, gp->s_down, a->dx, la->xn2, la->gu, la->a, p->s_gate, p->s_down,
                            a->da, N, D, Fs, P->gset ? 0.0f : 1.0f);
    prof_end(PROF_SHARED, true, t, 12.0 * N * D * Fs);
    moe_progress();
    return MOE_OK;
}

// expert parallelism: the owners' expert GEMMs on the output gradients that arrived
static int bwd_owner_experts(Pass *P, int l) {
    Model *m = P->m;
    if (!ep_comm(P) || !config_layer_is_moe(&m->cfg, l)) return MOE_OK;
    const LayerParams *p = &m->w.layer[l];
    LayerParams *gp = &m->g.layer[l];
    MoeWeights mw;
    moe_views(p, &mw);
    MoeGrads mg = {gp->router, gp->e_gate_up, gp->e_down, P->gset};
    return moe_ep_backward_experts(&P->a->layer[l].moe, &P->a->mw, &P->a->ew, ep_comm(P), &mw, &mg);
}

// (expert parallelism: the experts' input gradients arrive, then the router's backward)
// the post-attention norm's and the attention block's backward pass, the input norm's
static int bwd_attention(Pass *P, int l) {
    Model *m = P->m;
    Acts *a = P->a;
    const Batch *b = P->b;
    const MoeConfig *c = &m->cfg;
    const int N = b->N, D = c->hidden_size, H = c->num_attention_heads, Hkv = c->num_key_value_heads,
              hd = c->head_dim;
    const int Hq = H * hd, Hk = Hkv * hd;
    const size_t ND = (size_t)N * D;
    LayerActs *la = &a->layer[l];
    const LayerParams *p = &m->w.layer[l];
    LayerParams *gp = &m->g.layer[l];
    float *dx = a->dx, *dh = a->dh, *dxn = a->dxn;
    if (ep_comm(P) && config_layer_is_moe(c, l)) {   // the experts' input gradients and dw arrive
        MOE_TRY(moe_ep_backward_finish(&la->moe, &a->mw, ep_comm(P), dxn));
        bwd_router(P, l);
    }
    const float bw = P->gset ? 0.0f : 1.0f;
    if (P->gset) { memset(gp->post_norm, 0, sizeof(float) * D); memset(gp->in_norm, 0, sizeof(float) * D); }
    double t = prof_begin();
    rmsnorm_backward(dh, gp->post_norm, dxn, la->h, p->post_norm, la->rstd2, N, D);
    prof_end(PROF_NORM, true, t, 0);
    // h = x + att Wo^T
    t = prof_begin();
    linear_backward_beta(a->datt, gp->wo, dh, la->att, p->wo, N, Hq, D, 0.0f, bw);
    prof_end(PROF_OPROJ, true, t, 4.0 * N * Hq * D);
    moe_progress();
    t = prof_begin();
    attention_backward_train(a->dq, a->dk, a->dv, a->datt, la->q, la->k, la->v, la->att, la->lse, b->kv_lo, N,
                             H, Hkv, hd);
    if (a->recompute) {
        double tr = prof_begin();
        rmsnorm_forward(la->xn1, NULL, la->x, p->in_norm, N, D, c->rms_norm_eps);
        prof_end(PROF_RECOMPUTE, true, tr, 0);
    }
    prof_end(PROF_ATTN, true, t, 8.0 * P->pairs * H * hd);
    moe_progress();
    t = prof_begin();
    rope_backward(a->dq, b->pos, &m->rope, N, H, hd);
    rope_backward(a->dk, b->pos, &m->rope, N, Hkv, hd);
    prof_end(PROF_ROPE, true, t, 0);
    t = prof_begin();
    const size_t ok = (size_t)Hq * D, ov = (size_t)(Hq + Hk) * D;   // wk, wv after wq
    linear_backward_beta(dxn, gp->wq, a->dq, la->xn1, p->wq, N, D, Hq, 0.0f, bw);
    linear_backward_beta(dxn, gp->wq + ok, a->dk, la->xn1, p->wq + ok, N, D, Hk, 1.0f, bw);
    linear_backward_beta(dxn, gp->wq + ov, a->dv, la->xn1, p->wq + ov, N, D, Hk, 1.0f, bw);
    prof_end(PROF_QKV, true, t, 4.0 * N * D * (Hq + 2 * Hk));
    moe_progress();
    t = prof_begin();
    memcpy(dx, dh, sizeof(float) * ND);
    rmsnorm_backward(dx, gp->in_norm, dxn, la->x, p->in_norm, la->rstd1, N, D);
    prof_end(PROF_NORM, true, t, 0);
    return MOE_OK;
}

static void bwd_end(Pass *P) {
    const MoeConfig *c = &P->m->cfg;
    // a tied embedding is the head's gradient, which the forward pass has written
    if (P->gset && !c->tie_word_embeddings) memset(P->m->g.embed, 0, sizeof(float) * (size_t)c->vocab_size * c->hidden_size);
    double t = prof_begin();
    embed_backward(P->m->g.embed, P->a->dx, P->b->tokens, P->b->N, P->m->cfg.hidden_size);
    prof_end(PROF_EMBED, true, t, 0);
}

int pass_run_stage(Pass *P, int kind, int l) {
    switch ((StageKind)kind) {
    case STAGE_FWD_BEGIN: return fwd_begin(P);
    case STAGE_FWD_ATTN: return fwd_attn(P, l);
    case STAGE_FWD_EXPERTS: return fwd_experts(P, l);
    case STAGE_FWD_SHARED: return fwd_shared(P, l);
    case STAGE_FWD_FINISH: return fwd_finish(P, l);
    case STAGE_FWD_END: return fwd_end(P);
    case STAGE_BWD_BEGIN: bwd_begin(P); return MOE_OK;
    case STAGE_BWD_FFN_OR_SEND: return bwd_ffn_or_send(P, l);
    case STAGE_BWD_ROUTER_SHARED: return bwd_router_shared(P, l);
    case STAGE_BWD_OWNER_EXPERTS: return bwd_owner_experts(P, l);
    case STAGE_BWD_ATTENTION: return bwd_attention(P, l);
    case STAGE_BWD_END: bwd_end(P); return MOE_OK;
    case STAGE_GRADS_READY: return P->o->grads_ready ? P->o->grads_ready(P->o->ctx, l) : MOE_OK;
    case STAGE_N_KINDS: break;
    }
    MOE_ERR("internal: no stage of kind %d", kind);
}

void pass_abort(Pass *P) { moe_free(P->kv_hi); P->kv_hi = NULL; }
