// The multi-head latent attention block (DeepSeek-V2/V3, Pangu Ultra MoE): h = x + Wo att,
// xn = rmsnorm(x), with
//   queries  q = Wqb rmsnorm(Wqa xn)  (q_lora_rank > 0), or q = Wq xn;  [H, nope | rope] per token
//   latent   c = (Wkva xn)[:kvr], kr = rope((Wkva xn)[kvr:])  (one RoPE key for every head)
//   keys     k_h = [(Wkvb rmsnorm(c))_h nope part | kr],  values v_h = (Wkvb rmsnorm(c))_h v part
// and softmax scale 1/sqrt(nope + rope), as the reference library computes it. Inference
// caches the normalised latent and the rotated RoPE key only (kvr + rope floats a token) and
// either expands them through Wkvb for the positions a forward pass reads, or absorbs Wkvb
// into the queries and the outputs (ops.h: mla_attention_absorbed), whichever costs less.
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "../base/base.h"
#include "../base/prof.h"
#include "../kernels/gemm.h"
#include "pass.h"

static void mla_tensors(Layout *lo, const MoeConfig *c, int l, const ExpertShard *sh, ParamViews *v) {
    (void)sh;
    const int D = c->hidden_size, H = c->num_attention_heads, qk = config_qk_dim(c), qr = c->q_lora_rank,
              kvr = c->kv_lora_rank;
    LayerParams *p = &v->layer[l];
    char nm[96];
#define T(suffix, d0, d1, role, view) do { snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix); \
        layout_tensor(lo, nm, d0, d1, role, view); } while (0)
    T("input_layernorm.weight", D, 0, role_norm(l), &p->in_norm);
    if (qr > 0) {
        T("self_attn.q_a_proj.weight", qr, D, role_matrix(l), &p->q_a);
        T("self_attn.q_a_layernorm.weight", qr, 0, role_norm(l), &p->q_a_norm);
        T("self_attn.q_b_proj.weight", H * qk, qr, role_matrix(l), &p->q_b);
    } else {
        T("self_attn.q_proj.weight", H * qk, D, role_matrix(l), &p->wq);
    }
    T("self_attn.kv_a_proj_with_mqa.weight", kvr + c->qk_rope_head_dim, D, role_matrix(l), &p->kv_a);
    T("self_attn.kv_a_layernorm.weight", kvr, 0, role_norm(l), &p->kv_a_norm);
    T("self_attn.kv_b_proj.weight", H * (c->qk_nope_head_dim + c->v_head_dim), kvr, role_matrix(l), &p->kv_b);
    T("self_attn.o_proj.weight", D, H * c->v_head_dim, role_matrix(l), &p->wo);
#undef T
    attn_post_norm_tensor(lo, c, l, p);
}

// DeepSeek-V3's latent norms keep RMSNorm's default eps (1e-6); Pangu's take rms_norm_eps
static float latent_eps(const MoeConfig *c) { return c->family == MOE_FAMILY_DEEPSEEK_V3 ? 1e-6f : c->rms_norm_eps; }

// kvb [S, H*(nope+v)] (per head: nope | v) and the RoPE keys kr [S, rope] -> k [S, H*qk], v [S, H*v]
static void mla_assemble(float *k, float *v, const float *kvb, const float *kr, int S, const MoeConfig *c) {
    const int H = c->num_attention_heads, nope = c->qk_nope_head_dim, rd = c->qk_rope_head_dim, vd = c->v_head_dim;
    const int qk = nope + rd, w = nope + vd;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < S; n++)
        for (int h = 0; h < H; h++) {
            const float *src = kvb + ((size_t)n * H + h) * w;
            float *kh = k + ((size_t)n * H + h) * qk;
            memcpy(kh, src, sizeof(float) * nope);
            memcpy(kh + nope, kr + (size_t)n * rd, sizeof(float) * rd);
            memcpy(v + ((size_t)n * H + h) * vd, src + nope, sizeof(float) * vd);
        }
}

// the expanded keys and values of cache slots [s0, s1) (inference)
static void mla_expand_cache(float *k, float *v, float *kvb, const float *cache, int s0, int s1, const float *Wkvb,
                             const MoeConfig *c) {
    const int kvr = c->kv_lora_rank, rd = c->qk_rope_head_dim, S = s1 - s0;
    const int H = c->num_attention_heads, w = c->qk_nope_head_dim + c->v_head_dim;
    const float *rows = cache + (size_t)s0 * (kvr + rd);
    // latent rows have the RoPE key after them: a strided GEMM over the slots
    gemm(false, true, S, H * w, kvr, 1.0f, rows, kvr + rd, Wkvb, kvr, 0.0f, kvb, H * w);
    float *kr = MOE_NEW(float, (size_t)S * rd + 1);
    for (int s = 0; s < S; s++) memcpy(kr + (size_t)s * rd, rows + (size_t)s * (kvr + rd) + kvr, sizeof(float) * rd);
    mla_assemble(k, v, kvb, kr, S, c);
    moe_free(kr);
}

