// The stack's two ends: the token embedding, and the final norm with the output head (the
// embedding itself when tied).
#include <stdio.h>
#include <string.h>
#include "../base/base.h"
#include "../base/prof.h"
#include "../kernels/gemm.h"
#include "../kernels/simd.h"
#include "pass.h"

static void embedding_tensors(Layout *lo, const MoeConfig *c, int l, const ExpertShard *sh, ParamViews *v) {
    (void)l; (void)sh;
    layout_tensor(lo, "model.embed_tokens.weight", c->vocab_size, c->hidden_size, (TensorRole){-1, -1, true, true, 0}, &v->embed);
}

static void head_tensors(Layout *lo, const MoeConfig *c, int l, const ExpertShard *sh, ParamViews *v) {
    (void)sh;
    layout_tensor(lo, "model.norm.weight", c->hidden_size, 0, role_norm(-1), &v->norm);
    // the head is a bucket of its own (layer L): its gradient is complete after the forward
    // pass, which computes it with the cross-entropy
    if (!c->tie_word_embeddings) layout_tensor(lo, "lm_head.weight", c->vocab_size, c->hidden_size, role_matrix(l), &v->head);
    else v->head = v->embed;
}

// positions checked, the embedding into the stream
int blk_embedding_forward(Pass *P) {
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
    if (P->o->mtp_k) {   // a module alone (inference): its stream at depth k - 1; its own embedding
        const int l = c->num_hidden_layers + P->o->mtp_k - 1;
        memcpy(pass_resid(a, l, N), P->o->mtp_h, sizeof(float) * (size_t)N * D);
        P->x = pass_resid(a, l, N);
        return MOE_OK;
    }
    if (a->M) mtp_prepare(P);
    P->x = pass_resid(a, P->l0, N);
    if (!P->first) return MOE_OK;   // a chunk above the first: its input is in the stream
    double t = prof_begin();
    embed_forward(P->x, b->tokens, m->w.embed, N, D);
    prof_end(PROF_EMBED, false, t, 0);
    return MOE_OK;
}

// One head over the stream x: its norm (weight nw), the output head over the rows that need
// logits only and the cross-entropy against targets tg (summed into *ce); training: the
// head's backward pass too, chunk by chunk (dlogits scaled by scale), the head's gradient
// written (first) or added, the rows' gradients left in a->dxt
static void head_pass(Pass *P, const float *x, const float *nw, const int *tg_all, float scale, double *ce, bool first) {
    Model *m = P->m;
    Acts *a = P->a;
    const ForwardOpts *o = P->o;
    const MoeConfig *c = &m->cfg;
    const int N = P->b->N, D = c->hidden_size, V = c->vocab_size;
    double t = prof_begin();
    rmsnorm_forward(a->xf, a->rstdf, x, nw, N, D, c->rms_norm_eps);
    prof_end(PROF_NORM, false, t, 0);
    if (o->train) {
        a->n_out = 0;
        for (int n = 0; n < N; n++)
            if (tg_all[n] >= 0) a->out_rows[a->n_out++] = n;
    }
    int Nt = a->n_out;
    for (int i = 0; i < Nt; i++) memcpy(a->xt + (size_t)i * D, a->xf + (size_t)a->out_rows[i] * D, sizeof(float) * D);
    int *tg = NULL, ok = tg_all != NULL;
    if (ok) {
        tg = MOE_NEW(int, Nt > 0 ? Nt : 1);
        for (int i = 0; i < Nt; i++) { tg[i] = tg_all[a->out_rows[i]]; ok &= tg[i] >= 0; }
    }
    if (!o->train) {   // all the logits at once: generation reads them
        t = prof_begin();
        linear_forward(a->logits, a->xt, m->w.head, Nt, D, V, false);
        prof_end(PROF_HEAD, false, t, 2.0 * Nt * D * V);
        t = prof_begin();
        if (ok) xent_forward_backward(a->logits, tg, Nt, V, 0.0f, ce);
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
            if (ok) xent_forward_backward(a->logits, tg + i0, nc, V, scale, ce);
            prof_end(PROF_XENT, false, t, 0);
            t = prof_begin();
            linear_backward_beta(a->dxt + (size_t)i0 * D, m->g.head, a->logits, xt, m->w.head, nc, D, V, 0.0f,
                                 P->gset && first && i0 == 0 ? 0.0f : 1.0f);
            prof_end(PROF_HEAD, true, t, 4.0 * nc * D * V);
            moe_progress();
        }
    }
    if (o->train && P->gset && first && Nt == 0) memset(m->g.head, 0, sizeof(float) * (size_t)V * D);   // no rows, no GEMM
    moe_free(tg);
}

