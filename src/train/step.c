// One optimizer step's gradient: accumulation over the micro-batches of this rank's share
// of the global batch, the gradient sums over the ranks (src/parallel), and the step's
// loss and load figures summed over the ranks.
#include <string.h>
#include "../base/base.h"
#include "../base/prof.h"
#include "../kernels/simd.h"
#include "../model/schedule.h"
#include "../parallel/parallel.h"
#include "../parallel/pipeline.h"
#include "train.h"

static int example_targets(const Dataset *d, int id) { return d->ex[id].len - d->ex[id].n_prompt; }

int train_accumulate(Model *m, Acts *a, Batch *b, const Dataset *d, const int *ids, int count,
                     int micro_batch, StepLoss *out) {
    Acts *as[2] = {a, NULL};
    Batch *bs[2] = {b, NULL};
    return train_accumulate_ex(m, NULL, as, bs, d, ids, count, micro_batch, false, NULL, out);
}

int train_accumulate_ex(Model *m, const ExpertShard *sh, Acts *a[2], Batch *b[2], const Dataset *d, const int *ids,
                        int count, int micro_batch, bool overlap, const size_t *zoff, StepLoss *out) {
    // under MPI, ids are this rank's share of the global batch and the scales below are the
    // global ones, so that the summed gradient is the single-process gradient
    const DistInfo *di = dist_info();
    const int P = di->size;
    memset(out, 0, sizeof *out);
    long targets = 0;
    for (int i = 0; i < count; i++) targets += example_targets(d, ids[i]);
    MOE_TRY(dist_sum_long(&targets, 1, DIST_WORLD));
    if (targets == 0) MOE_ERR("%s: a batch without any target token", d->path);
    int n_micro = (count + micro_batch - 1) / micro_batch;
    const MoeConfig *c = &m->cfg;
    const bool halves = a[1] != NULL;   // each micro-batch as two interleaved halves
    ForwardOpts fo = {.train = true, .ce_scale = (float)(1.0 / targets), .shard = sh};
    const int M = m->cfg.num_mtp_layers;
    if (M) fo.mtp_scale = (float)(m->cfg.mtp_loss_weight / M / targets);
    MoeComm *comm = sh ? sh->comm : NULL;
    // balance units: micro-batches ("batch"; halves count as units) or sequences
    // ("sequence") of the global batch; "ep_group" under EP: one unit per EP group's
    // micro-batch, shared by its ranks
    const int unit_ranks = c->aux_scope == MOE_AUX_EP_GROUP && comm ? di->dp : P;
    fo.aux_scale = c->aux_scope == MOE_AUX_SEQUENCE ? 1.0f / ((long)count * P)
                                                    : 1.0f / ((long)n_micro * (halves ? 2 : 1) * unit_ranks);
    // one process without halves: the first micro-batch's backward writes the gradients
    // (beta 0 products) and no pass clears them first; otherwise they are cleared here
    const bool first_write = !comm && !halves && !(sh && sh->place);
    fo.grad_set = first_write;
    if (!first_write) {
        double tz = prof_begin();
        vec_zero(m->grads, m->n_params);
        prof_end(PROF_ZERO, false, tz, 0);
    }
    const int LE = config_n_layers(c) * imax(c->n_routed_experts, 1);
    for (int h = 0; h < (halves ? 2 : 1); h++) {
        memset(a[h]->load, 0, sizeof(long) * LE);
        memset(a[h]->drop_l, 0, sizeof(long) * config_n_layers(c));
        memset(a[h]->rows_l, 0, sizeof(long) * config_n_layers(c));
        a[h]->dropped = a[h]->assigned = 0;
    }
    GradSync gs;
    par_grads_begin(&gs, m, sh, zoff, overlap);
    double ce = 0, aux = 0, mtp = 0;
    int rc = MOE_OK;
    for (int s = 0; s < count && rc == MOE_OK; s += micro_batch) {
        int nb = imin(micro_batch, count - s);
        if (gs.overlap && s + nb >= count) { fo.grads_ready = par_grads_ready; fo.ctx = &gs; }
        // forward then backward, of the micro-batch or of its two halves interleaved (the
        // same split on every rank: every rank has nb examples)
        const Schedule *sched = halves && nb >= 2 ? &SCHED_TRAIN_HALVES : &SCHED_TRAIN;
        const int n0 = sched->n_passes == 2 ? (nb + 1) / 2 : nb;
        batch_fill(b[0], d, ids + s, n0);
        if (sched->n_passes == 2) batch_fill(b[1], d, ids + s + n0, nb - n0);
        ForwardOut fout[2];
        const Batch *bb[2] = {b[0], b[1]};
        rc = model_run(m, sched, a, bb, &fo, fout);
        if (rc != MOE_OK) break;
        fo.grad_set = false;
        double ce_mb = 0, aux_mb = 0, mtp_mb = 0;   // (the halves summed first, then the micro-batch)
        for (int h = 0; h < sched->n_passes; h++) {
            ce_mb += fout[h].ce_sum;
            aux_mb += fout[h].aux;
            mtp_mb += fout[h].mtp_ce_sum;
            out->tokens += b[h]->N;
        }
        ce += ce_mb;
        aux += aux_mb;
        mtp += mtp_mb;
    }
    MOE_TRY(par_grads_end(&gs, rc));
    if (halves) {   // the statistics of both halves in a[0]
        for (int i = 0; i < LE; i++) a[0]->load[i] += a[1]->load[i];
        for (int l = 0; l < config_n_layers(c); l++) { a[0]->drop_l[l] += a[1]->drop_l[l]; a[0]->rows_l[l] += a[1]->rows_l[l]; }
        a[0]->dropped += a[1]->dropped;
        a[0]->assigned += a[1]->assigned;
    }
    if (P > 1) {
        double v[3] = {ce, aux, mtp};
        MOE_TRY(dist_sum_f64(v, 3, DIST_WORLD));
        ce = v[0]; aux = v[1]; mtp = v[2];
        long cnt[3] = {out->tokens, a[0]->dropped, a[0]->assigned};
        MOE_TRY(dist_sum_long(cnt, 3, DIST_WORLD));
        out->tokens = cnt[0]; a[0]->dropped = cnt[1]; a[0]->assigned = cnt[2];
        MOE_TRY(dist_sum_long(a[0]->load, LE, DIST_WORLD));
        MOE_TRY(dist_sum_long(a[0]->drop_l, config_n_layers(c), DIST_WORLD));
    }
    out->targets = targets;
    out->ce = ce / targets;
    out->aux = aux;
    // the MTP modules' cross-entropy, per module, over the main loss's target count (DeepSeek-V3)
    out->mtp = M ? mtp / targets / M : 0;
    out->loss = out->ce + out->aux + m->cfg.mtp_loss_weight * out->mtp;
    return MOE_OK;
}


