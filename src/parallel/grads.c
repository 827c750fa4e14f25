// Gradient sums over the ranks: buckets started during the backward pass, ZeRO-1's
// reduce-scatter, the replicas of a placement, and the global gradient norm.
#include <math.h>
#include <string.h>
#include "../base/base.h"
#include "parallel.h"

// --zero 1's summed gradient of a run of the blob lands at the run's start (reduce-scatter
// in place); once the sum is complete, it moves to this rank's part of the run
struct GradMove { float *dst, *src; size_t n; };
static void grad_move(const GradMove *mv) { if (mv->n && mv->dst != mv->src) memmove(mv->dst, mv->src, sizeof(float) * mv->n); }

// Contiguous runs of the blob go in one call each. layer: only the tensors of that layer (L:
// the head, -1: the embedding and final norm; -2: all). With reqs the sums are started,
// their handles appended to reqs[*n] (and with zoff the moves to mv[*n]).
static int reduce_grads(const Model *m, int layer, int *reqs, int *n, const size_t *zoff, GradMove *mv) {
    const DistInfo *di = dist_info();
    int *cnt = zoff ? MOE_NEW(int, di->ssize) : NULL, rc = MOE_OK;
    for (int i = 0; i < m->n_tensors && rc == MOE_OK;) {
        const ParamTensor *t = &m->tensors[i];
        if (layer != -2 && t->layer != layer) { i++; continue; }
        int j = i;
        while (j < m->n_tensors && m->tensors[j].expert == t->expert && m->tensors[j].pp_shared == t->pp_shared &&
               (layer == -2 || m->tensors[j].layer == layer))
            j++;
        size_t off = t->offset, len = m->tensors[j - 1].offset + m->tensors[j - 1].numel - off;
        // experts over their replicas, the rest over the stage's data ranks (the world
        // without pipeline stages); the embedding both ends of a pipeline hold over both
        DistGroup g = t->expert ? DIST_REPLICAS : t->pp_shared ? DIST_EMBED : DIST_STAGE;
        if (zoff && !t->pp_shared) {   // (--ep 1: every tensor over the stage's ranks)
            size_t mine = off;
            for (int r = 0; r < di->ssize; r++) {
                size_t a = zoff[r] > off ? zoff[r] : off, b = zoff[r + 1] < off + len ? zoff[r + 1] : off + len;
                cnt[r] = b > a ? (int)(b - a) : 0;
                if (r == di->srank) mine = a;
            }
            GradMove mvi = {m->grads + mine, m->grads + off, (size_t)cnt[di->srank]};
            rc = dist_sum_part_f32(m->grads + off, cnt, reqs ? &reqs[*n] : NULL);
            if (rc == MOE_OK && reqs) mv[(*n)++] = mvi;
            else if (rc == MOE_OK) grad_move(&mvi);
        } else if (!t->expert || di->dp > 1) {
            if (reqs) rc = dist_sum_f32_start(m->grads + off, len, g, &reqs[(*n)++]);
            else rc = dist_sum_f32(m->grads + off, len, g);
        }
        i = j;
    }
    moe_free(cnt);
    return rc;
}

void par_grads_begin(GradSync *gs, const Model *m, const ExpertShard *sh, const size_t *zoff, bool overlap) {
    memset(gs, 0, sizeof *gs);
    gs->m = m;
    gs->sh = sh;
    gs->zoff = zoff;
    gs->overlap = overlap && dist_info()->size > 1;
    if (gs->overlap) {
        gs->cap = 4 * m->n_tensors + 8;
        gs->reqs = MOE_NEW(int, gs->cap);
        if (zoff) gs->mv = MOE_NEW(GradMove, gs->cap);
    }
}

// the backward pass of the last micro-batch starts each layer's sum as soon as the layer's
// gradients are complete, while the layers below still compute
int par_grads_ready(void *ctx, int l) {
    GradSync *gs = ctx;
    if (gs->n + 2 * gs->m->n_tensors > gs->cap) MOE_ERR("internal: bucket table full");
    return reduce_grads(gs->m, l, gs->reqs, &gs->n, gs->zoff, gs->mv);
}