// the gradient the head's rows left in a->dxt, through its norm (weight nw, gradient gw), into dx
static void head_norm_backward(Pass *P, float *dx, const float *x, const float *nw, float *gw) {
    Acts *a = P->a;
    const int N = P->b->N, D = P->m->cfg.hidden_size, Nt = a->n_out;
    const size_t ND = (size_t)N * D;
    float *dxf = a->dxn;
    memset(dxf, 0, sizeof(float) * ND);
    for (int i = 0; i < Nt; i++) memcpy(dxf + (size_t)a->out_rows[i] * D, a->dxt + (size_t)i * D, sizeof(float) * D);
    double t = prof_begin();
    memset(dx, 0, sizeof(float) * ND);
    if (P->gset) memset(gw, 0, sizeof(float) * D);
    rmsnorm_backward(dx, gw, dxf, x, nw, a->rstdf, N, D);
    prof_end(PROF_NORM, true, t, 0);
}

// the final norm, the output head and the cross-entropy (inference: over a->out_rows); in
// training with multi-token prediction then each module's head over its own stream, each
// head's gradient through its norm into a->dhead at once
int blk_head_forward(Pass *P) {
    Model *m = P->m;
    Acts *a = P->a;
    const MoeConfig *c = &m->cfg;
    const int N = P->b->N, L = c->num_hidden_layers, M = a->M;
    const int k = P->o->mtp_k;   // (inference: module k alone, through its own head's norm)
    moe_free(P->kv_hi);
    P->kv_hi = NULL;
    const float *x = pass_resid(a, L + k, N);
    if (P->o->stream_out) memcpy(P->o->stream_out, x, sizeof(float) * (size_t)N * c->hidden_size);
    head_pass(P, x, k ? m->w.layer[L + k - 1].mtp_norm : m->w.norm, P->b->targets, P->o->ce_scale, &P->out->ce_sum, true);
    if (M == 0) return MOE_OK;
    const size_t ND = (size_t)a->Nmax * c->hidden_size;
    head_norm_backward(P, a->dhead, pass_resid(a, L, N), m->w.norm, m->g.norm);
    P->out->mtp_ce_sum = 0;
    for (int k = 1; k <= M; k++) {
        const LayerParams *p = &m->w.layer[L + k - 1];
        const float *x = pass_resid(a, L + k, N);
        head_pass(P, x, p->mtp_norm, a->mtp_tgt + (size_t)(k - 1) * a->Nmax, P->o->mtp_scale, &P->out->mtp_ce_sum, false);
        head_norm_backward(P, a->dhead + k * ND, x, p->mtp_norm, m->g.layer[L + k - 1].mtp_norm);
    }
    return MOE_OK;
}

// a chunk below the top, backward: the stream's gradient is in a->dx already
void pass_chunk_dstream(Pass *P) {
    P->pairs = 0;
    for (int n = 0; n < P->b->N; n++) P->pairs += n - P->b->kv_lo[n] + 1;
}

// the head's backward pass ran with the forward pass (a->dxt, or with MTP a->dhead); the
// rest starts here
void blk_head_backward(Pass *P) {
    Model *m = P->m;
    Acts *a = P->a;
    const MoeConfig *c = &m->cfg;
    const int N = P->b->N, L = c->num_hidden_layers;
    pass_chunk_dstream(P);
    if (a->M) {   // the top module's head's gradient; the others join on the way down (blk_mtp.c)
        memcpy(a->dx, a->dhead + (size_t)a->M * a->Nmax * c->hidden_size, sizeof(float) * (size_t)N * c->hidden_size);
        return;
    }
    head_norm_backward(P, a->dx, pass_resid(a, L, N), m->w.norm, m->g.norm);
}

void blk_embedding_backward(Pass *P) {
    const MoeConfig *c = &P->m->cfg;
    // a tied embedding is the head's gradient, which the forward pass has written; with
    // multi-token prediction the top module's backward pass wrote it first
    if (P->gset && !c->tie_word_embeddings && c->num_mtp_layers == 0) memset(P->m->g.embed, 0, sizeof(float) * (size_t)c->vocab_size * c->hidden_size);
    double t = prof_begin();
    embed_backward(P->m->g.embed, P->a->dx, P->b->tokens, P->b->N, P->m->cfg.hidden_size);
    prof_end(PROF_EMBED, true, t, 0);
}

const BlockKind BLOCK_EMBEDDING = {"embedding", embedding_tensors, NULL};
const BlockKind BLOCK_HEAD = {"head", head_tensors, NULL};
