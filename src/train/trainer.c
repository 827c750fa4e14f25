#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "../base/base.h"
#include "../base/prof.h"
#include "../dist/dist.h"
#include "../io/fileio.h"
#include "../kernels/gemm.h"
#include "../kernels/simd.h"
#include "train.h"

static int example_targets(const Dataset *d, int id) { return d->ex[id].len - d->ex[id].n_prompt; }

// --zero 1's summed gradient of a run of the blob lands at the run's start (reduce-scatter
// in place); once the sum is complete, it moves to this rank's part of the run
typedef struct { float *dst, *src; size_t n; } GradMove;
static void grad_move(const GradMove *mv) { if (mv->n && mv->dst != mv->src) memmove(mv->dst, mv->src, sizeof(float) * mv->n); }

// Under MPI: non-expert gradients are summed over every rank, an expert's over the
// replicas that hold it; contiguous runs of the blob go in one call each. layer: only the
// tensors of that layer (L: the head, -1: the embedding and final norm; -2: all). With reqs the
// sums are started, their handles appended to reqs[*n] (and with zoff the moves to mv[*n]).
// zoff (--zero 1): each rank needs only the sum over its part of the blob, a reduce-scatter.
static int reduce_grads(const Model *m, int layer, int *reqs, int *n, const size_t *zoff, GradMove *mv) {
    const DistInfo *di = dist_info();
    int *cnt = zoff ? MOE_NEW(int, di->size) : NULL, rc = MOE_OK;
    for (int i = 0; i < m->n_tensors && rc == MOE_OK;) {
        const ParamTensor *t = &m->tensors[i];
        if (layer != -2 && t->layer != layer) { i++; continue; }
        int j = i;
        while (j < m->n_tensors && m->tensors[j].expert == t->expert && (layer == -2 || m->tensors[j].layer == layer)) j++;
        size_t off = t->offset, len = m->tensors[j - 1].offset + m->tensors[j - 1].numel - off;
        DistGroup g = t->expert ? DIST_REPLICAS : DIST_WORLD;
        if (zoff) {   // (--ep 1: every tensor over the world)
            size_t mine = off;
            for (int r = 0; r < di->size; r++) {
                size_t a = zoff[r] > off ? zoff[r] : off, b = zoff[r + 1] < off + len ? zoff[r + 1] : off + len;
                cnt[r] = b > a ? (int)(b - a) : 0;
                if (r == di->rank) mine = a;
            }
            GradMove mvi = {m->grads + mine, m->grads + off, (size_t)cnt[di->rank]};
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

// the backward pass of the last micro-batch starts each layer's reduction as soon as the
// layer's gradients are complete (buckets), while the layers below still compute
typedef struct { const Model *m; int *reqs, n, cap; const size_t *zoff; GradMove *mv; } Buckets;
static int bucket_ready(void *ctx, int l) {
    Buckets *bk = ctx;
    if (bk->n + 2 * bk->m->n_tensors > bk->cap) MOE_ERR("internal: bucket table full");
    return reduce_grads(bk->m, l, bk->reqs, &bk->n, bk->zoff, bk->mv);
}

// Under a placement with replicas: an expert's replicas on several ranks of the EP group
// each hold the gradient of the tokens they computed; their sum is the expert's gradient.
static int sum_replicas(const Model *m) {
    const MoePlacement *pl = m->place;
    if (!pl || pl->R == 0) return MOE_OK;
    const MoeConfig *c = &m->cfg;
    const size_t FD = (size_t)c->moe_intermediate_size * c->hidden_size, per = 3 * FD;
    const int E = pl->E, S = pl->S, me = m->prank;
    int n = 0;
    for (int l = 0; l < c->num_hidden_layers; l++)
        if (config_layer_is_moe(c, l))
            for (int e = 0; e < E; e++) n += pl->rep_n[(size_t)l * E + e] > 1;
    if (n == 0) return MOE_OK;
    float *buf = MOE_NEW(float, (size_t)n * per);
    for (int pass = 0; pass < 2; pass++) {   // 0: pack (zeros where this rank has no replica), 1: unpack
        int k = 0;
        for (int l = 0; l < c->num_hidden_layers; l++) {
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

double train_grad_norm(const Model *m, const size_t *zoff) {
    if (zoff) {   // each rank sums the squares of its part
        const int r = dist_info()->rank;
        double ss = grad_norm(m->grads + zoff[r], zoff[r + 1] - zoff[r]);
        ss *= ss;
        dist_sum_f64(&ss, 1, DIST_WORLD);
        return sqrt(ss);
    }
    // the global norm over every distinct parameter: non-expert tensors are the same on
    // every rank (counted once), each expert lives on one rank of an EP group
    double ss[2] = {0, 0};
    for (int i = 0; i < m->n_tensors; i++) {
        const ParamTensor *t = &m->tensors[i];
        double n = grad_norm(m->grads + t->offset, t->numel);
        // an expert replicated on r ranks is one parameter, counted once
        double w = m->place && t->expert ? 1.0 / m->place->rep_n[(size_t)t->layer * m->place->E + t->expert_id] : 1.0;
        ss[t->expert] += w * n * n;
    }
    if (m->comm) dist_sum_f64(&ss[1], 1, DIST_EP);
    return sqrt(ss[0] + ss[1]);
}

int train_accumulate(Model *m, Acts *a, Batch *b, const Dataset *d, const int *ids, int count,
                     int micro_batch, StepLoss *out) {
    Acts *as[2] = {a, NULL};
    Batch *bs[2] = {b, NULL};
    return train_accumulate_ex(m, as, bs, d, ids, count, micro_batch, false, NULL, out);
}

int train_accumulate_ex(Model *m, Acts *a[2], Batch *b[2], const Dataset *d, const int *ids, int count,
                        int micro_batch, bool overlap, const size_t *zoff, StepLoss *out) {
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
    ForwardOpts fo = {.train = true, .ce_scale = (float)(1.0 / targets)};
    // balance units: micro-batches ("batch"; halves count as units) or sequences
    // ("sequence") of the global batch; "ep_group" under EP: one unit per EP group's
    // micro-batch, shared by its ranks
    const int unit_ranks = c->aux_scope == MOE_AUX_EP_GROUP && m->comm ? di->dp : P;
    fo.aux_scale = c->aux_scope == MOE_AUX_SEQUENCE ? 1.0f / ((long)count * P)
                                                    : 1.0f / ((long)n_micro * (halves ? 2 : 1) * unit_ranks);
    // one process without halves: the first micro-batch's backward writes the gradients
    // (beta 0 products) and no pass clears them first; otherwise they are cleared here
    const bool first_write = !m->comm && !halves && !m->place;
    fo.grad_set = first_write;
    if (!first_write) {
        double tz = prof_begin();
        vec_zero(m->grads, m->n_params);
        prof_end(PROF_ZERO, false, tz, 0);
    }
    const int LE = c->num_hidden_layers * imax(c->n_routed_experts, 1);
    for (int h = 0; h < (halves ? 2 : 1); h++) {
        memset(a[h]->load, 0, sizeof(long) * LE);
        memset(a[h]->drop_l, 0, sizeof(long) * c->num_hidden_layers);
        memset(a[h]->rows_l, 0, sizeof(long) * c->num_hidden_layers);
        a[h]->dropped = a[h]->assigned = 0;
    }
    Buckets bk = {m, NULL, 0, 0, zoff, NULL};
    if (P > 1 && overlap) {
        bk.cap = 4 * m->n_tensors + 8;
        bk.reqs = MOE_NEW(int, bk.cap);
        if (zoff) bk.mv = MOE_NEW(GradMove, bk.cap);
    }
    double ce = 0, aux = 0;
    int rc = MOE_OK;
    for (int s = 0; s < count && rc == MOE_OK; s += micro_batch) {
        int nb = imin(micro_batch, count - s);
        if (bk.reqs && s + nb >= count) { fo.grads_ready = bucket_ready; fo.ctx = &bk; }
        if (halves && nb >= 2) {   // the same split on every rank: every rank has nb examples
            const int n0 = (nb + 1) / 2;
            batch_fill(b[0], d, ids + s, n0);
            batch_fill(b[1], d, ids + s + n0, nb - n0);
            ForwardOut fout[2];
            const Batch *bb[2] = {b[0], b[1]};
            rc = model_forward_pair(m, a, bb, &fo, fout);
            if (rc == MOE_OK && fo.grads_ready) rc = fo.grads_ready(fo.ctx, c->num_hidden_layers);   // the head
            if (rc == MOE_OK) rc = model_backward_pair(m, a, bb, &fo);
            ce += fout[0].ce_sum + fout[1].ce_sum;
            aux += fout[0].aux + fout[1].aux;
            out->tokens += b[0]->N + b[1]->N;
        } else {
            batch_fill(b[0], d, ids + s, nb);
            ForwardOut fout;
            rc = model_forward(m, a[0], b[0], &fo, &fout);
            if (rc == MOE_OK && fo.grads_ready) rc = fo.grads_ready(fo.ctx, c->num_hidden_layers);   // the head
            if (rc == MOE_OK) rc = model_backward(m, a[0], b[0], &fo);
            fo.grad_set = false;
            ce += fout.ce_sum;
            aux += fout.aux;
            out->tokens += b[0]->N;
        }
    }
    for (int i = 0; i < bk.n; i++) {
        if (dist_wait(bk.reqs[i]) && rc == MOE_OK) rc = MOE_FAIL;
        if (bk.mv) grad_move(&bk.mv[i]);
    }
    moe_free(bk.reqs); moe_free(bk.mv);
    if (rc == MOE_OK) rc = sum_replicas(m);
    if (rc) return rc;
    if (halves) {   // the statistics of both halves in a[0]
        for (int i = 0; i < LE; i++) a[0]->load[i] += a[1]->load[i];
        for (int l = 0; l < c->num_hidden_layers; l++) { a[0]->drop_l[l] += a[1]->drop_l[l]; a[0]->rows_l[l] += a[1]->rows_l[l]; }
        a[0]->dropped += a[1]->dropped;
        a[0]->assigned += a[1]->assigned;
    }
    if (P > 1) {
        if (!overlap) MOE_TRY(reduce_grads(m, -2, NULL, NULL, zoff, NULL));
        double v[2] = {ce, aux};
        MOE_TRY(dist_sum_f64(v, 2, DIST_WORLD));
        ce = v[0]; aux = v[1];
        long cnt[3] = {out->tokens, a[0]->dropped, a[0]->assigned};
        MOE_TRY(dist_sum_long(cnt, 3, DIST_WORLD));
        out->tokens = cnt[0]; a[0]->dropped = cnt[1]; a[0]->assigned = cnt[2];
        MOE_TRY(dist_sum_long(a[0]->load, LE, DIST_WORLD));
        MOE_TRY(dist_sum_long(a[0]->drop_l, c->num_hidden_layers, DIST_WORLD));
    }
    out->targets = targets;
    out->ce = ce / targets;
    out->aux = aux;
    out->loss = out->ce + out->aux;
    return MOE_OK;
}

// ---------------------------------------------------------------- the training loop

static bool given(const char *flags, const char *name) {
    char key[64];
    snprintf(key, sizeof key, " %s ", name);
    return flags && strstr(flags, key) != NULL;
}

// keep the lines of log.jsonl whose step <= last (a resume continues after `last`)
static int log_carry(const char *from_dir, const char *to_path, long last) {
    char src[4096];
    path_join(src, sizeof src, from_dir, "log.jsonl");
    size_t len = 0;
    char *text = path_exists(src) ? file_read_all(src, &len) : NULL;
    char *keep = malloc(len + 1);
    size_t k = 0;
    for (char *p = text; p && p < text + len;) {
        char *nl = memchr(p, '\n', text + len - p);
        if (!nl) break;   // a torn last line from a crash is dropped
        long step = -1;
        char *s = strstr(p, "\"step\":");
        if (s && s < nl) step = strtol(s + 7, NULL, 10);
        if (step >= 1 && step <= last) { memcpy(keep + k, p, nl + 1 - p); k += nl + 1 - p; }
        p = nl + 1;
    }
    int rc = file_write_atomic(to_path, keep, k);
    free(keep); free(text);
    return rc;
}

static void fmt_eta(char *buf, size_t cap, double s) {
    if (s < 0 || !isfinite(s)) { snprintf(buf, cap, "?"); return; }
    int t = (int)(s + 0.5);
    if (t >= 3600) snprintf(buf, cap, "%dh%02dm", t / 3600, t / 60 % 60);
    else snprintf(buf, cap, "%dm%02ds", t / 60, t % 60);
}

static int load_data(Dataset *d, const char *list, DataFormat fmt, int seq) {
    char buf[8192];
    snprintf(buf, sizeof buf, "%s", list);
    Dataset parts[32];
    int n = 0;
    for (char *p = strtok(buf, ","); p; p = strtok(NULL, ",")) {
        if (n == 32) MOE_ERR("--data: at most 32 files");
        if (dataset_load(&parts[n], p, fmt, seq, 0) != MOE_OK) {
            for (int i = 0; i < n; i++) dataset_free(&parts[i]);
            return MOE_FAIL;
        }
        n++;
    }
    if (n == 0) MOE_ERR("--data: no file given");
    return dataset_concat(d, parts, n);
}

int train_check_config(const TrainConfig *tc) {
    if (tc->batch <= 0) MOE_ERR("--batch must be positive, got %d", tc->batch);
    if (tc->micro_batch <= 0) MOE_ERR("--micro-batch must be positive, got %d", tc->micro_batch);
    if (tc->seq <= 0) MOE_ERR("--seq must be positive, got %d", tc->seq);
    if (tc->steps <= 0) MOE_ERR("--steps must be positive, got %d", tc->steps);
    if (!(tc->opt.lr > 0)) MOE_ERR("--lr must be positive, got %g", tc->opt.lr);
    if (tc->opt.warmup < 0 || tc->opt.decay_steps < 0) MOE_ERR("--warmup and --decay-steps must be >= 0");
    if (tc->ckpt_every < 0) MOE_ERR("--ckpt-every must be >= 0");
    if (tc->time_budget < 0) MOE_ERR("--time-budget must be >= 0");
    return MOE_OK;
}

// ---------------------------------------------------------------- dynamic expert placement

static bool holds(const Model *m, int rank, int l, int e) {
    if (!m->place) return e / m->ne == rank;
    const int S = m->place->S;
    const int *slot = m->place->slot_expert + ((size_t)l * m->place->P + rank) * S;
    for (int j = 0; j < S; j++) if (slot[j] == e) return true;
    return false;
}
static int first_holder(const Model *m, int P, int l, int e) {
    for (int q = 0; q < P; q++) if (holds(m, q, l, e)) return q;
    return -1;
}

// an expert's weights and moments in a blob: gate, up, down of one layer
static void expert_io(const Model *m, float *blob, int l, int e, float *buf, bool pack, size_t FD) {
    static const char *part[3] = {"gate_proj", "up_proj", "down_proj"};
    for (int k = 0; k < 3; k++) {
        char nm[96];
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.experts.%d.%s.weight", l, e, part[k]);
        int ti = model_find_tensor(m, nm);
        float *t = blob + m->tensors[ti].offset;
        if (pack) memcpy(buf + k * FD, t, sizeof(float) * FD);
        else memcpy(t, buf + k * FD, sizeof(float) * FD);
    }
}

// Moves to placement npl: a new model and optimizer state holding this rank's new slots;
// what this rank held is copied, the rest comes from the lowest rank that held it.
static int migrate(Model *m, AdamW *opt, const MoePlacement *npl, int me) {
    const MoeConfig *c = &m->cfg;
    const int P = npl->P, S = npl->S, L = c->num_hidden_layers;
    const size_t FD = (size_t)c->moe_intermediate_size * c->hidden_size, per = 9 * FD;   // params, m, v
    Model nm;
    model_build_placed(&nm, c, true, npl, me);
    nm.comm = m->comm;
    AdamW no;
    adamw_alloc(&no, nm.n_params);
    no.t = opt->t;
    model_copy_blob(&nm, nm.params, m, m->params);
    model_copy_blob(&nm, no.m, m, opt->m);
    model_copy_blob(&nm, no.v, m, opt->v);
    memcpy(nm.bias, m->bias, sizeof(float) * (size_t)L * c->n_routed_experts);
    // the moves: expert e of layer l to rank p (a new slot) from q, the lowest rank that held
    // it; in the order rank p, layer, slot, which both ends of each message follow
    typedef struct { int p, q, l, e; } Move;
    Move *mv = MOE_NEW(Move, (size_t)L * P * S + 1);
    int n = 0;
    for (int p = 0; p < P; p++)
        for (int l = 0; l < L; l++) {
            if (!config_layer_is_moe(c, l)) continue;
            const int *slot = npl->slot_expert + ((size_t)l * P + p) * S;
            for (int j = 0; j < S; j++)
                if (!holds(m, p, l, slot[j])) mv[n++] = (Move){p, first_holder(m, P, l, slot[j]), l, slot[j]};
        }
    int *sc = MOE_NEW(int, 5 * P), *sd = sc + P, *rc = sc + 2 * P, *rd = sc + 3 * P, *at = sc + 4 * P;
    for (int i = 0; i < n; i++) {
        if (mv[i].q == me) sc[mv[i].p] += (int)per;
        if (mv[i].p == me) rc[mv[i].q] += (int)per;
    }
    long ns = 0, nr = 0;
    for (int p = 0; p < P; p++) { sd[p] = (int)ns; ns += sc[p]; rd[p] = at[p] = (int)nr; nr += rc[p]; }
    float *sbuf = MOE_NEW(float, ns + 1), *rbuf = MOE_NEW(float, nr + 1);
    for (long i = 0, o = 0; i < n; i++)   // p-major: each destination's part is contiguous
        if (mv[i].q == me) {
            expert_io(m, m->params, mv[i].l, mv[i].e, sbuf + o, true, FD);
            expert_io(m, opt->m, mv[i].l, mv[i].e, sbuf + o + 3 * FD, true, FD);
            expert_io(m, opt->v, mv[i].l, mv[i].e, sbuf + o + 6 * FD, true, FD);
            o += per;
        }
    int rcode = dist_alltoallv_f32(sbuf, sc, sd, rbuf, rc, rd);
    for (int i = 0; i < n && rcode == MOE_OK; i++)
        if (mv[i].p == me) {
            float *b = rbuf + at[mv[i].q];
            expert_io(&nm, nm.params, mv[i].l, mv[i].e, b, false, FD);
            expert_io(&nm, no.m, mv[i].l, mv[i].e, b + 3 * FD, false, FD);
            expert_io(&nm, no.v, mv[i].l, mv[i].e, b + 6 * FD, false, FD);
            at[mv[i].q] += (int)per;
        }
    moe_free(mv);
    if (rcode) { moe_free(sbuf); moe_free(rbuf); moe_free(sc); adamw_free(&no); model_free(&nm); return MOE_FAIL; }
    moe_free(sbuf); moe_free(rbuf); moe_free(sc);
    model_free(m);
    adamw_free(opt);
    *m = nm;
    *opt = no;
    return MOE_OK;
}

// What a placement is worth: the rows it takes off a layer's busiest rank over the windows
// left in the run (windows: how many; the loads are taken to stay as they were), at
// s_per_row (an expert row's forward and backward GEMMs at the measured sgemm peak, so the
// gain errs low), against what moving that layer's experts costs at s_per_move (one
// expert's weights and moments, measured at the last migration; 0 until there was one).
typedef struct { double s_per_row, s_per_move, windows; bool always; } PlaceCost;

// the slots of layer l under placement np that this model's ranks do not hold yet
static int layer_moves(const Model *m, const MoePlacement *np, int l) {
    const int G = np->P * np->S;
    const int *se = np->slot_expert + (size_t)l * G;
    int n = 0;
    for (int g = 0; g < G; g++) n += !holds(m, g / np->S, l, se[g]);
    return n;
}

// A placement for the loads of the last N steps (the same on every rank: the loads are
// global and the packing deterministic), then the weights and moments move (migrate).
// *before / *after: the worst layer's predicted busiest rank over the mean, under the
// current placement and the new one.
static int place_again(Model *m, AdamW *opt, const double *win_load, int R, PlaceCost *pc, MoePlacement *np, int *moved,
                       double *before, double *after) {
    const MoeConfig *c = &m->cfg;
    const DistInfo *di = dist_info();
    const int L = c->num_hidden_layers, E = c->n_routed_experts, ep = di->ep;
    moe_placement_alloc(np, L, E, ep, R);
    const int S = np->S, G = ep * S;
    double *rl = MOE_NEW(double, 2 * ep), *rt = rl + ep;
    int *ov = MOE_NEW(int, ep * ep + 3 * ep + G), *to = ov + ep * ep, *used = to + ep, *done = used + ep, *tmp = done + ep;
    int rc = MOE_OK;
    *moved = 0;
    *before = *after = 0;
    for (int l = 0; l < L && rc == MOE_OK; l++) {
        if (!config_layer_is_moe(c, l)) continue;
        int *se = np->slot_expert + (size_t)l * G;
        const double *ld = win_load + (size_t)l * E;
        if ((rc = moe_place(ld, E, ep, R, se, rl))) break;
        // ranks are interchangeable: new rank p becomes the old rank that already holds most
        // of its experts (greedy), so that fewer experts move
        for (int p = 0; p < ep; p++)
            for (int q = 0; q < ep; q++) {
                ov[p * ep + q] = 0;
                for (int j = 0; j < S; j++) ov[p * ep + q] += holds(m, q, l, se[p * S + j]);
            }
        for (int p = 0; p < ep; p++) to[p] = used[p] = done[p] = 0;
        for (int k = 0; k < ep; k++) {
            int bp = -1, bq = -1;
            for (int p = 0; p < ep; p++)
                for (int q = 0; q < ep; q++)
                    if (!done[p] && !used[q] && (bp < 0 || ov[p * ep + q] > ov[bp * ep + bq])) { bp = p; bq = q; }
            to[bp] = bq;
            done[bp] = used[bq] = 1;
        }
        for (int p = 0; p < ep; p++) {
            memcpy(tmp + to[p] * S, se + p * S, sizeof(int) * S);
            rt[to[p]] = rl[p];
        }
        memcpy(se, tmp, sizeof(int) * G);
        double mx = 0, sum = 0, bmx = 0;
        for (int p = 0; p < ep; p++) {
            mx = fmax(mx, rt[p]); sum += rt[p];
            double b = 0;   // the current placement, by the same prediction
            for (int e = 0; e < E; e++)
                if (holds(m, p, l, e)) b += ld[e] / (m->place ? m->place->rep_n[(size_t)l * E + e] : 1);
            bmx = fmax(bmx, b);
        }
        // a layer stays as it is when its current placement is within 2% of the new one, or
        // when moving its experts would cost more than the window's time the move saves
        const int moves = layer_moves(m, np, l);
        const bool pays = pc->always || pc->s_per_move == 0 || (bmx - mx) * pc->s_per_row * pc->windows > moves * pc->s_per_move;
        if (m->place && (bmx <= 1.02 * mx || !pays)) {   // kept: nothing of this layer moves
            memcpy(se, m->place->slot_expert + (size_t)l * G, sizeof(int) * G);
            mx = bmx;
        } else *moved += moves;
        rc = moe_placement_index(np, l);
        if (sum > 0) { *after = fmax(*after, mx * ep / sum); *before = fmax(*before, bmx * ep / sum); }
    }
    moe_free(ov);
    moe_free(rl);
    double t0 = time_now();
    if (rc == MOE_OK && m->place && *moved == 0) m->place = np;   // the same slots: nothing to rebuild
    else if (rc == MOE_OK) rc = migrate(m, opt, np, di->ep_rank);
    if (rc == MOE_OK && *moved > 0) {   // every rank must decide alike: the slowest rank's figure
        double dt = time_now() - t0;
        dist_max_f64(&dt, 1, DIST_WORLD);
        pc->s_per_move = dt / *moved;
    }
    if (rc) moe_placement_free(np);
    return rc;
}

// --zero 1: rank r keeps the moments of blob elements [off[r], off[r+1]), cut on 64-byte
// boundaries
static void zero_parts(size_t n, int P, size_t *off) {
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
    const int P = dist_info()->size, r = dist_info()->rank;
    for (int k = 0; k <= P; k++) {   // the shares clipped to the tensor
        size_t o = z->off[k] < t->offset ? t->offset : z->off[k];
        z->part[k] = (o > t->offset + t->numel ? t->offset + t->numel : o) - t->offset;
    }
    const float *mom = which ? z->opt->v : z->opt->m;
    const float *mine = z->part[r + 1] > z->part[r] ? mom + (t->offset + z->part[r] - z->opt->lo) : mom;
    if (dist_gather_f32(mine, z->part, z->buf) && z->rc == MOE_OK) z->rc = MOE_FAIL;
    return z->rc == MOE_OK ? z->buf : NULL;
}

// One standard checkpoint whatever P and E: rank 0 gathers the experts of EP group 0
// (their weights and moments) into a whole model and writes it; the others wait. Every
// rank learns whether the save worked.
static int save_checkpoint(const char *dir, const Model *m, const AdamW *opt, const size_t *zoff,
                           const TrainConfig *tc, const TrainProgress *pr_in) {
    const DistInfo *di = dist_info();
    int rc = MOE_OK;
    TrainProgress prc = *pr_in;   // the placement goes in the train state, for a resume
    prc.place = m->place;
    const TrainProgress *pr = &prc;
    if (zoff) {   // --zero 1: rank 0 gathers the moments tensor by tensor
        ZeroGather z = {m, opt, zoff, MOE_NEW(size_t, di->size + 1), NULL, MOE_OK};
        size_t most = 0;
        for (int i = 0; i < m->n_tensors; i++) most = m->tensors[i].numel > most ? m->tensors[i].numel : most;
        int calls = 0;
        if (di->rank == 0) {
            z.buf = MOE_NEW(float, most);
            rc = ckpt_save_moments(dir, m, opt, tc, pr, zero_moment, &z, &calls);
        }
        for (int i = calls; i < 2 * m->n_tensors; i++) zero_moment(&z, i / 2, i % 2);   // the gathers not made yet
        if (rc == MOE_OK) rc = z.rc;
        moe_free(z.buf); moe_free(z.part);
    } else if (!m->comm) {
        if (di->rank == 0) rc = ckpt_save(dir, m, opt, tc, pr, false);
    } else {
        const size_t n = m->n_params;
        const bool root = di->rank == 0;
        Model full;
        AdamW fo;
        float *buf = NULL;
        if (root) {
            model_build(&full, &m->cfg, false);
            adamw_alloc(&fo, full.n_params);
            fo.t = opt->t;
            memcpy(full.bias, m->bias, sizeof(float) * (size_t)m->cfg.num_hidden_layers * m->cfg.n_routed_experts);
            buf = MOE_NEW(float, n * di->ep);
        }
        const float *src[3] = {m->params, opt->m, opt->v};
        for (int k = 0; k < 3 && rc == MOE_OK; k++) {
            rc = dist_gather_ep0(src[k], n, buf);
            if (!root || rc) continue;
            float *dst = k == 0 ? full.params : k == 1 ? fo.m : fo.v;
            for (int r = 0; r < di->ep; r++) {
                Model shard;
                if (m->place) model_layout_placed(&shard, &m->cfg, m->place, r);
                else model_layout_shard(&shard, &m->cfg, r * m->ne, m->ne);
                model_copy_blob(&full, dst, &shard, buf + (size_t)r * n);
                model_free(&shard);
            }
        }
        if (root) {
            if (rc == MOE_OK) rc = ckpt_save(dir, &full, &fo, tc, pr, false);
            moe_free(buf); adamw_free(&fo); model_free(&full);
        }
    }
    int r = rc;
    dist_bcast_int(&r, 1);
    if (r && !rc) MOE_ERR("%s: rank 0 could not write the checkpoint", dir);
    return r;
}

int train_run(const TrainArgs *ar, TrainConfig *tc, const char *flags) {
    DistInfo *di = dist_info();
    const bool root = di->rank == 0;
    if (!root) tc->quiet = true;
    if (tc->ep <= 0) tc->ep = 1;
    MOE_TRY(dist_setup(tc->ep, (DistA2A)tc->a2a));
    // --- everything is checked before anything is written
    char rout[4096] = "", rres[4096] = "";
    bool same_dir = false;
    if (ar->resume) {
        if (!realpath(ar->resume, rres)) MOE_ERR("%s: checkpoint directory does not exist", ar->resume);
        same_dir = realpath(ar->out, rout) && !strcmp(rout, rres);
    }
    if (!same_dir && ckpt_exists(ar->out)) {
        if (ar->resume) MOE_ERR("%s: already holds a checkpoint; choose an empty --out or --out %s", ar->out, ar->resume);
        MOE_ERR("%s: already holds a checkpoint; continue it with --resume %s, or choose another --out", ar->out, ar->out);
    }
    Model m;
    AdamW opt = {0};   // (not allocated yet under --zero 1 until the shares are known)
    TrainProgress pr = {0};
    // expert parallelism: this rank holds experts [e0, e0 + ne) of each MoE layer
    MoeConfig c0;
    if (ar->resume) {
        char cp[4096];
        path_join(cp, sizeof cp, ar->resume, "config.json");
        MOE_TRY(ckpt_recover(ar->resume));
        if (!path_exists(cp)) MOE_ERR("%s: missing config.json (not a checkpoint directory?)", ar->resume);
        MOE_TRY(config_load(&c0, cp));
    } else {
        MOE_TRY(config_load(&c0, ar->model_cfg));
    }
    const int ep = tc->ep;
    if (ep > 1 && (c0.n_routed_experts == 0 || c0.n_routed_experts % ep))
        MOE_ERR("--ep %d must divide the model's n_routed_experts %d", ep, c0.n_routed_experts);
    const int ne = c0.n_routed_experts / ep, e0 = di->ep_rank * ne;
    if (ar->resume) {
        MOE_TRY(ckpt_load_model_shard(ar->resume, &m, true, e0, ep > 1 ? ne : 0));
        adamw_alloc(&opt, m.n_params);
        TrainConfig saved = *tc;
        if (ckpt_load_state(ar->resume, &m, &opt, &saved, &pr) != MOE_OK) { adamw_free(&opt); model_free(&m); return MOE_FAIL; }
        // what the command line says wins; the rest continues as saved
#define KEEP(flag, field) if (!given(flags, flag)) tc->field = saved.field
        KEEP("--lr", opt.lr); KEEP("--min-lr", opt.min_lr); KEEP("--weight-decay", opt.weight_decay);
        KEEP("--beta1", opt.beta1); KEEP("--beta2", opt.beta2); KEEP("--clip", opt.clip);
        KEEP("--warmup", opt.warmup); KEEP("--decay-steps", opt.decay_steps); KEEP("--batch", batch);
        KEEP("--micro-batch", micro_batch); KEEP("--seq", seq); KEEP("--seed", seed);
        KEEP("--ckpt-every", ckpt_every); KEEP("--format", format);
        tc->opt.eps = saved.opt.eps;
        if (!given(flags, "--shuffle")) tc->shuffle = saved.shuffle;
#undef KEEP
        if (!given(flags, "--micro-batch") && given(flags, "--batch")) tc->micro_batch = tc->batch;
    } else {
        model_build_shard(&m, &c0, true, e0, ep > 1 ? ne : c0.n_routed_experts);
        model_init_weights(&m, tc->seed);
        if (!(tc->zero && di->size > 1)) adamw_alloc(&opt, m.n_params);   // (--zero 1: a share, below)
    }
    if (ep > 1) m.comm = &di->moe;
    if (tc->micro_batch > tc->batch) tc->micro_batch = tc->batch;
    if (tc->seq == 0) tc->seq = imin(256, m.cfg.max_position_embeddings);   // --seq not given
    int rc = train_check_config(tc);
    if (rc == MOE_OK && tc->batch % di->size)
        { moe_seterr("--batch %d must be a multiple of the %d ranks (each takes batch / P examples)", tc->batch, di->size); rc = MOE_FAIL; }
    const int local_batch = tc->batch / di->size;
    if (rc == MOE_OK && tc->replace_every > 0 && ep == 1) { moe_seterr("--replace-every needs expert parallelism (--ep > 1)"); rc = MOE_FAIL; }
    if (rc == MOE_OK && tc->replace_every > 0 &&
        (tc->redundant > c0.n_routed_experts || (c0.n_routed_experts + tc->redundant) % ep))
        { moe_seterr("--redundant-experts %d: the %d experts and the redundant slots must split evenly over --ep %d (at most %d redundant)",
                     tc->redundant, c0.n_routed_experts, ep, c0.n_routed_experts); rc = MOE_FAIL; }
    if (rc == MOE_OK && tc->micro_batch > local_batch) tc->micro_batch = local_batch;
    if (rc == MOE_OK && tc->seq > m.cfg.max_position_embeddings)
        { moe_seterr("--seq %d exceeds max_position_embeddings %d of the model", tc->seq, m.cfg.max_position_embeddings); rc = MOE_FAIL; }
    if (rc == MOE_OK && ar->resume && pr.step >= tc->steps)
        { moe_seterr("%s: already trained %ld steps; ask for more with --steps", ar->resume, pr.step); rc = MOE_FAIL; }
    Dataset d = {0};
    if (rc == MOE_OK) rc = load_data(&d, ar->data, tc->format, tc->seq);
    if (rc != MOE_OK) { adamw_free(&opt); model_free(&m); return MOE_FAIL; }
    if (d.skipped && !tc->quiet)
        fprintf(stderr, "moe train: skipped %d examples longer than --seq %d\n", d.skipped, tc->seq);
    // --zero 1 on several ranks: this rank keeps the moments of its share of the blob only
    size_t *zoff = NULL;
    if (tc->zero && di->size > 1) {
        zoff = MOE_NEW(size_t, di->size + 1);
        zero_parts(m.n_params, di->size, zoff);
        const size_t lo = zoff[di->rank], n = zoff[di->rank + 1] - lo;
        if (ar->resume) adamw_shard(&opt, lo, n);   // cut from the checkpoint's moments
        else adamw_alloc_part(&opt, lo, n);
        if (!tc->quiet)
            fprintf(stderr, "moe train: --zero 1: AdamW moments of 1/%d of the parameters a rank (%.1f MB instead of %.1f)\n",
                    di->size, 8.0 * opt.n / 1e6, 8.0 * m.n_params / 1e6);
    }
    Dataset evd = {0};
    if (ar->eval_data && dataset_load(&evd, ar->eval_data, tc->format, m.cfg.max_position_embeddings - 1, tc->eval_limit) != MOE_OK) {
        moe_free(zoff); dataset_free(&d); adamw_free(&opt); model_free(&m);
        return MOE_FAIL;
    }

    // --- set up the output
    const MoeConfig *c = &m.cfg;
    char log_path[4096];
    path_join(log_path, sizeof log_path, ar->out, "log.jsonl");
    FILE *log = NULL;
    if (root) {
        rc = dir_ensure(ar->out);
        if (rc == MOE_OK) rc = ar->resume ? log_carry(ar->resume, log_path, pr.step) : file_write_atomic(log_path, "", 0);
        log = rc == MOE_OK ? fopen(log_path, "a") : NULL;
        if (rc == MOE_OK && !log) { moe_seterr("%s: cannot open for appending", log_path); rc = MOE_FAIL; }
    }
    if (rc != MOE_OK) { moe_free(zoff); dataset_free(&d); dataset_free(&evd); adamw_free(&opt); model_free(&m); return MOE_FAIL; }

    // --overlap (on by default under MPI): gradient reductions start during the backward
    // pass, and with expert parallelism each micro-batch runs as two interleaved halves
    const bool overlap = di->size > 1 && tc->overlap != 0;
    const bool halves = overlap && ep > 1 && tc->micro_batch >= 2;
    const int mb_acts = halves ? (tc->micro_batch + 1) / 2 : tc->micro_batch;
    Acts a, a_half;
    Batch b, b_half;
    const int amode = tc->acts_mode ? tc->acts_mode : ACTS_TRAIN;
    acts_alloc(&a, &m, mb_acts * tc->seq, amode);
    batch_alloc(&b, mb_acts * tc->seq, mb_acts);
    if (halves) { acts_alloc(&a_half, &m, mb_acts * tc->seq, amode); batch_alloc(&b_half, mb_acts * tc->seq, mb_acts); }
    Acts *as[2] = {&a, halves ? &a_half : NULL};
    Batch *bs[2] = {&b, halves ? &b_half : NULL};
    DataOrder order;
    order_init(&order, d.n, tc->seed, tc->shuffle);
    int *ids = MOE_NEW(int, tc->batch);
    const int L = c->num_hidden_layers, E = c->n_routed_experts;
    // balance figures per MoE layer: sums over the run's steps, and the last 50 steps
    enum { LAST = 50 };
    double *bal_sum = MOE_NEW(double, (size_t)L * 3), *bal_last = MOE_NEW(double, (size_t)LAST * L * 3);
    long *run_drop = MOE_NEW(long, L), run_assigned = 0;
    long n_bal = 0;
    double peak = kernels_measure_peak_gflops(0.3) * 1e9;
    dist_sum_f64(&peak, 1, DIST_WORLD);   // the job's peak: every rank's, measured side by side
    double flops_tok = config_flops_per_token(c, tc->seq);
    PlaceCost pcost = {18.0 * c->hidden_size * c->moe_intermediate_size / (peak / di->size), 0, 1, tc->replace_always};
    bool tty = isatty(2);
    if (!tc->quiet)
        fprintf(stderr, "moe train: %.2fM params (%.2fM active), %d examples, batch %d x seq %d, %d threads, sgemm peak %.1f GFLOP/s\n",
                config_total_params(c) / 1e6, config_active_params(c) / 1e6, d.n, tc->batch, tc->seq,
                kernels_threads(), peak / 1e9);
    if (!tc->quiet && di->size > 1)
        fprintf(stderr, "moe train: %d ranks: %d data-parallel replicas x expert parallelism %d (%d experts per rank), "
                        "EP group on %d host%s, %s all-to-all, overlap %s\n",
                di->size, di->dp, ep, ne, di->hosts, di->hosts == 1 ? "" : "s", di->hier ? "hierarchical" : "flat",
                tc->overlap ? "on" : "off");
    // dynamic placement (--replace-every N, --redundant-experts R): loads over the window
    MoePlacement places[2];
    int cur_place = -1;
    double *win_load = MOE_NEW(double, (size_t)L * imax(E, 1));
    // a resume with the same --ep and slots takes up the recorded placement at once
    if (rc == MOE_OK && pr.slots) {
        const int S = (E + tc->redundant) / imax(ep, 1);
        if (tc->replace_every > 0 && pr.slots_ep == ep && pr.slots_S == S) {
            moe_placement_alloc(&places[0], L, E, ep, tc->redundant);
            memcpy(places[0].slot_expert, pr.slots, sizeof(int) * (size_t)L * ep * S);
            int moved = 0;
            for (int l = 0; l < L && rc == MOE_OK; l++)
                if (config_layer_is_moe(c, l)) { rc = moe_placement_index(&places[0], l); moved += layer_moves(&m, &places[0], l); }
            if (rc == MOE_OK) rc = migrate(&m, &opt, &places[0], di->ep_rank);
            if (rc == MOE_OK) {
                cur_place = 0;
                if (!tc->quiet) fprintf(stderr, "moe train: the checkpoint's expert placement taken up (%d experts moved)\n", moved);
            } else moe_placement_free(&places[0]);
        } else if (!tc->quiet)
            fprintf(stderr, "moe train: the checkpoint's expert placement (--ep %d, %d slots a rank) is not taken up %s; "
                            "experts start in order\n", pr.slots_ep, pr.slots_S,
                    tc->replace_every == 0 ? "without --replace-every" : "with other --ep or --redundant-experts");
        free(pr.slots);
        pr.slots = NULL;
    }
    double t_start = time_now();
    long start_step = pr.step;
    double t_print = 0;   // not a terminal: a line every 10 s instead of a live line
    StepLoss sl = {0};
    while (rc == MOE_OK && pr.step < tc->steps) {
        double t0 = time_now();
        for (int i = 0; i < tc->batch; i++) ids[i] = order_example(&order, pr.cursor + i);
        const double comm0 = di->ms + di->moe.ms, exposed0 = di->exposed_ms + di->moe.exposed_ms;
        const double dp_exposed0 = di->exposed_ms, ep_exposed0 = di->moe.exposed_ms;
        rc = train_accumulate_ex(&m, as, bs, &d, ids + di->rank * local_batch, local_batch, tc->micro_batch, overlap, zoff, &sl);
        if (rc) break;
        double gnorm = train_grad_norm(&m, zoff);
        if (!isfinite(gnorm)) { moe_seterr("step %ld: gradient norm is not finite (loss %g); lower --lr", pr.step + 1, sl.loss); rc = MOE_FAIL; break; }
        float lr = lr_at(&tc->opt, pr.step + 1);
        adamw_step(&opt, &m, &tc->opt, lr, grad_clip_scale(gnorm, tc->opt.clip));
        if (zoff && (rc = dist_allgather_f32(m.params, zoff))) break;   // every rank's updated share to all
        if (c->bias_update_speed > 0)
            for (int l = 0; l < L; l++)
                if (config_layer_is_moe(c, l)) moe_bias_update(m.bias + (size_t)l * E, a.load + (size_t)l * E, E, c->bias_update_speed);
        pr.step++;
        pr.cursor += tc->batch;
        for (size_t i = 0; i < (size_t)L * E; i++) win_load[i] += a.load[i];
        int moved_now = -1;
        if (tc->replace_every > 0 && pr.step % tc->replace_every == 0) {
            const int nx = cur_place == 0 ? 1 : 0;
            double before, after;
            pcost.windows = fmax(1.0, (double)(tc->steps - pr.step) / tc->replace_every);
            rc = place_again(&m, &opt, win_load, tc->redundant, &pcost, &places[nx], &moved_now, &before, &after);
            if (rc) break;
            if (cur_place >= 0) moe_placement_free(&places[cur_place]);
            cur_place = nx;
            memset(win_load, 0, sizeof(double) * (size_t)L * E);
            if (!tc->quiet)
                fprintf(stderr, "%smoe train: step %ld: experts placed again (%d slots a rank, %d redundant, %d experts moved): "
                                "worst predicted rank load %.3f -> %.3f of the mean\n",
                        tty ? "\r\033[K" : "", pr.step, places[nx].S, tc->redundant, moved_now, before, after);
        }
        double dt = time_now() - t0;
        double comm_ms = di->ms + di->moe.ms - comm0, exposed_ms = di->exposed_ms + di->moe.exposed_ms - exposed0;
        // of which: waiting on the expert-parallel exchanges, and on the gradient sums and the
        // step's other collectives
        double ep_exposed = di->moe.exposed_ms - ep_exposed0, dp_exposed = di->exposed_ms - dp_exposed0;
        if (di->size > 1) {   // the step's slowest rank, as the job sees it
            double v[5] = {dt, comm_ms, exposed_ms, ep_exposed, dp_exposed};
            dist_max_f64(v, 5, DIST_WORLD);
            dt = v[0]; comm_ms = v[1]; exposed_ms = v[2]; ep_exposed = v[3]; dp_exposed = v[4];
        }
        double tps = sl.tokens / dt, mfu = flops_tok * tps / peak;
        // --- log line (rank 0 writes it)
        char *line = NULL;
        size_t line_len = 0;
        FILE *ls = open_memstream(&line, &line_len);
        fprintf(ls, "{\"step\":%ld,\"loss\":%.9g,\"ce\":%.9g,\"aux\":%.9g,\"lr\":%.9g,\"grad_norm\":%.9g,"
                     "\"tokens_per_s\":%.1f,\"mfu\":%.5f,\"step_ms\":%.2f,\"tokens\":%ld,\"dropped\":%ld,",
                pr.step, sl.loss, sl.ce, sl.aux, lr, gnorm, tps, mfu, dt * 1e3, sl.tokens, a.dropped);
        if (di->size > 1)
            fprintf(ls, "\"comm_ms\":%.2f,\"comm_exposed_ms\":%.2f,\"ep_exposed_ms\":%.2f,\"dp_exposed_ms\":%.2f,",
                    comm_ms, exposed_ms, ep_exposed, dp_exposed);
        fprintf(ls, "\"expert_load\":[");
        LoadStats *ls_l = MOE_NEW(LoadStats, L > 0 ? L : 1);
        // under EP, the rows each rank's experts computed: the largest, smallest and total
        // over the group give the rank load (max/mean) and the device imbalance IS
        double *rmax = MOE_NEW(double, 3 * (L > 0 ? L : 1)), *rmin = rmax + L, *rsum = rmax + 2 * L;
        if (ep > 1) {
            for (int l = 0; l < L; l++) { rmax[l] = rsum[l] = (double)a.rows_l[l]; rmin[l] = -(double)a.rows_l[l]; }
            dist_max_f64(rmax, 2 * L, DIST_EP);   // max of rows and of -rows
            dist_sum_f64(rsum, L, DIST_EP);
        }
        int first = 1;
        for (int l = 0; l < L; l++) {
            if (!config_layer_is_moe(c, l)) continue;
            fprintf(ls, first ? "[" : ",[");
            first = 0;
            for (int e = 0; e < E; e++) fprintf(ls, e ? ",%ld" : "%ld", a.load[(size_t)l * E + e]);
            fprintf(ls, "]");
            moe_load_stats(a.load + (size_t)l * E, E, ep, sl.tokens, &ls_l[l]);
            if (ep > 1) ls_l[l].is = sl.tokens > 0 ? (rmax[l] + rmin[l]) / sl.tokens : 0;   // max - min
            double v[3] = {ls_l[l].max_mean, ls_l[l].maxvio, ls_l[l].is};
            for (int k = 0; k < 3; k++) {
                bal_sum[l * 3 + k] += v[k];
                bal_last[((size_t)(n_bal % LAST) * L + l) * 3 + k] = v[k];
            }
            run_drop[l] += a.drop_l[l];
        }
        n_bal++;
        fprintf(ls, "]");
        if (moved_now >= 0) fprintf(ls, ",\"experts_moved\":%d", moved_now);   // placed again after this step
        if (ep > 1) {   // rows each rank's experts computed: the largest over the EP group / mean
            fprintf(ls, ",\"rank_load\":[");
            first = 1;
            for (int l = 0; l < L; l++)
                if (config_layer_is_moe(c, l)) { fprintf(ls, first ? "%.4f" : ",%.4f", rsum[l] > 0 ? rmax[l] * ep / rsum[l] : 0); first = 0; }
            fprintf(ls, "]");
        }
        moe_free(rmax);
        if (ep > 1) {   // device imbalance per MoE layer (the EP group's ranks are the devices)
            fprintf(ls, ",\"IS\":[");
            first = 1;
            for (int l = 0; l < L; l++)
                if (config_layer_is_moe(c, l)) { fprintf(ls, first ? "%.6f" : ",%.6f", ls_l[l].is); first = 0; }
            fprintf(ls, "]");
        }
        double eval_ce = -1;
        if (ar->eval_data && (pr.step % tc->eval_every == 0 || pr.step == tc->steps)) {
            long et;
            rc = eval_loss(&m, &evd, tc->eval_limit, 64, &eval_ce, &et);
            if (rc) { fclose(ls); free(line); moe_free(ls_l); break; }
            fprintf(ls, ",\"eval_loss\":%.9g", eval_ce);
        }
        fprintf(ls, "}\n");
        fclose(ls);
        if (log) { fputs(line, log); fflush(log); }
        free(line);
        run_assigned += sl.tokens * c->num_experts_per_tok;   // per MoE layer
        // --- progress line
        double elapsed = time_now() - t_start;
        double per_step = elapsed / (pr.step - start_step);
        double eta = per_step * (tc->steps - pr.step);
        if (tc->time_budget > 0 && tc->time_budget - elapsed < eta) eta = tc->time_budget - elapsed;
        bool stop_time = tc->time_budget > 0 && elapsed + per_step > tc->time_budget;
        if (di->size > 1) {   // rank 0's clock decides, so that every rank stops at the same step
            int st = stop_time;
            dist_bcast_int(&st, 1);
            stop_time = st;
        }
        if (!tc->quiet && (tty || elapsed - t_print >= 10 || pr.step == start_step + 1 || pr.step == tc->steps || stop_time)) {
            t_print = elapsed;
            char etas[32];
            fmt_eta(etas, sizeof etas, eta);
            char evs[32] = "";
            if (eval_ce >= 0) snprintf(evs, sizeof evs, " | eval %.4f", eval_ce);
            // max/mean load of each MoE layer (the worst one when there are many), drops, IS
            char bal[256] = "";
            int nb = 0, n_moe = config_n_moe_layers(c), worst = -1;
            for (int l = 0; l < L; l++)
                if (config_layer_is_moe(c, l) && (worst < 0 || ls_l[l].max_mean > ls_l[worst].max_mean)) worst = l;
            if (n_moe > 0 && n_moe <= 8) {
                nb += snprintf(bal + nb, sizeof bal - nb, " | load max/mean");
                for (int l = 0; l < L; l++)
                    if (config_layer_is_moe(c, l)) nb += snprintf(bal + nb, sizeof bal - nb, " %.2f", ls_l[l].max_mean);
            } else if (n_moe > 0) {
                nb += snprintf(bal + nb, sizeof bal - nb, " | load max/mean %.2f (layer %d)", ls_l[worst].max_mean, worst);
            }
            if (c->capacity_factor > 0 && a.assigned > 0)
                nb += snprintf(bal + nb, sizeof bal - nb, " | drop %.2f%%", 100.0 * a.dropped / a.assigned);
            if (ep > 1 && n_moe > 0) {
                double is = 0;
                for (int l = 0; l < L; l++) if (config_layer_is_moe(c, l) && ls_l[l].is > is) is = ls_l[l].is;
                nb += snprintf(bal + nb, sizeof bal - nb, " | IS %.3f", is);
            }
            fprintf(stderr, "%sstep %ld/%d | loss %.4f (ce %.4f aux %.4f)%s | lr %.2e | %.0f tok/s | MFU %.1f%%%s | ETA %s%s",
                    tty ? "\r\033[K" : "", pr.step, tc->steps, sl.loss, sl.ce, sl.aux, evs, lr, tps, 100 * mfu, bal, etas,
                    tty ? "" : "\n");
        }
        moe_free(ls_l);
        // --- checkpoints
        bool last = pr.step == tc->steps || stop_time;
        if (last || (tc->ckpt_every > 0 && pr.step % tc->ckpt_every == 0)) {
            pr.ckpt_id = ((unsigned long long)time(NULL) << 20) ^ (unsigned long long)pr.step * 2654435761ULL ^ (unsigned long long)getpid();
            rc = save_checkpoint(ar->out, &m, &opt, zoff, tc, &pr);
            if (rc) break;
        }
        if (stop_time) break;
    }
    if (!tc->quiet && tty) fprintf(stderr, "\n");
    if (rc == MOE_OK && !tc->quiet) {
        double el = time_now() - t_start;
        fprintf(stderr, "moe train: %ld steps in %.1f s, final loss %.4f, checkpoint %s\n", pr.step - start_step, el, sl.loss, ar->out);
        const long nl = n_bal < LAST ? n_bal : LAST;
        for (int l = 0; l < L && n_bal > 0; l++) {
            if (!config_layer_is_moe(c, l)) continue;
            double last = 0;
            for (long i = 0; i < nl; i++) last += bal_last[((size_t)i * L + l) * 3];
            fprintf(stderr, "  layer %d experts: max/mean %.3f (last %ld steps %.3f)  MaxVio %.3f  drop rate %.4f", l,
                    bal_sum[l * 3] / n_bal, nl, last / nl, bal_sum[l * 3 + 1] / n_bal,
                    run_assigned ? (double)run_drop[l] / run_assigned : 0);
            if (ep > 1) fprintf(stderr, "  IS %.4f", bal_sum[l * 3 + 2] / n_bal);
            fprintf(stderr, "\n");
        }
        if (n_bal > 0 && config_n_moe_layers(c) > 0) fprintf(stderr, "  (means over the run's steps of each step's figures)\n");
    }
    if (log) fclose(log);
    moe_free(win_load);
    moe_free(bal_sum); moe_free(bal_last); moe_free(run_drop); moe_free(ids); order_free(&order); batch_free(&b); acts_free(&a);
    if (halves) { batch_free(&b_half); acts_free(&a_half); }
    moe_free(zoff);
    dataset_free(&d); dataset_free(&evd); adamw_free(&opt); model_free(&m);
    if (cur_place >= 0) moe_placement_free(&places[cur_place]);
    return rc;
}