// The absorbed form's multiply-adds are weighted by this against the expanded form's: its
// attention is GEMMs over all the heads of a token at once, the expanded form's the online
// softmax row by row, slower per multiply-add. Measured by bench/mla_decode.sh (RESULTS.md:
// 0.3 at 256 new tokens over 2048 cached, 0.1 for a 2048-token prefill), so that at
// DeepSeek's shapes (kvr 512, rope 64, nope and v 128) the absorbed form is always taken
#define MLA_ABSORBED_WEIGHT 0.3

// Whether a forward pass of N new tokens over cache slots [s0, s0 + S), with `pairs`
// (query, key) pairs, takes the absorbed form: the expanded form multiplies every slot read
// through kv_b, then attends at width qk + vd a pair and head; the absorbed form multiplies
// each new token through kv_b's halves, then attends at width 2 kvr + rope
static bool mla_absorbed(const MoeConfig *c, int form, int N, int S, double pairs) {
    if (form != MLA_FORM_AUTO) return form == MLA_FORM_ABSORBED;
    const double H = c->num_attention_heads, kvr = c->kv_lora_rank, rd = c->qk_rope_head_dim,
                 w = c->qk_nope_head_dim + c->v_head_dim, qk = config_qk_dim(c), vd = c->v_head_dim;
    const double expanded = S * H * w * kvr + pairs * H * (qk + vd), absorbed = N * H * w * kvr + pairs * H * (2 * kvr + rd);
    return MLA_ABSORBED_WEIGHT * absorbed < expanded;
}

void blk_mla_forward(Pass *P, int l) {
    Model *m = P->m;
    const Batch *b = P->b;
    const ForwardOpts *o = P->o;
    const MoeConfig *c = &m->cfg;
    const int N = b->N, D = c->hidden_size, H = c->num_attention_heads, qr = c->q_lora_rank, kvr = c->kv_lora_rank,
              rd = c->qk_rope_head_dim, nope = c->qk_nope_head_dim, vd = c->v_head_dim, qk = nope + rd;
    LayerActs *la = pass_layer(P, l);
    const LayerParams *p = &m->w.layer[l];
    la->x = P->x;
    float *cl = la->ckv, *kr = la->ckv + (size_t)N * kvr;   // the latent, then the RoPE keys
    double t = prof_begin();
    rmsnorm_forward(la->xn1, la->rstd1, la->x, p->in_norm, N, D, c->rms_norm_eps);
    prof_end(PROF_NORM, false, t, 0);
    t = prof_begin();
    if (qr > 0) {
        linear_forward(la->cq, la->xn1, p->q_a, N, D, qr, false);
        rmsnorm_forward(la->cqn, la->rstd_cq, la->cq, p->q_a_norm, N, qr, latent_eps(c));
        linear_forward(la->q, la->cqn, p->q_b, N, qr, H * qk, false);
    } else {
        linear_forward(la->q, la->xn1, p->wq, N, D, H * qk, false);
    }
    linear_forward(cl, la->xn1, p->kv_a, N, D, kvr, false);
    linear_forward(kr, la->xn1, p->kv_a + (size_t)kvr * D, N, D, rd, false);
    rmsnorm_forward(la->ckvn, la->rstd_ckv, cl, p->kv_a_norm, N, kvr, latent_eps(c));
    prof_end(PROF_QKV, false, t, 2.0 * N * ((qr > 0 ? (double)D * qr + (double)qr * H * qk : (double)D * H * qk) +
                                            (double)D * (kvr + rd)));
    moe_progress();
    t = prof_begin();
    rope_forward_part(la->q, b->pos, &m->rope, N, H, qk, nope);
    rope_forward_part(kr, b->pos, &m->rope, N, 1, rd, 0);
    prof_end(PROF_ROPE, false, t, 0);
    const float scale = config_attn_scale(c);
    t = prof_begin();
    double flops = 2.0 * P->pairs * H * (qk + vd);
    if (!o->cache) {
        linear_forward(P->a->kvb, la->ckvn, p->kv_b, N, kvr, H * (nope + vd), false);
        mla_assemble(la->k, la->v, P->a->kvb, kr, N, c);
        attention_forward_train(la->att, la->lse, la->q, la->k, la->v, b->kv_lo, N, H, H, qk, vd, scale);
    } else {   // the new latents to their slots; the slots read expanded through Wkvb, or kv_b absorbed
        float *cache = o->cache->k[l];
        int s0 = b->kv_lo[0], s1 = 0;
        for (int n = 0; n < N; n++) {
            memcpy(cache + (size_t)o->slot[n] * (kvr + rd), la->ckvn + (size_t)n * kvr, sizeof(float) * kvr);
            memcpy(cache + (size_t)o->slot[n] * (kvr + rd) + kvr, kr + (size_t)n * rd, sizeof(float) * rd);
            s0 = imin(s0, b->kv_lo[n]);
            s1 = imax(s1, P->kv_hi[n] + 1);
        }
        const int S = s1 - s0;
        if (mla_absorbed(c, o->mla_form, N, S, P->pairs)) {
            mla_attention_absorbed(la->att, la->lse, la->q, cache, p->kv_b, b->kv_lo, P->kv_hi, N, H, nope, rd, vd, kvr, scale);
            flops = 2.0 * N * H * (nope + vd) * kvr + 2.0 * P->pairs * H * (2 * kvr + rd);
        } else {
            float *K = MOE_NEW(float, (size_t)S * H * qk), *V = MOE_NEW(float, (size_t)S * H * vd),
                  *kvb = MOE_NEW(float, (size_t)S * H * (nope + vd));
            mla_expand_cache(K, V, kvb, cache, s0, s1, p->kv_b, c);
            int *lo = MOE_NEW(int, N), *hi = MOE_NEW(int, N);
            for (int n = 0; n < N; n++) { lo[n] = b->kv_lo[n] - s0; hi[n] = P->kv_hi[n] - s0; }
            attention_forward(la->att, la->lse, la->q, K, V, lo, hi, N, H, H, qk, vd, scale);
            moe_free(lo); moe_free(hi); moe_free(K); moe_free(V); moe_free(kvb);
            flops += 2.0 * S * H * (nope + vd) * kvr;
        }
    }
    prof_end(PROF_ATTN, false, t, flops);
    moe_progress();
    attn_output_forward(P, l, la->att, H * vd);
}

