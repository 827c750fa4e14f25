// The checkpoint of a distributed run: one standard checkpoint whatever P, E or --zero.
#include <string.h>
#include "../base/base.h"
#include "parallel.h"

// --zero 1: rank r keeps the moments of blob elements [off[r], off[r+1]), cut on 64-byte
// boundaries
void par_zero_parts(size_t n, int P, size_t *off) {
    off[0] = 0;
    for (int r = 1; r < P; r++) off[r] = (n * r / P) & ~(size_t)15;
    off[P] = n;
}

// Tensor ti's m (which 0) or v (1) from the ranks' shares onto rank 0, for the checkpoint;
// every rank makes the same calls in the same order
typedef struct {
    const Model *m;
    const AdamW *opt;
    const size_t *off;    // the shares of the blob
    size_t *part;         // ... clipped to the tensor
    float *buf;           // rank 0: the tensor
    int rc;
} ZeroGather;
static const float *zero_moment(void *ctx, int ti, int which) {
    ZeroGather *z = ctx;
    const ParamTensor *t = &z->m->tensors[ti];
    const int P = dist_info()->ssize, r = dist_info()->srank;
    for (int k = 0; k <= P; k++) {   // the shares clipped to the tensor
        size_t o = z->off[k] < t->offset ? t->offset : z->off[k];
        z->part[k] = (o > t->offset + t->numel ? t->offset + t->numel : o) - t->offset;
    }
    const float *mom = which ? z->opt->v : z->opt->m;
    const float *mine = z->part[r + 1] > z->part[r] ? mom + (t->offset + z->part[r] - z->opt->lo) : mom;
    if (dist_gather_f32(mine, z->part, z->buf) && z->rc == MOE_OK) z->rc = MOE_FAIL;
    return z->rc == MOE_OK ? z->buf : NULL;
}

static int save_zero(const char *dir, const Model *m, const AdamW *opt, const size_t *zoff, CkptState *st) {
    const DistInfo *di = dist_info();
    ZeroGather z = {m, opt, zoff, MOE_NEW(size_t, di->ssize + 1), NULL, MOE_OK};
    size_t most = 0;
    for (int i = 0; i < m->n_tensors; i++) most = m->tensors[i].numel > most ? m->tensors[i].numel : most;
    int rc = MOE_OK;
    st->moment = zero_moment;
    st->ctx = &z;
    st->calls = 0;
    if (di->rank == 0) {
        z.buf = MOE_NEW(float, most);
        rc = ckpt_save(dir, m, st, false);
    }
    for (int i = st->calls; i < 2 * m->n_tensors; i++) zero_moment(&z, i / 2, i % 2);   // the gathers not made yet
    if (rc == MOE_OK) rc = z.rc;
    moe_free(z.buf); moe_free(z.part);
    return rc;
}

// expert and pipeline parallelism: the experts (and the stages' layers) of replica 0's ranks
// move to a whole model on rank 0 (one reshard over those S·E ranks: DIST_MODEL, which
// without stages is EP group 0); a tensor two stages hold (the embedding) comes from the first
static int save_gather(const char *dir, const Model *m, const ExpertShard *sh, const LayerShard *ls, const AdamW *opt,
                       CkptState *st) {
    const DistInfo *di = dist_info();
    if (di->dp_rank != 0) return MOE_OK;   // the other replicas hold the same model
    const MoeConfig *c = &m->cfg;
    const int E = di->ep, P = di->pp * E;
    const bool root = di->rank == 0;
    Model *from = MOE_NEW(Model, P), *to = MOE_NEW(Model, P), full;
    AdamW fo = {0};
    for (int q = 0; q < P; q++) {
        const ExpertShard at = sh && sh->comm ? shard_at(sh, q % E) : (ExpertShard){0};
        const LayerShard lq = ls ? layer_shard_at(ls, q / E) : (LayerShard){0};
        model_layout_staged(&from[q], c, sh && sh->comm ? &at : NULL, ls ? &lq : NULL);
    }
    model_layout(&to[0], c);   // rank 0: everything; the others: nothing
    float *dst[3] = {NULL, NULL, NULL};
    if (root) {
        model_build(&full, c, false);
        adamw_alloc(&fo, full.n_params);
        fo.t = opt->t;
        memcpy(full.bias, m->bias, sizeof(float) * (size_t)config_n_layers(c) * imax(c->n_routed_experts, 1));
        dst[0] = full.params; dst[1] = fo.m; dst[2] = fo.v;
    }
    float *src[3] = {m->params, opt->m, opt->v};
    int rc = par_reshard_model(from, to, 3, src, dst);
    for (int q = 0; q < P; q++) model_free(&from[q]);
    model_free(&to[0]);
    moe_free(from); moe_free(to);
    if (root) {
        if (rc == MOE_OK) {
            st->m = fo.m; st->v = fo.v; st->moment = NULL;
            rc = ckpt_save(dir, &full, st, false);
        }
        adamw_free(&fo); model_free(&full);
    }
    return rc;
}

int par_save_checkpoint(const char *dir, const Model *m, const ExpertShard *sh, const AdamW *opt, const size_t *zoff,
                        CkptState *st) {
    return par_save_checkpoint_staged(dir, m, sh, NULL, opt, zoff, st);
}

int par_save_checkpoint_staged(const char *dir, const Model *m, const ExpertShard *sh, const LayerShard *ls, const AdamW *opt,
                               const size_t *zoff, CkptState *st) {
    const DistInfo *di = dist_info();
    int rc = MOE_OK;
    if (ls && ls->S > 1 && zoff) {   // each stage's moments onto its rank 0 first, then as without --zero
        AdamW full = {0};
        if (di->srank == 0) { adamw_alloc(&full, m->n_params); full.t = opt->t; }
        const float *mine_m = opt->m, *mine_v = opt->v;
        rc = dist_gather_f32(mine_m, zoff, full.m);
        if (rc == MOE_OK) rc = dist_gather_f32(mine_v, zoff, full.v);
        if (rc == MOE_OK) rc = save_gather(dir, m, sh, ls, &full, st);
        adamw_free(&full);
    } else if (ls && ls->S > 1) rc = save_gather(dir, m, sh, ls, opt, st);
    else if (zoff) rc = save_zero(dir, m, opt, zoff, st);
    else if (sh && sh->comm) rc = save_gather(dir, m, sh, NULL, opt, st);
    else if (di->rank == 0) {
        st->m = opt->m; st->v = opt->v; st->moment = NULL;
        rc = ckpt_save(dir, m, st, false);
    }
    int r = rc;
    MOE_TRY(dist_bcast_int(&r, 1));
    if (r && !rc) MOE_ERR("%s: rank 0 could not write the checkpoint", dir);
    return r;
}
