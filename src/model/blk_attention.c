// The attention block: h = x + Wo attention(rope(Wq xn), rope(Wk xn), Wv xn), xn = rmsnorm(x)
// (grouped-query attention, pre-norm); config-selected pieces: q/k norm (Qwen3: RMSNorm of
// each head's q and k before RoPE), and the sandwich norm's post-norm h = x + rmsnorm(Wo att),
// which the MLA block (blk_mla.c) shares through attn_output_forward/backward.
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
    if (c->qk_norm) {
        T("self_attn.q_norm.weight", c->head_dim, 0, role_norm(l), &p->q_norm);
        T("self_attn.k_norm.weight", c->head_dim, 0, role_norm(l), &p->k_norm);
    }
#undef T
    attn_post_norm_tensor(lo, c, l, p);
}

void kv_cache_widths(const MoeConfig *c, int *wk, int *wv) {
    if (config_is_mla(c)) { *wk = c->kv_lora_rank + c->qk_rope_head_dim; *wv = 0; }
    else *wk = *wv = c->num_key_value_heads * c->head_dim;
}

// the sandwich norm's post-attention norm, initialised to c_attn / sqrt(L) (Pangu Ultra's DSSN)
void attn_post_norm_tensor(Layout *lo, const MoeConfig *c, int l, LayerParams *p) {
    if (!c->sandwich_norm) return;
    char nm[96];
    snprintf(nm, sizeof nm, "model.layers.%d.post_attention_layernorm.weight", l);
    layout_tensor(lo, nm, c->hidden_size, 0, role_gain(l, 0.283f / sqrtf((float)c->num_hidden_layers)), &p->attn_post_norm);
}

// h = x + att Wo^T, or under the sandwich norm h = x + rmsnorm(att Wo^T)
void attn_output_forward(Pass *P, int l, const float *att, int width) {
    const MoeConfig *c = &P->m->cfg;
    const int N = P->b->N, D = c->hidden_size;
    LayerActs *la = pass_layer(P, l);
    const LayerParams *p = &P->m->w.layer[l];
    double t = prof_begin();
    memcpy(la->h, la->x, sizeof(float) * (size_t)N * D);
    if (!c->sandwich_norm) linear_forward(la->h, att, p->wo, N, width, D, true);
    else linear_forward(la->ao, att, p->wo, N, width, D, false);
    prof_end(PROF_OPROJ, false, t, 2.0 * N * width * D);
    if (c->sandwich_norm) sandwich_add(P->a->tmp, la->h, la->ao, la->rstd_ao, p->attn_post_norm, N, D, c->rms_norm_eps);
}

// out += rmsnorm(y, w) (tmp: [N,D] scratch)
void sandwich_add(float *tmp, float *out, const float *y, float *rstd, const float *w, int N, int D, float eps) {
    double t = prof_begin();
    rmsnorm_forward(tmp, rstd, y, w, N, D, eps);
    const size_t n = (size_t)N * D;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] += tmp[i];
    prof_end(PROF_NORM, false, t, 0);
}

// dout -> the gradient at the sandwich norm's input (written to dy), and its gain's
void sandwich_backward(float *dy, float *dw, const float *dout, const float *y, const float *w, const float *rstd,
                       int N, int D, bool gset) {
    double t = prof_begin();
    memset(dy, 0, sizeof(float) * (size_t)N * D);
    if (gset) memset(dw, 0, sizeof(float) * D);
    rmsnorm_backward(dy, dw, dout, y, w, rstd, N, D);
    prof_end(PROF_NORM, true, t, 0);
}

