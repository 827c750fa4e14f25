// Activations: what each layer saves for its backward pass and how (kept in f32, packed to
// bf16, or recomputed), decided here for every mode (ACTS_*), on one process and under
// expert parallelism alike; the bf16 stash; and the restore before a layer's backward pass.
#include <stdio.h>
#include <string.h>
#include "../base/base.h"
#include "../base/prof.h"
#include "../kernels/bf16.h"
#include "../kernels/gemm.h"
#include "../kernels/simd.h"
#include "pass.h"


static int packed_decls(const Acts *a, const MoeConfig *c, int l, SavedDecl *out);

// the sizes acts_alloc works with
typedef struct {
    int L, D, H, Hq, Hk, Fe, Fs, E, K, V, Fmax;
    int Hv, Ha;            // v's and the attention output's widths (Hk, Hq but under MLA)
    size_t ND, NK;
    bool any_moe, local_moe, mla;
} ActDims;

// The buffers every layer shares (MEM_WORK): one set of recomputed intermediates, the
// experts' outputs, the routers' logits, and under bf16 the f32 working set every layer
// computes in (layers keep bf16 copies).
static void alloc_shared(Acts *a, const ActDims *d, int Nmax) {
    const bool rc = a->recompute, full = a->full, bf = a->bf16;
    const size_t ND = d->ND, NK = d->NK;
    if (rc) {
        a->rc_xn = MOE_NEW(float, ND);
        a->rc_a = MOE_NEW(float, (size_t)Nmax * d->Fmax);
        if (d->local_moe) { a->rc_xe = MOE_NEW(float, NK * d->D); a->rc_ae = MOE_NEW(float, NK * d->Fe); }
    }
    if (rc && d->mla && !bf) {   // MLA's expanded keys and values, from the latent again
        a->rc_k = MOE_NEW(float, (size_t)Nmax * d->Hk); a->rc_v = MOE_NEW(float, (size_t)Nmax * d->Hv);
    }
    if (full) {
        a->rc_h = MOE_NEW(float, ND);
        if (d->local_moe && !bf) a->rc_mgu = MOE_NEW(float, NK * 2 * d->Fe);   // (bf16: ws_mgu)
    }
    // the experts' outputs are summed into each layer's output and not needed again (the
    // backward pass gets dw from dout W_down . ae, under expert parallelism on the owners):
    // one buffer for all layers, which in training is the backward pass's dye (no forward
    // runs inside a layer's backward)
    if (a->train && d->any_moe) moe_work_alloc(&a->mw, Nmax, d->E, d->K, d->D, d->Fe, false);
    if (d->any_moe) a->rc_ye = a->train ? a->mw.dye : MOE_NEW(float, NK * d->D);
    if (d->any_moe) a->router_logits = MOE_NEW(float, (size_t)Nmax * d->E);   // scratch of every router
    if (bf) {
        a->ws_q = MOE_NEW(float, (size_t)Nmax * d->Hq); a->ws_att = MOE_NEW(float, (size_t)Nmax * d->Ha);
        a->ws_k = MOE_NEW(float, (size_t)Nmax * d->Hk); a->ws_v = MOE_NEW(float, (size_t)Nmax * d->Hv);
        if (!full) a->ws_h = MOE_NEW(float, ND);
        a->ws_gu = MOE_NEW(float, (size_t)Nmax * 2 * d->Fmax);
        if (!rc) { a->ws_xn1 = MOE_NEW(float, ND); a->ws_xn2 = MOE_NEW(float, ND); a->ws_a = MOE_NEW(float, (size_t)Nmax * d->Fmax); }
        if (d->local_moe) {
            a->ws_mgu = MOE_NEW(float, NK * 2 * d->Fe);
            if (!rc) { a->ws_mxe = MOE_NEW(float, NK * d->D); a->ws_mae = MOE_NEW(float, NK * d->Fe); }
        }
    }
}