int train_accumulate_pipe(Model *m, const ExpertShard *sh, Pipe *p, Acts *stats, const Dataset *d, const int *ids, int count,
                          int micro_batch, StepLoss *out) {
    // every stage's ranks take the same examples: the counts are over a stage's data ranks,
    // the losses and loads (each on the stage that computes it) over the world
    const DistInfo *di = dist_info();
    const MoeConfig *c = &m->cfg;
    const int P = di->ssize, M = c->num_mtp_layers, L = config_n_layers(c), LE = L * imax(c->n_routed_experts, 1);
    memset(out, 0, sizeof *out);
    long targets = 0;
    for (int i = 0; i < count; i++) targets += example_targets(d, ids[i]);
    MOE_TRY(dist_sum_long(&targets, 1, DIST_STAGE));
    if (targets == 0) MOE_ERR("%s: a batch without any target token", d->path);
    const int n_micro = (count + micro_batch - 1) / micro_batch;
    MoeComm *comm = sh ? sh->comm : NULL;
    ForwardOpts fo = {.train = true, .ce_scale = (float)(1.0 / targets), .shard = sh};
    if (M) fo.mtp_scale = (float)(c->mtp_loss_weight / M / targets);
    const int unit_ranks = c->aux_scope == MOE_AUX_EP_GROUP && comm ? di->dp : P;
    fo.aux_scale = c->aux_scope == MOE_AUX_SEQUENCE ? 1.0f / ((long)count * P) : 1.0f / ((long)n_micro * unit_ranks);
    vec_zero(m->grads, m->n_params);
    memset(stats->load, 0, sizeof(long) * LE);
    memset(stats->drop_l, 0, sizeof(long) * L);
    memset(stats->rows_l, 0, sizeof(long) * L);
    stats->dropped = stats->assigned = 0;
    ForwardOut sum;
    long tokens = 0;
    GradSync gs;
    par_grads_begin(&gs, m, sh, NULL, false);
    int rc = par_pipe_run(p, m, &fo, d, ids, count, micro_batch, &sum, &tokens, stats);
    MOE_TRY(par_grads_end(&gs, rc));
    double v[3] = {sum.ce_sum, sum.aux, sum.mtp_ce_sum};
    MOE_TRY(dist_sum_f64(v, 3, DIST_WORLD));
    long cnt[3] = {tokens, stats->dropped, stats->assigned};
    MOE_TRY(dist_sum_long(cnt, 3, DIST_WORLD));
    MOE_TRY(dist_sum_long(stats->load, LE, DIST_WORLD));
    MOE_TRY(dist_sum_long(stats->drop_l, L, DIST_WORLD));
    stats->dropped = cnt[1]; stats->assigned = cnt[2];
    out->tokens = cnt[0];
    out->targets = targets;
    out->ce = v[0] / targets;
    out->aux = v[1];
    out->mtp = M ? v[2] / targets / M : 0;
    out->loss = out->ce + out->aux + c->mtp_loss_weight * out->mtp;
    return MOE_OK;
}
