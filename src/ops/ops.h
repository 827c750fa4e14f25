// Dense ops of moe_v1: forward, backward (accumulating: +=, except where noted) and a
// naive _ref twin the tests treat as ground truth. N tokens, D hidden, V vocab.
#pragma once
#include <stdbool.h>

// out[N,D] = table[tokens[n]] ; dtable[tokens[n]] += dout[n]
void embed_forward(float *out, const int *tokens, const float *table, int N, int D);
void embed_backward(float *dtable, const float *dout, const int *tokens, int N, int D);

// out = x / sqrt(mean(x^2) + eps) * w ; rstd[N] saved for the backward pass
void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int D, float eps);
// dx += ..., dw += ...
void rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                      const float *rstd, int N, int D);
void rmsnorm_forward_ref(float *out, float *rstd, const float *x, const float *w, int N, int D, float eps);
void rmsnorm_backward_ref(float *dx, float *dw, const float *dout, const float *x, const float *w,
                          const float *rstd, int N, int D);

// RoPE, rotate-half: pairs (i, i+hd/2), angle pos * theta^(-2i/hd); or interleaved: pairs
// (2i, 2i+1) at the same angles (DeepSeek-V3's layout: the reference library de-interleaves,
// rotates half and leaves the result de-interleaved, a permutation that q.k does not see). In
// place on x[N, nh*hd]. The backward pass rotates the gradient by -angle (the transpose).
typedef struct { int max_pos, half; bool interleave; float *cos, *sin; } RopeTable;   // [max_pos, hd/2]
void rope_table_init(RopeTable *t, int max_pos, int hd, float theta, bool interleave);
// YaRN context extension: frequencies ramped between theta's and theta's / factor over the
// dimensions that rotate between beta_fast and beta_slow times in orig_max positions;
// cos and sin scaled by attn_factor
void rope_table_init_yarn(RopeTable *t, int max_pos, int hd, float theta, bool interleave, float factor, int orig_max,
                          float beta_fast, float beta_slow, float attn_factor);
void rope_table_free(RopeTable *t);
void rope_forward(float *x, const int *pos, const RopeTable *t, int N, int nh, int hd);
void rope_backward(float *dx, const int *pos, const RopeTable *t, int N, int nh, int hd);
// the same on the rotated part of each head: hd = 2 * half values at h * stride + off of a row
void rope_forward_part(float *x, const int *pos, const RopeTable *t, int N, int nh, int stride, int off);
void rope_backward_part(float *dx, const int *pos, const RopeTable *t, int N, int nh, int stride, int off);
// (interleave: the output in the interleaved positions, as rope_forward leaves it)
void rope_forward_ref(float *x, const int *pos, int N, int nh, int hd, float theta, bool interleave);

// Causal grouped-query attention over a key/value buffer: query n (head h) reads keys
// kv_lo[n] .. kv_hi[n] (inclusive) of kv head h / (H/Hkv), with probabilities
// softmax(scale * q.k) over them. The query/key head dim hd_qk and the value head dim hd_v
// may differ (MLA: hd_qk = qk_nope_head_dim + qk_rope_head_dim, 192, hd_v 128); the caller
// gives the scale (1/sqrt(hd_qk), times yarn's mscale^2 under rope scaling).
// q [N, H*hd_qk], k [S, Hkv*hd_qk], v [S, Hkv*hd_v], out [N, H*hd_v]; hd_v <= ATT_HD_V_MAX.
// Online softmax in one pass over the keys: memory O(1) per row, no T x T buffer.
// lse[N,H] (log-sum-exp of the scaled scores) is saved for the backward pass (may be NULL).
#define ATT_HD_V_MAX 512
void attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                       const int *kv_lo, const int *kv_hi, int N, int H, int Hkv, int hd_qk, int hd_v,
                       float scale);
// Training layout (the keys are the tokens themselves, kv_hi[n] = n, each example
// contiguous): the same computation in tiles of 64 x 64 whose products are small GEMMs
// (flash-attention 2 style), and its backward pass, which recomputes the probabilities
// from lse instead of storing them. dq [N, H*hd_qk], dk [N, Hkv*hd_qk], dv [N, Hkv*hd_v]
// are overwritten.
void attention_forward_train(float *out, float *lse, const float *q, const float *k, const float *v,
                             const int *kv_lo, int N, int H, int Hkv, int hd_qk, int hd_v, float scale);
void attention_backward_train(float *dq, float *dk, float *dv, const float *dout, const float *q,
                              const float *k, const float *v, const float *out, const float *lse,
                              const int *kv_lo, int N, int H, int Hkv, int hd_qk, int hd_v, float scale);
void attention_forward_ref(float *out, float *lse, const float *q, const float *k, const float *v,
                           const int *kv_lo, const int *kv_hi, int N, int H, int Hkv, int hd_qk, int hd_v,
                           float scale);
void attention_backward_ref(float *dq, float *dk, float *dv, const float *dout, const float *q,
                            const float *k, const float *v, const int *kv_lo, int N, int H, int Hkv,
                            int hd_qk, int hd_v, float scale);

// Multi-head latent attention in its absorbed form (DeepSeek-V2 §2.1.2; inference over a
// cache of latents). Every head reads the same cached rows [c | kr] (latent kvr, RoPE key
// rope); head h's key is [Wk_h c | kr] and its value Wv_h c, where Wkvb [H*(nope+vd), kvr]
// holds per head the nope rows of Wk_h, then the vd rows of Wv_h. Instead of expanding every
// row, the up-projections move to the query and the output:
//   q~_h = [Wk_h^T q_nope_h | q_rope_h],  p = softmax(scale * q~_h . [c_s | kr_s]),
//   o~_h = sum_s p_s c_s,  out_h = Wv_h o~_h
// (MQA over one shared head of width kvr + rope). q [N, H*(nope+rope)], cache [S, kvr+rope],
// out [N, H*vd], lse [N,H] (may be NULL); query n reads rows kv_lo[n]..kv_hi[n].
void mla_attention_absorbed(float *out, float *lse, const float *q, const float *cache, const float *Wkvb,
                            const int *kv_lo, const int *kv_hi, int N, int H, int nope, int rope, int vd,
                            int kvr, float scale);
void mla_attention_absorbed_ref(float *out, float *lse, const float *q, const float *cache, const float *Wkvb,
                                const int *kv_lo, const int *kv_hi, int N, int H, int nope, int rope, int vd,
                                int kvr, float scale);

// SwiGLU over rows of a fused gate/up product gu[N, 2F] (gate in columns [0,F), up in
// [F,2F)): a[N,F] = silu(g) * u; the backward pass writes dgu[N,2F] from da[N,F].
void swiglu_rows_forward(float *a, const float *gu, int N, int F);
void swiglu_rows_backward(float *dgu, const float *da, const float *gu, int N, int F);

// Fused softmax cross-entropy over rows of logits[Nt,V]: adds the summed loss to *loss_sum
// and, when scale != 0, overwrites logits with dlogits = (softmax - onehot) * scale.
void xent_forward_backward(float *logits, const int *targets, int Nt, int V, float scale,
                           double *loss_sum);
void xent_ref(float *dlogits, const float *logits, const int *targets, int Nt, int V, float scale,
              double *loss_sum);
// naive SwiGLU on separate g and u arrays: a = silu(g) * u, and its backward
void swiglu_forward_ref(float *a, const float *g, const float *u, long n);
void swiglu_backward_ref(float *dg, float *du, const float *da, const float *g, const float *u, long n);
void embed_backward_ref(float *dtable, const float *dout, const int *tokens, int N, int D);