// The attention and norm variants' intermediates (q/k norm, sandwich norm, MLA): per layer,
// or under bf16 one f32 working set every layer shares (each keeps its packed copy)
static void alloc_variants(Acts *a, const MoeConfig *c, LayerActs *la, const ActDims *d, int Nmax, int l) {
    const bool bf = a->bf16;
#define OWN_BUF(field, ws, n) (la->field = bf ? (a->ws ? a->ws : (a->ws = MOE_NEW(float, n))) : MOE_NEW(float, n))
    if (c->qk_norm) {
        OWN_BUF(qr, ws_qr, (size_t)Nmax * d->Hq); OWN_BUF(kr, ws_kr, (size_t)Nmax * d->Hk);
        la->rstd_q = MOE_NEW(float, (size_t)Nmax * d->H);
        la->rstd_k = MOE_NEW(float, (size_t)Nmax * c->num_key_value_heads);
    }
    if (c->sandwich_norm) {
        OWN_BUF(ao, ws_ao, d->ND); OWN_BUF(fy, ws_fy, d->ND);
        la->rstd_ao = MOE_NEW(float, Nmax); la->rstd_fy = MOE_NEW(float, Nmax);
    }
    if (a->train ? l >= c->num_hidden_layers : c->num_mtp_layers > 0) {   // an MTP module's input
        OWN_BUF(mtp_cat, ws_mcat, (size_t)Nmax * 2 * d->D);
        la->mtp_in = MOE_NEW(float, d->ND);   // its f32 input: la->x, packed under bf16 in place
        la->rstd_e = MOE_NEW(float, Nmax); la->rstd_hp = MOE_NEW(float, Nmax);
    }
    if (config_is_mla(c)) {
        const size_t qr = c->q_lora_rank, kvr = c->kv_lora_rank;
        if (qr) { OWN_BUF(cq, ws_cq, Nmax * qr); OWN_BUF(cqn, ws_cqn, Nmax * qr); la->rstd_cq = MOE_NEW(float, Nmax); }
        OWN_BUF(ckv, ws_ckv, Nmax * (kvr + c->qk_rope_head_dim)); OWN_BUF(ckvn, ws_ckvn, Nmax * kvr);
        la->rstd_ckv = MOE_NEW(float, Nmax);
    }
#undef OWN_BUF
}

// Layer l's intermediates (inference: the one set every layer reuses, l = 0): its own
// buffers, or the shared ones where they are recomputed or packed to bf16.
static void alloc_layer(Acts *a, const Model *m, const ActDims *d, int Nmax, int l) {
    const MoeConfig *c = &m->cfg;
    const bool rc = a->recompute, full = a->full, bf = a->bf16, ep = a->ep;
    const size_t ND = d->ND, Hq = d->Hq, Hk = d->Hk, Hv = d->Hv, Ha = d->Ha;
    LayerActs *la = &a->layer[l];
    const bool moe = a->train ? config_layer_is_moe(c, l) : d->any_moe;
    const int F = a->train ? (moe ? d->Fs : c->intermediate_size) : d->Fmax;
    la->rstd1 = MOE_NEW(float, Nmax);
    la->rstd2 = MOE_NEW(float, Nmax);
    la->lse = MOE_NEW(float, (size_t)Nmax * d->H);
    if (bf) {
        la->q = a->ws_q; la->k = a->ws_k; la->v = a->ws_v; la->att = a->ws_att;
        la->h = full ? a->rc_h : a->ws_h;
        la->xn1 = rc ? a->rc_xn : a->ws_xn1;
        la->xn2 = rc ? a->rc_xn : a->ws_xn2;
        if (F > 0) { la->gu = a->ws_gu; la->a = rc ? a->rc_a : a->ws_a; }
    } else {
        la->q = MOE_NEW(float, (size_t)Nmax * Hq); la->att = MOE_NEW(float, (size_t)Nmax * Ha);
        if (rc && d->mla) { la->k = a->rc_k; la->v = a->rc_v; }
        else { la->k = MOE_NEW(float, (size_t)Nmax * Hk); la->v = MOE_NEW(float, (size_t)Nmax * Hv); }
        la->h = full ? a->rc_h : MOE_NEW(float, ND);
        la->xn1 = rc ? a->rc_xn : MOE_NEW(float, ND);
        la->xn2 = rc ? a->rc_xn : MOE_NEW(float, ND);
        if (F > 0) {
            la->gu = MOE_NEW(float, (size_t)Nmax * 2 * F);
            la->a = rc ? a->rc_a : MOE_NEW(float, (size_t)Nmax * F);
        }
    }
    alloc_variants(a, c, la, d, Nmax, l);
    if (moe) {
        int borrow = MOE_BORROW_LOGITS | (rc || bf ? MOE_BORROW_XE_AE : 0) | (bf || full ? MOE_BORROW_GU : 0) | MOE_BORROW_YE;
        if (ep) borrow = MOE_BORROW_LOGITS | MOE_BORROW_XE_AE | MOE_BORROW_GU | MOE_BORROW_YE;
        moe_acts_alloc(&la->moe, Nmax, d->E, d->K, d->D, d->Fe, borrow);
        la->moe.logits = a->router_logits;
        if (ep && bf)   // the owners keep their rows as the storage policy says for rows here
            la->moe.keep = MOE_KEEP_BF16 | (acts_storage(a, SAVE_ROWS_PRODUCT) == STORE_RECOMPUTE ? MOE_KEEP_RECOMPUTE_AE : 0) |
                           (acts_storage(a, SAVE_ROWS_PRE_ACT) == STORE_RECOMPUTE ? MOE_KEEP_RECOMPUTE_GU : 0);
        la->moe.ye = a->rc_ye;
        if (!ep) {
            if (rc) { la->moe.xe = a->rc_xe; la->moe.ae = a->rc_ae; }
            else if (bf) { la->moe.xe = a->ws_mxe; la->moe.ae = a->ws_mae; }
            if (bf) la->moe.gu = a->ws_mgu;
            else if (full) la->moe.gu = a->rc_mgu;
        }
    }
    if (bf) {   // room for the largest stash this layer can need: what its blocks store packed
        SavedDecl sd[32];
        size_t n = 0;
        for (int j = 0, ns = packed_decls(a, c, l, sd); j < ns; j++) n += (sd[j].rows ? d->NK : (size_t)Nmax) * sd[j].width;
        la->stash = MOE_NEW(unsigned short, n);
    }
}