// dh -> dx, and the block's weight gradients
void blk_mla_backward(Pass *P, int l) {
    Model *m = P->m;
    Acts *a = P->a;
    const Batch *b = P->b;
    const MoeConfig *c = &m->cfg;
    const int N = b->N, D = c->hidden_size, H = c->num_attention_heads, qr = c->q_lora_rank, kvr = c->kv_lora_rank,
              rd = c->qk_rope_head_dim, nope = c->qk_nope_head_dim, vd = c->v_head_dim, qk = nope + rd, w = nope + vd;
    LayerActs *la = &a->layer[l];
    const LayerParams *p = &m->w.layer[l];
    LayerParams *gp = &m->g.layer[l];
    const float bw = P->gset ? 0.0f : 1.0f;
    if (P->gset) {
        memset(gp->in_norm, 0, sizeof(float) * D);
        memset(gp->kv_a_norm, 0, sizeof(float) * kvr);
        if (qr > 0) memset(gp->q_a_norm, 0, sizeof(float) * qr);
    }
    // the gradients of the latents, in a->dmla
    float *dcq = a->dmla, *dcqn = dcq + (size_t)N * qr, *dc = dcqn + (size_t)N * qr, *dkr = dc + (size_t)N * kvr,
          *dckvn = dkr + (size_t)N * rd, *dkvb = dckvn + (size_t)N * kvr;
    attn_output_backward(P, l, la->att, H * vd);
    if (acts_storage(a, SAVE_KV_EXPANDED) == STORE_RECOMPUTE) {   // the keys and values from the latent again
        double tr = prof_begin();
        linear_forward(a->kvb, la->ckvn, p->kv_b, N, kvr, H * w, false);
        mla_assemble(la->k, la->v, a->kvb, la->ckv + (size_t)N * kvr, N, c);
        prof_end(PROF_RECOMPUTE, true, tr, 2.0 * N * kvr * H * w);
    }
    double t = prof_begin();
    attention_backward_train(a->dq, a->dk, a->dv, a->datt, la->q, la->k, la->v, la->att, la->lse, b->kv_lo, N, H, H,
                             qk, vd, config_attn_scale(c));
    if (acts_storage(a, SAVE_NORM_OUT) == STORE_RECOMPUTE) {
        double tr = prof_begin();
        rmsnorm_forward(la->xn1, NULL, la->x, p->in_norm, N, D, c->rms_norm_eps);
        prof_end(PROF_RECOMPUTE, true, tr, 0);
    }
    prof_end(PROF_ATTN, true, t, 4.0 * P->pairs * H * (qk + vd));
    moe_progress();
    // the keys' RoPE part is one vector shared by the heads: its gradient sums theirs
    t = prof_begin();
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *d = dkr + (size_t)n * rd;
        memset(d, 0, sizeof(float) * rd);
        for (int h = 0; h < H; h++) {
            const float *dk = a->dk + ((size_t)n * H + h) * qk;
            for (int i = 0; i < rd; i++) d[i] += dk[nope + i];
            memcpy(dkvb + ((size_t)n * H + h) * w, dk, sizeof(float) * nope);
            memcpy(dkvb + ((size_t)n * H + h) * w + nope, a->dv + ((size_t)n * H + h) * vd, sizeof(float) * vd);
        }
    }
    rope_backward_part(a->dq, b->pos, &m->rope, N, H, qk, nope);
    rope_backward_part(dkr, b->pos, &m->rope, N, 1, rd, 0);
    prof_end(PROF_ROPE, true, t, 0);
    t = prof_begin();
    float *dxn = a->dxn;
    // keys and values: kv_b, the latent's norm, kv_a (latent rows, then the RoPE key's)
    linear_backward_beta(dckvn, gp->kv_b, dkvb, la->ckvn, p->kv_b, N, kvr, H * w, 0.0f, bw);
    memset(dc, 0, sizeof(float) * (size_t)N * kvr);
    rmsnorm_backward(dc, gp->kv_a_norm, dckvn, la->ckv, p->kv_a_norm, la->rstd_ckv, N, kvr);
    linear_backward_beta(dxn, gp->kv_a, dc, la->xn1, p->kv_a, N, D, kvr, 0.0f, bw);
    linear_backward_beta(dxn, gp->kv_a + (size_t)kvr * D, dkr, la->xn1, p->kv_a + (size_t)kvr * D, N, D, rd, 1.0f, bw);
    // queries
    if (qr > 0) {
        linear_backward_beta(dcqn, gp->q_b, a->dq, la->cqn, p->q_b, N, qr, H * qk, 0.0f, bw);
        memset(dcq, 0, sizeof(float) * (size_t)N * qr);
        rmsnorm_backward(dcq, gp->q_a_norm, dcqn, la->cq, p->q_a_norm, la->rstd_cq, N, qr);
        linear_backward_beta(dxn, gp->q_a, dcq, la->xn1, p->q_a, N, D, qr, 1.0f, bw);
    } else {
        linear_backward_beta(dxn, gp->wq, a->dq, la->xn1, p->wq, N, D, H * qk, 1.0f, bw);
    }
    prof_end(PROF_QKV, true, t, 4.0 * N * ((qr > 0 ? (double)D * qr + (double)qr * H * qk : (double)D * H * qk) +
                                           (double)D * (kvr + rd) + (double)kvr * H * w));
    moe_progress();
    t = prof_begin();
    memcpy(a->dx, a->dh, sizeof(float) * (size_t)N * D);
    rmsnorm_backward(a->dx, gp->in_norm, dxn, la->x, p->in_norm, la->rstd1, N, D);
    prof_end(PROF_NORM, true, t, 0);
}

