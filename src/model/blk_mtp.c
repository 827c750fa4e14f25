// Multi-token prediction (DeepSeek-V3, Pangu Ultra MoE): module k (1..M) is layer L + k - 1,
// whose input combines the stream at depth k - 1 (the stack's output for k = 1) with the
// embedding of the token k positions ahead,
//   x_in = eh_proj [rmsnorm(emb(t_{i+k}), enorm) ; rmsnorm(h_i, hnorm)],
// then runs one transformer layer (this layer's attention and FFN blocks), and predicts
// t_{i+k+1} through the shared output head after its own norm (shared_head.norm). Its loss is
// the cross-entropy over the targets the main loss has, divided by the main loss's target
// count as DeepSeek-V3 does, averaged over the modules and weighted by mtp_loss_weight.
#include <stdio.h>
#include <string.h>
#include "../base/base.h"
#include "../base/prof.h"
#include "../kernels/gemm.h"
#include "pass.h"

static void mtp_tensors(Layout *lo, const MoeConfig *c, int l, const ExpertShard *sh, ParamViews *v) {
    (void)sh;
    const int D = c->hidden_size;
    LayerParams *p = &v->layer[l];
    char nm[96];
#define T(suffix, d0, d1, role, view) do { snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix); \
        layout_tensor(lo, nm, d0, d1, role, view); } while (0)
    T("enorm.weight", D, 0, role_norm(l), &p->mtp_enorm);
    T("hnorm.weight", D, 0, role_norm(l), &p->mtp_hnorm);
    T("eh_proj.weight", D, 2 * D, role_matrix(l), &p->mtp_eh);
    T("shared_head.norm.weight", D, 0, role_norm(l), &p->mtp_norm);
#undef T
}

static int mtp_saved(const MoeConfig *c, int l, SavedDecl *out) {
    (void)l;
    out[0] = SAVED(SAVE_ACT, mtp_cat, 2 * c->hidden_size);
    return 1;
}

const BlockKind BLOCK_MTP = {"mtp", mtp_tensors, mtp_saved};

// each module's input tokens (t_{i+k}) and targets (t_{i+k+1} where the main loss has one at
// i + k), for the batch's examples (packed: an example's tokens share kv_lo)
void mtp_prepare(Pass *P) {
    const Batch *b = P->b;
    Acts *a = P->a;
    const int N = b->N, M = P->m->cfg.num_mtp_layers;
    for (int k = 1; k <= M; k++) {
        int *tok = a->mtp_tok + (size_t)(k - 1) * a->Nmax, *tgt = a->mtp_tgt + (size_t)(k - 1) * a->Nmax;
        for (int n = 0; n < N; n++) {
            const int j = n + k;
            const bool in = j < N && b->kv_lo[j] == b->kv_lo[n];
            const bool last = !in && j - 1 < N && b->kv_lo[j - 1] == b->kv_lo[n];   // j - 1 ends the example
            tok[n] = in ? b->tokens[j] : last && b->targets && b->targets[j - 1] >= 0 ? b->targets[j - 1] : 0;
            tgt[n] = in && b->targets ? b->targets[j] : -1;
        }
    }
}

// rows[n] = [a[n] | b[n]] (and back)
static void cat_rows(float *rows, const float *x, int N, int D, int off) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) memcpy(rows + (size_t)n * 2 * D + off, x + (size_t)n * D, sizeof(float) * D);
}
static void uncat_rows(float *x, const float *rows, int N, int D, int off) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) memcpy(x + (size_t)n * D, rows + (size_t)n * 2 * D + off, sizeof(float) * D);
}

// layer l = L + k - 1: its input from the stream at l (depth k - 1) and the tokens k ahead
void blk_mtp_forward(Pass *P, int l) {
    Model *m = P->m;
    Acts *a = P->a;
    const MoeConfig *c = &m->cfg;
    const int N = P->b->N, D = c->hidden_size, k = l - c->num_hidden_layers + 1;
    LayerActs *la = pass_layer(P, l);
    const LayerParams *p = &m->w.layer[l];
    double t = prof_begin();
    // (inference runs a module alone: its tokens are the batch's, ForwardOpts.mtp_k)
    embed_forward(a->xf, a->train ? a->mtp_tok + (size_t)(k - 1) * a->Nmax : P->b->tokens, m->w.embed, N, D);
    rmsnorm_forward(a->xt, la->rstd_e, a->xf, p->mtp_enorm, N, D, c->rms_norm_eps);
    cat_rows(la->mtp_cat, a->xt, N, D, 0);
    rmsnorm_forward(a->xt, la->rstd_hp, pass_resid(a, l, N), p->mtp_hnorm, N, D, c->rms_norm_eps);
    cat_rows(la->mtp_cat, a->xt, N, D, D);
    linear_forward(la->mtp_in, la->mtp_cat, p->mtp_eh, N, 2 * D, D, false);
    prof_end(PROF_MTP, false, t, 2.0 * N * 2 * D * D);
    P->x = la->mtp_in;
}

// a->dx, the gradient at the module's input x_in, becomes the gradient at the stream at l
// (through hnorm) plus what the head at depth l - L gave it; the embedding's gradient gets
// the tokens' share (through enorm)
void blk_mtp_backward(Pass *P, int l) {
    Model *m = P->m;
    Acts *a = P->a;
    const MoeConfig *c = &m->cfg;
    const int N = P->b->N, D = c->hidden_size, L = c->num_hidden_layers, k = l - L + 1;
    const size_t ND = (size_t)N * D;
    LayerActs *la = &a->layer[l];
    const LayerParams *p = &m->w.layer[l];
    LayerParams *gp = &m->g.layer[l];
    const int *tok = a->mtp_tok + (size_t)(k - 1) * a->Nmax;
    double t = prof_begin();
    if (P->gset) {
        memset(gp->mtp_enorm, 0, sizeof(float) * D);
        memset(gp->mtp_hnorm, 0, sizeof(float) * D);
        // the top module's backward runs first: it starts the embedding's gradient (a tied
        // one is the head's, which the forward pass wrote)
        if (l == config_n_layers(c) - 1 && !c->tie_word_embeddings) memset(m->g.embed, 0, sizeof(float) * (size_t)c->vocab_size * D);
    }
    linear_backward_beta(a->dmtp, gp->mtp_eh, a->dx, la->mtp_cat, p->mtp_eh, N, 2 * D, D, 0.0f, P->gset ? 0.0f : 1.0f);
    // the tokens' embeddings, through enorm
    embed_forward(a->xf, tok, m->w.embed, N, D);
    uncat_rows(a->dxn, a->dmtp, N, D, 0);
    memset(a->dh, 0, sizeof(float) * ND);
    rmsnorm_backward(a->dh, gp->mtp_enorm, a->dxn, a->xf, p->mtp_enorm, la->rstd_e, N, D);
    embed_backward(m->g.embed, a->dh, tok, N, D);
    // the stream at l, through hnorm, and the head's gradient there
    uncat_rows(a->dxn, a->dmtp, N, D, D);
    memset(a->dx, 0, sizeof(float) * ND);
    rmsnorm_backward(a->dx, gp->mtp_hnorm, a->dxn, pass_resid(a, l, N), p->mtp_hnorm, la->rstd_hp, N, D);
    const float *dh = a->dhead + (size_t)(k - 1) * a->Nmax * D;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < ND; i++) a->dx[i] += dh[i];
    prof_end(PROF_MTP, true, t, 4.0 * N * 2 * D * D);
}