void acts_alloc(Acts *a, const Model *m, int Nmax, int mode) {
    acts_alloc_span(a, m, Nmax, mode, 0, (mode & ACTS_TRAIN) ? config_n_layers(&m->cfg) : m->cfg.num_hidden_layers);
}

void acts_alloc_span(Acts *a, const Model *m, int Nmax, int mode, int l0, int n) {
    const bool train = mode & ACTS_TRAIN, full = train && (mode & ACTS_RECOMPUTE_FULL),
               rc = full || (train && (mode & ACTS_RECOMPUTE)), bf = train && (mode & ACTS_BF16);
    const MoeConfig *c = &m->cfg;
    memset(a, 0, sizeof *a);
    const int H = c->num_attention_heads, Hkv = config_is_mla(c) ? H : c->num_key_value_heads;
    ActDims d = {config_n_layers(c), c->hidden_size, H, H * config_qk_dim(c), Hkv * config_qk_dim(c),
                 c->moe_intermediate_size, c->n_shared_experts * c->moe_intermediate_size, c->n_routed_experts,
                 c->num_experts_per_tok, c->vocab_size, 0, Hkv * config_v_dim(c), H * config_v_dim(c), 0, 0,
                 config_n_moe_layers(c) > 0, false, config_is_mla(c)};
    // the widest feed-forward among the layers there are (dense or shared experts); in
    // training, among the span's layers
    const int s0 = train ? l0 : 0, s1 = train ? l0 + n : d.L;
    for (int l = s0; l < s1; l++) d.Fmax = imax(d.Fmax, config_layer_is_moe(c, l) ? d.Fs : c->intermediate_size);
    if (train) {
        d.any_moe = false;
        for (int l = s0; l < s1; l++) d.any_moe |= config_layer_is_moe(c, l);
    }
    d.ND = (size_t)Nmax * d.D;
    d.NK = (size_t)Nmax * d.K;
    // under expert parallelism the experts' rows live on their owners, kept per layer in f32
    // buffers grown to what arrives (moe/ep.c), holding the values one process would read
    // back (MOE_KEEP_*): no shared, recomputed or bf16-stashed expert rows here
    a->ep = mode & ACTS_EP;
    d.local_moe = d.any_moe && !a->ep;
    a->Nmax = Nmax; a->L = d.L; a->D = d.D; a->train = train; a->recompute = rc; a->full = full; a->bf16 = bf;
    a->l0 = s0; a->ln = s1 - s0;
    const size_t ND = d.ND, Hq = d.Hq, Hk = d.Hk, Hv = d.Hv, Ha = d.Ha;
    MemCategory old = mem_category(MEM_WORK);
    alloc_shared(a, &d, Nmax);
    mem_category(MEM_ACTS);
    const int nstore = train ? d.L : 1;
    // the residual stream: every layer's input kept in f32, or (bf16, inference) two in turn;
    // under bf16 the streams the MTP modules and heads read after them are kept (pass_resid)
    const int M = train && s1 > c->num_hidden_layers ? c->num_mtp_layers : 0;   // (the span with the modules)
    a->M = M;
    a->xs = MOE_NEW(float, ND * (train && !bf ? a->ln + 1 : 2 + (M ? M + 1 : 0)));
    a->layer = MOE_NEW(LayerActs, nstore);   // indexed by layer; the span's allocated
    for (int l = train ? s0 : 0; l < (train ? s1 : nstore); l++) alloc_layer(a, m, &d, Nmax, l);
    if (!train || s1 == d.L) {   // the head's (a pipeline chunk below the top runs none)
        a->rstdf = MOE_NEW(float, Nmax); a->xf = MOE_NEW(float, ND); a->xt = MOE_NEW(float, ND);
        // training runs the head in chunks of HEAD_CHUNK rows, its backward fused in: no [N,V] buffer
        a->logits = MOE_NEW(float, (size_t)(train ? imin(Nmax, HEAD_CHUNK) : Nmax) * d.V);
    }
    if (!train && c->sandwich_norm) a->tmp = MOE_NEW(float, ND);
    if (M) {
        a->mtp_tok = MOE_NEW(int, (size_t)M * Nmax); a->mtp_tgt = MOE_NEW(int, (size_t)M * Nmax);
        a->dhead = MOE_NEW(float, (size_t)(M + 1) * ND); a->dmtp = MOE_NEW(float, 2 * ND);
    }
    if (config_is_mla(c))   // the latent expanded through kv_b, before it is split into keys and values
        a->kvb = MOE_NEW(float, (size_t)Nmax * H * (c->qk_nope_head_dim + c->v_head_dim));
    if (train) { mem_category(MEM_WORK); a->dh = MOE_NEW(float, ND); a->dxt = a->dh; mem_category(MEM_ACTS); }   // see blk_head_backward
    a->out_rows = MOE_NEW(int, Nmax);
    if (train) {
        mem_category(MEM_WORK);   // backward-pass scratch, reused by every layer
        a->dx = MOE_NEW(float, ND); a->dxn = MOE_NEW(float, ND);
        a->dq = MOE_NEW(float, (size_t)Nmax * Hq); a->datt = MOE_NEW(float, (size_t)Nmax * Ha);
        a->dk = MOE_NEW(float, (size_t)Nmax * Hk); a->dv = MOE_NEW(float, (size_t)Nmax * Hv);
        if (c->sandwich_norm) a->tmp = MOE_NEW(float, ND);
        if (config_is_mla(c))   // dcq and dcqn, dckv, dckvn, the kv_b output's gradient
            a->dmla = MOE_NEW(float, (size_t)Nmax * (2 * c->q_lora_rank + 2 * c->kv_lora_rank + c->qk_rope_head_dim +
                                                     (size_t)H * (c->qk_nope_head_dim + c->v_head_dim)));
        a->da = MOE_NEW(float, (size_t)Nmax * d.Fmax);   // (the FFNs' gate/up gradients go over gu)
    }
    a->load = MOE_NEW(long, (size_t)d.L * imax(d.E, 1));
    a->drop_l = MOE_NEW(long, d.L);
    a->rows_l = MOE_NEW(long, d.L);
    mem_category(old);
}