static int mla_saved(const MoeConfig *c, int l, SavedDecl *out) {
    (void)l;
    const int D = c->hidden_size, H = c->num_attention_heads, qk = config_qk_dim(c), vd = c->v_head_dim;
    int n = 0;
    out[n++] = SAVED(SAVE_RESIDUAL, x, D);
    out[n++] = SAVED(SAVE_ACT, q, H * qk);
    out[n++] = SAVED(SAVE_KV_EXPANDED, k, H * qk);
    out[n++] = SAVED(SAVE_KV_EXPANDED, v, H * vd);
    out[n++] = SAVED(SAVE_ACT, att, H * vd);
    out[n++] = SAVED(SAVE_SUM, h, D);
    out[n++] = SAVED(SAVE_NORM_OUT, xn1, D);
    if (c->q_lora_rank > 0) { out[n++] = SAVED(SAVE_ACT, cq, c->q_lora_rank); out[n++] = SAVED(SAVE_ACT, cqn, c->q_lora_rank); }
    out[n++] = SAVED(SAVE_ACT, ckv, c->kv_lora_rank + c->qk_rope_head_dim);
    out[n++] = SAVED(SAVE_ACT, ckvn, c->kv_lora_rank);
    if (c->sandwich_norm) out[n++] = SAVED(SAVE_ACT, ao, D);
    return n;
}

const BlockKind BLOCK_MLA = {"mla", mla_tensors, mla_saved};