// dh -> a->datt, and Wo's gradient (and the post-norm's)
void attn_output_backward(Pass *P, int l, const float *att, int width) {
    const MoeConfig *c = &P->m->cfg;
    const int N = P->b->N, D = c->hidden_size;
    Acts *a = P->a;
    LayerActs *la = &a->layer[l];
    const LayerParams *p = &P->m->w.layer[l];
    LayerParams *gp = &P->m->g.layer[l];
    const float *dout = a->dh;
    if (c->sandwich_norm) {
        sandwich_backward(a->tmp, gp->attn_post_norm, a->dh, la->ao, p->attn_post_norm, la->rstd_ao, N, D, P->gset);
        dout = a->tmp;
    }
    double t = prof_begin();
    linear_backward_beta(a->datt, gp->wo, dout, att, p->wo, N, width, D, 0.0f, P->gset ? 0.0f : 1.0f);
    prof_end(PROF_OPROJ, true, t, 4.0 * N * width * D);
    moe_progress();
}

// q/k norm (Qwen3): each head's q and k normalised over its hd values before RoPE
static void qk_norm_forward(Pass *P, int l) {
    const MoeConfig *c = &P->m->cfg;
    const int N = P->b->N, H = c->num_attention_heads, Hkv = c->num_key_value_heads, hd = c->head_dim;
    LayerActs *la = pass_layer(P, l);
    const LayerParams *p = &P->m->w.layer[l];
    double t = prof_begin();
    memcpy(la->qr, la->q, sizeof(float) * (size_t)N * H * hd);
    memcpy(la->kr, la->k, sizeof(float) * (size_t)N * Hkv * hd);
    rmsnorm_forward(la->q, la->rstd_q, la->qr, p->q_norm, N * H, hd, c->rms_norm_eps);
    rmsnorm_forward(la->k, la->rstd_k, la->kr, p->k_norm, N * Hkv, hd, c->rms_norm_eps);
    prof_end(PROF_NORM, false, t, 0);
}
static void qk_norm_backward(Pass *P, int l) {
    const MoeConfig *c = &P->m->cfg;
    Acts *a = P->a;
    const int N = P->b->N, H = c->num_attention_heads, Hkv = c->num_key_value_heads, hd = c->head_dim;
    LayerActs *la = &a->layer[l];
    const LayerParams *p = &P->m->w.layer[l];
    LayerParams *gp = &P->m->g.layer[l];
    double t = prof_begin();
    // the norms' input gradients, through scratch the size of dq (datt: read already)
    sandwich_backward(a->datt, gp->q_norm, a->dq, la->qr, p->q_norm, la->rstd_q, N * H, hd, P->gset);
    memcpy(a->dq, a->datt, sizeof(float) * (size_t)N * H * hd);
    sandwich_backward(a->datt, gp->k_norm, a->dk, la->kr, p->k_norm, la->rstd_k, N * Hkv, hd, P->gset);
    memcpy(a->dk, a->datt, sizeof(float) * (size_t)N * Hkv * hd);
    prof_end(PROF_NORM, true, t, 0);
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
    if (c->qk_norm) qk_norm_forward(P, l);
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
    if (o->cache) attention_forward(la->att, la->lse, la->q, K, Vv, b->kv_lo, P->kv_hi, N, H, Hkv, hd, hd, config_attn_scale(c));
    else attention_forward_train(la->att, la->lse, la->q, K, Vv, b->kv_lo, N, H, Hkv, hd, hd, config_attn_scale(c));
    prof_end(PROF_ATTN, false, t, 4.0 * P->pairs * H * hd);
    moe_progress();
    attn_output_forward(P, l, la->att, Hq);
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
    attn_output_backward(P, l, la->att, Hq);   // h = x + att Wo^T
    t = prof_begin();
    attention_backward_train(a->dq, a->dk, a->dv, a->datt, la->q, la->k, la->v, la->att, la->lse, b->kv_lo, N,
                             H, Hkv, hd, hd, config_attn_scale(c));
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
    if (c->qk_norm) qk_norm_backward(P, l);
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
    if (c->qk_norm) { out[n++] = SAVED(SAVE_ACT, qr, Hq); out[n++] = SAVED(SAVE_ACT, kr, Hk); }
    if (c->sandwich_norm) out[n++] = SAVED(SAVE_ACT, ao, D);
    return n;
}

const BlockKind BLOCK_ATTENTION = {"attention", attention_tensors, attention_saved};
