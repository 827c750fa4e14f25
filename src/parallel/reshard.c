// One routine moves parameters (and anything laid out like them: the AdamW moments) from
// one layout of the expert-parallel group to another. A layout is a Model with tensor
// names and offsets only (model_layout_*), one per rank; every rank computes all of them
// alike, so every rank knows every message without asking. Tensor t of rank p's new layout
// comes from p's own old blob when p held it, else from the lowest rank that held it.
// Used for dynamic expert placement (migration), the checkpoint gather (every rank's
// experts to rank 0's whole model) and, through the same names, by checkpoint loading.
#include <limits.h>
#include <string.h>
#include "../base/base.h"
#include "parallel.h"

// name -> tensor index of one layout: open addressing over FNV-1a hashes
typedef struct { int cap; int *slot; } NameIndex;
static uint64_t fnv(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}
static void index_build(NameIndex *ix, const Model *m) {
    ix->cap = 16;
    while (ix->cap < 2 * m->n_tensors) ix->cap *= 2;
    ix->slot = MOE_NEW(int, ix->cap);
    for (int i = 0; i < ix->cap; i++) ix->slot[i] = -1;
    for (int i = 0; i < m->n_tensors; i++) {
        int h = (int)(fnv(m->tensors[i].name) & (uint64_t)(ix->cap - 1));
        while (ix->slot[h] >= 0) h = (h + 1) & (ix->cap - 1);
        ix->slot[h] = i;
    }
}
static int index_find(const NameIndex *ix, const Model *m, const char *name) {
    for (int h = (int)(fnv(name) & (uint64_t)(ix->cap - 1)); ix->slot[h] >= 0; h = (h + 1) & (ix->cap - 1))
        if (!strcmp(m->tensors[ix->slot[h]].name, name)) return ix->slot[h];
    return -1;
}

// one tensor's move: to rank p (its tensor tp) from rank q (its tensor tq)
typedef struct { int p, tp, q, tq; size_t n; } Move;

// at most this many floats a rank sends or receives in one exchange (MPI counts are ints)
#define RESHARD_ROUND ((size_t)1 << 28)

static int reshard(DistGroup grp, int P, int me, const Model *from, const Model *to, int nb, float *const *src, float *const *dst);

int par_reshard(const Model *from, const Model *to, int nb, float *const *src, float *const *dst) {
    return reshard(DIST_EP, dist_info()->ep, dist_info()->ep_rank, from, to, nb, src, dst);
}

int par_reshard_model(const Model *from, const Model *to, int nb, float *const *src, float *const *dst) {
    const DistInfo *di = dist_info();
    return reshard(DIST_MODEL, di->pp * di->ep, di->stage * di->ep + di->ep_rank, from, to, nb, src, dst);
}

static int reshard(DistGroup grp, int P, int me, const Model *from, const Model *to, int nb, float *const *src, float *const *dst) {
    NameIndex *ix = MOE_NEW(NameIndex, P);
    for (int q = 0; q < P; q++) index_build(&ix[q], &from[q]);
    size_t nmv = 0;
    for (int p = 0; p < P; p++) nmv += (size_t)to[p].n_tensors;
    Move *mv = MOE_NEW(Move, nmv + 1);
    size_t n = 0;
    int rc = MOE_OK;
    for (int p = 0; p < P && rc == MOE_OK; p++)      // p-major: each destination's part is contiguous
        for (int t = 0; t < to[p].n_tensors; t++) {
            const ParamTensor *pt = &to[p].tensors[t];
            int q = p, tq = index_find(&ix[p], &from[p], pt->name);
            for (q = tq >= 0 ? p : 0; tq < 0 && q < P; q++)
                if ((tq = index_find(&ix[q], &from[q], pt->name)) >= 0) break;
            if (tq < 0) { moe_seterr("internal: no rank holds %s to reshard", pt->name); rc = MOE_FAIL; break; }
            if (from[q].tensors[tq].numel != pt->numel) { moe_seterr("internal: %s changes size in a reshard", pt->name); rc = MOE_FAIL; break; }
            if (q != p && pt->numel * nb > (size_t)INT_MAX) {   // one message of MPI's int counts
                moe_seterr("%s: %zu floats, too large to move between ranks in one message", pt->name, pt->numel * nb);
                rc = MOE_FAIL;
                break;
            }
            mv[n++] = (Move){p, t, q, tq, pt->numel};
        }
    int *sc = MOE_NEW(int, 5 * P), *sd = sc + P, *rcn = sc + 2 * P, *rd = sc + 3 * P, *at = sc + 4 * P;
    // rounds: as many moves as keep every rank's traffic under RESHARD_ROUND (the same cut
    // on every rank: the move list is the same everywhere)
    float *sbuf = NULL, *rbuf = NULL;
    size_t scap = 0, rcap = 0;
    size_t *snd = MOE_NEW(size_t, 2 * P), *rcv = snd + P;
    for (size_t i0 = 0; i0 < n && rc == MOE_OK;) {
        memset(snd, 0, sizeof(size_t) * 2 * P);
        size_t i1 = i0;
        for (; i1 < n; i1++) {
            const Move *v = &mv[i1];
            if (v->p == v->q) continue;
            const size_t per = v->n * nb;
            if (i1 > i0 && (snd[v->q] + per > RESHARD_ROUND || rcv[v->p] + per > RESHARD_ROUND)) break;
            snd[v->q] += per; rcv[v->p] += per;
        }
        // local copies, then one exchange for the rest
        memset(sc, 0, sizeof(int) * 5 * P);
        for (size_t i = i0; i < i1; i++) {
            const Move *v = &mv[i];
            if (v->p == me && v->q == me)
                for (int k = 0; k < nb; k++)
                    memcpy(dst[k] + to[me].tensors[v->tp].offset, src[k] + from[me].tensors[v->tq].offset, sizeof(float) * v->n);
            else if (v->q == me) sc[v->p] += (int)(v->n * nb);
            else if (v->p == me) rcn[v->q] += (int)(v->n * nb);
        }
        size_t ns = 0, nr = 0;
        for (int p = 0; p < P; p++) { sd[p] = (int)ns; ns += sc[p]; rd[p] = at[p] = (int)nr; nr += rcn[p]; }
        if (ns > scap) { moe_free(sbuf); sbuf = MOE_NEW(float, ns); scap = ns; }
        if (nr > rcap) { moe_free(rbuf); rbuf = MOE_NEW(float, nr); rcap = nr; }
        for (size_t i = i0, o = 0; i < i1; i++) {
            const Move *v = &mv[i];
            if (v->q != me || v->p == me) continue;
            for (int k = 0; k < nb; k++, o += v->n) memcpy(sbuf + o, src[k] + from[me].tensors[v->tq].offset, sizeof(float) * v->n);
        }
        rc = dist_alltoallv_f32(sbuf, sc, sd, rbuf, rcn, rd, grp);
        for (size_t i = i0; i < i1 && rc == MOE_OK; i++) {
            const Move *v = &mv[i];
            if (v->p != me || v->q == me) continue;
            for (int k = 0; k < nb; k++, at[v->q] += (int)v->n)
                memcpy(dst[k] + to[me].tensors[v->tp].offset, rbuf + at[v->q], sizeof(float) * v->n);
        }
        i0 = i1;
    }
    moe_free(sbuf); moe_free(rbuf); moe_free(snd); moe_free(sc); moe_free(mv);
    for (int q = 0; q < P; q++) moe_free(ix[q].slot);
    moe_free(ix);
    return rc;
}
