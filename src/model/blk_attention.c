// The attention block: h = x + Wo attention(rope(Wq xn), rope(Wk xn), Wv xn), xn = rmsnorm(x)
// (grouped-query attention, pre-norm).
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "../base/base.h"
#include "../base/prof.h"
#include "../kernels/gemm.h"
#include "pass.h"

static void attention_tensors(Layout *lo, const MoeConfig *c, int l, const ExpertShard *sh, ParamViews *v) {
    (void)sh;
    const int D = c->hidden_size, Hq = c->num_attention_heads * c->head_dim, Hk = c->num_key_value_heads * c->head_dim;
    LayerParams *p = &v->layer[l];
    char nm[96];
#define T(suffix, d0, d1, role, view) do { snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix); \
        layout_tensor(lo, nm, d0, d1, role, view); } while (0)
    T("input_layernorm.weight", D, 0, role_norm(l), &p->in_norm);
    // q, k and v one after another: the backward pass reads them as one [Hq+2Hk, D] block
    T("self_attn.q_proj.weight", Hq, D, role_matrix(l), &p->wq);
    T("self_attn.k_proj.weight", Hk, D, role_matrix(l), &p->wk);
    T("self_attn.v_proj.weight", Hk, D, role_matrix(l), &p->wv);
    T("self_attn.o_proj.weight", D, Hq, role_matrix(l), &p->wo);
#undef T
}


// x -> h = x + Wo attention(rope(q), rope(k), v) over xn1 = rmsnorm(x); with a KV cache
// (inference) the new keys and values go to their slots and attention reads the cache
void blk_attention_forward(Pass *P, int l) {
    Model *m = P->m;
    const Batch *b = P->b;
    const ForwardOpts *o = P->o;
    const MoeConfig *c = &m->cfg;
    const int N = b->N, D = c->hidden_size, H = c->num_attention_heads, Hkv = c->num_key_value_heads,
              hd = c->head_dim;
    const int Hq = H * hd, Hk = Hkv * hd;
    LayerActs *la = pass_layer(P, l);
    const LayerParams *p = &m->w.layer[l];
    float *x = P->x;
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
    if (o->cache) attention_forward(la->att, la->lse, la->q, K, Vv, b->kv_lo, P->kv_hi, N, H, Hkv, hd, hd, 1.0f / sqrtf((float)hd));
    else attention_forward_train(la->att, la->lse, la->q, K, Vv, b->kv_lo, N, H, Hkv, hd, hd, 1.0f / sqrtf((float)hd));
    prof_end(PROF_ATTN, false, t, 4.0 * P->pairs * H * hd);
    moe_progress();
    t = prof_begin();
    memcpy(la->h, x, sizeof(float) * (size_t)N * D);
    linear_forward(la->h, la->att, p->wo, N, Hq, D, true);
    prof_end(PROF_OPROJ, false, t, 2.0 * N * Hq * D);
}

// dh (the gradient at h, the FFN's part added) -> dx, and the attention block's weight
// gradients; the input norm's input xn1 recomputed here when it was not kept
void blk_attention_backward(Pass *P, int l) {
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
    const float bw = P->gset ? 0.0f : 1.0f;
    if (P->gset) memset(gp->in_norm, 0, sizeof(float) * D);
    double t;
    // h = x + att Wo^T
    t = prof_begin();
    linear_backward_beta(a->datt, gp->wo, dh, la->att, p->wo, N, Hq, D, 0.0f, bw);
    prof_end(PROF_OPROJ, true, t, 4.0 * N * Hq * D);
    moe_progress();
    t = prof_begin();
    attention_backward_train(a->dq, a->dk, a->dv, a->datt, la->q, la->k, la->v, la->att, la->lse, b->kv_lo, N,
                             H, Hkv, hd, hd, 1.0f / sqrtf((float)hd));
    if (acts_storage(a, SAVE_NORM_OUT) == STORE_RECOMPUTE) {
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
}


static int attention_saved(const MoeConfig *c, int l, SavedDecl *out) {
    (void)l;
    const int D = c->hidden_size, Hq = c->num_attention_heads * c->head_dim, Hk = c->num_key_value_heads * c->head_dim;
    int n = 0;
    out[n++] = SAVED(SAVE_RESIDUAL, x, D);
    out[n++] = SAVED(SAVE_ACT, q, Hq);
    out[n++] = SAVED(SAVE_ACT, k, Hk);
    out[n++] = SAVED(SAVE_ACT, v, Hk);
    out[n++] = SAVED(SAVE_ACT, att, Hq);
    out[n++] = SAVED(SAVE_SUM, h, D);
    out[n++] = SAVED(SAVE_NORM_OUT, xn1, D);
    return n;
}

const BlockKind BLOCK_ATTENTION = {"attention", attention_tensors, attention_saved};