// Under a placement with replicas: an expert's replicas on several ranks of the EP group
// each hold the gradient of the tokens they computed; their sum is the expert's gradient.
static int sum_replicas(const Model *m, const ExpertShard *sh) {
    const MoePlacement *pl = sh ? sh->place : NULL;
    if (!pl || pl->R == 0) return MOE_OK;
    const MoeConfig *c = &m->cfg;
    const size_t FD = (size_t)c->moe_intermediate_size * c->hidden_size, per = 3 * FD;
    const int E = pl->E, S = pl->S, me = sh->rank;
    int n = 0;
    for (int l = 0; l < config_n_layers(c); l++)
        if (config_layer_is_moe(c, l))
            for (int e = 0; e < E; e++) n += pl->rep_n[(size_t)l * E + e] > 1;
    if (n == 0) return MOE_OK;
    float *buf = MOE_NEW(float, (size_t)n * per);
    for (int pass = 0; pass < 2; pass++) {   // 0: pack (zeros where this rank has no replica), 1: unpack
        int k = 0;
        for (int l = 0; l < config_n_layers(c); l++) {
            if (!config_layer_is_moe(c, l)) continue;
            const int *slot = pl->slot_expert + ((size_t)l * pl->P + me) * S;
            for (int e = 0; e < E; e++) {
                if (pl->rep_n[(size_t)l * E + e] < 2) continue;
                float *b = buf + (size_t)k++ * per;
                for (int j = 0; j < S; j++) {
                    if (slot[j] != e) continue;
                    float *gu = m->g.layer[l].e_gate_up + (size_t)j * 2 * FD, *dn = m->g.layer[l].e_down + (size_t)j * FD;
                    if (pass == 0) { memcpy(b, gu, sizeof(float) * 2 * FD); memcpy(b + 2 * FD, dn, sizeof(float) * FD); }
                    else { memcpy(gu, b, sizeof(float) * 2 * FD); memcpy(dn, b + 2 * FD, sizeof(float) * FD); }
                }
            }
        }
        if (pass == 0 && dist_sum_f32(buf, (size_t)n * per, DIST_EP)) { moe_free(buf); return MOE_FAIL; }
    }
    moe_free(buf);
    return MOE_OK;
}

int par_grads_end(GradSync *gs, int rc) {
    for (int i = 0; i < gs->n; i++) {
        if (dist_wait(gs->reqs[i]) && rc == MOE_OK) rc = MOE_FAIL;
        if (gs->mv) grad_move(&gs->mv[i]);
    }
    moe_free(gs->reqs); moe_free(gs->mv);
    gs->reqs = NULL; gs->mv = NULL; gs->n = 0;
    if (rc == MOE_OK) rc = sum_replicas(gs->m, gs->sh);
    if (rc == MOE_OK && !gs->overlap && dist_info()->size > 1) rc = reduce_grads(gs->m, -2, NULL, NULL, gs->zoff, NULL);
    return rc;
}

int par_grad_norm(const Model *m, const ExpertShard *sh, const size_t *zoff, double *norm) {
    if (zoff) {   // each rank sums the squares of its part (the last stage's embedding copy left out)
        const int r = dist_info()->srank;
        double ss = grad_norm(m->grads + zoff[r], zoff[r + 1] - zoff[r]);
        ss *= ss;
        for (int i = 0; i < m->n_tensors; i++) {
            const ParamTensor *t = &m->tensors[i];
            if (!t->pp_copy) continue;
            const size_t a = t->offset > zoff[r] ? t->offset : zoff[r], b = t->offset + t->numel < zoff[r + 1] ? t->offset + t->numel : zoff[r + 1];
            if (b > a) { const double n = grad_norm(m->grads + a, b - a); ss -= n * n; }
        }
        MOE_TRY(dist_sum_f64(&ss, 1, DIST_WORLD));
        *norm = sqrt(ss);
        return MOE_OK;
    }
    // non-expert tensors are the same on every rank (counted once), each expert lives on
    // one rank of an EP group, and one replicated on r ranks is one parameter
    double ss[2] = {0, 0};
    for (int i = 0; i < m->n_tensors; i++) {
        const ParamTensor *t = &m->tensors[i];
        double n = grad_norm(m->grads + t->offset, t->numel);
        const MoePlacement *pl = sh ? sh->place : NULL;
        double w = pl && t->expert ? 1.0 / pl->rep_n[(size_t)t->layer * pl->E + t->expert_id] : 1.0;
        if (t->pp_copy) w = 0;   // the first stage counts the embedding
        ss[t->expert] += w * n * n;
    }
    if (sh && sh->comm) MOE_TRY(dist_sum_f64(&ss[1], 1, DIST_EP));
    if (dist_info()->pp > 1) MOE_TRY(dist_sum_f64(ss, 2, DIST_PIPE));   // every stage's layers
    *norm = sqrt(ss[0] + ss[1]);
    return MOE_OK;
}
