// Expert parallelism: the routed experts of a layer are spread over the P processes of an
// expert-parallel group, E/P each, in rank order. A process routes its own tokens, sorts
// their assignments by expert (moe_dispatch), so that the rows bound for each owner lie
// together, and then
//   forward:  counts to every owner -> rows to the owners -> the owners' grouped GEMMs ->
//             outputs back -> weighted combine, as on one process;
//   backward: output gradients to the owners -> their GEMMs' backward pass (weight
//             gradients stay with the owner) -> input gradients back -> scatter.
// The transport is the caller's (MoeComm); nothing here knows about MPI.
#include <omp.h>
#include <string.h>
#include "../base/base.h"
#include "../base/prof.h"
#include "../kernels/gemm.h"
#include "../kernels/simd.h"
#include "../ops/ops.h"
#include "moe.h"

static void grow(float **p, size_t *cap, size_t need) {
    if (need <= *cap) return;
    moe_free(*p);
    *cap = need + need / 4;
    *p = MOE_NEW(float, *cap);
}

// rows arrive source-major (source s, then its rows for local expert e); the GEMMs want
// them expert-major. to_expert: recv order -> expert-major, else back.
static void reorder(const MoeActs *a, int P, int El, float *dst, const float *src, int width, bool to_expert) {
    const size_t W = (size_t)width;
#pragma omp parallel for collapse(2) schedule(static)
    for (int s = 0; s < P; s++)
        for (int e = 0; e < El; e++) {
            int rp = a->rdsp[s], ep = a->roff[e];
            for (int j = 0; j < e; j++) rp += a->ecnt[s * El + j];
            for (int j = 0; j < s; j++) ep += a->ecnt[j * El + e];
            const int n = a->ecnt[s * El + e];
            if (to_expert) memcpy(dst + ep * W, src + rp * W, sizeof(float) * W * n);
            else memcpy(dst + rp * W, src + ep * W, sizeof(float) * W * n);
        }
}

static int post(MoeComm *c, const float *send, const int *sc, const int *sd, float *recv, const int *rc,
                const int *rd, int width, int *req) {
    return c->start(c, send, sc, sd, recv, rc, rd, width, req);
}

// x <- bf16(x), on all threads
static void round_bf16(float *x, size_t n) {
    const size_t chunk = (size_t)1 << 14, nc = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (nc > 1)
    for (size_t c = 0; c < nc; c++) vec_round_bf16(x + c * chunk, (long)(c == nc - 1 ? n - c * chunk : chunk));
}

// rows sorted by expert, or by placement slot: P blocks of El keys
static int keys(const MoeActs *a) { return a->n_keys > 0 ? a->n_keys : a->E; }

int moe_ep_dispatch(MoeActs *a, MoeEpWork *w, MoeComm *comm, const float *xn) {
    const int D = a->D, F = a->F, E = keys(a), P = comm->size, El = E / P;
    if (a->ecnt && a->el_alloc != El) moe_ep_acts_free_counts(a);   // the placement changed shape
    if (!a->ecnt) {
        a->el_alloc = El;
        a->ecnt = MOE_NEW(int, (size_t)P * El);
        a->scnt = MOE_NEW(int, P); a->sdsp = MOE_NEW(int, P);
        a->rcnt = MOE_NEW(int, P); a->rdsp = MOE_NEW(int, P);
        a->roff = MOE_NEW(int, El + 1);
    }
    // 1. how many rows each owner gets, per expert
    int *cnt = MOE_NEW(int, E);
    for (int e = 0; e < E; e++) cnt[e] = a->offsets[e + 1] - a->offsets[e];
    int rc = comm->counts(comm, cnt, a->ecnt, El);
    moe_free(cnt);
    if (rc) return rc;
    double t = prof_begin();
    for (int d = 0; d < P; d++) {
        a->sdsp[d] = a->offsets[d * El];
        a->scnt[d] = a->offsets[(d + 1) * El] - a->sdsp[d];
    }
    a->R = 0;
    for (int s = 0; s < P; s++) {
        a->rcnt[s] = 0;
        for (int e = 0; e < El; e++) a->rcnt[s] += a->ecnt[s * El + e];
        a->rdsp[s] = a->R;
        a->R += a->rcnt[s];
    }
    a->roff[0] = 0;
    for (int e = 0; e < El; e++) {
        a->roff[e + 1] = a->roff[e];
        for (int s = 0; s < P; s++) a->roff[e + 1] += a->ecnt[s * El + e];
    }
    const size_t R = a->R, A = a->A;
    if (R > (size_t)a->rcap) {   // this layer's expert-side rows, kept for the backward pass
        moe_free(a->xe); moe_free(a->gu); moe_free(a->ae);
        a->rcap = (int)(R + R / 4);
        MemCategory old = mem_category(MEM_ACTS);
        a->xe = MOE_NEW(float, (size_t)a->rcap * D);
        a->gu = MOE_NEW(float, (size_t)a->rcap * 2 * F);
        a->ae = MOE_NEW(float, (size_t)a->rcap * F);
        mem_category(old);
    }
    MemCategory old = mem_category(MEM_WORK);
    grow(&w->t1, &w->cap1, (R > A ? R : A) * D);
    grow(&w->t2, &w->cap2, (R > A ? R : A) * D);
    mem_category(old);
    // 2. the rows, gathered in permuted order, start towards their owners
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < A; r++) memcpy(w->t2 + r * D, xn + (size_t)a->row_tok[r] * D, sizeof(float) * D);
    prof_end(PROF_PERMUTE, false, t, 0);
    return post(comm, w->t2, a->scnt, a->sdsp, w->t1, a->rcnt, a->rdsp, D, &a->req);
}