void acts_free(Acts *a) {
    int nstore = a->train ? a->L : 1;
    for (int l = 0; l < nstore; l++) {
        LayerActs *la = &a->layer[l];
        if (a->bf16) la->q = la->k = la->v = la->att = la->h = la->gu = NULL;   // the shared working set
        if (a->recompute || a->bf16) la->xn1 = la->xn2 = la->a = NULL;
        if (a->full) la->h = NULL;
        if (a->recompute && la->k == a->rc_k) la->k = la->v = NULL;
        if (a->bf16) la->qr = la->kr = la->ao = la->fy = la->cq = la->cqn = la->ckv = la->ckvn = la->mtp_cat = NULL;
        void *p[] = {la->rstd1, la->xn1, la->q, la->k, la->v, la->att, la->lse, la->h, la->rstd2,
                     la->xn2, la->gu, la->a, la->stash, la->qr, la->kr, la->rstd_q, la->rstd_k, la->ao,
                     la->rstd_ao, la->fy, la->rstd_fy, la->cq, la->cqn, la->rstd_cq, la->ckv, la->ckvn, la->rstd_ckv,
                     la->mtp_in, la->mtp_cat, la->rstd_e, la->rstd_hp};
        for (size_t i = 0; i < sizeof p / sizeof *p; i++) moe_free(p[i]);
        if (la->moe.scores) { moe_ep_acts_free(&la->moe); moe_acts_free(&la->moe); }
    }
    if (a->rc_ye == a->mw.dye) a->rc_ye = NULL;   // shared buffers, freed once
    void *p[] = {a->xs, a->layer, a->rstdf, a->xf, a->xt, a->logits, a->out_rows, a->dx, a->dh,
                 a->dxn, a->dq, a->datt, a->dk, a->dv, a->da, a->load, a->drop_l, a->rows_l,
                 a->rc_xn, a->rc_a, a->rc_xe, a->rc_ae, a->rc_h, a->rc_ye, a->rc_mgu, a->router_logits, a->ws_q, a->ws_k, a->ws_v, a->ws_att, a->ws_h,
                 a->ws_xn1, a->ws_xn2, a->ws_gu, a->ws_a, a->ws_mgu, a->ws_mxe, a->ws_mae, a->ws_qr, a->ws_kr,
                 a->ws_ao, a->ws_fy, a->ws_cq, a->ws_cqn, a->ws_ckv, a->ws_ckvn, a->tmp, a->dmla, a->kvb, a->ws_mcat, a->rc_k, a->rc_v,
                 a->mtp_tok, a->mtp_tgt, a->dhead, a->dmtp};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++) moe_free(p[i]);
    if (a->mw.ds) moe_work_free(&a->mw);
    moe_ep_work_free(&a->ew);
    memset(a, 0, sizeof *a);
}