int moe_ep_experts(MoeActs *a, MoeEpWork *w, MoeComm *comm, const MoeWeights *W) {
    const int D = a->D, F = a->F, P = comm->size, El = keys(a) / P;
    const size_t R = a->R;
    MOE_TRY(comm->wait(comm, a->req));
    double t = prof_begin();
    reorder(a, P, El, a->xe, w->t1, D, true);
    prof_end(PROF_PERMUTE, false, t, 0);
    // the local experts' GEMMs, as on one process
    t = prof_begin();
    moe_grouped_forward(El, a->roff, a->xe, a->gu, a->ae, w->t2, W, D, F, NULL, NULL);
    prof_end(PROF_EXPERTS, false, t, 6.0 * R * D * F);
    // outputs start back to the tokens' processes
    t = prof_begin();
    reorder(a, P, El, w->t1, w->t2, D, false);
    prof_end(PROF_UNPERMUTE, false, t, 0);
    MOE_TRY(post(comm, w->t1, a->rcnt, a->rdsp, a->ye, a->scnt, a->sdsp, D, &a->req));
    if (a->keep & MOE_KEEP_BF16) {   // while the outputs travel: the rows as one process keeps them
        t = prof_begin();
        round_bf16(a->xe, R * D);
        if (!(a->keep & MOE_KEEP_RECOMPUTE_GU)) round_bf16(a->gu, R * 2 * F);
        if (!(a->keep & MOE_KEEP_RECOMPUTE_AE)) round_bf16(a->ae, R * F);
        prof_end(PROF_STASH, false, t, 0);
    }
    return MOE_OK;
}

int moe_ep_combine(MoeActs *a, MoeComm *comm, float *out) {
    MOE_TRY(comm->wait(comm, a->req));
    double t = prof_begin();
    moe_combine(a, out);
    prof_end(PROF_UNPERMUTE, false, t, 0);
    return MOE_OK;
}

// The backward pass runs each row as one process does (moe_experts_backward without ye):
// the owner gets the token's output gradient as it is and the row's weight w, and computes
// the weight's gradient (dy W_down) . ae from the ae it keeps, which it sends back with the
// row's input gradient. (dout . ye on the token's side would be the same number in exact
// arithmetic, but not with ae kept in bf16.)
int moe_ep_backward_send(MoeActs *a, MoeWork *wk, MoeEpWork *w, MoeComm *comm, const float *dout) {
    const int D = a->D;
    double t = prof_begin();
#pragma omp parallel for schedule(static)
    for (int r = 0; r < a->A; r++) {
        memcpy(wk->dye + (size_t)r * D, dout + (size_t)a->row_tok[r] * D, sizeof(float) * D);
        wk->wrow[r] = a->w[a->row_slot[r]];
    }
    MemCategory old = mem_category(MEM_WORK);
    const size_t n = (size_t)(a->R > a->A ? a->R : a->A);
    grow(&w->w1, &w->capw1, n);
    grow(&w->w2, &w->capw2, n);
    mem_category(old);
    prof_end(PROF_UNPERMUTE, true, t, 0);
    // the counts are the forward pass's, reversed
    MOE_TRY(post(comm, wk->dye, a->scnt, a->sdsp, w->t1, a->rcnt, a->rdsp, D, &a->req));
    return post(comm, wk->wrow, a->scnt, a->sdsp, w->w1, a->rcnt, a->rdsp, 1, &a->req_w);
}

int moe_ep_backward_experts(MoeActs *a, MoeWork *wk, MoeEpWork *w, MoeComm *comm, const MoeWeights *W,
                            MoeGrads *G) {
    const int D = a->D, F = a->F, P = comm->size, El = keys(a) / P;
    const size_t R = a->R;
    MOE_TRY(comm->wait(comm, a->req));
    MOE_TRY(comm->wait(comm, a->req_w));
    double t = prof_begin();
    reorder(a, P, El, w->t2, w->t1, D, true);   // t2: dy, expert-major
    reorder(a, P, El, w->w2, w->w1, 1, true);   // w2: the rows' weights
    MemCategory old = mem_category(MEM_WORK);
    grow(&w->dae, &w->capa, R * F);
    grow(&w->dgu, &w->capg, R * 2 * F);
    mem_category(old);
    prof_end(PROF_UNPERMUTE, true, t, 0);
    if (a->keep & (MOE_KEEP_RECOMPUTE_GU | MOE_KEEP_RECOMPUTE_AE)) {   // as one process recomputes them
        t = prof_begin();
        if (a->keep & MOE_KEEP_RECOMPUTE_GU) moe_grouped_gate_up(El, a->roff, a->xe, a->gu, W, D, F, NULL, NULL);
        if (a->keep & MOE_KEEP_RECOMPUTE_AE) swiglu_rows_forward(a->ae, a->gu, (int)R, F);
        prof_end(PROF_RECOMPUTE, true, t, a->keep & MOE_KEEP_RECOMPUTE_GU ? 4.0 * R * D * F : 0);
    }
    t = prof_begin();
    // w1 <- each row's weight gradient; t1 <- dx
    moe_grouped_backward(El, a->roff, a->xe, a->gu, a->ae, w->t2, w->dae, w->dgu, w->t1, W, G, D, F, w->w2, w->w1,
                         NULL, NULL);
    prof_end(PROF_EXPERTS, true, t, 12.0 * R * D * F);
    t = prof_begin();
    reorder(a, P, El, w->t2, w->t1, D, false);   // dx and dw, back in receive order
    reorder(a, P, El, w->w2, w->w1, 1, false);
    prof_end(PROF_PERMUTE, true, t, 0);
    // dxe shares dye's buffer, whose exchange is complete
    MOE_TRY(post(comm, w->t2, a->rcnt, a->rdsp, wk->dxe, a->scnt, a->sdsp, D, &a->req));
    return post(comm, w->w2, a->rcnt, a->rdsp, wk->dwrow, a->scnt, a->sdsp, 1, &a->req_w);
}

int moe_ep_backward_finish(MoeActs *a, MoeWork *wk, MoeComm *comm, float *dxn) {
    MOE_TRY(comm->wait(comm, a->req));
    MOE_TRY(comm->wait(comm, a->req_w));
    double t = prof_begin();
    moe_scatter_backward(a, wk->dxe, dxn);
    moe_rows_dw(a, wk);
    prof_end(PROF_PERMUTE, true, t, 0);
    return MOE_OK;
}

void moe_ep_acts_free_counts(MoeActs *a) {
    void *p[] = {a->ecnt, a->scnt, a->sdsp, a->rcnt, a->rdsp, a->roff};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++) moe_free(p[i]);
    a->ecnt = a->scnt = a->sdsp = a->rcnt = a->rdsp = a->roff = NULL;
}

void moe_ep_acts_free(MoeActs *a) {
    if (a->rcap > 0) { moe_free(a->xe); moe_free(a->gu); moe_free(a->ae); a->xe = a->gu = a->ae = NULL; a->rcap = 0; }
    moe_ep_acts_free_counts(a);
}

void moe_ep_work_free(MoeEpWork *w) {
    moe_free(w->t1); moe_free(w->t2); moe_free(w->dae); moe_free(w->dgu); moe_free(w->w1); moe_free(w->w2);
    memset(w, 0, sizeof *w);
}