// The residual stream entering layer l (l = L: the stack's output).
float *pass_resid(const Acts *a, int l, int N) {
    if (a->train && !a->bf16) return a->xs + (size_t)(l - a->l0) * N * a->D;
    const int L = a->L - a->M;   // the stack's layers; the MTP modules' streams kept after them
    if (a->M && l >= L) return a->xs + (size_t)(2 + l - L) * a->Nmax * a->D;
    return a->xs + (size_t)(l % 2) * a->Nmax * a->D;
}

float *acts_stream(const Acts *a, int l, int N) { return pass_resid(a, l, N); }
float *acts_dstream(const Acts *a) { return a->dx; }

Storage acts_storage(const Acts *a, SaveRole role) {
    bool recompute = false;
    switch (role) {
    case SAVE_NORM_OUT: case SAVE_PRODUCT: case SAVE_ROWS_IN: case SAVE_ROWS_PRODUCT: case SAVE_KV_EXPANDED:
        recompute = a->recompute; break;
    case SAVE_SUM: case SAVE_ROWS_PRE_ACT: recompute = a->full; break;
    case SAVE_EXPERT_INPUT: recompute = a->recompute && !a->bf16; break;
    case SAVE_STAT: return STORE_F32;
    case SAVE_RESIDUAL: case SAVE_ACT: case SAVE_PRE_ACT: break;
    }
    return recompute ? STORE_RECOMPUTE : a->bf16 ? STORE_BF16 : STORE_F32;
}

// ACTS_BF16: the f32 intermediates of layer l that its backward pass reads and that are
// stored packed (the blocks' declarations, in order); packed after its forward pass,
// unpacked before its backward pass. Under expert parallelism the experts' rows are their
// owners' (MOE_KEEP_*), not here.
static int packed_decls(const Acts *a, const MoeConfig *c, int l, SavedDecl *out) {
    const BlockKind *b[8];
    int n = 0;
    for (int i = 0, nb = model_layer_blocks(c, l, b); i < nb; i++) {
        SavedDecl d[16];
        for (int j = 0, nd = b[i]->saved(c, l, d); j < nd; j++)
            if (acts_storage(a, d[j].role) == STORE_BF16 && !(d[j].rows && a->ep)) out[n++] = d[j];
    }
    return n;
}

typedef struct { float *p; size_t n; } StashItem;
static int stash_items(const Acts *a, const Model *m, int l, int N, StashItem *it) {
    const LayerActs *la = &a->layer[l];
    SavedDecl d[32];
    const int n = packed_decls(a, &m->cfg, l, d);
    for (int j = 0; j < n; j++) {
        const char *base = d[j].rows ? (const char *)&la->moe : (const char *)la;
        it[j] = (StashItem){*(float *const *)(base + d[j].field), (size_t)(d[j].rows ? la->moe.A : N) * d[j].width};
    }
    return n;
}
void acts_stash(const Acts *a, const Model *m, int l, int N, bool pack) {
    const double t = prof_begin();
    StashItem it[32];
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

// Before layer l's backward pass: what it reads comes back, as the forward pass made it:
// the bf16 stash unpacked, then the FFN's inputs and SwiGLU products recomputed.
void acts_restore(Pass *P, int l) {
    Model *m = P->m;
    Acts *a = P->a;
    const MoeConfig *c = &m->cfg;
    const int N = P->b->N, D = c->hidden_size, Ha = c->num_attention_heads * config_v_dim(c),
              Fe = c->moe_intermediate_size, Fs = c->n_shared_experts * Fe;
    const bool moe = config_layer_is_moe(c, l);
    LayerActs *la = &a->layer[l];
    const LayerParams *p = &m->w.layer[l];
#define RECOMPUTED(role) (acts_storage(a, role) == STORE_RECOMPUTE)
    if (!a->recompute) return;
    double t = prof_begin();
    if (RECOMPUTED(SAVE_SUM)) {   // h = x + att Wo^T (sandwich: + rmsnorm(ao), ao kept)
        memcpy(la->h, la->x, sizeof(float) * (size_t)N * D);
        if (c->sandwich_norm) sandwich_add(a->tmp, la->h, la->ao, la->rstd_ao, p->attn_post_norm, N, D, c->rms_norm_eps);
        else linear_forward(la->h, la->att, p->wo, N, Ha, D, true);
    }
    if (RECOMPUTED(moe ? SAVE_EXPERT_INPUT : SAVE_NORM_OUT))
        rmsnorm_forward(la->xn2, NULL, la->h, p->post_norm, N, D, c->rms_norm_eps);
    if (!moe && RECOMPUTED(SAVE_PRODUCT)) swiglu_rows_forward(la->a, la->gu, N, c->intermediate_size);
    if (moe && !a->ep) {   // (under expert parallelism the owners restore their rows)
        if (RECOMPUTED(SAVE_ROWS_PRE_ACT)) {   // the gather and the experts' gate and up projections again
            MoeWeights mw = {p->router, p->e_gate_up, p->e_down};
            moe_experts_gate_up(&la->moe, la->xn2, &mw);
        } else if (RECOMPUTED(SAVE_ROWS_IN)) moe_gather(&la->moe, la->xn2);
        if (RECOMPUTED(SAVE_ROWS_PRODUCT)) swiglu_rows_forward(la->moe.ae, la->moe.gu, la->moe.A, Fe);
    }
    if (moe && Fs > 0 && RECOMPUTED(SAVE_PRODUCT)) swiglu_rows_forward(la->a, la->gu, N, Fs);
#undef RECOMPUTED
    prof_end(PROF_RECOMPUTE, true, t, 0);
}
